"""One model measured in this process under PyTorch or ONNX Runtime: loaded as eval runs it (PyTorch
through w2vc.core.load, ONNX with its session options), timed per audio length, its peak RSS read, then its
FLOPs counted (after the peak: the counting forward is no part of the model's cost). `measure_cost`
validates the request and dispatches here.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from w2vc.core.artifact import Artifact, Kind, kind_of, onnx_file
from w2vc.core.ort import onnx_session
from w2vc.eval.cost import CostConfig, CostResult, headline_of
from w2vc.eval.flops import (
    count_onnx_flops,
    count_torch_flops,
    load_graph,
    onnx_params,
    onnx_precision,
    onnx_size_mb,
)
from w2vc.eval.latency import SAMPLE_RATE, default_threads, length_cost, load_avg, noise_audio, time_calls
from w2vc.eval.memory import peak_rss_mb, rss_mb, state_dict_mb


def measure_cost(model=None, *, arch: str | None = None, cfg: CostConfig | None = None, name: str | None = None,
                 cost_only: bool | None = None, **overrides) -> CostResult:
    """Cost of one model in this process. `model`: an artifact directory (PyTorch or ONNX), an .onnx file,
    or an in-memory torch module; or `arch`: a preset shape with random weights (cost-only).
    Config fields may be given as keywords (`seconds=(1, 3), threads=2, ...`) instead of `cfg`.
    Peak RSS here is this process's high-water mark; use `measure_cost_isolated` for the model's own."""
    cfg = cfg or CostConfig()
    if overrides:
        cfg = CostConfig(**{**cfg.to_dict(), **overrides})
    if (model is None) == (arch is None):
        raise ValueError("give exactly one of model (directory, .onnx file or torch module) and arch (preset)")
    threads = cfg.threads or default_threads()
    notes: list[str] = []
    path = Path(model) if isinstance(model, str | os.PathLike) else None
    if path is not None and not path.exists():
        raise FileNotFoundError(f"model not found: {path} (give an artifact directory, an .onnx file, or use arch)")
    is_onnx = path is not None and kind_of(path) is Kind.ONNX
    runtime = cfg.runtime or ("onnx" if is_onnx else "torch")
    if runtime == "onnx" and not is_onnx:
        raise ValueError(f"{name or path or arch or 'this model'} is not an ONNX artifact: export it first "
                         "(compress.export), or use `w2vc bench --arch ... --runtime onnx` for presets")
    if runtime == "torch" and is_onnx:
        raise ValueError(f"{path} is an ONNX artifact; measure it with runtime onnx")
    label = name or (arch if arch else str(path) if path else type(model).__name__)
    common = dict(name=label, arch=arch, threads=threads, notes=notes,
                  cost_only=bool(arch) if cost_only is None else cost_only)
    if runtime == "onnx":
        return measure_onnx(path, cfg, **common)
    return measure_torch(model, path, cfg, **common)


def safetensors_dtype(path: Path) -> str | None:
    """Most common floating dtype in a directory's safetensors headers (read without loading weights)."""
    counts: dict[str, int] = {}
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for k, v in header.items():
            if k != "__metadata__" and v["dtype"] in ("F32", "BF16", "F16"):
                counts[v["dtype"]] = counts.get(v["dtype"], 0) + math.prod(v["shape"])
    if not counts:
        return None
    return {"F32": "fp32", "BF16": "bf16", "F16": "fp16"}[max(counts, key=counts.get)]


def _torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _build_preset(arch: str, precision: str, seed: int):
    """Random weights of a preset shape, built directly in the target dtype (no fp32 transient in peak RSS)."""
    import torch

    from w2vc.core.models import new_model  # transformers: only when a PyTorch model runs

    old = torch.get_default_dtype()
    torch.set_default_dtype(_torch_dtype(precision))
    try:
        model, _ = new_model(arch, seed=seed)
    finally:
        torch.set_default_dtype(old)
    return model


