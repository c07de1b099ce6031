"""Runtime transforms of torch+runtime artifacts: the record a torch quantize method writes, applied on load.

The directory stores ordinary save_pretrained weights (so pruned shapes stay loadable) and
`w2vc_runtime.json` says what runs: `bf16` (weights already bfloat16), `torch_dynamic_int8`
(quantize_dynamic on the listed Linear modules, deterministic, re-applied on every load) or `fake_quant`
(INC int4: the stored fp32 weights already are the int4 grid values).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from w2vc.core.artifact import RUNTIME_FILE, read_runtime

TRANSFORMS = ("bf16", "torch_dynamic_int8", "fake_quant")
PRECISION_LABEL = {"bf16": "bf16", "torch_dynamic_int8": "int8-dynamic", "fake_quant": "int4-fake-quant"}


def write_runtime(out_dir: str | os.PathLike, record: dict) -> None:
    if record.get("transform") not in TRANSFORMS:
        raise ValueError(f"unknown runtime transform {record.get('transform')!r}; known: {', '.join(TRANSFORMS)}")
    (Path(out_dir) / RUNTIME_FILE).write_text(json.dumps(record, indent=1))


def apply_runtime(model: torch.nn.Module, record: dict, where: str = "") -> torch.nn.Module:
    """Turn a model loaded from the stored weights into the one the record says runs."""
    kind = record.get("transform")
    if not kind or kind == "fake_quant":
        return model
    if kind == "bf16":
        return model.to(torch.bfloat16)
    if kind == "torch_dynamic_int8":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.float().eval(), set(record["modules"]), dtype=torch.qint8)
    raise ValueError(f"{where or RUNTIME_FILE}: unknown transform {kind!r}")


def apply_runtime_dir(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    return apply_runtime(model, read_runtime(path), str(Path(path) / RUNTIME_FILE))
