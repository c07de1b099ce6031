"""README.md model card of a deployable bundle (export, quantize and the sweep's picks write it)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

# Why each line of the snippet is there (optimum-onnx 0.1.0, transformers 4.57):
# - `main_input_name`: the ASR pipeline reads it to name the model input; ORTModelForCTC does not define it,
#   so without it the pipeline fails with AttributeError.
# - tokenizer and feature extractor are passed because the pipeline cannot find them from an ORT model object.
# - the pipeline passes `attention_mask=` on every window and ORTModelForCTC warns that it ignores it. The
#   graph takes no mask (optimum's wav2vec2 export), and with the pipeline's default batch_size=1 no window
#   is padded, so the mask is all ones and ignoring it is exact: the filter drops only that warning. Keep
#   batch_size=1: padded batches would feed the padding to the model.
PIPELINE_SNIPPET = '''\
import logging

import soundfile as sf
from optimum.onnxruntime import ORTModelForCTC
from transformers import Wav2Vec2Processor, pipeline

model = ORTModelForCTC.from_pretrained({path!r})
model.main_input_name = "input_values"  # read by the pipeline; ORTModelForCTC lacks it
processor = Wav2Vec2Processor.from_pretrained({path!r})
asr = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
               feature_extractor=processor.feature_extractor)
# the graph takes no attention_mask; unpadded windows (batch_size=1, the default) need none
logging.getLogger("optimum.onnxruntime.modeling").addFilter(lambda r: "attention_mask" not in r.getMessage())

audio, sampling_rate = sf.read("audio.wav", dtype="float32")  # 16 kHz mono
print(asr(audio, chunk_length_s=10)["text"])  # any length: 10 s windows, 1/6 overlap on each side
'''


def pipeline_snippet(path: str | os.PathLike) -> str:
    """The card's transformers-pipeline example for the bundle at `path` (tests run it as printed)."""
    return PIPELINE_SNIPPET.format(path=str(path))


def _table(d: dict) -> str:
    rows = ["| | |", "|---|---|"]
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict | list | tuple):
            v = json.dumps(v, default=str)
        rows.append(f"| {k} | {v} |")
    return "\n".join(rows)


def write_model_card(path: str | os.PathLike, report: dict, metrics: dict | None = None,
                     lineage: Sequence[str] = (), cascade: dict | None = None) -> Path:
    """README.md of a deployable bundle: how it was made, how to run it, its checks, and measured metrics.

    The sweep calls this again with measured WER/latency once eval has run (README.md is not weights).
    `cascade`: the routing rule of a cascade bundle (two ONNX bundles in `fast/` and `strong/`).
    """
    p = Path(path)
    if cascade:
        lines = [f"# {p.name}", "", "A confidence cascade of two wav2vec 2.0 CTC models, built by w2vc: `fast/` "
                 "transcribes every utterance; `strong/` transcribes again those whose utterance confidence "
                 f"(`{cascade['measure']}` per non-blank frame, `{cascade['aggregation']}` over the utterance) "
                 f"is below {cascade['threshold']:g}. It routes whole utterances (commands, segmented "
                 "speech): run it as this bundle's MLflow model (pyfunc: audio in, text out, ONNX Runtime "
                 f"only) or with w2vc, `w2vc.core.load.load({str(p)!r}).transcribe(audio_list)`. Each member "
                 "is an ordinary ONNX bundle with its own card: the transformers pipeline and `w2vc "
                 "transcribe` run either alone on audio of any length.", ""]
    else:
        lines = [f"# {p.name}", "", "wav2vec 2.0 CTC model (characters, greedy CTC decoding), built by w2vc.", "",
                 "Transcribe 16 kHz mono audio of any length with transformers' ASR pipeline on ONNX Runtime:",
                 "", "```python", pipeline_snippet(p).rstrip("\n"), "```", "",
                 f"Or with w2vc: `w2vc transcribe --model {p} audio.wav [--format json|srt]`.", ""]
    if lineage:
        lines += [f"Steps: {' → '.join(lineage)}", ""]
    scalars = {k: v for k, v in report.items() if not isinstance(v, dict)}
    if scalars:
        lines += ["## Build report", "", _table(scalars), ""]
    for k, v in report.items():
        if isinstance(v, dict):
            lines += [f"## {k.replace('_', ' ').capitalize()}", "", _table(v), ""]
    if metrics:
        lines += ["## Measured metrics", "", _table(metrics), ""]
    out = p / "README.md"
    out.write_text("\n".join(lines))
    return out