def _load_torch_dir(path: Path, precision: str | None, notes: list[str]):
    """(model, precision label, size_mb, size_source) of a save_pretrained directory, as eval would run it."""
    from w2vc.core.load import load_torch  # torch + transformers: imported only when a PyTorch model runs
    from w2vc.core.runtime import PRECISION_LABEL

    art = Artifact.open(path)
    transform = art.transform
    stored = "bf16" if transform == "bf16" else safetensors_dtype(path) or "fp32"
    if precision and transform in ("torch_dynamic_int8", "fake_quant"):
        raise ValueError(f"{path} is {transform} (w2vc_runtime.json); --precision only applies to float models")
    # fp16 on disk is a storage format (committed models are packed so); CPUs run those weights as fp32
    target = precision or ("fp32" if stored == "fp16" else stored)
    if transform in ("torch_dynamic_int8", "fake_quant"):
        model, _ = load_torch(art)
    else:
        model, _ = load_torch(art, dtype=_torch_dtype(target))
    label = PRECISION_LABEL.get(transform, target) if transform != "bf16" else target
    if transform == "fake_quant":
        notes.append("INC int4 stored as dequantized fp32 weights: runs (and costs) as fp32")
    if target == stored:
        return model, label, art.size_mb, "disk"
    return model, label, state_dict_mb(model), f"parameters ({target}; disk holds {stored})"


# --- measurement ---------------------------------------------------------------------------------------

def measure_torch(model, path: Path | None, cfg: CostConfig, *, name, arch, threads, notes, cost_only):
    """Caller-visible state is restored: torch's thread count, and an in-memory model's mode and dtype
    (a precision change runs on a copy)."""
    import torch

    old_threads = torch.get_num_threads()
    was_training = None
    torch.set_num_threads(threads)
    try:
        rss0 = rss_mb()
        t0 = time.perf_counter()
        precision = cfg.precision or "fp32"
        if arch:
            model = _build_preset(arch, precision, cfg.seed)
            size, size_source = state_dict_mb(model), f"parameters ({precision}, would-be safetensors)"
        elif path is not None:
            model, precision, size, size_source = _load_torch_dir(path, cfg.precision, notes)
        else:
            was_training = model.training
            if cfg.precision and getattr(model, "dtype", None) != _torch_dtype(cfg.precision):
                import copy

                model = copy.deepcopy(model).to(_torch_dtype(cfg.precision))
            precision = str(getattr(model, "dtype", "torch.float32")).removeprefix("torch.")
            precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(precision, precision)
            size, size_source = state_dict_mb(model), "parameters (in memory, would-be safetensors)"
        model.eval()
        load_s = time.perf_counter() - t0
        dtype = getattr(model, "dtype", torch.float32)
        dtype = dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32  # int8 Linear takes fp32
        params = sum(p.numel() for p in model.parameters())
        if precision == "int8-dynamic":
            notes.append("dynamic int8 Linear weights are packed, not parameters: params_m counts the float rest")

        load_avg_1m = load_avg()
        lengths = []
        for s in cfg.seconds:
            x = torch.from_numpy(noise_audio(s, cfg.seed)).to(dtype)

            def run(x=x):
                with torch.inference_mode():
                    model(x)

            lengths.append(length_cost(s, time_calls(run, warmup=cfg.warmup, repeats=cfg.repeats,
                                                      min_repeats=cfg.min_repeats, budget_s=cfg.budget_s,
                                                      min_time_s=cfg.min_time_s)))
        peak = peak_rss_mb()  # before FLOP counting, whose dispatch-mode forward is no part of the model's cost
        by_kind: dict[str, float] = {}
        flops_source = "not counted"
        if cfg.count_flops:
            try:
                for lc in lengths:
                    x = torch.from_numpy(noise_audio(lc.seconds, cfg.seed)).to(dtype)
                    total, kinds = count_torch_flops(model, x)
                    lc.gflops = total / 1e9
                    if lc is headline_of(lengths):
                        by_kind = {k: v / 1e9 for k, v in kinds.items()}
                flops_source = "torch FlopCounterMode (+ CPU SDPA, dynamic int8 Linear)"
            except Exception as e:  # a model the counter cannot trace still has its latency and size
                notes.append(f"FLOPs not counted: {type(e).__name__}: {e}")
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
        if was_training:
            model.train()
    return CostResult(model=name, runtime="torch", precision=precision, threads=used_threads,
                      cost_only=cost_only, params_m=params / 1e6, size_mb=size, size_source=size_source,
                      peak_rss_mb=peak, rss_before_load_mb=rss0, rss_isolated=False, flops_source=flops_source,
                      lengths=lengths, cpu=_cpu(), warmup=cfg.warmup, arch=arch, load_seconds=load_s,
                      gflops_by_kind=by_kind, quantized_size_mb=_quantized_size(path), load_avg_1m=load_avg_1m,
                      notes=notes)


