"""Runtime transforms of torch+runtime artifacts: the record a torch quantize method writes, applied on load.

The directory stores ordinary save_pretrained weights (so pruned shapes stay loadable) and
`w2vc_runtime.json` says what runs: `bf16` (weights already bfloat16), `torch_dynamic_int8`
(quantize_dynamic on the listed Linear modules, deterministic, re-applied on every load) or `fake_quant`
(INC int4: the stored fp32 weights already are the int4 grid values).
"""

from __future__ import annotations

import json
import os
import types
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
        return pos_conv_in_fp32(model.to(torch.bfloat16))
    if kind == "torch_dynamic_int8":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model.float().eval(), set(record["modules"]), dtype=torch.qint8)
    raise ValueError(f"{where or RUNTIME_FILE}: unknown transform {kind!r}")


def apply_runtime_dir(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    return apply_runtime(model, read_runtime(path), str(Path(path) / RUNTIME_FILE))


def _fp32_conv(self, x):
    with torch.autocast(x.device.type, enabled=False):
        bias = None if self.bias is None else self.bias.float()
        return self._conv_forward(x.float(), self.weight.float(), bias).to(x.dtype)


def pos_conv_in_fp32(model: torch.nn.Module) -> torch.nn.Module:
    """Run the positional conv embedding's conv in fp32 under bf16 (autocast or bf16 weights); returns the model.

    Why: torch 2.13's CPU (oneDNN) bf16 grouped conv1d returns wrong values for 2, 4, 6, 8, 10 or 12 channels
    per group (relative error ~1.0 against 0.003 for 1, 3, 16-48; 128 taps, 2026-12-07, AVX-512/AMX Xeon).
    The base-s student has 12 (192 channels / 16 groups), so under bf16 it read a broken positional
    embedding (WER 13.7 % → 104 % on 40 utterances); Base/Large (48/64) and the teacher (16) are not hit.
    The conv is ~6 % of the student's FLOPs at 3 s; the rest keeps bf16. Its weights stay as stored (upcast per
    call, exact), so a later .to(dtype) of the model keeps it right. Idempotent; survives deepcopy.
    """
    enc = getattr(getattr(model, "wav2vec2", model), "encoder", None)
    conv = getattr(getattr(enc, "pos_conv_embed", None), "conv", None)
    if conv is None or getattr(conv.forward, "__func__", None) is _fp32_conv:
        return model
    conv.forward = types.MethodType(_fp32_conv, conv)
    return model
