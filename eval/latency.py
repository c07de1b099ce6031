"""Wall-clock and CPU time of batch-1 calls on white-noise audio, and the machine state that explains them
(threads picked, load average). Latency does not depend on weight values, so random presets time as real
models do.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000


@dataclass
class LengthCost:
    """Latency of one audio length; rtf = latency_p50_ms / 1000 / seconds. `cpu_ms_p50` is the process CPU
    time per run (all threads, spin-waits included): the work done, which other processes competing for the
    cores inflate far less than the wall-clock latency."""

    seconds: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_mean_ms: float
    latency_min_ms: float
    rtf: float
    repeats: int
    cpu_ms_p50: float = 0.0
    gflops: float | None = None
    processes: int = 1
    latency_p50_low_ms: float | None = None  # 95 % interval of the median over processes
    latency_p50_high_ms: float | None = None
    spread: float = 1.0  # max / min of the per-process p50s
    stable: bool = True
    process_p50_ms: list[float] | None = None
    load_avg_1m: float | None = None  # the highest over its processes


def default_threads() -> int:
    """What torch and ONNX Runtime pick by themselves: one intra-op thread per physical core."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def load_avg() -> float | None:
    """1-minute load average, recorded with each measurement (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def is_contended(load_avg_1m: float | None) -> bool:
    """Other processes wanted the cores while we measured: wall-clock figures are inflated."""
    return load_avg_1m is not None and load_avg_1m > (os.cpu_count() or 1) + 0.5


def noise_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Batch-1 input of `seconds` at 16 kHz: white noise, already zero-mean/unit-variance like the processor's."""
    n = int(round(seconds * SAMPLE_RATE))
    if n < 400:  # the CNN's receptive field (25 ms) is the shortest input that yields a frame
        raise ValueError(f"audio length {seconds:g} s is too short (>= 0.025 s)")
    return np.random.default_rng(seed).standard_normal((1, n)).astype(np.float32)


def time_calls(fn: Callable[[], object], *, warmup: int, repeats: int, min_repeats: int,
               budget_s: float, min_time_s: float = 0.0) -> tuple[list[float], list[float]]:
    """Warm-up calls, then timed calls until at least `repeats` calls and `min_time_s` seconds (a calibrated
    loop, as pyperf does: fast models get many calls, so one scheduler hiccup weighs little), or until
    `budget_s` is spent with at least `min_repeats`. Returns (wall ms, process CPU ms) per timed call."""
    for _ in range(warmup):
        fn()
    gc.collect()
    wall: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()

    def done() -> bool:
        elapsed = time.perf_counter() - start
        return (len(wall) >= repeats and elapsed >= min_time_s) or (len(wall) >= min_repeats and elapsed >= budget_s)

    while not done():
        t0, c0 = time.perf_counter_ns(), time.process_time_ns()
        fn()
        wall.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.process_time_ns() - c0) / 1e6)
    return wall, cpu


def length_cost(seconds: float, timed: tuple[list[float], list[float]]) -> LengthCost:
    wall, cpu = timed
    p50, p90 = (float(v) for v in np.percentile(wall, [50, 90]))
    return LengthCost(seconds=float(seconds), latency_p50_ms=p50, latency_p90_ms=p90,
                      latency_mean_ms=float(np.mean(wall)), latency_min_ms=float(np.min(wall)),
                      rtf=p50 / 1000 / seconds, repeats=len(wall), cpu_ms_p50=float(np.median(cpu)))


def combine_processes(per_process: list[LengthCost], max_spread: float) -> LengthCost:
    """One length's figures over several fresh processes: the median of the per-process p50s (one bad
    process cannot decide the figure) with a bootstrap interval, and the spread that says whether to trust it."""
    from w2vc.eval.stats import median_interval

    p50s = [lc.latency_p50_ms for lc in per_process]
    ci = median_interval(p50s)
    med = float(np.median(p50s))
    spread = max(p50s) / max(min(p50s), 1e-9)
    first = per_process[0]
    return LengthCost(seconds=first.seconds, latency_p50_ms=med,
                      latency_p90_ms=float(np.median([lc.latency_p90_ms for lc in per_process])),
                      latency_mean_ms=float(np.median([lc.latency_mean_ms for lc in per_process])),
                      latency_min_ms=float(min(lc.latency_min_ms for lc in per_process)),
                      rtf=med / 1000 / first.seconds, repeats=sum(lc.repeats for lc in per_process),
                      cpu_ms_p50=float(np.median([lc.cpu_ms_p50 for lc in per_process])),
                      gflops=first.gflops, processes=len(per_process), latency_p50_low_ms=ci.low,
                      latency_p50_high_ms=ci.high, spread=spread, stable=spread <= max_spread,
                      process_p50_ms=[round(v, 3) for v in p50s])
