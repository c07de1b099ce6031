"""Cost of running a model on this CPU: latency p50/p90 and real-time factor per audio length (batch 1),
size on disk, parameters, peak resident memory and counted FLOPs — for PyTorch and ONNX Runtime artifacts,
in-memory models, and random-weight presets of the true shapes (`arch="base"|"large"`, labelled cost-only:
latency, size and memory do not depend on weight values, but such a model has no WER).

Why a child process (`measure_cost_isolated`): peak RSS is a per-process high-water mark, so only a fresh
process shows the model's own (runtime libraries included, as on a device), and one measurement cannot warm
or fragment the next one's allocator. `measure_cost` itself runs in the calling process.

FLOPs are counted, not estimated, as 2 x multiply-accumulates of Conv/MatMul-like ops (norms, activations
and softmax are left out): PyTorch with `torch.utils.flop_counter.FlopCounterMode` (plus CPU SDPA and
dynamic-int8 Linear, which it does not know), ONNX from the graph after shape inference for the given
input length (Conv/ConvInteger/QLinearConv, MatMul/Gemm/MatMulInteger/QLinearMatMul/MatMulNBits). Both
split them into `conv` (CNN feature encoder + positional conv), `linear` (weight GEMMs) and `attention`.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
HEADLINE_SECONDS = 3.0
RUNTIMES = ("torch", "onnx")
PRECISIONS = ("fp32", "bf16")


# --- results -------------------------------------------------------------------------------------------

@dataclass
class LengthCost:
    """Latency of one audio length; rtf = latency_p50_ms / 1000 / seconds. `cpu_ms_p50` is the process CPU
    time per run (all threads, spin-waits included): the work done, which other processes competing for the
    cores inflate far less than the wall-clock latency."""

    seconds: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_mean_ms: float
    latency_min_ms: float
    rtf: float
    repeats: int
    cpu_ms_p50: float = 0.0
    gflops: float | None = None


@dataclass
class CostResult:
    """One model's cost on this machine. `lengths` holds one LengthCost per audio length measured."""

    model: str
    runtime: str
    precision: str
    threads: int
    cost_only: bool
    params_m: float
    size_mb: float
    size_source: str
    peak_rss_mb: float
    rss_before_load_mb: float
    rss_isolated: bool
    flops_source: str
    lengths: list[LengthCost]
    cpu: str
    warmup: int
    arch: str | None = None
    load_seconds: float = 0.0
    gflops_by_kind: dict[str, float] = field(default_factory=dict)
    quantized_size_mb: float | None = None
    load_avg_1m: float | None = None
    notes: list[str] = field(default_factory=list)

    def at(self, seconds: float) -> LengthCost:
        for lc in self.lengths:
            if math.isclose(lc.seconds, seconds):
                return lc
        raise KeyError(f"{self.model}: no measurement at {seconds:g} s (have {_secs(self.lengths)})")

    @property
    def headline(self) -> LengthCost:
        """The 3 s figures when measured (the seed's reference length), else the first length."""
        return next((lc for lc in self.lengths if math.isclose(lc.seconds, HEADLINE_SECONDS)), self.lengths[0])

    @property
    def latency_p50_ms(self) -> float:
        return self.headline.latency_p50_ms

    @property
    def latency_p90_ms(self) -> float:
        return self.headline.latency_p90_ms

    @property
    def rtf(self) -> float:
        return self.headline.rtf

    @property
    def gflops(self) -> float | None:
        return self.headline.gflops

    def metrics(self) -> dict[str, float]:
        """Flat figures for MLflow/Pareto: headline (3 s) names plus `_<s>s`-suffixed ones per length."""
        h = self.headline
        m = {"latency_p50_ms": h.latency_p50_ms, "latency_p90_ms": h.latency_p90_ms, "rtf": h.rtf,
             "cpu_ms_p50": h.cpu_ms_p50, "size_mb": self.size_mb, "params_m": self.params_m, "peak_rss_mb": self.peak_rss_mb}
        if h.gflops is not None:
            m["gflops"] = h.gflops
        if self.quantized_size_mb is not None:
            m["quantized_size_mb"] = self.quantized_size_mb
        for lc in self.lengths:
            s = f"_{lc.seconds:g}s"
            m.update({f"latency_p50_ms{s}": lc.latency_p50_ms, f"latency_p90_ms{s}": lc.latency_p90_ms,
                      f"rtf{s}": lc.rtf, f"cpu_ms_p50{s}": lc.cpu_ms_p50})
            if lc.gflops is not None:
                m[f"gflops{s}"] = lc.gflops
        return m

    def params(self) -> dict:
        return {"model": self.model, "arch": self.arch, "runtime": self.runtime, "precision": self.precision,
                "threads": self.threads, "seconds": _secs(self.lengths), "warmup": self.warmup,
                "repeats": ",".join(str(lc.repeats) for lc in self.lengths), "batch": 1,
                "flops_source": self.flops_source, "size_source": self.size_source,
                "rss_isolated": self.rss_isolated, "load_avg_1m": self.load_avg_1m}

    @property
    def contended(self) -> bool:
        """Other processes wanted the cores while we measured: wall-clock figures are inflated."""
        return self.load_avg_1m is not None and self.load_avg_1m > (os.cpu_count() or 1) + 0.5

    def tags(self) -> dict[str, str]:
        return {"cost_only": str(self.cost_only).lower(), "cpu": self.cpu, "kind": "bench",
                "contended": str(self.contended).lower()}

    def to_dict(self) -> dict:
        return {**asdict(self), "metrics": self.metrics()}

    @classmethod
    def from_dict(cls, d: dict) -> CostResult:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["lengths"] = [LengthCost(**lc) for lc in d["lengths"]]
        return cls(**kw)


