"""Chunked greedy-CTC inference over arbitrarily long audio, for any `Transcriber` (PyTorch or ONNX).

Why: self-attention cost and memory grow with the square of the length, and an edge device transcribes a
long recording as a stream of windows. The recipe is transformers' ASR pipeline
(`pipeline(..., chunk_length_s=C, stride_length_s=S)`, CTC models), reproduced step for step so our
figures are the ones that pipeline gives:

- chunk and strides are rounded to whole logit frames (multiples of `inputs_to_logits_ratio`, 320
  samples); the stride defaults to chunk / 6 on each side;
- windows start every `chunk - left - right` samples; the first has no left stride, the last (the first
  window reaching the end) no right stride; a window not longer than its left stride is dropped;
- each window is normalised on its own, as the feature extractor that runs per chunk does;
- of each window's logits the frames `[round(left / n * F), F - round(right / n * F))`, F = round(n / 320),
  are kept (HF's `rescale_stride`). For whole-frame windows the model gives F - 1 frames, so with a zero
  right stride a window's last frame is lost at each border — as in HF;
- the kept frames are concatenated and greedy-decoded once, so a character repeated across a border
  collapses exactly as in one pass.

Group-norm (Base-style) encoders normalise over time in their first conv, so padding would change them:
only windows of equal length (all but the last) are ever batched, which needs no padding at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from w2vc.core.runnable import Transcriber, inputs_to_logits_ratio, pad_batch

SAMPLING_RATE = 16000


@dataclass(frozen=True)
class ChunkPlan:
    """Window length and strides in samples, each a whole number of logit frames (`ratio` samples)."""

    chunk: int
    left: int
    right: int
    ratio: int

    @property
    def seconds(self) -> tuple[float, float, float]:
        return self.chunk / SAMPLING_RATE, self.left / SAMPLING_RATE, self.right / SAMPLING_RATE


@dataclass(frozen=True)
class Window:
    """One window of the recording, in samples; `left`/`right` are the strides whose frames are dropped."""

    start: int
    end: int
    left: int
    right: int

    @property
    def length(self) -> int:
        return self.end - self.start


def plan_chunks(chunk_s: float, stride_s: float | tuple[float, float] | None = None, ratio: int = 320,
                sampling_rate: int = SAMPLING_RATE) -> ChunkPlan:
    """Seconds → samples aligned to logit frames, as the HF pipeline rounds them."""
    if stride_s is None:
        stride_s = chunk_s / 6
    left_s, right_s = (stride_s, stride_s) if isinstance(stride_s, (int, float)) else stride_s

    def align(s: float) -> int:
        return int(round(s * sampling_rate / ratio) * ratio)

    chunk, left, right = align(chunk_s), align(left_s), align(right_s)
    if chunk <= 0 or left < 0 or right < 0:
        raise ValueError(f"chunk must be at least one frame ({ratio} samples) and strides >= 0 "
                         f"(got chunk {chunk_s} s, stride {stride_s} s)")
    if chunk <= left + right:
        raise ValueError(f"chunk length ({chunk / sampling_rate:g} s) must exceed left + right stride "
                         f"({(left + right) / sampling_rate:g} s)")
    return ChunkPlan(chunk, left, right, ratio)


def chunk_windows(n_samples: int, plan: ChunkPlan) -> list[Window]:
    """The windows HF's `chunk_iter` yields for a recording of `n_samples`."""
    step = plan.chunk - plan.left - plan.right
    out = []
    for start in range(0, n_samples, step):
        end = start + plan.chunk
        is_last = end >= n_samples
        left = 0 if start == 0 else plan.left
        right = 0 if is_last else plan.right
        end = min(end, n_samples)
        if end - start > left:
            out.append(Window(start, end, left, right))
        if is_last:
            break
    return out


