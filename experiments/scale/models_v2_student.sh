#!/usr/bin/env bash
# Models v2 (issue 19), the student: models_v2.sh with the student's shape and start — a warm start from the
# committed student on corpus v3 with the teacher v2's settings, long enough to show its dev plateau inside one
# schedule (as the v1 student's stage 6 did), then the same evaluations. Resumable like models_v2.sh.
# Cost on a 2-core machine: ~0.7 s/step with the CNN frozen (6000 steps ≈ 70 min), eval ~3 min.
#
#   nohup experiments/scale/models_v2_student.sh > models_v2_student.log 2>&1 &
ARCH=base-s INIT=${INIT:-models/student-base-s} RUN=${RUN:-runs/student-base-s-v2} STEPS=${STEPS:-6000} \
    SEED=${SEED:-8} exec "$(dirname "$0")/models_v2.sh"