def measure_onnx(path: Path, cfg: CostConfig, *, name, arch, threads, notes, cost_only):
    graph_file = onnx_file(path)
    graph = load_graph(graph_file)
    precision = onnx_precision(graph)
    if cfg.precision and cfg.precision != precision:
        raise ValueError(f"{graph_file} is a {precision} graph; ONNX Runtime measures graphs as stored "
                         f"(--precision converts PyTorch models only)")
    if graph_file.is_file() and len(list(graph_file.parent.glob("*.onnx"))) > 1:
        notes.append(f"several graphs in {graph_file.parent}; measured {graph_file.name} (as eval does)")
    size = onnx_size_mb(graph_file, graph)
    params = onnx_params(graph)
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in graph.graph.input]
    del graph  # the weights stay out of the measured peak (dims only were loaded anyway)
    gc.collect()

    rss0 = rss_mb()
    t0 = time.perf_counter()
    session = onnx_session(graph_file, threads)  # core.ort imports no torch: the peak stays the graph's own
    load_s = time.perf_counter() - t0
    out_name = session.get_outputs()[0].name

    load_avg_1m = load_avg()
    lengths = []
    for s in cfg.seconds:
        x = noise_audio(s, cfg.seed)
        feeds = {"input_values": x}
        if any(n == "attention_mask" for n, _ in inputs):
            feeds["attention_mask"] = np.ones_like(x, dtype=np.int64)
        lengths.append(length_cost(s, time_calls(lambda f=feeds: session.run([out_name], f), warmup=cfg.warmup,
                                                  repeats=cfg.repeats, min_repeats=cfg.min_repeats,
                                                  budget_s=cfg.budget_s, min_time_s=cfg.min_time_s)))
    peak = peak_rss_mb()
    session = None  # free the runtime's memory before counting FLOPs
    by_kind: dict[str, float] = {}
    flops_source = "not counted"
    if cfg.count_flops:
        try:
            graph = load_graph(graph_file)
            for lc in lengths:
                total, kinds, unknown = count_onnx_flops(graph, int(round(lc.seconds * SAMPLE_RATE)))
                lc.gflops = total / 1e9
                if unknown:
                    notes.append(f"{unknown} counted nodes without inferred shapes at {lc.seconds:g} s: "
                                 "GFLOPs is a lower bound")
                if lc is headline_of(lengths):
                    by_kind = {k: v / 1e9 for k, v in kinds.items()}
            flops_source = "onnx graph (Conv/MatMul/Gemm/*Integer/QLinear*/MatMulNBits after shape inference)"
        except Exception as e:  # shape inference can fail on exotic graphs; latency and size still stand
            notes.append(f"FLOPs not counted: {type(e).__name__}: {e}")
    return CostResult(model=name, runtime="onnx", precision=precision, threads=threads, cost_only=cost_only,
                      params_m=params / 1e6, size_mb=size, size_source="disk", peak_rss_mb=peak,
                      rss_before_load_mb=rss0, rss_isolated=False, flops_source=flops_source, lengths=lengths,
                      cpu=_cpu(), warmup=cfg.warmup, arch=arch, load_seconds=load_s, gflops_by_kind=by_kind,
                      quantized_size_mb=None, load_avg_1m=load_avg_1m, notes=notes)


def _cpu() -> str:
    from w2vc.eval.tracking import cpu_model

    return cpu_model()


def _quantized_size(path: Path | None) -> float | None:
    """The packed size a torch int8/int4 quantize step reported: its directory stores float weights."""
    if path is None or not path.is_dir() or not (path / "w2vc_runtime.json").exists():
        return None
    rec = json.loads((path / "w2vc_runtime.json").read_text())
    if rec.get("transform") not in ("torch_dynamic_int8", "fake_quant"):
        return None
    prov = json.loads((path / "w2vc.json").read_text()) if (path / "w2vc.json").exists() else {}
    v = prov.get("report", {}).get("quantized_size_mb", rec.get("quantized_size_mb"))
    return float(v) if v is not None else None
