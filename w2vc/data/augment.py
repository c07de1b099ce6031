"""On-the-fly training augmentation: the talker, the room, the channel, the noise and the codec.

A measurement here showed an un-augmented model collapses at 10 dB and on another synthesizer, so the
trainer draws a fresh augmentation for every utterance of every epoch. Each draw takes its own numpy
Generator seeded by (seed, epoch, utterance index): exact resume and identical results for one seed.

The chain follows the path of sound: speed (talker tempo, pitch and formants), vocal-tract-length warp
(formants alone), room reverberation, microphone band limit, level, additive noise, then a codec or
clipping stage. An effect whose probability is 0 draws nothing from the Generator, so a config with the
newer effects switched off gives the draws (and audio) of the configs that predate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr

from w2vc.core.config import ConfigBase
from w2vc.data.audio import SAMPLE_RATE
from w2vc.data.noise import NOISE_TYPES, make_noise, mix_at_snr

CODEC_KINDS = ("mulaw", "pcm8", "8k", "telephone", "clip")


@dataclass(frozen=True)
class AugmentConfig(ConfigBase):
    """Args:
        p_speed: probability of speed perturbation by resampling (shifts pitch and formants too).
        speed_range: factor range, 0.9..1.1 as in Kaldi-style 3-way perturbation but continuous.
        p_bandlimit: probability of a telephone/cheap-mic band limit (random low/high cut).
        p_noise: probability of additive noise; snr_db_range its uniform SNR range.
        gain_db_range: random level change (the model normalises, but clipping and noise floor do not).
        p_vtlp: probability of a vocal-tract-length warp: formants move by a factor from vtlp_range while
            pitch and tempo stay (speed perturbation moves all three together).
        p_reverb: probability of room reverberation by a synthetic impulse response (exponentially
            decaying noise) with RT60 from rt60_range (s) and direct-to-reverberant ratio from drr_db_range.
        p_codec: probability of one codec-like degradation drawn from codec_kinds: mu-law 8 bit, linear
            8 bit, an 8 kHz round trip, telephone (8 kHz + mu-law) or hard clipping.
        p_pad: probability of silence before and after the utterance (each side drawn from
            pad_seconds_range), added before the noise so the noise floor fills it. Chunked long-form
            inference hands the model windows that are mostly pause: 3.5 s of silence on each side took the
            v2-1 teacher from 5.5 % to 17.6 % WER (60 test utterances, 2026-12-02). Off by default (the
            committed models' runs draw nothing for it).
        p_post_gain: probability of a level change *after* the per-utterance normalisation (post_gain_db_range),
            applied by `post_normalize_gain` to the padded batch. Why: a chunked long recording is normalised
            per window, so the speech in it sits above or below unit variance (pauses raise it, quieter
            utterances lower it), while a normalised single utterance is always at unit variance. The
            layer-norm CNN (conv bias, frozen since v1) is not level-invariant: the v2-1 teacher went from 5.45 %
            to 99.8 % WER at x0.1 and 19 % at x2 inside silence (60 test utterances, 2026-12-03). Off by default.
    """

    p_speed: float = 0.6
    speed_range: tuple[float, float] = (0.88, 1.12)
    p_bandlimit: float = 0.25
    p_noise: float = 0.7
    snr_db_range: tuple[float, float] = (0.0, 30.0)
    gain_db_range: tuple[float, float] = (-12.0, 6.0)
    p_vtlp: float = 0.3
    vtlp_range: tuple[float, float] = (0.9, 1.1)
    p_reverb: float = 0.3
    rt60_range: tuple[float, float] = (0.15, 0.8)
    drr_db_range: tuple[float, float] = (-3.0, 15.0)
    p_codec: float = 0.2
    codec_kinds: tuple[str, ...] = CODEC_KINDS
    p_pad: float = 0.0
    pad_seconds_range: tuple[float, float] = (0.0, 4.0)
    p_post_gain: float = 0.0
    post_gain_db_range: tuple[float, float] = (-10.0, 8.0)

    WHAT = "augment"
    LATER_FIELDS = {"p_post_gain": "p_post_gain", "post_gain_db_range": "p_post_gain"}

    def __post_init__(self):
        bad = sorted(set(self.codec_kinds) - set(CODEC_KINDS))
        if bad or (self.p_codec > 0 and not self.codec_kinds):
            raise ValueError(f"augment codec_kinds: unknown {', '.join(bad) or '(empty)'}; "
                             f"known: {', '.join(CODEC_KINDS)}")

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all (every probability 0, no gain change)."""
        return cls(p_speed=0, p_bandlimit=0, p_noise=0, gain_db_range=(0.0, 0.0), p_vtlp=0, p_reverb=0,
                   p_codec=0, p_pad=0, p_post_gain=0)


def bandlimit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    spec[(f < low_hz) | (f > high_hz)] = 0
    return np.fft.irfft(spec, len(x)).astype(np.float32)


# ---- vocal-tract-length warp: move the spectral envelope, keep the harmonics (pitch) and the timing

def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    pad = np.concatenate([np.zeros(n_fft, np.float32), x, np.zeros(n_fft + hop, np.float32)])
    n_frames = (len(pad) - n_fft) // hop + 1
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    return np.fft.rfft(pad[idx] * np.hanning(n_fft + 1)[:-1], axis=1)


def _istft(spec: np.ndarray, n: int, n_fft: int, hop: int) -> np.ndarray:
    win = np.hanning(n_fft + 1)[:-1]
    frames = np.fft.irfft(spec, n_fft, axis=1) * win
    k = n_fft // hop  # overlap-add in hop-sized blocks (n_fft is a multiple of hop), normalised by Σ win²
    out, norm = np.zeros((len(frames) + k - 1, hop)), np.zeros((len(frames) + k - 1, hop))
    for j in range(k):
        out[j:j + len(frames)] += frames[:, j * hop:(j + 1) * hop]
        norm[j:j + len(frames)] += (win[j * hop:(j + 1) * hop] ** 2)[None, :]
    out = out.reshape(-1) / np.maximum(norm.reshape(-1), 1e-8)
    return out[n_fft:n_fft + n].astype(np.float32)


def formant_warp(x: np.ndarray, alpha: float, n_fft: int = 512, hop: int = 128, lifter: int = 28) -> np.ndarray:
    """Formants × alpha (alpha > 1: a shorter vocal tract), pitch and length unchanged.

    Each STFT frame is multiplied by E(f / alpha) / E(f), E its cepstrally smoothed envelope (the first
    `lifter` quefrency bins: 1.75 ms, shorter than any pitch period), so harmonics stay where they are and
    only the resonances move; plain resampling would move pitch and tempo as well.
    """
    if alpha == 1.0 or len(x) == 0:
        return x.astype(np.float32)
    spec = _stft(np.asarray(x, np.float32), n_fft, hop)
    log_mag = np.log(np.abs(spec) + 1e-7)
    cep = np.fft.irfft(log_mag, n_fft, axis=1)
    cep[:, lifter:n_fft - lifter + 1] = 0
    env = np.fft.rfft(cep, n_fft, axis=1).real
    bins = np.arange(env.shape[1]) / alpha
    i0 = np.clip(np.floor(bins).astype(int), 0, env.shape[1] - 1)
    i1 = np.clip(i0 + 1, 0, env.shape[1] - 1)
    frac = np.clip(bins - i0, 0, 1)
    warped = env[:, i0] * (1 - frac) + env[:, i1] * frac
    gain = np.exp(np.clip(warped - env, -3.5, 3.5))  # at most ±30 dB per bin
    return _istft(spec * gain, len(x), n_fft, hop)


# ---- room reverberation

def synthetic_rir(rng: np.random.Generator, rt60: float, drr_db: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Impulse response: a direct path (1 at t = 0, so nothing shifts in time), a few early reflections
    and a tail of Gaussian noise decaying 60 dB in rt60 seconds, scaled to the direct/reverberant ratio."""
    n = int(min(1.2 * rt60, 1.5) * sr) + 1
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)
    onset = int(rng.uniform(0.002, 0.01) * sr)
    tail[:onset] = 0
    for _ in range(int(rng.integers(3, 7))):  # early reflections, 3..40 ms
        k = int(rng.uniform(0.003, 0.04) * sr)
        if k < n:
            tail[k] += rng.choice((-1.0, 1.0)) * rng.uniform(0.2, 0.6) * np.exp(-6.908 * t[k] / rt60)
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail ** 2) + 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """x convolved with rir (FFT), cut to len(x) and brought back to x's peak level."""
    if len(x) == 0:
        return x
    n = len(x) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: len(x)]
    peak_x, peak_y = float(np.abs(x).max()), float(np.abs(y).max())
    return (y * (peak_x / peak_y if peak_y > 0 else 1.0)).astype(np.float32)


# ---- codecs and clipping

def _mulaw(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    x = np.clip(x, -1, 1)
    q = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127.5) / 127.5
    return np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu


def _via_8k(x: np.ndarray, inner=None) -> np.ndarray:
    y = soxr.resample(x, SAMPLE_RATE, 8000, quality="HQ")
    if inner is not None:
        y = inner(y)
    y = soxr.resample(y, 8000, SAMPLE_RATE, quality="HQ")
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]


