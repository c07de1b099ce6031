"""The one loader: any artifact (PyTorch, PyTorch + runtime transform, ONNX, a cascade of two of them),
directory or hub id → a runnable model, pruned shapes and runtime transforms applied. Steps, eval and cost
all load through here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from w2vc.core.artifact import Artifact, Kind, kind_of, read_runtime
from w2vc.core.models import load_pretrained
from w2vc.core.ort import onnx_session
from w2vc.core.runnable import OnnxTranscriber, TorchTranscriber, Transcriber
from w2vc.core.runtime import apply_runtime

Source = Artifact | str | os.PathLike


def _path_kind(source: Source) -> tuple[str, Kind, dict]:
    if isinstance(source, Artifact):
        return str(source.path), source.kind, source.runtime
    p = Path(source)
    if p.exists():
        return str(p), kind_of(p), read_runtime(p) if p.is_dir() else {}
    return str(source), Kind.TORCH, {}  # a hub id


def load_torch(source: Source, dtype=None):
    """(model, processor) in eval mode, as the artifact runs: a torch+runtime artifact gets its transform
    (bf16, dynamic int8, fake-quant int4). `dtype` loads a plain float model in that dtype instead of fp32
    (refused for integer transforms: they define their own compute)."""
    path, kind, runtime = _path_kind(source)
    if kind is Kind.ONNX:
        raise ValueError(f"{path} is an ONNX artifact; it runs with ONNX Runtime (w2vc.core.load.load)")
    if kind is Kind.CASCADE:
        raise ValueError(f"{path} is a cascade of two models; run it with w2vc.core.load.load")
    transform = runtime.get("transform")
    if dtype is not None and transform in ("torch_dynamic_int8", "fake_quant"):
        raise ValueError(f"{path} is {transform} ({kind.value}); a dtype only applies to float models")
    model, processor = load_pretrained(path, **({"dtype": dtype} if dtype is not None else {}))
    if transform and not (dtype is not None and transform == "bf16"):
        model = apply_runtime(model, runtime, f"{path}/w2vc_runtime.json")
    return model.eval(), processor


def load(source: Source, threads: int | None = None, **kw) -> Transcriber:
    """A runnable model of any kind. `threads` sets ORT's intra-op threads for ONNX, torch's process-wide
    count for PyTorch. Keywords: `file_name` (ONNX: which graph), `spinning` (ONNX: False when another
    session shares the cores, w2vc.core.ort), `autocast_bf16` (PyTorch). A cascade
    directory gives a CascadeTranscriber over its two members (w2vc.core.cascade)."""
    path, kind, _ = _path_kind(source)
    if kind is Kind.CASCADE:
        from w2vc.core.cascade import load_cascade

        return load_cascade(path, threads, **kw)
    if kind is Kind.ONNX:
        from transformers import Wav2Vec2Processor

        p = Path(path)
        d = p.parent if p.is_file() else p
        session = onnx_session(d, threads, kw.get("file_name") or (p.name if p.is_file() else None),
                               spinning=kw.get("spinning", True))
        config = json.loads((d / "config.json").read_text())
        return OnnxTranscriber(session, Wav2Vec2Processor.from_pretrained(str(d)), config)
    if threads:
        import torch

        torch.set_num_threads(threads)
    model, processor = load_torch(source)
    return TorchTranscriber(model, processor, autocast_bf16=kw.get("autocast_bf16", False))
