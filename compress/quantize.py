"""Quantize step: one config, seven methods over two runtimes.

ONNX Runtime methods take an ONNX artifact (put `export` before them):
- `ort_dynamic_int8`: MatMul only, weights int8 per channel, activations quantized at run time
  (optimum ORTQuantizer, AVX512-VNNI preset). No data. Dynamic ConvInteger is slow on CPU, hence MatMul only.
- `ort_static_int8`: QDQ, Conv + MatMul, u8 activations / s8 per-channel weights, ranges calibrated (MinMax by
  default) on a few utterances. Needs export's folded weight_norm (conv weights must be initializers).
- `ort_int4`: MatMulNBits weight-only, block 32. `int4_algo="rtn"` is ORT's default blockwise
  round-to-nearest; `"gptq"` is data-aware (ORT's bundled GPTQ, calibrated, symmetric); `"hqq"` is
  data-free half-quadratic fitting.

PyTorch methods take a PyTorch artifact; each stores ordinary `save_pretrained` weights plus a small record,
`w2vc_runtime.json` (a torch+runtime artifact), that `w2vc.core.load` turns into the measured model:
- `torch_dynamic_int8`: `torch.ao.quantization.quantize_dynamic` on nn.Linear. Stored as the parent's fp32
  weights; the (deterministic) quantization is re-applied on load, which keeps pruned shapes loadable by
  `load_pretrained`. The report gives the real quantized size (`quantized_size_mb`: the serialized int8
  state dict), since the directory holds fp32.
- `inc_int4_rtn` / `inc_int4_gptq`: neural-compressor 3.x weight-only int4 (group 32) on Linear. Stored as
  the dequantized ("fake-quantized") fp32 weights, exactly the values INC's CPU `INCWeightOnlyLinear` recovers
  and multiplies with in fp32 at run time; INC's own `load()` would need the original fp32 model object to
  rebuild. The packed int4 size is reported as `quantized_size_mb`.
- `bf16`: weights saved in bfloat16 (half the size, no data): the baseline every int8/int4 candidate is
  measured against.

Layers kept in higher precision are named in `keep_fp32` (module-path globs: "lm_head", "*.attention",
"wav2vec2.feature_extractor.conv_layers.0"; ONNX node names are mapped to the module paths they came from,
and a pattern with "/" matches raw node names). Unset, it takes the method's measured default.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import torch

from w2vc.core.artifact import ANY_TORCH, Artifact, Kind, copy_processor_files, finalize
from w2vc.core.card import write_model_card
from w2vc.core.config import ConfigBase
from w2vc.core.load import load_torch
from w2vc.core.runnable import normalize_audio
from w2vc.core.runtime import write_runtime
from w2vc.core.step import StepContext, register
from w2vc.data.datasets import load_audio_set

STEP = "quantize"
ORT_METHODS = ("ort_dynamic_int8", "ort_static_int8", "ort_int4")
TORCH_METHODS = ("torch_dynamic_int8", "inc_int4_rtn", "inc_int4_gptq", "bf16")
METHODS = ORT_METHODS + TORCH_METHODS
NEEDS_DATA = ("ort_static_int8", "inc_int4_gptq")
_DEFAULT_OPS = {"ort_dynamic_int8": ("MatMul",), "ort_static_int8": ("Conv", "MatMul"),
                "ort_int4": ("MatMul",)}
# Measured on the large-s teacher (30 test utterances, transcripts vs the fp32 source): keeping the
# attention-score products (QK^T, attn·V: activation × activation) in fp32 raised identical transcripts
# from 53 % to 73 % (static) and 77 % to 83 % (dynamic), and made dynamic int8 faster (28 → 21 ms: no
# run-time quantization of small matrices). conv_layers.0 reads the raw waveform: 8-bit activations there
# are 8-bit audio (SQNR 7 → 29 dB on a test model when it stays fp32), for negligible compute.
_SCORES = "*/attention/MatMul*"
DEFAULT_KEEP_FP32 = {"ort_dynamic_int8": ("lm_head", _SCORES),
                     "ort_static_int8": ("lm_head", _SCORES, "wav2vec2.feature_extractor.conv_layers.0"),
                     "bf16": ()}


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig(ConfigBase):
    """Args:
    method: one of METHODS.
    keep_fp32: module-path globs left unquantized (ONNX nodes matched by the module they were traced from);
        None takes the method's measured default (DEFAULT_KEEP_FP32, else ("lm_head",)).
    ops: ONNX op types to quantize; () takes the method's default (dynamic: MatMul; static: Conv, MatMul).
    per_channel: int8 weight scales per output channel (ORT methods).
    bits / block_size: weight-only width and group size (ort_int4, inc_int4_*).
    symmetric: symmetric int4 weights (ORT int4; INC uses it too).
    int4_algo: ort_int4 only: "rtn" (default), "gptq" (calibrated), "hqq" (data-free).
    accuracy_level: ort_int4 MatMulNBits compute type (None = ORT default, 4 = int8 activations).
    calibration_data / calibration_split / calibration_count: utterances for static int8 ranges and GPTQ.
    calibrate_method: "minmax", "entropy" or "percentile" (ort_static_int8).
    """

    method: str
    keep_fp32: tuple[str, ...] | None = None
    ops: tuple[str, ...] = ()
    per_channel: bool = True
    bits: int = 4
    block_size: int = 32
    symmetric: bool = False
    int4_algo: str = "rtn"
    accuracy_level: int | None = None
    calibration_data: str | None = None
    calibration_split: str = "dev"
    calibration_count: int = 16
    calibrate_method: str = "minmax"
    version: int = 1

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown quantize method {self.method!r}; known: {', '.join(METHODS)}")
        keep = DEFAULT_KEEP_FP32.get(self.method, ("lm_head",)) if self.keep_fp32 is None else self.keep_fp32
        object.__setattr__(self, "keep_fp32", tuple(keep))
        object.__setattr__(self, "ops", tuple(self.ops) or _DEFAULT_OPS.get(self.method, ()))
        if self.method == "bf16" and self.keep_fp32:
            raise ValueError("bf16 keeps no layer in fp32 (mixed dtypes need autocast); pass keep_fp32=()")
        if self.method in ORT_METHODS and not set(self.ops) <= {"MatMul", "Conv", "Gemm"}:
            raise ValueError(f"ops must be among MatMul, Conv, Gemm, got {self.ops}")
        if self.method == "ort_dynamic_int8" and "Conv" in self.ops:
            raise ValueError("dynamic ConvInteger is u8u8-only and slow on CPU: quantize Conv with "
                             "ort_static_int8")
        if self.method in ("ort_int4", "inc_int4_rtn", "inc_int4_gptq"):
            if self.bits not in (2, 4, 8):
                raise ValueError(f"bits must be 2, 4 or 8, got {self.bits}")
            if self.block_size < 16 or self.block_size & (self.block_size - 1):
                raise ValueError(f"block_size must be a power of two >= 16, got {self.block_size}")
        if self.int4_algo not in ("rtn", "gptq", "hqq"):
            raise ValueError(f"int4_algo must be rtn, gptq or hqq, got {self.int4_algo!r}")
        if self.method == "ort_int4" and self.int4_algo == "gptq" and not self.symmetric:
            raise ValueError("ort_int4 gptq needs symmetric=True (ORT 1.32's GPTQ packs asymmetric zero "
                             "points wrongly when K/block_size is odd)")
        if self.calibrate_method not in ("minmax", "entropy", "percentile"):
            raise ValueError("calibrate_method must be minmax, entropy or percentile, "
                             f"got {self.calibrate_method!r}")
        if self.accuracy_level not in (None, 0, 1, 2, 3, 4):
            raise ValueError(f"accuracy_level must be 0..4 or None, got {self.accuracy_level}")
        if self.needs_data and not self.calibration_data:
            what = f"{self.method}/{self.int4_algo}" if self.method == "ort_int4" else self.method
            raise ValueError(f"{what} needs calibration_data (a corpus root, manifest or dataset dir)")
        if self.calibration_count < 1:
            raise ValueError(f"calibration_count must be >= 1, got {self.calibration_count}")

    @property
    def needs_data(self) -> bool:
        return self.method in NEEDS_DATA or (self.method == "ort_int4" and self.int4_algo == "gptq")

    WHAT = "quantize"

    @classmethod
    def data_fields(cls, params: dict) -> tuple[str, ...]:
        m = params.get("method")
        return ("calibration_data",) if m in NEEDS_DATA or (m == "ort_int4" and params.get("int4_algo") == "gptq") \
            else ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keep_fp32"], d["ops"] = list(self.keep_fp32), list(self.ops)
        return d

    # Presets: one short factory per method, tuned for x86 CPUs with AVX512-VNNI.
    @classmethod
    def ort_dynamic_int8(cls, **kw) -> QuantizeConfig:
        return cls(method="ort_dynamic_int8", **kw)

    @classmethod
    def ort_static_int8(cls, calibration_data: str, **kw) -> QuantizeConfig:
        return cls(method="ort_static_int8", calibration_data=calibration_data, **kw)

    @classmethod
    def ort_int4(cls, **kw) -> QuantizeConfig:
        return cls(method="ort_int4", **kw)

    @classmethod
    def ort_int4_gptq(cls, calibration_data: str, **kw) -> QuantizeConfig:
        return cls(method="ort_int4", int4_algo="gptq", symmetric=True, calibration_data=calibration_data,
                   **kw)

    @classmethod
    def torch_dynamic_int8(cls, **kw) -> QuantizeConfig:
        return cls(method="torch_dynamic_int8", **kw)

    @classmethod
    def inc_int4_rtn(cls, **kw) -> QuantizeConfig:
        return cls(method="inc_int4_rtn", **kw)

    @classmethod
    def inc_int4_gptq(cls, calibration_data: str, **kw) -> QuantizeConfig:
        return cls(method="inc_int4_gptq", calibration_data=calibration_data, **kw)

    @classmethod
    def bf16(cls, **kw) -> QuantizeConfig:
        return cls(method="bf16", **kw)


# --- helpers -------------------------------------------------------------------------------------------

def module_path(onnx_node_name: str) -> str:
    """'/wav2vec2/encoder/layers.0/attention/q_proj/MatMul' → 'wav2vec2.encoder.layers.0.attention.q_proj'."""
    return ".".join(onnx_node_name.strip("/").split("/")[:-1])


def matches(name: str, path: str, pattern: str) -> bool:
    """A keep_fp32 pattern names a module and everything under it, anchored at any dotted level
    ("lm_head", "conv_layers.0", "*.attention"); a pattern with "/" is matched against the raw ONNX node name
    ("*/attention/MatMul*": the attention-score products only)."""
    if "/" in pattern:
        return fnmatch(name, pattern)
    return any(fnmatch(path, g) for g in (pattern, "*." + pattern, pattern + ".*", "*." + pattern + ".*"))


def _excluded(names: list[tuple[str, str]], patterns) -> list[str]:
    """Names (of (name, module path) pairs) matching keep_fp32; a pattern that matches nothing is a typo."""
    for p in patterns:
        if not any(matches(n, path, p) for n, path in names):
            raise ValueError(f"keep_fp32 pattern {p!r} matches no quantizable layer "
                             f"(e.g. {', '.join(path for _, path in names[:3])})")
    return [n for n, path in names if any(matches(n, path, p) for p in patterns)]


def _calibration_audio(cfg: QuantizeConfig) -> list[np.ndarray]:
    return load_audio_set(cfg.calibration_data, cfg.calibration_split, cfg.calibration_count)


def _state_dict_mb(model: torch.nn.Module) -> float:
    """Serialized size of a module's state dict: the honest in-memory size of a quantized model."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 2**20


