"""On-the-fly training augmentation: speed/pitch, band-limiting, gain, additive noise at random SNR.

A measurement here showed an un-augmented model collapses at 10 dB and on another synthesizer, so the
trainer draws a fresh augmentation for every utterance of every epoch. Each draw takes its own numpy
Generator seeded by (seed, epoch, utterance index): exact resume and identical results for one seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr

from w2vc.core.config import ConfigBase
from w2vc.data.audio import SAMPLE_RATE
from w2vc.data.noise import NOISE_TYPES, make_noise, mix_at_snr


@dataclass(frozen=True)
class AugmentConfig(ConfigBase):
    """Args:
        p_speed: probability of speed perturbation by resampling (shifts pitch and formants too).
        speed_range: factor range, 0.9..1.1 as in Kaldi-style 3-way perturbation but continuous.
        p_bandlimit: probability of a telephone/cheap-mic band limit (random low/high cut).
        p_noise: probability of additive noise; snr_db_range its uniform SNR range.
        gain_db_range: random level change (the model normalises, but clipping and noise floor do not).
    """

    p_speed: float = 0.6
    speed_range: tuple[float, float] = (0.88, 1.12)
    p_bandlimit: float = 0.25
    p_noise: float = 0.7
    snr_db_range: tuple[float, float] = (0.0, 30.0)
    gain_db_range: tuple[float, float] = (-12.0, 6.0)

    WHAT = "augment"


def bandlimit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    spec[(f < low_hz) | (f > high_hz)] = 0
    return np.fft.irfft(spec, len(x)).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            babble_pool: Sequence[np.ndarray] = ()) -> np.ndarray:
    if rng.random() < cfg.p_speed:
        factor = rng.uniform(*cfg.speed_range)
        x = soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality="LQ").astype(np.float32)
    if rng.random() < cfg.p_bandlimit:
        x = bandlimit(x, rng.uniform(50, 400), rng.uniform(3000, 7500))
    x = x * np.float32(10 ** (rng.uniform(*cfg.gain_db_range) / 20))
    if rng.random() < cfg.p_noise:
        kinds = NOISE_TYPES if len(babble_pool) else NOISE_TYPES[:2]
        kind = kinds[int(rng.integers(len(kinds)))]
        x = mix_at_snr(x, make_noise(kind, len(x), rng, babble_pool), rng.uniform(*cfg.snr_db_range))
    return np.clip(x, -1, 1).astype(np.float32)