def _secs(lengths: Sequence[LengthCost]) -> str:
    return ",".join(f"{lc.seconds:g}" for lc in lengths)


# --- process figures -----------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's resident high-water mark in MiB. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork+exec, so a child started by a big parent would report the parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def default_threads() -> int:
    """What torch and ONNX Runtime pick by themselves: one intra-op thread per physical core."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def noise_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Batch-1 input of `seconds` at 16 kHz: white noise, already zero-mean/unit-variance like the processor's."""
    n = int(round(seconds * SAMPLE_RATE))
    if n < 400:  # the CNN's receptive field (25 ms) is the shortest input that yields a frame
        raise ValueError(f"audio length {seconds:g} s is too short (>= 0.025 s)")
    return np.random.default_rng(seed).standard_normal((1, n)).astype(np.float32)


def time_calls(fn: Callable[[], object], *, warmup: int, repeats: int, min_repeats: int,
               budget_s: float) -> tuple[list[float], list[float]]:
    """Warm-up calls, then timed calls until `repeats`, or `min_repeats` once `budget_s` is spent.
    Returns (wall ms, process CPU ms) per timed call."""
    for _ in range(warmup):
        fn()
    gc.collect()
    wall: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    while len(wall) < repeats and not (len(wall) >= min_repeats and time.perf_counter() - start >= budget_s):
        t0, c0 = time.perf_counter_ns(), time.process_time_ns()
        fn()
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.process_time_ns() - c0) / 1e6)
    return wall, cpu


def _length_cost(seconds: float, timed: tuple[list[float], list[float]]) -> LengthCost:
    wall, cpu = timed
    p50, p90 = (float(v) for v in np.percentile(wall, [50, 90]))
    return LengthCost(seconds=float(seconds), latency_p50_ms=p50, latency_p90_ms=p90,
                      latency_mean_ms=float(np.mean(wall)), latency_min_ms=float(np.min(wall)),
                      rtf=p50 / 1000 / seconds, repeats=len(wall), cpu_ms_p50=float(np.median(cpu)))


# --- FLOPs: PyTorch ------------------------------------------------------------------------------------

def _torch_kind(op: str) -> str:
    if "conv" in op:
        return "conv"
    if "attention" in op or "bmm" in op:
        return "attention"
    return "linear"


