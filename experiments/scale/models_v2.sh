#!/usr/bin/env bash
# Models v2 (issue 19), a stage of the teacher: corpus v3, the warm-started training, its evaluation.
# Every stage is cached or resumable, so re-running after an interruption continues where it stopped:
# the corpus is kept when complete, the training continues from runs/teacher-large-s-v2/last.pt.
# Cost on a 2-core AVX2 machine: corpus ~25 min, training ~1.6 s/step (4000 steps ≈ 1 h 50 min), eval ~5 min.
# data/ and runs/ are not committed: start it at the beginning of a session, or on a machine that keeps them.
#
#   nohup experiments/scale/models_v2.sh > models_v2.log 2>&1 &                    # stage v2-1 (done)
#   INIT=models/teacher-large-s-v2 RUN=runs/teacher-large-s-v2-2 SEED=8 LR=2e-4 \
#     AUGMENT="--augment p_pad=0.5" nohup experiments/scale/models_v2.sh > models_v2.log 2>&1 &  # v2-2
set -euo pipefail
cd "$(dirname "$0")/../.."
CORPUS=${CORPUS:-data/corpus3}
RUN=${RUN:-runs/teacher-large-s-v2}
STEPS=${STEPS:-4000}
NPROC=${NPROC:-2}
ARCH=${ARCH:-large-s}
INIT=${INIT:-models/teacher-large-s}
SEED=${SEED:-7}
LR=${LR:-3e-4}
AUGMENT=${AUGMENT:-}
FREEZE=${FREEZE---freeze-feature-encoder}  # FREEZE= (empty) trains the CNN too
EXTRA=${EXTRA:-}                          # more train options, e.g. "--oversample kind=stream:3"

w2vc data synth --out "$CORPUS" --hours 16 --seed 0  # returns at once when the corpus is complete

# shellcheck disable=SC2086  # AUGMENT, FREEZE and EXTRA are lists of options
torchrun --nproc_per_node "$NPROC" -m w2vc.cli train --arch "$ARCH" --init-from "$INIT" \
    --data "$CORPUS" --out "$RUN" --lr "$LR" --warmup 300 --eval-every 500 --seed "$SEED" \
    --batch-seconds 15 --steps "$STEPS" --dropout 0 $FREEZE --resume $AUGMENT $EXTRA

# the issue's figures: clean + 10 dB test, Flite (test_unseen_synth), long recordings at 10 s chunks
w2vc eval --model "$RUN/best" --data "$CORPUS" --noisy --long --chunk-seconds 10
w2vc eval --model "$RUN/best" --data "$CORPUS" --split test_unseen_synth
python -c "from w2vc.experiments.config import load_config; from w2vc.experiments.runner import ensure_corpus; ensure_corpus(load_config('experiments/configs/default.yaml'))"  # the main job's corpus, if missing
w2vc eval --model "$RUN/best" --data data/corpus --noisy --long --chunk-seconds 10  # the default sweep's test
echo "if the targets hold: w2vc pack $RUN/best $INIT (or a new name), then the card in models/README.md"