def kept_frames(window: Window, ratio: int) -> tuple[int, int]:
    """Frame range [lo, hi) of a window's logits that survives the strides (HF's `rescale_stride`)."""
    n = window.length
    frames = int(round(n / ratio))
    left = int(round(window.left / n * frames))
    right = int(round(window.right / n * frames))
    return left, frames - right


@dataclass
class ChunkedOutput:
    """A long recording's transcript, its kept logit frames [T, V], and the time each window took."""

    text: str
    logits: np.ndarray
    windows: list[Window]
    chunk_ms: list[float] = field(default_factory=list)  # wall ms per window (normalise + forward)
    decode_ms: float = 0.0
    audio_seconds: float = 0.0

    @property
    def wall_seconds(self) -> float:
        return (sum(self.chunk_ms) + self.decode_ms) / 1000

    @property
    def rtf(self) -> float:
        """Real-time factor: inference wall time / audio duration (< 1 is faster than real time)."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")


def _groups(windows: list[Window], batch_size: int) -> list[list[int]]:
    """Consecutive windows of equal length, at most `batch_size` a group (equal length: no padding)."""
    out: list[list[int]] = []
    for i, w in enumerate(windows):
        if out and len(out[-1]) < batch_size and windows[out[-1][0]].length == w.length:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def chunked_logits(transcriber: Transcriber, audio: np.ndarray, chunk_s: float | None,
                   stride_s: float | tuple[float, float] | None = None,
                   batch_size: int = 1) -> tuple[np.ndarray, list[Window], list[float]]:
    """Kept logit frames [T, V] of `audio` run window by window, the windows, and wall ms per window.

    `chunk_s` None runs the whole recording in one window. `batch_size` > 1 runs equal-length windows
    together (each window's time is then its batch's time / batch size); 1 is the streaming case whose
    per-window latency is what an edge device sees.
    """
    audio = np.asarray(audio, dtype=np.float32)
    ratio = inputs_to_logits_ratio(transcriber)
    n = len(audio)
    if chunk_s is None:
        windows = [Window(0, n, 0, 0)] if n else []
    else:
        windows = chunk_windows(n, plan_chunks(chunk_s, stride_s, ratio))
    # a window shorter than the conv receptive field gives no frame (HF would fail on it): skip it
    windows = [w for w in windows
               if transcriber.frame_lengths(np.ones((1, w.length), dtype=np.int64))[0] > 0]
    pieces: list[np.ndarray | None] = [None] * len(windows)
    ms = [0.0] * len(windows)
    for g in _groups(windows, max(1, batch_size)):
        t0 = time.perf_counter()
        values, mask = pad_batch([audio[windows[i].start:windows[i].end] for i in g])
        lg = transcriber.logits(values, mask if transcriber.uses_attention_mask else None)
        frames = transcriber.frame_lengths(mask)
        dt = (time.perf_counter() - t0) * 1000 / len(g)
        for j, i in enumerate(g):
            lo, hi = kept_frames(windows[i], ratio)
            pieces[i] = lg[j, lo:min(hi, frames[j])]
            ms[i] = dt
    vocab = pieces[0].shape[-1] if pieces else 0
    logits = np.concatenate(pieces, axis=0) if pieces else np.zeros((0, vocab), dtype=np.float32)
    return logits, windows, ms


def transcribe_long(transcriber: Transcriber, audio: np.ndarray, chunk_s: float | None,
                    stride_s: float | tuple[float, float] | None = None, batch_size: int = 1) -> ChunkedOutput:
    """Greedy-CTC text of a long recording through `chunked_logits`, decoded once over all kept frames."""
    logits, windows, ms = chunked_logits(transcriber, audio, chunk_s, stride_s, batch_size)
    t0 = time.perf_counter()
    text = transcriber.decode(logits[None], [len(logits)])[0] if len(logits) else ""
    return ChunkedOutput(text, logits, windows, ms, (time.perf_counter() - t0) * 1000,
                         len(audio) / SAMPLING_RATE)