def count_torch_flops(model, x) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward (FlopCounterMode), total and by kind (conv / linear / attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def sdpa_cpu(q, k, v, *args, out_shape=None, **kw) -> int:  # CPU SDPA kernel is not in torch's table
        b, h, s_q, d = q
        return 2 * b * h * s_q * k[-2] * d + 2 * b * h * s_q * k[-2] * v[-1]

    def linear_dynamic(x_shape, packed, *args, out_shape=None, **kw) -> int:  # torch dynamic int8 Linear
        return 2 * math.prod(x_shape) * out_shape[-1]

    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu}
    try:
        custom[torch.ops.quantized.linear_dynamic] = linear_dynamic
    except (AttributeError, RuntimeError):
        pass
    # no_grad, not inference_mode: weight_norm's parametrization fails under the counter in inference mode
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as fc:
        model(x)
    by_kind: dict[str, int] = {}
    for op, n in fc.get_flop_counts().get("Global", {}).items():
        k = _torch_kind(str(op))
        by_kind[k] = by_kind.get(k, 0) + int(n)
    return int(fc.get_total_flops()), by_kind


# --- FLOPs and parameters: ONNX graph ------------------------------------------------------------------

_MATMUL_OPS = ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "MatMulIntegerToFloat",
               "DynamicQuantizeMatMul")
_CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}  # op -> index of the weight input
_B_INPUT = {"QLinearMatMul": 3}
# inputs that carry quantization scales / zero points, not weights (excluded from params_m)
_QMETA = {"DequantizeLinear": {1, 2}, "QuantizeLinear": {1, 2}, "MatMulInteger": {2, 3}, "ConvInteger": {2, 3},
          "MatMulNBits": {2, 3, 4}, "QLinearMatMul": {1, 2, 4, 5, 6, 7}, "QLinearConv": {1, 2, 4, 5, 6, 7},
          "DynamicQuantizeMatMul": {2, 3}, "MatMulIntegerToFloat": {2, 3, 4, 5}}


def _load_graph(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)  # dims are all we need; weights stay on disk


def onnx_precision(model_proto) -> str:
    """Label of a graph by its compute: int4 (MatMulNBits), int8 (integer / QDQ ops), fp16 or fp32."""
    ops = {n.op_type for n in model_proto.graph.node}
    if "MatMulNBits" in ops:
        return "int4"
    if ops & {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DequantizeLinear",
              "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}:
        return "int8"
    if any(i.data_type == 10 for i in model_proto.graph.initializer):  # TensorProto.FLOAT16
        return "fp16"
    return "fp32"


def onnx_params(model_proto) -> int:
    """Weight elements stored in the graph (int64 shape constants and quantization scales excluded;
    MatMulNBits' packed int4 weights count K x N). The exporter stores identical tensors once."""
    g = model_proto.graph
    meta, nbits = set(), {}
    for n in g.node:
        for i in _QMETA.get(n.op_type, ()):
            if i < len(n.input):
                meta.add(n.input[i])
        if n.op_type == "MatMulNBits":
            a = {x.name: x.i for x in n.attribute}
            nbits[n.input[1]] = a["K"] * a["N"]
    total = 0
    for t in g.initializer:
        if t.name in meta or t.data_type == 7:  # 7 = INT64
            continue
        total += nbits.get(t.name, math.prod(t.dims))
    return total


def _infer_shapes(model_proto, n_samples: int):
    """Shapes of every value for input [1, n_samples]: onnx's inference, ORT's symbolic one for contrib ops."""
    import copy

    from onnx import shape_inference

    m = copy.deepcopy(model_proto)
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 2:
            for d, v in zip(dims, (1, n_samples)):
                d.ClearField("dim_param")
                d.dim_value = v
    m = shape_inference.infer_shapes(m, data_prop=True)
    if not _counted_shapes_known(m):
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        m = SymbolicShapeInference.infer_shapes(m, auto_merge=True)
    return m


def _shape_table(m) -> dict[str, list]:
    shapes: dict[str, list] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    return shapes


def _counted(m):
    return [n for n in m.graph.node if n.op_type in _MATMUL_OPS or n.op_type in _CONV_OPS
            or n.op_type in ("Gemm", "MatMulNBits")]


def _known(s) -> bool:
    return s is not None and all(isinstance(d, int) and d > 0 for d in s)


def _counted_shapes_known(m) -> bool:
    shapes = _shape_table(m)
    return all(_known(shapes.get(n.output[0])) and _known(shapes.get(n.input[0])) for n in _counted(m))


def count_onnx_flops(model_proto, n_samples: int) -> tuple[int, dict[str, int], int]:
    """FLOPs of one graph run on [1, n_samples], by kind, and the number of counted nodes whose shapes
    stayed unknown (then the total is a lower bound)."""
    m = _infer_shapes(model_proto, n_samples)
    shapes = _shape_table(m)
    by_kind = {"conv": 0, "linear": 0, "attention": 0}
    unknown = 0
    for n in _counted(m):
        out, a = shapes.get(n.output[0]), shapes.get(n.input[0])
        if not (_known(out) and _known(a)):
            unknown += 1
            continue
        attrs = {x.name: x for x in n.attribute}
        if n.op_type in _CONV_OPS:
            w = shapes.get(n.input[_CONV_OPS[n.op_type]])
            if not _known(w):
                unknown += 1
                continue
            by_kind["conv"] += 2 * math.prod(out) * math.prod(w[1:])
        elif n.op_type == "MatMulNBits":
            by_kind["linear"] += 2 * math.prod(out) * attrs["K"].i
        elif n.op_type == "Gemm":
            trans_a = attrs["transA"].i if "transA" in attrs else 0
            by_kind["linear"] += 2 * math.prod(out) * a[0 if trans_a else 1]
        else:
            b = shapes.get(n.input[_B_INPUT.get(n.op_type, 1)])
            trans_a = "transA" in attrs and attrs["transA"].i  # FusedMatMul
            k = a[-2] if trans_a else a[-1]
            kind = "linear" if b is None or len(b) <= 2 else "attention"  # weights are 2-D, activations 3-/4-D
            by_kind[kind] += 2 * math.prod(out) * k
    return sum(by_kind.values()), by_kind, unknown


def onnx_size_mb(onnx_file: Path, model_proto) -> float:
    """The graph file plus the external-data files its initializers point to (Artifact.size_mb for one graph)."""
    files = {onnx_file}
    for t in model_proto.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                files.add(onnx_file.parent / kv.value)
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


def pick_onnx_file(path: Path) -> Path:
    """Same rule as OnnxTranscriber: model.onnx, else the first *.onnx by name (what eval scores)."""
    if path.is_file():
        return path
    files = sorted(path.glob("*.onnx"))
    if not files:
        raise FileNotFoundError(f"no .onnx file in {path}")
    return next((f for f in files if f.name == "model.onnx"), files[0])


# --- torch model loading -------------------------------------------------------------------------------

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


def state_dict_mb(model) -> float:
    """Would-be safetensors size of an in-memory model: bytes of its state-dict tensors, in MiB."""
    import torch

    seen, total = set(), 0
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor) and not t.is_quantized and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**20


