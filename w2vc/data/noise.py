"""Deterministic noise (white, pink, babble) and mixing at a target SNR.

Used twice: to build the fixed noisy test copies (eval) and, with fresh draws, for on-the-fly training
augmentation (w2vc.data.augment). Both take an explicit numpy Generator so results depend only on the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOISE_TYPES = ("white", "pink", "babble")


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power spectrum by shaping white noise in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def babble_noise(n: int, rng: np.random.Generator, pool: Sequence[np.ndarray], talkers: int = 5) -> np.ndarray:
    """Sum of several other utterances, each looped to length and started at a random offset."""
    if not pool:
        raise ValueError("babble noise needs a pool of utterances")
    out = np.zeros(n, dtype=np.float32)
    for _ in range(talkers):
        u = pool[int(rng.integers(len(pool)))]
        u = u / (np.std(u) + 1e-9)
        reps = int(np.ceil((n + len(u)) / max(len(u), 1)))
        tiled = np.tile(u, reps)
        start = int(rng.integers(len(u)))
        out += tiled[start:start + n]
    return out / (np.std(out) + 1e-9)


def make_noise(kind: str, n: int, rng: np.random.Generator, pool: Sequence[np.ndarray] = ()) -> np.ndarray:
    if kind == "white":
        return white_noise(n, rng)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "babble":
        return babble_noise(n, rng, pool)
    raise ValueError(f"unknown noise type {kind!r}; known: {', '.join(NOISE_TYPES)}")


def speech_power(x: np.ndarray, frame: int = 400) -> float:
    """Mean power over frames above -40 dB of the loudest frame, so leading silence does not inflate SNR."""
    n = len(x) // frame
    if n == 0:
        return float(np.mean(x ** 2) + 1e-12)
    p = (x[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    active = p[p > p.max() * 1e-4]
    return float(active.mean() + 1e-12)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + scaled noise with 10*log10(P_speech/P_noise) = snr_db; rescaled only if it would clip."""
    ps = speech_power(speech)
    pn = float(np.mean(noise ** 2) + 1e-12)
    y = speech + noise * np.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    peak = float(np.abs(y).max())
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y.astype(np.float32)
