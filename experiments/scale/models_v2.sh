#!/usr/bin/env bash
# Models v2 (issue 19), stage 1 of the teacher: corpus v3, the warm-started training, its evaluation.
# Every stage is cached or resumable, so re-running after an interruption continues where it stopped:
# the corpus is kept when complete, the training continues from runs/teacher-large-s-v2/last.pt.
# Cost on a 2-core AVX2 machine: corpus ~25 min, training ~1.6 s/step (4000 steps ≈ 1 h 50 min), eval ~5 min.
# data/ and runs/ are not committed: start it at the beginning of a session, or on a machine that keeps them.
#
#   nohup experiments/scale/models_v2.sh > models_v2.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
CORPUS=${CORPUS:-data/corpus3}
RUN=${RUN:-runs/teacher-large-s-v2}
STEPS=${STEPS:-4000}
NPROC=${NPROC:-2}

w2vc data synth --out "$CORPUS" --hours 16 --seed 0  # returns at once when the corpus is complete

torchrun --nproc_per_node "$NPROC" -m w2vc.cli train --arch large-s --init-from models/teacher-large-s \
    --data "$CORPUS" --out "$RUN" --lr 3e-4 --warmup 300 --eval-every 500 --seed 7 \
    --batch-seconds 15 --steps "$STEPS" --dropout 0 --freeze-feature-encoder --resume

# the issue's figures: clean + 10 dB test, Flite (test_unseen_synth), long recordings at 10 s chunks
w2vc eval --model "$RUN/best" --data "$CORPUS" --noisy --long --chunk-seconds 10
w2vc eval --model "$RUN/best" --data "$CORPUS" --split test_unseen_synth
echo "if the targets hold: w2vc pack $RUN/best models/teacher-large-s, then the card in models/README.md"