def _torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _build_preset(arch: str, precision: str, seed: int):
    """Random weights of a preset shape, built directly in the target dtype (no fp32 transient in peak RSS)."""
    import torch

    from w2vc.models import new_model

    old = torch.get_default_dtype()
    torch.set_default_dtype(_torch_dtype(precision))
    try:
        model, _ = new_model(arch, seed=seed)
    finally:
        torch.set_default_dtype(old)
    return model


def _load_torch_dir(path: Path, precision: str | None, notes: list[str]):
    """(model, precision label, size_mb, size_source) of a save_pretrained directory, as eval would run it."""
    from w2vc.artifact import Artifact
    from w2vc.models import load_pretrained

    runtime_rec = json.loads((path / "w2vc_runtime.json").read_text()) if (path / "w2vc_runtime.json").exists() else {}
    transform = runtime_rec.get("transform")
    stored = safetensors_dtype(path) or "fp32"
    if transform == "bf16":
        stored = "bf16"
    if precision and transform in ("torch_dynamic_int8", "fake_quant"):
        raise ValueError(f"{path} is {transform} (w2vc_runtime.json); --precision only applies to float models")
    # fp16 on disk is a storage format (committed models are packed so); CPUs run those weights as fp32
    target = precision or ("fp32" if stored == "fp16" else stored)
    model, _ = load_pretrained(path, dtype=_torch_dtype(target))
    label = target
    if transform:
        from w2vc.compress.quantize import apply_runtime

        model = apply_runtime(model, path)
        label = {"torch_dynamic_int8": "int8-dynamic", "fake_quant": "int4-fake-quant"}.get(transform, label)
        if transform == "fake_quant":
            notes.append("INC int4 stored as dequantized fp32 weights: runs (and costs) as fp32")
    if target == stored:
        return model, label, Artifact(path).size_mb, "disk"
    return model, label, state_dict_mb(model), f"parameters ({target}; disk holds {stored})"


