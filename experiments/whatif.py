"""`w2vc whatif`: what would a recipe cost on the real Base/Large shape — before any training.

Latency, size and memory do not depend on weight values, so the shape-changing steps (prune, export,
quantize) are applied to the true Hugging Face shape with random weights and measured beside the plain
fp32 shape in the same run. Results are labelled cost-only: no WER is ever shown for them.
Training steps (distill, recover) change no shape and are skipped with a note.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from w2vc.core.artifact import finalize
from w2vc.core.step import STEPS
from w2vc.experiments.recipes import StepContext, get_step, parse_chain

# whatif shorthands → registry steps
QUANT_ALIASES = {"int8": "ort_dynamic_int8", "int8-dynamic": "ort_dynamic_int8", "int8-static": "ort_static_int8",
                 "int4": "ort_int4", "bf16": "bf16", "torch-int8": "torch_dynamic_int8",
                 "inc-int4": "inc_int4_rtn"}
ONNX_METHODS = {"ort_dynamic_int8", "ort_static_int8", "ort_int4"}


def expand_recipe(text: str, data: str | None = None) -> tuple[list[dict], list[str]]:
    """Whatif steps → registry steps (export inserted before ONNX quantization); returns (steps, notes)."""
    steps, notes = [], []
    for s in parse_chain(text):
        kind = s["kind"]
        if kind == "train" or (kind in STEPS and STEPS[kind].keeps_shape):
            notes.append(f"{kind}: changes no shape, skipped for cost")
            continue
        if kind == "quantize":
            method = QUANT_ALIASES.get(s.get("method", "int8"), s.get("method"))
            s = {**s, "method": method}
            if method == "ort_static_int8" and not data:
                raise ValueError("int8-static needs calibration audio: pass --data CORPUS (or use int8 = dynamic)")
            if method in ONNX_METHODS and not any(x["kind"] == "export" for x in steps):
                steps.append({"kind": "export"})
        if kind == "prune":
            s = {**s}
        steps.append(s)
    for s in steps:  # unknown kinds/options fail here, before the (Large: 1.2 GB) random model is built
        get_step(s["kind"]).make_config({k: v for k, v in s.items() if k != "kind"}, data)
    if not steps:
        raise ValueError(f"recipe {text!r} has no shape-changing step (prune, export, quantize)")
    return steps, notes


def whatif(arch: str, recipe: str, seconds=(3.0,), threads: int | None = None, repeats: int = 10,
           data: str | None = None, work_dir: str | None = None, progress: bool = True,
           processes: int = 3) -> dict:
    from w2vc.core.models import get_preset, new_model
    from w2vc.eval.cost import CostConfig, cost_table, ratios
    from w2vc.eval.isolation import CostJob, measure_costs

    get_preset(arch)
    steps, notes = expand_recipe(recipe, data)
    with tempfile.TemporaryDirectory(prefix="w2vc-whatif-", dir=work_dir) as td:
        base = Path(td) / f"{arch}-fp32"
        model, proc = new_model(arch, seed=0)
        model.save_pretrained(base)
        proc.save_pretrained(base)
        del model
        art = finalize(base, "init", {"arch": arch, "weights": "random (cost-only)"}, None)
        ctx = StepContext(root=art, progress=progress)
        rows = [("fp32 (torch)", art)]
        done = []  # shape-changing steps applied so far: the ONNX row is labelled with what it holds
        for i, s in enumerate(steps):
            params = {k: v for k, v in s.items() if k != "kind"}
            if s["kind"] == "export":
                params.setdefault("parity_data", None)
                params.setdefault("max_logit_diff", 1e-2)  # random weights: parity of the graph, not of a task
            else:
                done.append(f"{s['kind']}({','.join(f'{k}={v}' for k, v in params.items())})")
            spec = get_step(s["kind"])
            art = spec(art, spec.make_config(params, data), Path(td) / f"step{i}-{s['kind']}", ctx)
            if s["kind"] == "export":
                rows.append(("->".join(done + ["fp32 (onnx)"]), art))
        rows.append((recipe, art))
        # the bench/sweep methodology: fresh processes per row, interleaved over the rows
        cfg = CostConfig(seconds=tuple(seconds), threads=threads, repeats=repeats, processes=processes,
                         min_time_s=1.0 if processes > 1 else 0.0)
        jobs = [CostJob(f"{arch} {label}", model=str(a.path), cost_only=True) for label, a in rows]
        results = measure_costs(jobs, cfg, progress=progress)
    table = cost_table(results)
    r = ratios(results[0], results[-1])
    return {"arch": arch, "recipe": recipe, "steps": steps, "notes": notes, "cost_only": True,
            "results": [x.to_dict() for x in results], "table": table, "ratio_vs_fp32": r}
