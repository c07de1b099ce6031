"""Uncertainty of the figures: bootstrap intervals over utterances for WER (and paired differences, Bisani &
Ney 2004), and intervals of a median over repeated processes for latency.

Why bootstrap over utterances: errors cluster within utterances (one misheard command costs several words),
so words are not independent draws; resampling whole utterances keeps that structure. The paired version
resamples the same utterances for both systems, which is far tighter than comparing two separate intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def _resample_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def wer_interval(errors: Sequence[int], ref_words: Sequence[int], n_boot: int = N_BOOT, seed: int = 0,
                 level: float = LEVEL) -> Interval:
    """Corpus WER with a percentile bootstrap interval (utterances resampled with replacement)."""
    e, w = np.asarray(errors, float), np.asarray(ref_words, float)
    if len(e) == 0 or len(e) != len(w):
        raise ValueError("errors and ref_words must be non-empty and of equal length")
    idx = _resample_index(len(e), n_boot, seed)
    boot = e[idx].sum(1) / np.maximum(w[idx].sum(1), 1)
    a = (1 - level) / 2
    return Interval(float(e.sum() / max(w.sum(), 1)), float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a)))


def paired_wer_difference(errors_a: Sequence[int], errors_b: Sequence[int], ref_words: Sequence[int],
                          n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Interval:
    """WER(a) - WER(b) on the same utterances, with a paired bootstrap interval: a difference whose interval
    holds 0 is not significant at `level`."""
    ea, eb, w = (np.asarray(x, float) for x in (errors_a, errors_b, ref_words))
    if not len(ea) == len(eb) == len(w) or len(w) == 0:
        raise ValueError("paired WER needs the same non-empty utterance set for both systems")
    idx = _resample_index(len(w), n_boot, seed)
    words = np.maximum(w[idx].sum(1), 1)
    boot = (ea[idx].sum(1) - eb[idx].sum(1)) / words
    a = (1 - level) / 2
    return Interval(float((ea.sum() - eb.sum()) / max(w.sum(), 1)), float(np.quantile(boot, a)),
                    float(np.quantile(boot, 1 - a)))


def median_interval(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                    level: float = LEVEL) -> Interval:
    """Median of a few repeated measurements (e.g. one per fresh process) with a bootstrap interval; with
    fewer than 3 values the interval is their range."""
    v = np.asarray(values, float)
    if len(v) == 0:
        raise ValueError("no values")
    if len(v) < 3:
        return Interval(float(np.median(v)), float(v.min()), float(v.max()))
    boot = np.median(v[_resample_index(len(v), n_boot, seed)], axis=1)
    a = (1 - level) / 2
    return Interval(float(np.median(v)), float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a)))


def utterance_errors(transcripts_tsv: str) -> dict[str, tuple[int, int]]:
    """id -> (errors, reference words) from a transcripts TSV (eval's per-utterance file)."""
    out = {}
    for line in transcripts_tsv.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 5:
            out[cols[0]] = (int(cols[-2]), int(cols[-1]))
    return out


def paired_from_transcripts(tsv_a: str, tsv_b: str, **kw) -> Interval | None:
    """WER(a) - WER(b) over the utterances both transcript files hold (None when they share none)."""
    a, b = utterance_errors(tsv_a), utterance_errors(tsv_b)
    ids = [u for u in a if u in b]
    if not ids:
        return None
    return paired_wer_difference([a[u][0] for u in ids], [b[u][0] for u in ids], [a[u][1] for u in ids], **kw)