# --- measurement ---------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CostConfig:
    """Args:
    runtime: "torch" or "onnx"; None picks by artifact (a directory with *.onnx is ONNX).
    precision: "fp32" or "bf16" (torch: weights cast); None = as stored / as the artifact runs.
    seconds: audio lengths (s) to time, batch 1.
    threads: intra-op threads (torch and ORT); None = one per physical core, set explicitly either way.
    warmup: untimed runs per length.
    repeats: timed runs per length, at most; at least `min_repeats`, stopping early past `budget_s`.
    count_flops: count FLOPs per length (one extra forward each, after the memory peak is read).
    seed: seed of the noise audio and of random preset weights.
    """

    runtime: str | None = None
    precision: str | None = None
    seconds: tuple[float, ...] = (HEADLINE_SECONDS,)
    threads: int | None = None
    warmup: int = 2
    repeats: int = 10
    min_repeats: int = 3
    budget_s: float = 20.0
    count_flops: bool = True
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "seconds", tuple(float(s) for s in self.seconds))
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.seconds or any(s <= 0 for s in self.seconds):
            raise ValueError(f"seconds must be positive audio lengths, got {self.seconds}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.warmup < 0 or self.min_repeats < 1 or self.repeats < self.min_repeats or self.budget_s <= 0:
            raise ValueError("need warmup >= 0, 1 <= min_repeats <= repeats, budget_s > 0")

    def to_dict(self) -> dict:
        return asdict(self)


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
    is_onnx = path is not None and (path.suffix == ".onnx" or any(path.glob("*.onnx")))
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
        return _measure_onnx(path, cfg, **common)
    return _measure_torch(model, path, cfg, **common)


def _measure_torch(model, path: Path | None, cfg: CostConfig, *, name, arch, threads, notes, cost_only):
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

        load_avg = _load_avg()
        lengths = []
        for s in cfg.seconds:
            x = torch.from_numpy(noise_audio(s, cfg.seed)).to(dtype)

            def run(x=x):
                with torch.inference_mode():
                    model(x)

            lengths.append(_length_cost(s, time_calls(run, warmup=cfg.warmup, repeats=cfg.repeats,
                                                      min_repeats=cfg.min_repeats, budget_s=cfg.budget_s)))
        peak = peak_rss_mb()  # before FLOP counting, whose dispatch-mode forward is no part of the model's cost
        by_kind: dict[str, float] = {}
        flops_source = "not counted"
        if cfg.count_flops:
            try:
                for lc in lengths:
                    x = torch.from_numpy(noise_audio(lc.seconds, cfg.seed)).to(dtype)
                    total, kinds = count_torch_flops(model, x)
                    lc.gflops = total / 1e9
                    if lc is _headline_of(lengths):
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
                      gflops_by_kind=by_kind, quantized_size_mb=_quantized_size(path), load_avg_1m=load_avg,
                      notes=notes)


