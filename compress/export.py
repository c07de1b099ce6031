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

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from w2vc.artifact import Artifact, copy_processor_files, finalize
from w2vc.eval.transcribe import TorchTranscriber, Transcriber, pad_batch

STEP = "export"


class ParityError(RuntimeError):
    """The exported graph does not compute what the source model computes."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ExportConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ExportConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


# --- audio for checks (shared with quantize's calibration) ---------------------------------------------

def load_audio_set(data: str | os.PathLike | None, split: str, count: int) -> list[np.ndarray]:
    """The first `count` utterances of a corpus split, a manifest or a dataset directory (16 kHz mono)."""
    if not data or count == 0:
        return []
    from w2vc.eval.datasets import load_dataset, resolve_split

    p = Path(data)
    return load_dataset(p if p.is_file() else resolve_split(p, split), limit=count).audio


def random_audio(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(rng.integers(16000, 48000)))).astype(np.float32) for _ in range(n)]


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
    from w2vc.compress.quantize import load_quantized
    from w2vc.eval.onnx_runtime import OnnxTranscriber

    model, processor = load_quantized(source.path)
    src_dtype = model.dtype
    audio = load_audio_set(cfg.parity_data, cfg.parity_split, cfg.parity_count) + random_audio(
        cfg.parity_random, cfg.seed)
    test = OnnxTranscriber.from_dir(onnx_dir, threads=torch.get_num_threads())
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


# --- model card ----------------------------------------------------------------------------------------

def _table(d: dict) -> str:
    rows = ["| | |", "|---|---|"]
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict | list | tuple):
            v = json.dumps(v, default=str)
        rows.append(f"| {k} | {v} |")
    return "\n".join(rows)


def write_model_card(path: str | os.PathLike, report: dict, metrics: dict | None = None,
                     lineage: Sequence[str] = ()) -> Path:
    """README.md of a deployable bundle: how it was made, its checks, and any measured metrics.

    The sweep calls this again with measured WER/latency once eval has run (README.md is not weights).
    """
    p = Path(path)
    lines = [f"# {p.name}", "", "wav2vec 2.0 CTC model (characters, greedy CTC decoding), built by w2vc.",
             "", "```python", "from optimum.onnxruntime import ORTModelForCTC", "from transformers import "
             "Wav2Vec2Processor", f"model = ORTModelForCTC.from_pretrained({str(p)!r})",
             f"processor = Wav2Vec2Processor.from_pretrained({str(p)!r})", "```", ""]
    if lineage:
        lines += [f"Steps: {' → '.join(lineage)}", ""]
    scalars = {k: v for k, v in report.items() if not isinstance(v, dict)}
    if scalars:
        lines += ["## Build report", "", _table(scalars), ""]
    for k, v in report.items():
        if isinstance(v, dict):
            lines += [f"## {k.replace('_', ' ').capitalize()}", "", _table(v), ""]
    if metrics:
        lines += ["## Measured metrics", "", _table(metrics), ""]
    out = p / "README.md"
    out.write_text("\n".join(lines))
    return out


# --- the step ------------------------------------------------------------------------------------------

def fold_weight_norm(model: torch.nn.Module) -> list[str]:
    """Replace weight_norm (new parametrization or old hook) by the plain weight it computes."""
    from torch.nn.utils import parametrize

    folded = []
    for name, mod in model.named_modules():
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
            folded.append(name)
        elif hasattr(mod, "weight_g") and hasattr(mod, "weight_v"):
            torch.nn.utils.remove_weight_norm(mod)
            folded.append(name)
    return folded


def _onnx_summary(path: Path) -> dict:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    return {"nodes": len(g.node), "matmul": sum(n.op_type == "MatMul" for n in g.node), "conv": len(convs),
            "conv_weights_initializers": all(n.input[1] in inits for n in convs),
            "inputs": [i.name for i in g.input], "outputs": [o.name for o in g.output]}


def export_onnx(artifact: Artifact, cfg: ExportConfig, out_dir: str | os.PathLike,
                metrics: dict | None = None) -> Artifact:
    """PyTorch artifact → ONNX artifact (model.onnx, config, processor files, README card), parity-checked."""
    from optimum.exporters.onnx import onnx_export_from_model

    from w2vc.compress.quantize import load_quantized, read_runtime

    if artifact.format != "torch":
        raise ValueError(f"{artifact.path} is already an ONNX artifact; export takes a PyTorch one")
    runtime = read_runtime(artifact.path)
    if runtime.get("transform") == "torch_dynamic_int8":
        raise ValueError(f"{artifact.path} is torch dynamic int8 (PyTorch-only); export its fp32 parent, "
                         "then quantize with ort_dynamic_int8")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory is not empty: {out}")
    model, _ = load_quantized(artifact.path)  # bf16 artifacts load as bf16
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