# --- ONNX Runtime methods ------------------------------------------------------------------------------

class _AudioReader:
    """CalibrationDataReader over normalized utterances, one at a time (the ONNX graph takes no mask)."""

    def __init__(self, audio: list[np.ndarray]):
        self.items = [{"input_values": normalize_audio(a)[None]} for a in audio]
        self.i = 0

    def get_next(self):
        self.i += 1
        return self.items[self.i - 1] if self.i <= len(self.items) else None

    def __iter__(self):
        return iter(self.items)

    def rewind(self):
        self.i = 0


def _targets(model, ops) -> list[tuple[str, str]]:
    return [(n.name, module_path(n.name)) for n in model.graph.node if n.op_type in ops]


def onnx_op_counts(path: str | os.PathLike) -> dict:
    """Quantization-relevant node counts of an ONNX graph."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    c = Counter(n.op_type for n in g.node)
    inits = {i.name for i in g.initializer}
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    keys = ("MatMul", "Conv", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear",
            "DequantizeLinear", "QLinearMatMul", "QLinearConv", "MatMulNBits")
    out = {k: c[k] for k in keys if c[k]}
    out["quantized_weights"] = sum(n.op_type == "DequantizeLinear" and n.input[0] in inits for n in g.node)
    out["qdq_matmul_conv"] = sum(n.op_type in ("MatMul", "Conv") and any(i in dq_out for i in n.input)
                                 for n in g.node)
    out["quantized_ops"] = (c["MatMulInteger"] + c["ConvInteger"] + c["QLinearMatMul"] + c["QLinearConv"]
                            + c["MatMulNBits"] + out["qdq_matmul_conv"])
    return out


def quantized_nodes(path: str | os.PathLike, cfg: QuantizeConfig) -> list[tuple[str, str]]:
    """(node name, module path) of every node `cfg`'s ORT method would quantize in the graph at `path`, before
    keep_fp32: the units an accuracy search can keep in float (int4 packs constant weights only)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return [(n.name, module_path(n.name)) for n in g.node if n.op_type in cfg.ops
            and (cfg.method != "ort_int4" or n.input[1] in inits)]