def _measure_onnx(path: Path, cfg: CostConfig, *, name, arch, threads, notes, cost_only):
    import onnxruntime as ort

    onnx_file = pick_onnx_file(path)
    graph = _load_graph(onnx_file)
    precision = onnx_precision(graph)
    if cfg.precision and cfg.precision != precision:
        raise ValueError(f"{onnx_file} is a {precision} graph; ONNX Runtime measures graphs as stored "
                         f"(--precision converts PyTorch models only)")
    if onnx_file.is_file() and len(list(onnx_file.parent.glob("*.onnx"))) > 1:
        notes.append(f"several graphs in {onnx_file.parent}; measured {onnx_file.name} (as eval does)")
    size = onnx_size_mb(onnx_file, graph)
    params = onnx_params(graph)
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in graph.graph.input]
    del graph  # the weights stay out of the measured peak (dims only were loaded anyway)
    gc.collect()

    rss0 = rss_mb()
    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # as OnnxTranscriber runs it
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    out_name = session.get_outputs()[0].name

    load_avg = _load_avg()
    lengths = []
    for s in cfg.seconds:
        x = noise_audio(s, cfg.seed)
        feeds = {"input_values": x}
        if any(n == "attention_mask" for n, _ in inputs):
            feeds["attention_mask"] = np.ones_like(x, dtype=np.int64)
        lengths.append(_length_cost(s, time_calls(lambda f=feeds: session.run([out_name], f), warmup=cfg.warmup,
                                                  repeats=cfg.repeats, min_repeats=cfg.min_repeats,
                                                  budget_s=cfg.budget_s)))
    peak = peak_rss_mb()
    session = None  # free the runtime's memory before counting FLOPs
    by_kind: dict[str, float] = {}
    flops_source = "not counted"
    if cfg.count_flops:
        try:
            graph = _load_graph(onnx_file)
            for lc in lengths:
                total, kinds, unknown = count_onnx_flops(graph, int(round(lc.seconds * SAMPLE_RATE)))
                lc.gflops = total / 1e9
                if unknown:
                    notes.append(f"{unknown} counted nodes without inferred shapes at {lc.seconds:g} s: "
                                 "GFLOPs is a lower bound")
                if lc is _headline_of(lengths):
                    by_kind = {k: v / 1e9 for k, v in kinds.items()}
            flops_source = "onnx graph (Conv/MatMul/Gemm/*Integer/QLinear*/MatMulNBits after shape inference)"
        except Exception as e:  # shape inference can fail on exotic graphs; latency and size still stand
            notes.append(f"FLOPs not counted: {type(e).__name__}: {e}")
    return CostResult(model=name, runtime="onnx", precision=precision, threads=threads, cost_only=cost_only,
                      params_m=params / 1e6, size_mb=size, size_source="disk", peak_rss_mb=peak,
                      rss_before_load_mb=rss0, rss_isolated=False, flops_source=flops_source, lengths=lengths,
                      cpu=_cpu(), warmup=cfg.warmup, arch=arch, load_seconds=load_s, gflops_by_kind=by_kind,
                      quantized_size_mb=None, load_avg_1m=load_avg, notes=notes)


def _headline_of(lengths: list[LengthCost]) -> LengthCost:
    return next((lc for lc in lengths if math.isclose(lc.seconds, HEADLINE_SECONDS)), lengths[0])


def _load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


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


# --- isolation -----------------------------------------------------------------------------------------

def _child_measure(model, arch, cfg_dict, name, cost_only) -> CostResult:
    res = measure_cost(model, arch=arch, cfg=CostConfig(**cfg_dict), name=name, cost_only=cost_only)
    res.rss_isolated = True
    return res


