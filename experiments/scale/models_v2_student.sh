#!/usr/bin/env bash
# Models v2 (issue 19), the student: warm start from the committed student on corpus v3 with the teacher v2's
# settings, long enough to show its dev plateau inside one schedule (as the v1 student's stage 6 did), then the
# figures the issue compares with the teacher's. Resumable like models_v2.sh (run that first: it builds the corpus).
# Cost on a 2-core machine: ~0.7 s/step with the CNN frozen (6000 steps ≈ 70 min), eval ~3 min.
#
#   nohup experiments/scale/models_v2_student.sh > models_v2_student.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
CORPUS=${CORPUS:-data/corpus3}
RUN=${RUN:-runs/student-base-s-v2}
STEPS=${STEPS:-6000}
NPROC=${NPROC:-2}

w2vc data synth --out "$CORPUS" --hours 16 --seed 0  # returns at once when the corpus is complete

torchrun --nproc_per_node "$NPROC" -m w2vc.cli train --arch base-s --init-from models/student-base-s \
    --data "$CORPUS" --out "$RUN" --lr 3e-4 --warmup 300 --eval-every 500 --seed 8 \
    --batch-seconds 15 --steps "$STEPS" --dropout 0 --freeze-feature-encoder --resume

w2vc eval --model "$RUN/best" --data "$CORPUS" --noisy --long --chunk-seconds 10
w2vc eval --model "$RUN/best" --data "$CORPUS" --split test_unseen_synth
python -c "from w2vc.experiments.config import load_config; from w2vc.experiments.runner import ensure_corpus; ensure_corpus(load_config('experiments/configs/default.yaml'))"  # the main job's corpus, if missing
w2vc eval --model "$RUN/best" --data data/corpus --noisy --long --chunk-seconds 10  # the default sweep's test
echo "plateau: the dev curve in $RUN (train log); then w2vc pack $RUN/best models/student-base-s and its card"
