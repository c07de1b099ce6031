"""Intervals: bootstrap WER intervals cover the truth about as often as they claim, paired differences
see what unpaired ones miss, and a latency figure over processes shrugs off one disturbed process."""

from __future__ import annotations

import numpy as np

from w2vc.eval.latency import LengthCost, combine_processes
from w2vc.eval.stats import median_interval, paired_wer_difference, wer_interval


def _utterances(rng, n, p, words=8):
    w = rng.integers(words - 3, words + 4, n)
    return rng.binomial(w, p), w


def test_wer_interval_covers_the_true_rate_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for k in range(200):
        e, w = _utterances(rng, 150, 0.05)
        hits += wer_interval(e, w, n_boot=400, seed=k).contains(0.05)
    assert 0.88 <= hits / 200 <= 0.99, hits


def test_wer_interval_narrows_with_more_utterances():
    rng = np.random.default_rng(2)
    small, large = (wer_interval(*_utterances(rng, n, 0.05)) for n in (50, 800))
    assert (large.high - large.low) < 0.5 * (small.high - small.low)
    assert small.low <= small.value <= small.high


def test_paired_difference_is_significant_where_separate_intervals_overlap():
    rng = np.random.default_rng(3)
    e_a, w = _utterances(rng, 200, 0.05)
    extra = rng.binomial(1, 0.15, len(w))  # b makes one more error on ~15 % of the utterances
    e_b = e_a + extra
    a, b = wer_interval(e_a, w), wer_interval(e_b, w)
    assert a.high > b.low  # separately, the two intervals overlap ...
    d = paired_wer_difference(e_b, e_a, w)
    assert d.low > 0  # ... but paired, b is worse
    same = paired_wer_difference(e_a, e_a, w)
    assert same.value == same.low == same.high == 0.0


def test_one_disturbed_process_does_not_decide_the_latency():
    def lc(p50):
        return LengthCost(seconds=3.0, latency_p50_ms=p50, latency_p90_ms=p50 * 1.1, latency_mean_ms=p50,
                          latency_min_ms=p50 * 0.9, rtf=p50 / 3000, repeats=20, cpu_ms_p50=2 * p50)

    steady = combine_processes([lc(v) for v in (20.0, 20.4, 19.8, 20.1, 41.0)], max_spread=1.2)
    assert 19.8 <= steady.latency_p50_ms <= 20.4 and steady.processes == 5 and steady.repeats == 100
    assert steady.spread > 2 and not steady.stable  # flagged, not hidden
    calm = combine_processes([lc(v) for v in (20.0, 20.4, 19.8, 20.1, 20.2)], max_spread=1.2)
    assert calm.stable and calm.latency_p50_low_ms <= calm.latency_p50_ms <= calm.latency_p50_high_ms
    assert median_interval([5.0]).low == median_interval([5.0]).high == 5.0
