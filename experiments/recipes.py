"""The step registry: YAML `kind:` → (config type, step function). No method code lives here.

Typed and closed: a recipe can only name a registered kind (no dotted imports from YAML), and an unknown
kind or option is a one-line error listing what is known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from w2vc.artifact import Artifact


@dataclass(frozen=True)
class StepContext:
    """What a step may need beyond its input: the chain's root (recovery teacher) and the sweep's data."""

    root: Artifact
    data: str
    progress: bool = True


@dataclass(frozen=True)
class StepSpec:
    kind: str
    make_config: Callable[[dict, StepContext | None], Any]
    run: Callable[[Artifact, Any, Path, StepContext], Artifact]
    about: str


def _with_data(cls, params: dict, ctx: StepContext | None, *names: str) -> dict:
    """Fill data-path fields the YAML left out with the sweep's corpus (so configs stay short)."""
    d = dict(params)
    known = {f.name for f in fields(cls)}
    for n in names:
        if n in known and n not in d:
            d[n] = ctx.data if ctx else "data/corpus"
    return d


def _distill_cfg(params, ctx):
    from w2vc.compress.distill import DistillConfig

    return DistillConfig.from_dict(_with_data(DistillConfig, params, ctx, "data"))


def _recover_cfg(params, ctx):
    from w2vc.compress.distill import DistillConfig

    if {"init", "student"} & set(params):
        raise ValueError("recover fine-tunes the chain's current model: it takes no 'init' or 'student'")
    return DistillConfig.from_dict(_with_data(DistillConfig, {**params, "init": "checkpoint", "student": "."},
                                              ctx, "data"))


def _run_distill(art, cfg, out, ctx):
    from w2vc.compress.distill import distill

    return distill(art, cfg, out, progress=ctx.progress)


def _run_recover(art, cfg, out, ctx):
    """Distillation-based recovery: the pruned model is the student, the chain's root the teacher."""
    from dataclasses import replace

    from w2vc.compress.distill import distill

    return distill(ctx.root, replace(cfg, student=str(art.path)), out, progress=ctx.progress)


def _prune_cfg(params, ctx):
    from w2vc.compress.prune import PruneConfig

    return PruneConfig.from_dict(_with_data(PruneConfig, params, ctx, "data"))


def _run_prune(art, cfg, out, ctx):
    from w2vc.compress.prune import prune

    return prune(art, cfg, out)


def _export_cfg(params, ctx):
    from w2vc.compress.export import ExportConfig

    return ExportConfig.from_dict(_with_data(ExportConfig, params, ctx, "parity_data"))


def _run_export(art, cfg, out, ctx):
    from w2vc.compress.export import export_onnx

    return export_onnx(art, cfg, out)


def _quantize_cfg(params, ctx):
    from w2vc.compress.quantize import QuantizeConfig

    d = dict(params)
    if d.get("method") == "bf16":
        d.setdefault("keep_fp32", [])  # bf16 is all-or-nothing for weights
    probe = QuantizeConfig.from_dict({**d, "calibration_data": "x"}) if "method" in d else None
    if probe is not None and probe.needs_data and "calibration_data" not in d:
        d["calibration_data"] = ctx.data if ctx else "data/corpus"
    return QuantizeConfig.from_dict(d)


def _run_quantize(art, cfg, out, ctx):
    from w2vc.compress.quantize import quantize

    return quantize(art, cfg, out)


REGISTRY: dict[str, StepSpec] = {s.kind: s for s in (
    StepSpec("distill", _distill_cfg, _run_distill, "teacher (the chain's model) → a student trained against it"),
    StepSpec("recover", _recover_cfg, _run_recover, "fine-tune the current model by distillation from the root"),
    StepSpec("prune", _prune_cfg, _run_prune, "structured (heads, FFN, CNN, layers) or unstructured pruning"),
    StepSpec("export", _export_cfg, _run_export, "PyTorch → ONNX with a parity check"),
    StepSpec("quantize", _quantize_cfg, _run_quantize, "bf16 / int8 dynamic+static / int4 weight-only"),
)}


def get_step(kind: str) -> StepSpec:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown step kind {kind!r}; known: {', '.join(REGISTRY)}") from None


def parse_chain(text: str) -> list[dict]:
    """'prune(heads=.5,ffn=.5)->quantize(int8)' → [{'kind': 'prune', 'heads': 0.5, ...}, ...] (whatif syntax).

    A bare positional argument is the step's main option: quantize(x) → method x."""
    import ast
    import re

    steps = []
    for part in [p.strip() for p in text.split("->") if p.strip()]:
        m = re.fullmatch(r"(\w+)\s*(?:\((.*)\))?", part)
        if not m:
            raise ValueError(f"bad recipe step {part!r}: expected name(key=value,...)")
        d: dict[str, Any] = {"kind": m.group(1)}
        for arg in [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]:
            if "=" in arg:
                k, v = (s.strip() for s in arg.split("=", 1))
            else:
                k, v = "method", arg
            try:
                d[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                d[k] = v
        steps.append(d)
    if not steps:
        raise ValueError("empty recipe")
    return steps