def _ort_quantize(src: Path, cfg: QuantizeConfig, out: Path, calibration_cache: Path | None = None) -> dict:
    import onnx

    model = onnx.load(str(src))
    # patterns are checked against every weight-carrying op, so one keep_fp32 list serves all ops settings
    targeted = {n.name for n in model.graph.node if n.op_type in cfg.ops}
    keep = _excluded(_targets(model, ("MatMul", "Conv", "Gemm")), cfg.keep_fp32)
    exclude = [n for n in keep if n in targeted]
    dst = out / "model.onnx"
    if cfg.method == "ort_dynamic_int8":
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        qc = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=cfg.per_channel,
                                                operators_to_quantize=list(cfg.ops), nodes_to_exclude=exclude)
        ORTQuantizer.from_pretrained(src.parent, file_name=src.name).quantize(qc, out, file_suffix="")
    elif cfg.method == "ort_static_int8":
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        inits = {i.name for i in model.graph.initializer}
        dynamic_w = [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] not in inits]
        if "Conv" in cfg.ops and dynamic_w:
            raise ValueError(f"Conv weight computed at run time in {dynamic_w[0]} (weight_norm not folded): "
                             "export with fold_weight_norm=True first")
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        cached = calibration_cache is not None and Path(calibration_cache).is_file()
        audio = [] if cached else _calibration_audio(cfg)
        if not cached and cfg.calibrate_method != "minmax":  # histogram calibrators stack batches: one length
            n = max(16000, min(len(a) for a in audio))
            audio = [a[:n] for a in audio if len(a) >= n]
        quantize_static(str(src), str(dst), _AudioReader(audio), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(cfg.ops), per_channel=cfg.per_channel, reduce_range=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=exclude,
                        calibrate_method=methods[cfg.calibrate_method],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                        calibration_cache_path=calibration_cache)
    else:  # ort_int4
        from onnxruntime.quantization import matmul_nbits_quantizer as mnb

        if cfg.int4_algo == "gptq":
            # ORT's bundled GPTQ, called directly: MatMulNBitsQuantizer drops nodes_to_exclude on this path.
            from onnxruntime.quantization.neural_compressor import gptq_quantize

            inits = {i.name for i in model.graph.initializer}
            wc = {n.name: {"bits": cfg.bits, "group_size": cfg.block_size, "scheme": "sym"}
                  for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits}
            wc.update({n: "fp32" for n in exclude})
            data = [(d, None) for d in _AudioReader(_calibration_audio(cfg))]
            qmodel = gptq_quantize(model, iter(data), weight_config=wc, num_bits=cfg.bits,
                                   group_size=cfg.block_size, scheme="sym", n_samples=-1,
                                   accuracy_level=cfg.accuracy_level or 0).model
        else:
            algo = None  # DefaultWeightOnlyQuantConfig: blockwise round-to-nearest (min/max per block)
            if cfg.int4_algo == "hqq":
                algo = mnb.HQQWeightOnlyQuantConfig(block_size=cfg.block_size, bits=cfg.bits)
            q = mnb.MatMulNBitsQuantizer(model, bits=cfg.bits, block_size=cfg.block_size,
                                         is_symmetric=cfg.symmetric, accuracy_level=cfg.accuracy_level,
                                         nodes_to_exclude=exclude, op_types_to_quantize=cfg.ops,
                                         algo_config=algo)
            q.process()
            qmodel = q.model.model
        onnx.save(qmodel, str(dst))
    return {"excluded_nodes": exclude}


