"""FLOPs counted, not estimated, as 2 x multiply-accumulates of Conv/MatMul-like ops (norms, activations
and softmax are left out): PyTorch with `torch.utils.flop_counter.FlopCounterMode` (plus CPU SDPA and
dynamic-int8 Linear, which it does not know), ONNX from the graph after shape inference for the given
input length (Conv/ConvInteger/QLinearConv, MatMul/Gemm/MatMulInteger/QLinearMatMul/MatMulNBits). Both
split them into `conv` (CNN feature encoder + positional conv), `linear` (weight GEMMs) and `attention`.

Also read from the ONNX graph without loading weights: parameters, precision label and size on disk.
"""

from __future__ import annotations

import math
from pathlib import Path

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


def load_graph(path: Path):
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
