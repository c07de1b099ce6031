#!/usr/bin/env bash
# Issue 22's check: the student's automatic int8-static fallback (quantize-search, 0.5-point dev budget)
# against the hand-picked one (the method's default keep list + convs 1-3, i.e. lm_head, score products and
# convs 0-3 in fp32), from the same export and the same calibration, timed in interleaved fresh processes on
# one machine in one run, and their test WER beside the fp32 export's. 5 min on a 2-core AVX2 EPYC (2026-12-03).
# Needs data/corpus (the main job's corpus; `w2vc sweep` or models_v2.sh builds it).
#   experiments/scale/fallback_bench.sh [PROCESSES]        # figures in runs/fallback-bench/
# The teacher's check (the issue's "keeps nearly everything in int8, no slower than today's pick", today's pick
# being the method's default keep list: lm_head, score products, conv 0):
#   MODEL=models/teacher-large-s HAND=default experiments/scale/fallback_bench.sh   # in runs/fallback-bench-teacher/
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${MODEL:-models/student-base-s}; HAND=${HAND:-convs0-3}
R=runs/fallback-bench; [ "$MODEL" = models/student-base-s ] || R=$R-$(basename "$MODEL" | cut -d- -f1)
P=${1:-15}; mkdir -p $R; export R MODEL HAND
grep -o 'avx512[a-z_0-9]*\|avx2\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ' > $R/cpu.txt
[ -f data/corpus/corpus.json ] || { echo "data/corpus is missing: run the main job (w2vc sweep) once" >&2; exit 2; }
python - <<'EOF'
import os
from pathlib import Path
from w2vc.compress.export import ExportConfig, export_onnx
from w2vc.compress.quantize import QuantizeConfig, quantize
from w2vc.core.artifact import Artifact

r = Path(os.environ["R"])
if not (r / "fp32" / "w2vc.json").exists():
    export_onnx(Artifact.open(os.environ["MODEL"]), ExportConfig(parity_data="data/corpus"), r / "fp32")
if not (r / "hand" / "w2vc.json").exists():
    keep = ("lm_head", "*/attention/MatMul*", *(f"wav2vec2.feature_extractor.conv_layers.{i}" for i in range(4)))
    keep = None if os.environ["HAND"] == "default" else keep  # None: the method's default list
    quantize(Artifact.open(r / "fp32"), QuantizeConfig(method="ort_static_int8", keep_fp32=keep,
                                                       calibration_data="data/corpus"), r / "hand")
EOF
[ -f $R/auto/w2vc.json ] || /usr/bin/time -f "search %e s" w2vc quantize-search --model $R/fp32 \
    --method ort_static_int8 --data data/corpus --max-wer-increase 0.005 --out $R/auto --work-dir $R/search \
    --json $R/auto-search.json --no-mlflow
w2vc bench --model $R/auto --model $R/hand --processes "$P" --threads 2 --seconds 3 --json $R/bench.json --no-mlflow
for m in fp32 auto hand; do
  w2vc eval --model $R/$m --data data/corpus --limit 200 --json $R/eval-$m.json
done
echo DONE
