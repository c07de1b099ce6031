"""Runnable models: one `Transcriber` interface over PyTorch and ONNX Runtime, audio in, greedy CTC text out.

What `w2vc.core.load.load` returns for every artifact kind; export's parity check, eval and the cost
measurements all run models through it.

Batching rule: layer-norm feature encoders (Large style) get padded batches with an attention mask;
group-norm encoders (Base style) normalise over time inside the first conv, so zero padding would change
their output — they are run one utterance at a time, which keeps batched == unbatched for both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from w2vc.core.runtime import pos_conv_in_fp32


def normalize_audio(x: np.ndarray) -> np.ndarray:
    """Per-utterance zero mean / unit variance, exactly as Wav2Vec2FeatureExtractor(do_normalize=True)."""
    x = np.asarray(x, dtype=np.float32)
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)


def pad_batch(audio: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Normalise each utterance, then zero-pad; returns (input_values, attention_mask) as numpy."""
    n = max(len(a) for a in audio)
    values = np.zeros((len(audio), n), dtype=np.float32)
    mask = np.zeros((len(audio), n), dtype=np.int64)
    for i, a in enumerate(audio):
        values[i, : len(a)] = normalize_audio(a)
        mask[i, : len(a)] = 1
    return values, mask


def batches_by_length(lengths: Sequence[int], max_samples: int, max_batch: int) -> list[list[int]]:
    """Indices grouped by similar length so padding stays small; order inside results is restored later."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > max_samples or len(cur) >= max_batch:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


class Transcriber:
    """Greedy CTC transcription; subclasses implement `logits(values, mask) -> np.ndarray [B, T, V]`."""

    runtime = "?"

    def __init__(self, processor, uses_attention_mask: bool):
        self.processor = processor
        self.uses_attention_mask = uses_attention_mask

    def logits(self, values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def frame_lengths(self, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, logits: np.ndarray, frames: Sequence[int]) -> list[str]:
        ids = logits.argmax(-1)
        return [self.processor.decode(ids[i, : frames[i]]) for i in range(len(ids))]

    def transcribe(self, audio: Sequence[np.ndarray], batch_seconds: float = 60.0, max_batch: int = 16,
                   progress: bool = False, desc: str = "transcribe") -> list[str]:
        if not self.uses_attention_mask:
            max_batch = 1
        groups = batches_by_length([len(a) for a in audio], int(batch_seconds * 16000), max_batch)
        out: list[str | None] = [None] * len(audio)
        it = groups
        if progress:
            from tqdm import tqdm
            it = tqdm(groups, desc=desc, unit="batch", leave=False)
        for g in it:
            values, mask = pad_batch([audio[i] for i in g])
            lg = self.logits(values, mask if self.uses_attention_mask else None)
            frames = self.frame_lengths(mask)
            for i, text in zip(g, self.decode(lg, frames)):
                out[i] = text
        return out  # type: ignore[return-value]


class TorchTranscriber(Transcriber):
    runtime = "torch"

    def __init__(self, model, processor, autocast_bf16: bool = False):
        super().__init__(processor, model.config.feat_extract_norm == "layer")
        self.model = pos_conv_in_fp32(model.eval()) if autocast_bf16 else model.eval()
        self.autocast_bf16 = autocast_bf16

    @torch.inference_mode()
    def logits(self, values, mask):
        kw = {"attention_mask": torch.from_numpy(mask)} if mask is not None else {}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast_bf16):
            out = self.model(torch.from_numpy(values).to(self.model.dtype), **kw).logits
        return out.float().numpy()

    def frame_lengths(self, mask):
        m = self.model.module if hasattr(self.model, "module") else self.model
        return m._get_feat_extract_output_lengths(torch.from_numpy(mask.sum(-1))).tolist()


def conv_output_lengths(lengths: np.ndarray, kernels, strides) -> np.ndarray:
    out = np.asarray(lengths, dtype=np.int64)
    for k, s in zip(kernels, strides):
        out = (out - k) // s + 1
    return out


class OnnxTranscriber(Transcriber):
    """An ONNX Runtime session of an optimum/ORT model directory (see `w2vc.core.load.onnx_session`)."""

    runtime = "onnx"

    def __init__(self, session, processor, config: dict):
        names = {i.name for i in session.get_inputs()}
        super().__init__(processor, "attention_mask" in names and config.get("feat_extract_norm") == "layer")
        self.session = session
        self.has_mask_input = "attention_mask" in names
        self.config = config

    def logits(self, values, mask):
        feeds = {"input_values": values}
        if self.has_mask_input:
            feeds["attention_mask"] = mask if mask is not None else np.ones_like(values, dtype=np.int64)
        return self.session.run(["logits"], feeds)[0]

    def frame_lengths(self, mask):
        return conv_output_lengths(mask.sum(-1), self.config["conv_kernel"], self.config["conv_stride"]).tolist()


def inputs_to_logits_ratio(transcriber: Transcriber) -> int:
    """Audio samples per logit frame (product of the conv strides; 320 for wav2vec2), read from the model's
    config so chunk and stride can be aligned to whole frames (w2vc.core.chunking)."""
    if hasattr(transcriber, "model"):
        strides = getattr(transcriber.model, "module", transcriber.model).config.conv_stride
    elif hasattr(transcriber, "config"):
        strides = transcriber.config["conv_stride"]
    else:
        raise TypeError(f"{type(transcriber).__name__} exposes no model config (need conv_stride)")
    return int(np.prod([int(s) for s in strides]))
