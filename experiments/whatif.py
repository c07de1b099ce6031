"""`w2vc whatif`: what would a recipe cost on the real Base/Large shape — before any training.

Latency, size and memory do not depend on weight values, so the shape-changing steps (prune, export,
quantize) are applied to the true Hugging Face shape with random weights and measured beside the plain
fp32 shape in the same run. Results are labelled cost-only: no WER is ever shown for them.
Training steps (distill, recover) change no shape and are skipped with a note. `shape_of` takes the cut of a
pruned model (learned or one-shot, per-layer widths and kept layers) to the true shape at the same ratios
(`w2vc.core.shapes.transfer_shapes`) instead of a prune step, so a recipe found on the offline models is
costed on Base/Large as it was cut.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from w2vc.core.artifact import Artifact, finalize
from w2vc.core.step import STEPS
from w2vc.experiments.recipes import StepContext, get_step, parse_chain

# whatif shorthands → registry steps
QUANT_ALIASES = {"int8": "ort_dynamic_int8", "int8-dynamic": "ort_dynamic_int8", "int8-static": "ort_static_int8",
                 "int4": "ort_int4", "bf16": "bf16", "torch-int8": "torch_dynamic_int8",
                 "inc-int4": "inc_int4_rtn"}
ONNX_METHODS = {"ort_dynamic_int8", "ort_static_int8", "ort_int4"}


def cut_shapes(pruned: str | Path, original: str | Path | None = None) -> tuple[dict, dict, Path]:
    """(shapes before, shapes after, the unpruned directory) of a structurally pruned model directory. The
    unpruned model is `original`, else the nearest ancestor in its provenance whose config records no cut."""
    from transformers import Wav2Vec2Config

    from w2vc.core.shapes import SHAPES_KEY, config_shapes

    pruned = Path(pruned)
    after_cfg = Wav2Vec2Config.from_pretrained(pruned)
    if not getattr(after_cfg, SHAPES_KEY, None):
        raise ValueError(f"--shape-of {pruned}: its config.json records no structural cut ({SHAPES_KEY})")
    if original is None:
        here = pruned
        while original is None:
            parent = Artifact.open(here).provenance.get("parent")
            if not parent or not (Path(parent) / "config.json").is_file():
                raise ValueError(f"--shape-of {pruned}: no unpruned ancestor found in its provenance "
                                 f"(stopped at {here}); name it with --shape-from DIR")
            here = Path(parent)
            if not getattr(Wav2Vec2Config.from_pretrained(here), SHAPES_KEY, None):
                original = here
    original = Path(original)
    return config_shapes(Wav2Vec2Config.from_pretrained(original)), config_shapes(after_cfg), original


def expand_recipe(text: str, data: str | None = None, shaped: bool = False) -> tuple[list[dict], list[str]]:
    """Whatif steps → registry steps (export inserted before ONNX quantization); returns (steps, notes).
    `shaped`: the model is cut already (`shape_of`), so the recipe may hold no shape-changing step."""
    steps, notes = [], []
    for s in parse_chain(text) if text.strip() else []:
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
    if not steps and not shaped:
        raise ValueError(f"recipe {text!r} has no shape-changing step (prune, export, quantize)")
    return steps, notes


def whatif(arch: str, recipe: str, seconds=(3.0,), threads: int | None = None, repeats: int = 10,
           data: str | None = None, work_dir: str | None = None, progress: bool = True,
           processes: int = 3, shape_of: str | None = None, shape_from: str | None = None) -> dict:
    from w2vc.core.models import get_preset, new_model
    from w2vc.core.shapes import apply_shapes, transfer_shapes
    from w2vc.eval.cost import CostConfig, cost_table, ratios
    from w2vc.eval.isolation import CostJob, measure_costs

    preset = get_preset(arch)
    cut = cut_shapes(shape_of, shape_from) if shape_of else None
    steps, notes = expand_recipe(recipe, data, shaped=cut is not None)
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
        shapes = None
        if cut is not None:
            full = preset.wav2vec2_config()
            shapes = transfer_shapes(cut[0], cut[1], full)
            shaped = Path(td) / f"{arch}-shape-of"
            apply_shapes(full, shapes).save_pretrained(shaped)
            proc.save_pretrained(shaped)
            art = finalize(shaped, "shape_of", {"of": str(shape_of), "from": str(cut[2])}, art)
            done.append(f"shape_of({Path(shape_of).name})")
            rows.append((f"{done[0]} fp32 (torch)", art))
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
        if steps:
            rows.append((f"{done[0]}->{recipe}" if cut else recipe, art))
        # the bench/sweep methodology: fresh processes per row, interleaved over the rows
        cfg = CostConfig(seconds=tuple(seconds), threads=threads, repeats=repeats, processes=processes,
                         min_time_s=1.0 if processes > 1 else 0.0)
        jobs = [CostJob(f"{arch} {label}", model=str(a.path), cost_only=True) for label, a in rows]
        results = measure_costs(jobs, cfg, progress=progress)
    table = cost_table(results)
    r = ratios(results[0], results[-1])
    return {"arch": arch, "recipe": recipe, "steps": steps, "notes": notes, "cost_only": True,
            "shape_of": str(shape_of) if shape_of else None, "shapes": shapes,
            "results": [x.to_dict() for x in results], "table": table, "ratio_vs_fp32": r}
