"""Export step: a PyTorch artifact → an ONNX directory that optimum's `ORTModelForCTC.from_pretrained` loads.

The graph is traced from the in-memory model (optimum's `onnx_export_from_model`), so pruned models whose
per-layer sizes no plain `Wav2Vec2Config` can express export as they are. The grouped weight-normed
`pos_conv_embed` is folded first: its weight then becomes an initializer, which static quantization needs.
The graph has optimum's interface: `input_values` → `logits`, no attention mask (ORTModelForCTC passes none),
so an ONNX artifact is run one utterance at a time — the edge case anyway.

A bf16 artifact is exported as an fp32 graph holding the bf16-rounded weights (the upcast is exact; ONNX
Runtime's CPU provider lacks bf16 kernels for most ops). The parity check then compares against the same
upcast weights in PyTorch, and also reports agreement with the bf16 PyTorch run for information.

The parity check is part of the step's contract: greedy transcripts and logits of the ONNX graph are compared
with the source on a few utterances, and an export that misses the thresholds raises `ParityError` and
leaves no output directory behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from w2vc.core.artifact import ANY_TORCH, Artifact, Kind, copy_processor_files, finalize
from w2vc.core.card import write_model_card
from w2vc.core.config import ConfigBase
from w2vc.core.load import load, load_torch
from w2vc.core.runnable import TorchTranscriber, Transcriber, pad_batch
from w2vc.core.shapes import fold_weight_norm
from w2vc.core.step import StepContext, register
from w2vc.data.datasets import load_audio_set, random_audio

STEP = "export"


class ParityError(RuntimeError):
    """The exported graph does not compute what the source model computes."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig(ConfigBase):
    """Args:
    opset: ONNX opset; None takes optimum's default for wav2vec2.
    fold_weight_norm: fold `pos_conv_embed`'s weight_norm so its weight is a plain initializer.
    parity_data: a w2vc corpus root, a manifest or a dataset directory for the parity check; None uses
        random audio only.
    parity_split: split of a corpus root to read (e.g. "dev").
    parity_count: utterances taken from `parity_data`.
    parity_random: random-noise clips always added (1–3 s), so a check runs even without data.
    min_agreement: least fraction of utterances whose greedy transcripts must be identical.
    max_logit_diff: largest max |Δlogit| allowed over all frames.
    seed: seed of the random clips.
    """

    opset: int | None = None
    fold_weight_norm: bool = True
    parity_data: str | None = None
    parity_split: str = "dev"
    parity_count: int = 8
    parity_random: int = 2
    min_agreement: float = 0.9
    max_logit_diff: float = 1e-3
    seed: int = 0
    version: int = 1

    def __post_init__(self):
        if self.opset is not None and not 14 <= self.opset <= 23:
            raise ValueError(f"opset must be in 14..23, got {self.opset}")
        if self.parity_count < 0 or self.parity_random < 0:
            raise ValueError("parity_count and parity_random must be >= 0")
        if self.parity_random + (self.parity_count if self.parity_data else 0) == 0:
            raise ValueError("the parity check needs at least one utterance (parity_random or parity_data)")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1], got {self.min_agreement}")
        if self.max_logit_diff <= 0:
            raise ValueError(f"max_logit_diff must be > 0, got {self.max_logit_diff}")

    WHAT = "export"

    @classmethod
    def data_fields(cls, params: dict) -> tuple[str, ...]:
        return ("parity_data",)


# --- comparing two transcribers ------------------------------------------------------------------------

def compare_outputs(ref: Transcriber, test: Transcriber, audio: Sequence[np.ndarray]) -> dict:
    """Logit and greedy-transcript agreement of `test` with `ref`, one utterance at a time (no padding)."""
    agree, frames_same, frames, max_diff, cos, sig, err = 0, 0, 0, 0.0, [], 0.0, 0.0
    for a in audio:
        values, _ = pad_batch([a])
        lr = ref.logits(values, None).astype(np.float64)
        lt = test.logits(values, None).astype(np.float64)
        if lr.shape != lt.shape:
            raise ParityError(f"logits shape differs: {lr.shape} vs {lt.shape}")
        t = lr.shape[1]
        agree += ref.decode(lr, [t]) == test.decode(lt, [t])
        frames_same += int((lr.argmax(-1) == lt.argmax(-1)).sum())
        frames += t
        max_diff = max(max_diff, float(np.abs(lr - lt).max()))
        cos.append(float((lr * lt).sum() / (np.linalg.norm(lr) * np.linalg.norm(lt) + 1e-30)))
        sig += float((lr ** 2).sum())
        err += float(((lr - lt) ** 2).sum())
    n = len(audio)
    return {"n": n, "transcript_agreement": agree / n, "frame_agreement": frames_same / max(frames, 1),
            "max_abs_logit_diff": max_diff, "min_cosine": min(cos),
            "sqnr_db": float(10 * np.log10(sig / err)) if err > 0 else float("inf")}