# --- PyTorch methods -----------------------------------------------------------------------------------

def _linear_names(model: torch.nn.Module) -> list[tuple[str, str]]:
    return [(n, n) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def _save_torch(model, src: Artifact, out: Path, runtime: dict) -> None:
    model.save_pretrained(out)
    copy_processor_files(src.path, out)
    write_runtime(out, runtime)


def _torch_dynamic_int8(src: Artifact, cfg: QuantizeConfig, out: Path) -> dict:
    model, _ = load_torch(src)
    model = model.float().eval()
    names = _linear_names(model)
    keep = set(_excluded(names, cfg.keep_fp32))
    quantized = [n for n, _ in names if n not in keep]
    runtime = {"transform": "torch_dynamic_int8", "dtype": "qint8", "modules": quantized}
    _save_torch(model, src, out, runtime)
    qmodel, _ = load_torch(out)
    n_q = sum(type(m).__name__ == "Linear" and "quantized" in type(m).__module__ for m in qmodel.modules())
    return {"quantized_linear": n_q, "fp32_linear": len(keep), "quantized_size_mb": _state_dict_mb(qmodel)}


def _inc_int4(src: Artifact, cfg: QuantizeConfig, out: Path) -> dict:
    import copy

    from neural_compressor.torch.quantization import GPTQConfig, RTNConfig, convert, prepare

    model, _ = load_torch(src)
    model = model.float().eval()
    names = _linear_names(model)
    keep = _excluded(names, cfg.keep_fp32)
    Cfg = RTNConfig if cfg.method == "inc_int4_rtn" else GPTQConfig
    # use_layer_wise=False: the layer-wise path fails on Wav2Vec2 (get_input_embeddings not handled).
    # model_path: INC's GPTQ resolves it even when not layer-wise, and falls back to a hub download.
    qcfg = Cfg(bits=cfg.bits, group_size=cfg.block_size, use_sym=cfg.symmetric, use_layer_wise=False,
               model_path=str(src.path))
    for n in keep:
        qcfg.set_local(n.replace(".", r"\.") + "$", Cfg(dtype="fp32"))
    from neural_compressor.common import options

    prev_ws = options._workspace  # INC makes ./nc_workspace/<time>/ in the cwd otherwise
    with tempfile.TemporaryDirectory() as ws:
        options.workspace = ws
        try:
            qmodel = prepare(copy.deepcopy(model), qcfg)
            if cfg.method == "inc_int4_gptq":
                with torch.no_grad():
                    for a in _calibration_audio(cfg):
                        qmodel(torch.from_numpy(normalize_audio(a))[None])
            qmodel = convert(qmodel)
        finally:
            options._workspace = prev_ws
    wo = {n: m for n, m in qmodel.named_modules() if type(m).__name__ == "INCWeightOnlyLinear"}
    if not wo:
        raise RuntimeError("neural-compressor quantized no Linear layer")
    with torch.no_grad():  # store exactly what INCWeightOnlyLinear multiplies with on CPU
        for n, m in wo.items():
            lin = model.get_submodule(n)
            lin.weight.copy_(m.recover().float())
            if lin.bias is not None and m.bias is not None:
                lin.bias.copy_(m.bias.float())
    packed_mb = _state_dict_mb(qmodel)
    runtime = {"transform": "fake_quant", "stored": "dequantized fp32 weights (int4 grid values)",
               "bits": cfg.bits, "group_size": cfg.block_size, "modules": sorted(wo),
               "quantized_size_mb": packed_mb}
    _save_torch(model, src, out, runtime)
    return {"quantized_linear": len(wo), "fp32_linear": len(names) - len(wo), "quantized_size_mb": packed_mb}


def _bf16(src: Artifact, cfg: QuantizeConfig, out: Path) -> dict:
    model, _ = load_torch(src)
    _save_torch(model.to(torch.bfloat16), src, out, {"transform": "bf16"})
    return {"dtype": "bfloat16", "quantized_size_mb": Artifact(out).size_mb}


# --- the step ------------------------------------------------------------------------------------------

@register("quantize", QuantizeConfig, frozenset({Kind.TORCH, Kind.ONNX}),
          "bf16 / int8 dynamic+static / int4 weight-only")
def quantize(artifact: Artifact, cfg: QuantizeConfig, out_dir: str | os.PathLike,
             ctx: StepContext | None = None, *,
             calibration_cache: str | os.PathLike | None = None) -> Artifact:
    """Quantize an artifact into a new directory (the input is never modified).

    `calibration_cache` (ort_static_int8 only): a JSON file of tensor ranges, written by the first call and
    read by later ones instead of calibrating again; ranges do not depend on keep_fp32, so an accuracy search
    builds its many trial graphs of one parent from one calibration. Unset, the step calibrates as always."""
    if cfg.method in ORT_METHODS:
        artifact.require(frozenset({Kind.ONNX}), f"quantize {cfg.method}", "run export first")
    else:
        artifact.require(frozenset({Kind.TORCH}), f"quantize {cfg.method}",
                         "already quantized: quantize its fp32 parent instead" if artifact.kind in ANY_TORCH
                         else "quantize before export")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory is not empty: {out}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        if cfg.method in ORT_METHODS:
            src = artifact.model_file
            if onnx_op_counts(src)["quantized_ops"]:
                raise ValueError(f"{artifact.path} is already quantized; quantize its fp32 export instead")
            report = _ort_quantize(src, cfg, out, Path(calibration_cache) if calibration_cache else None)
            shutil.copy2(artifact.path / "config.json", out / "config.json")
            copy_processor_files(artifact.path, out)
            report["ops"] = onnx_op_counts(out / "model.onnx")
        else:
            report = {"torch_dynamic_int8": _torch_dynamic_int8, "inc_int4_rtn": _inc_int4,
                      "inc_int4_gptq": _inc_int4, "bf16": _bf16}[cfg.method](artifact, cfg, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    report = {"method": cfg.method, "in_size_mb": artifact.size_mb, "size_mb": Artifact(out).size_mb,
              **report}
    if cfg.method in ORT_METHODS:
        write_model_card(out, report, lineage=artifact.provenance.get("lineage", []) + [STEP])
    return finalize(out, STEP, cfg.to_dict(), artifact, report)