def codec(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One lossy transmission/recording stage; the length is kept. A quiet input is coded at its level, as a
    real 8-bit channel would (its quantization noise is then relatively loud)."""
    x = np.asarray(x, np.float32)
    if kind == "mulaw":
        y = _mulaw(x)
    elif kind == "pcm8":
        y = np.round(np.clip(x, -1, 1) * 127) / 127
    elif kind == "8k":
        y = _via_8k(x)
    elif kind == "telephone":
        y = _via_8k(x, _mulaw)
    elif kind == "clip":
        level = float(np.abs(x).max()) * rng.uniform(0.2, 0.7)
        y = np.clip(x, -level, level)
    else:
        raise ValueError(f"unknown codec kind {kind!r}; known: {', '.join(CODEC_KINDS)}")
    return y.astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            babble_pool: Sequence[np.ndarray] = ()) -> np.ndarray:
    if rng.random() < cfg.p_speed:
        factor = rng.uniform(*cfg.speed_range)
        x = soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality="LQ").astype(np.float32)
    if cfg.p_vtlp > 0 and rng.random() < cfg.p_vtlp:
        x = formant_warp(x, rng.uniform(*cfg.vtlp_range))
    if cfg.p_reverb > 0 and rng.random() < cfg.p_reverb:
        x = reverberate(x, synthetic_rir(rng, rng.uniform(*cfg.rt60_range), rng.uniform(*cfg.drr_db_range)))
    if rng.random() < cfg.p_bandlimit:
        x = bandlimit(x, rng.uniform(50, 400), rng.uniform(3000, 7500))
    x = x * np.float32(10 ** (rng.uniform(*cfg.gain_db_range) / 20))
    if cfg.p_pad > 0 and rng.random() < cfg.p_pad:
        before, after = (int(rng.uniform(*cfg.pad_seconds_range) * SAMPLE_RATE) for _ in range(2))
        x = np.concatenate([np.zeros(before, np.float32), x, np.zeros(after, np.float32)])
    if rng.random() < cfg.p_noise:
        kinds = NOISE_TYPES if len(babble_pool) else NOISE_TYPES[:2]
        kind = kinds[int(rng.integers(len(kinds)))]
        x = mix_at_snr(x, make_noise(kind, len(x), rng, babble_pool), rng.uniform(*cfg.snr_db_range))
    if cfg.p_codec > 0 and rng.random() < cfg.p_codec:
        x = codec(x, cfg.codec_kinds[int(rng.integers(len(cfg.codec_kinds)))], rng)
    return np.clip(x, -1, 1).astype(np.float32)


def post_normalize_gain(values: np.ndarray, lengths: Sequence[int], seeds: Sequence[Sequence[int]],
                        cfg: AugmentConfig) -> np.ndarray:
    """Scale each normalised row of a padded batch (`values[i, :lengths[i]]`) by a level drawn from
    post_gain_db_range with probability p_post_gain, row i from a Generator seeded by seeds[i]; rows keep
    their zero padding. When off it builds and draws nothing."""
    if cfg.p_post_gain <= 0:
        return values
    for i, (n, seed) in enumerate(zip(lengths, seeds)):
        rng = np.random.default_rng(seed)
        if rng.random() < cfg.p_post_gain:
            values[i, :n] *= np.float32(10 ** (rng.uniform(*cfg.post_gain_db_range) / 20))
    return values
