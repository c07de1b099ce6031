#!/usr/bin/env bash
# Issue 24 measurements: peak RSS of `w2vc train` (same steps) on the 16 h and a 2 h corpus v3, and training
# throughput of the streaming trainer against the in-RAM one (commit e22d262, venv /tmp/oldvenv), same steps,
# alternated twice in one run. 2 threads, 1 process, base-s from scratch, 15 s batches.
# Needs the in-RAM trainer checked out and installed apart: git worktree add /tmp/oldtrain e22d262;
# python -m venv --system-site-packages /tmp/oldvenv && /tmp/oldvenv/bin/pip install --no-deps -e /tmp/oldtrain
set -euo pipefail
cd "$(dirname "$0")/../.."
R=runs/scale; mkdir -p $R; ROOT=$(pwd)
grep -o 'avx512[a-z_0-9]*\|avx2\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ' > $R/cpu.txt
[ -f data/corpus3/corpus.json ] || w2vc data synth --out data/corpus3 --hours 16 --seed 0 > $R/synth16h.log 2>&1
[ -f data/corpus/corpus.json ] || echo "data/corpus (the main job's 3 h corpus) is missing: run w2vc sweep once" >&2
[ -f data/corpus3-2h/corpus.json ] || w2vc data synth --out data/corpus3-2h --hours 2 --seed 0 > $R/synth2h.log 2>&1
T="train --arch base-s --steps 40 --batch-seconds 15 --eval-every 1000 --dev-limit 4 --threads 2 --seed 0"
for c in corpus3-2h corpus3; do
  rm -rf /tmp/rss-$c
  python -m w2vc.eval.peak_rss --json $R/rss.jsonl -- w2vc $T --data data/$c --out /tmp/rss-$c --json $R/rss-$c.json
done
for r in 1 2; do
  rm -rf /tmp/tp-new /tmp/tp-old
  python -m w2vc.eval.peak_rss --json $R/tp.jsonl -- w2vc $T --no-augment --data data/corpus --out /tmp/tp-new \
     --json $R/tp-new-$r.json
  # the in-RAM trainer, from outside the checkout (its cwd would put this tree's w2vc first on sys.path)
  (cd /tmp && python -m w2vc.eval.peak_rss --json $ROOT/$R/tp.jsonl -- /tmp/oldvenv/bin/python \
     $ROOT/experiments/scale/in_ram_train.py $ROOT/data/corpus /tmp/tp-old $ROOT/$R/tp-old-$r.json)
done
echo DONE
