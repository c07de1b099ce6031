"""Audio decoding: any file soundfile reads → 16 kHz mono float32, the input every wav2vec2 expects."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """A file that is not decodable audio, or holds no samples."""


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Downmix (mean over channels) and resample with soxr (high quality, deterministic)."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        x = soxr.resample(x, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return x


def load_audio(path: str | os.PathLike | bytes) -> np.ndarray:
    """Decode a file (or WAV/FLAC bytes) to 16 kHz mono float32; raise AudioError when it cannot."""
    src = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    try:
        data, sr = sf.read(src, dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
        raise AudioError(f"not decodable audio: {path if not isinstance(path, bytes) else '<bytes>'} ({e})") from e
    if data.size == 0:
        raise AudioError(f"empty audio: {path if not isinstance(path, bytes) else '<bytes>'}")
    return to_mono_16k(data, sr)


def write_flac(path: str | os.PathLike, samples: np.ndarray) -> None:
    """Write 16-bit FLAC atomically (temp file + rename) so an interrupted run leaves no torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    x = np.clip(samples, -1.0, 1.0)
    sf.write(str(tmp), x, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)
