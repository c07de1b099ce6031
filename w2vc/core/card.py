"""README.md model card of a deployable bundle (export, quantize and the sweep's picks write it)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path


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
                     lineage: Sequence[str] = ()) -> Path:
    """README.md of a deployable bundle: how it was made, its checks, and any measured metrics.

    The sweep calls this again with measured WER/latency once eval has run (README.md is not weights).
    """
    p = Path(path)
    lines = [f"# {p.name}", "", "wav2vec 2.0 CTC model (characters, greedy CTC decoding), built by w2vc.",
             "", "```python", "from optimum.onnxruntime import ORTModelForCTC", "from transformers import "
             "Wav2Vec2Processor", f"model = ORTModelForCTC.from_pretrained({str(p)!r})",
             f"processor = Wav2Vec2Processor.from_pretrained({str(p)!r})", "```", ""]
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