def run_isolated(fn: Callable, *args):
    """Call a module-level function in a fresh Python process and return its result (errors re-raised).

    A plain subprocess, not multiprocessing: it never re-imports the caller's __main__, so scripts need no
    `if __name__ == "__main__"` guard. Arguments and result travel as pickles in a temp directory."""
    import pickle
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="w2vc-cost-") as td:
        job, out = Path(td) / "job.pkl", Path(td) / "out.pkl"
        job.write_bytes(pickle.dumps((fn, args)))
        proc = subprocess.run([sys.executable, "-c", f"from w2vc.eval.cost import _child_main; _child_main({td!r})"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if not out.exists():
            tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
            raise RuntimeError(f"the measuring process died (exit {proc.returncode}; out of memory?): {tail}")
        ok, value = pickle.loads(out.read_bytes())
    if not ok:
        raise value
    return value


def _child_main(td: str) -> None:
    import pickle

    fn, args = pickle.loads((Path(td) / "job.pkl").read_bytes())
    try:
        res = (True, fn(*args))
    except Exception as e:  # sent back and re-raised in the parent
        res = (False, e)
    (Path(td) / "out.pkl").write_bytes(pickle.dumps(res))


def measure_cost_isolated(model: str | os.PathLike | None = None, *, arch: str | None = None,
                          cfg: CostConfig | None = None, name: str | None = None, cost_only: bool | None = None,
                          **overrides) -> CostResult:
    """`measure_cost` in a fresh spawned process: peak RSS is the model's own (runtime included) and one
    measurement cannot disturb the next. `model` must be a path here (or use `arch`)."""
    if model is not None and not isinstance(model, str | os.PathLike):
        raise TypeError("measure_cost_isolated takes a path or an arch; save in-memory models first "
                        "(or call measure_cost in this process)")
    cfg = cfg or CostConfig()
    if overrides:
        cfg = CostConfig(**{**cfg.to_dict(), **overrides})
    return run_isolated(_child_measure, str(model) if model is not None else None, arch, cfg.to_dict(), name,
                        cost_only)


def export_model_onnx(model, out_dir: str | os.PathLike, processor=None) -> Path:
    """An in-memory Wav2Vec2ForCTC → an ONNX directory via optimum, for cost measurement only (no parity
    check, unlike compress.export). Folds weight_norm IN PLACE, as compress.export does (outputs unchanged):
    folding a deepcopy instead would break the original, whose parametrized class the copy shares."""
    from optimum.exporters.onnx import onnx_export_from_model

    from w2vc.compress.export import fold_weight_norm

    model = model.float().eval()
    fold_weight_norm(model)
    out = Path(out_dir)
    onnx_export_from_model(model, out, task="automatic-speech-recognition", do_validation=False)
    if processor is not None:
        processor.save_pretrained(out)
    return out


def export_preset_onnx(arch: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A random-weight preset as an ONNX directory, so ONNX Runtime cost of the true shapes can be measured."""
    from w2vc.models import new_model

    model, processor = new_model(arch, seed=seed)
    return export_model_onnx(model, out_dir, processor)


# --- report --------------------------------------------------------------------------------------------

def cost_table(results: Sequence[CostResult]) -> str:
    """Markdown table in the seed's Base-vs-Large shape; RTF and GFLOPs at the headline (3 s) length."""
    secs = sorted({lc.seconds for r in results for lc in r.lengths})
    h = _headline_of(results[0].lengths).seconds
    head = (["model", "runtime", "params"] + [f"p50/p90 ms @{s:g}s" for s in secs]
            + [f"RTF @{h:g}s", f"CPU ms @{h:g}s", "size MB", "peak RSS MB", f"GFLOPs @{h:g}s"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lat = []
        for s in secs:
            try:
                lc = r.at(s)
                lat.append(f"{lc.latency_p50_ms:.0f} / {lc.latency_p90_ms:.0f}")
            except KeyError:
                lat.append("-")
        g = _num(r.gflops) if r.gflops is not None else "-"
        label = r.model + (" (cost-only)" if r.cost_only else "")
        rows.append("| " + " | ".join([label, f"{r.runtime} {r.precision}", f"{_num(r.params_m)} M", *lat,
                                        f"{r.rtf:.3f}", f"{r.headline.cpu_ms_p50:.0f}", _num(r.size_mb), f"{r.peak_rss_mb:.0f}", g]) + " |")
    return "\n".join(rows)


def _num(v: float) -> str:
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def ratios(a: CostResult, b: CostResult) -> dict[str, float]:
    """b / a for every shared figure (e.g. large / base)."""
    out = {"params": b.params_m / a.params_m, "size": b.size_mb / a.size_mb, "peak_rss": b.peak_rss_mb / a.peak_rss_mb}
    for lc in a.lengths:
        try:
            other = b.at(lc.seconds)
        except KeyError:
            continue
        out[f"latency_p50_{lc.seconds:g}s"] = other.latency_p50_ms / lc.latency_p50_ms
        if lc.cpu_ms_p50 > 0:
            out[f"cpu_time_{lc.seconds:g}s"] = other.cpu_ms_p50 / lc.cpu_ms_p50
        if lc.gflops and other.gflops:
            out[f"gflops_{lc.seconds:g}s"] = other.gflops / lc.gflops
    return out


def ratio_line(a: CostResult, b: CostResult) -> str:
    r = ratios(a, b)
    parts = [f"params {r['params']:.2f}x"] + [f"latency p50 {v:.2f}x @{k.split('_')[-1]}" for k, v in r.items()
                                              if k.startswith("latency")]
    parts += [f"CPU time {v:.2f}x @{k.split('_')[-1]}" for k, v in r.items() if k.startswith("cpu_time")]
    parts += [f"size {r['size']:.2f}x", f"peak RSS {r['peak_rss']:.2f}x"]
    parts += [f"GFLOPs {v:.2f}x @{k.split('_')[-1]}" for k, v in r.items() if k.startswith("gflops")]
    return f"{b.model}/{a.model}: " + ", ".join(parts)


def log_cost(result: CostResult, experiment: str | None = None, run_name: str | None = None,
             extra_params: dict | None = None, extra_metrics: dict | None = None, tags: dict | None = None,
             parent_run_id: str | None = None):
    """One MLflow run (local JSON fallback) with the result's params, metrics and tags."""
    from w2vc.eval.tracking import DEFAULT_EXPERIMENT, log_run

    name = run_name or f"bench-{Path(result.model).name or result.model}-{result.runtime}-{result.precision}"
    return log_run(name, {**result.params(), **(extra_params or {})}, {**result.metrics(), **(extra_metrics or {})},
                   {**result.tags(), **(tags or {})}, text_artifacts={"cost.json": json.dumps(result.to_dict(),
                                                                                               indent=1)},
                   experiment=experiment or DEFAULT_EXPERIMENT, parent_run_id=parent_run_id)


# --- `w2vc bench` --------------------------------------------------------------------------------------

def parse_seconds(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seconds takes comma-separated numbers, e.g. 1,3,10 (got {text!r})") from None
    if not out:
        raise ValueError("--seconds is empty")
    return out


def bench_command(a) -> int:
    """Body of `w2vc bench` (w2vc/cli.py holds its parser)."""
    from w2vc.models import PRESETS

    archs = [s.strip() for s in (a.arch or "").split(",") if s.strip()]
    for arch in archs:
        if arch not in PRESETS:
            raise ValueError(f"unknown arch {arch!r}; known: {', '.join(PRESETS)}")
    models = list(a.model or [])
    if not archs and not models:
        raise ValueError("give --model PATH or --arch base|large|large-s|base-s (comma-separated for several)")
    cfg = CostConfig(runtime=a.runtime, precision=a.precision, seconds=parse_seconds(a.seconds), threads=a.threads,
                     warmup=a.warmup, repeats=a.repeats, min_repeats=min(a.min_repeats, a.repeats),
                     budget_s=a.budget, count_flops=not a.no_flops)
    measure = measure_cost if a.in_process else measure_cost_isolated
    results: list[CostResult] = []
    for arch in archs:
        if cfg.runtime == "onnx":
            with tempfile.TemporaryDirectory(prefix=f"w2vc-bench-{arch}-") as td:
                print(f"exporting random {arch} to ONNX ...", flush=True)
                if a.in_process:
                    export_preset_onnx(arch, td, cfg.seed)
                else:
                    run_isolated(export_preset_onnx, arch, td, cfg.seed)
                r = measure(td, cfg=cfg, name=arch, cost_only=True)
                r.arch = arch
                r.notes.append("random weights exported with optimum onnx_export_from_model (weight_norm folded)")
        else:
            r = measure(arch=arch, cfg=cfg)
        results.append(r)
        print(f"measured {r.model}: {r.latency_p50_ms:.0f} ms p50 @{r.headline.seconds:g}s", flush=True)
    for m in models:
        results.append(measure(m, cfg=cfg))
        print(f"measured {m}", flush=True)

    cost_only = any(r.cost_only for r in results)
    print()
    if cost_only:
        print("COST-ONLY: random weights of the true shapes — latency, size, memory and FLOPs only, no WER")
    threads = sorted({r.threads for r in results})
    print(f"cpu {results[0].cpu}; threads {','.join(map(str, threads))}; batch 1, white-noise audio at 16 kHz; "
          f"peak RSS {'per fresh process' if not a.in_process else 'of this process (not isolated)'}")
    print(cost_table(results))
    busy = [r for r in results if r.contended]
    if busy:
        print(f"warning: load average {max(r.load_avg_1m for r in busy):.1f} on {os.cpu_count()} cores while "
              "measuring: other processes compete, wall-clock latency is inflated and ratios distorted; "
              "CPU ms (and --threads 1) are the steadier figures")
    ratio_out = {}
    for r in results[1:]:
        print(ratio_line(results[0], r))
        ratio_out[f"{r.model}/{results[0].model}"] = ratios(results[0], r)
    for r in results:
        for n in r.notes:
            print(f"note ({r.model}): {n}")
    if not a.no_mlflow:
        for r in results:
            logged = log_cost(r, experiment=a.experiment)
            if logged.run_id:
                print(f"MLflow run {logged.run_id} ({r.model}); figures also in {logged.local_json}")
    if a.json:
        out = Path(a.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"cost_only": cost_only, "results": [r.to_dict() for r in results],
                                   "ratios": ratio_out}, indent=1, default=str))
        print(f"wrote {out}")
    return 0