def check_parity(source: Artifact, onnx_dir: str | os.PathLike, cfg: ExportConfig) -> dict:
    """Compare an ONNX directory with its PyTorch source; raise ParityError past the config's thresholds."""
    model, processor = load_torch(source)
    src_dtype = model.dtype
    audio = load_audio_set(cfg.parity_data, cfg.parity_split, cfg.parity_count) + random_audio(
        cfg.parity_random, cfg.seed)
    test = load(onnx_dir, threads=torch.get_num_threads())
    res = compare_outputs(TorchTranscriber(model.float(), processor), test, audio)
    if src_dtype != torch.float32:  # informative: how the fp32 graph relates to the source's own dtype
        ref = TorchTranscriber(model.to(src_dtype), processor)
        res[f"transcript_agreement_vs_{str(src_dtype).removeprefix('torch.')}"] = compare_outputs(
            ref, test, audio)["transcript_agreement"]
    bad = []
    if res["transcript_agreement"] < cfg.min_agreement:
        bad.append(f"transcript agreement {res['transcript_agreement']:.3f} < {cfg.min_agreement}")
    if not res["max_abs_logit_diff"] <= cfg.max_logit_diff:
        bad.append(f"max |Δlogit| {res['max_abs_logit_diff']:.3g} > {cfg.max_logit_diff}")
    if bad:
        raise ParityError(f"ONNX parity check failed on {res['n']} utterances: {'; '.join(bad)}")
    return res


# --- the step ------------------------------------------------------------------------------------------

def _onnx_summary(path: Path) -> dict:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    return {"nodes": len(g.node), "matmul": sum(n.op_type == "MatMul" for n in g.node), "conv": len(convs),
            "conv_weights_initializers": all(n.input[1] in inits for n in convs),
            "inputs": [i.name for i in g.input], "outputs": [o.name for o in g.output]}


@register(STEP, ExportConfig, frozenset({Kind.TORCH, Kind.TORCH_RUNTIME}), "PyTorch → ONNX with a parity check")
def export_onnx(artifact: Artifact, cfg: ExportConfig, out_dir: str | os.PathLike, ctx: StepContext | None = None,
                metrics: dict | None = None) -> Artifact:
    """PyTorch artifact → ONNX artifact (model.onnx, config, processor files, README card), parity-checked."""
    from optimum.exporters.onnx import onnx_export_from_model

    artifact.require(ANY_TORCH, STEP, "it is exported already")
    if artifact.transform == "torch_dynamic_int8":
        raise ValueError(f"{artifact.path} is torch dynamic int8 (PyTorch-only); export its fp32 parent, "
                         "then quantize with ort_dynamic_int8")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory is not empty: {out}")
    model, _ = load_torch(artifact)  # bf16 artifacts load as bf16
    src_dtype = str(model.dtype).removeprefix("torch.")
    model = model.float().eval()
    folded = fold_weight_norm(model) if cfg.fold_weight_norm else []
    try:
        onnx_export_from_model(model, out, task="automatic-speech-recognition", opset=cfg.opset,
                               do_validation=False)
        copy_processor_files(artifact.path, out)
        parity = check_parity(artifact, out, cfg)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-made or failed export behind
        raise
    report = {"source_dtype": src_dtype, "exported_dtype": "float32", "weight_norm_folded": folded,
              "in_size_mb": artifact.size_mb, "size_mb": Artifact(out, "onnx").size_mb,
              "graph": _onnx_summary(out / "model.onnx"), "parity": parity}
    lineage = artifact.provenance.get("lineage", []) + [STEP]
    write_model_card(out, report, metrics, lineage)
    return finalize(out, STEP, cfg.to_dict(), artifact, report)
