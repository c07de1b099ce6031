"""What a cascade costs and how often it falls back, measured on the test audio itself.

A cascade's latency depends on the input: an utterance the fast model is sure of costs the fast model, one
it is unsure of costs both. Timing it on a synthetic clip (w2vc.eval.measure) would only ever see one
route, so here every utterance of the eval set is transcribed on its own (batch 1, as on a device), once
per pass, in several fresh processes interleaved over the models timed (as w2vc.eval.isolation does for
clips, so a slow spell of the machine hits every model alike), after untimed warm-up calls that run both
members. Figures: per utterance, the median of its timed calls; per process, the mean, p50 and p90 of those
over the utterances; the figure is the median over processes, with a bootstrap interval of the p50 and
the spread (max/min) of the process p50s. `fallback_rate` is the fraction of utterances the strong model
re-transcribed (routing is deterministic: the same in every process). Any plain artifact can be timed the
same way, so a cascade is compared with its strong model on the same utterances.

`evaluate_cascade` scores WER as w2vc.eval.evaluate does, one set at a time, so that each set's routes give
`fallback_rate_<set>`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from w2vc.core.artifact import Kind, kind_of, onnx_file
from w2vc.core.cascade import CascadeSpec, CascadeTranscriber
from w2vc.eval.evaluate import EvalData, EvalResult, evaluate_model
from w2vc.eval.isolation import run_isolated
from w2vc.eval.latency import SAMPLE_RATE, load_avg
from w2vc.eval.memory import peak_rss_mb
from w2vc.eval.stats import median_interval

__all__ = ["UtteranceCost", "UtteranceJob", "UtteranceTimingConfig", "evaluate_cascade", "time_utterances"]


def evaluate_cascade(transcriber: CascadeTranscriber, data: EvalData, **kw) -> tuple[EvalResult, dict[str, float]]:
    """(the EvalResult of `evaluate_model`, {fallback_rate_<set>: fraction}); keywords go to evaluate_model."""
    t0 = time.perf_counter()
    results, rates = [], {}
    for s, ds in data.sets:
        r = evaluate_model(transcriber, EvalData(data.source, data.split, data.limit, [(s, ds)]), **kw)
        if len(transcriber.last_routes) != r.sets[0].n_utterances:
            raise RuntimeError(f"set {s.name}: {len(transcriber.last_routes)} routes for "
                               f"{r.sets[0].n_utterances} utterances (expected one transcribe call per set)")
        rates[f"fallback_rate_{s.name}"] = transcriber.last_fallback_rate
        results.append(r)
    merged = replace(results[0], sets=[x for r in results for x in r.sets], wall_seconds=time.perf_counter() - t0)
    return merged, rates


@dataclass(frozen=True, kw_only=True)
class UtteranceTimingConfig:
    """Args:
    threads: intra-op threads of every member (None: the runtimes' default).
    processes: fresh processes per model; passes: times each utterance is timed in one process.
    warmup: utterances transcribed untimed first (and the strong member once, whatever the routing).
    max_spread / extra_processes: a per-process p50 spread above it gets that many more processes, then
        is flagged unstable (as in w2vc.eval.isolation).
    """

    threads: int | None = None
    processes: int = 5
    passes: int = 1
    warmup: int = 2
    max_spread: float = 1.2
    extra_processes: int = 2

    def __post_init__(self):
        if self.processes < 1 or self.passes < 1 or self.warmup < 0 or self.extra_processes < 0:
            raise ValueError("need processes >= 1, passes >= 1, warmup >= 0, extra_processes >= 0")
        if self.max_spread < 1 or self.threads is not None and self.threads < 1:
            raise ValueError("need max_spread >= 1 and threads >= 1")


@dataclass(frozen=True)
class UtteranceJob:
    """One model to time: an artifact directory of any kind (a cascade or a single model)."""

    name: str
    model: str


@dataclass
class ProcessTiming:
    """One fresh process: wall and CPU ms per utterance (median over its passes), the routes of a cascade."""

    wall_ms: list[float]
    cpu_ms: list[float]
    fell_back: list[bool] | None
    peak_rss_mb: float
    params_m: float
    load_avg_1m: float | None


@dataclass
class UtteranceCost:
    """A model timed on real utterances (see the module docstring for how each figure is taken)."""

    name: str
    n_utterances: int
    audio_seconds_mean: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p50_ms_lo: float
    latency_p50_ms_hi: float
    cpu_ms_mean: float
    spread: float
    stable: bool
    processes: int
    peak_rss_mb: float
    params_m: float
    fallback_rate: float | None = None
    utterance_ms: list[float] = field(default_factory=list)
    load_avg_1m: float | None = None

    @property
    def rtf(self) -> float:
        """Processing time over audio time for the whole set (mean latency / mean duration)."""
        return self.latency_mean_ms / 1000 / self.audio_seconds_mean

    def metrics(self) -> dict[str, float]:
        """`utt_`-prefixed figures: comparable between any two models timed this way."""
        m = {"utt_latency_mean_ms": self.latency_mean_ms, "utt_latency_p50_ms": self.latency_p50_ms,
             "utt_latency_p90_ms": self.latency_p90_ms, "utt_rtf": self.rtf, "utt_audio_s_mean": self.audio_seconds_mean,
             "utt_n": self.n_utterances}
        if self.fallback_rate is not None:
            m["fallback_rate"] = self.fallback_rate
        return m

    def headline_metrics(self) -> dict[str, float]:
        """The plain names a sweep ranks by (latency_mean/p50/p90_ms, rtf, ...), for a model that has no
        input-independent figure (a cascade); `latency_on_test_audio` = 1 says which method made them."""
        return {**self.metrics(), "latency_mean_ms": self.latency_mean_ms, "latency_p50_ms": self.latency_p50_ms,
                "latency_p90_ms": self.latency_p90_ms, "latency_p50_ms_lo": self.latency_p50_ms_lo,
                "latency_p50_ms_hi": self.latency_p50_ms_hi, "latency_spread": self.spread,
                "latency_processes": self.processes, "latency_stable": float(self.stable), "rtf": self.rtf,
                "cpu_ms_mean": self.cpu_ms_mean, "peak_rss_mb": self.peak_rss_mb, "params_m": self.params_m,
                "latency_on_test_audio": 1.0}


def _params_m(path, transcriber) -> float:
    """Parameters of a single-model artifact as measure.py counts them (torch parameters; ONNX initializers)."""
    if kind_of(path) is Kind.ONNX:
        from w2vc.eval.flops import load_graph, onnx_params

        return onnx_params(load_graph(onnx_file(path))) / 1e6
    return sum(p.numel() for p in transcriber.model.parameters()) / 1e6


def _child_time(model: str, audio: list, threads: int | None, warmup: int, passes: int) -> ProcessTiming:
    from w2vc.core.load import load

    tr = load(model, threads=threads)
    if isinstance(tr, CascadeTranscriber):
        def run(x):
            return tr.route([x], max_batch=1)[0].fell_back
    else:
        def run(x):
            tr.transcribe([x], max_batch=1)
    for x in audio[:warmup]:
        run(x)
    if warmup and isinstance(tr, CascadeTranscriber):
        tr.strong.transcribe(audio[:1])
    gc.collect()
    la = load_avg()
    wall = np.zeros((passes, len(audio)))
    cpu = np.zeros((passes, len(audio)))
    fell: list[bool] = []
    for p in range(passes):
        for u, x in enumerate(audio):
            t0, c0 = time.perf_counter_ns(), time.process_time_ns()
            routed = run(x)
            wall[p, u] = (time.perf_counter_ns() - t0) / 1e6
            cpu[p, u] = (time.process_time_ns() - c0) / 1e6
            if p == 0 and routed is not None:
                fell.append(bool(routed))
    peak = peak_rss_mb()  # before counting parameters (an ONNX graph read is no part of the model's cost)
    if isinstance(tr, CascadeTranscriber):
        spec = CascadeSpec.read(model)
        params = _params_m(spec.member(model, "fast"), tr.fast) + _params_m(spec.member(model, "strong"), tr.strong)
    else:
        params = _params_m(model, tr)
    return ProcessTiming(np.median(wall, 0).tolist(), np.median(cpu, 0).tolist(),
                         fell if isinstance(tr, CascadeTranscriber) else None, peak, params, la)


def _combine(job: UtteranceJob, runs: list[ProcessTiming], audio: Sequence[np.ndarray],
             max_spread: float) -> UtteranceCost:
    walls = np.asarray([r.wall_ms for r in runs])  # [process, utterance]
    p50s = np.percentile(walls, 50, axis=1)
    ci = median_interval(p50s.tolist())
    routes = {tuple(r.fell_back) for r in runs if r.fell_back is not None}
    if len(routes) > 1:
        raise RuntimeError(f"{job.name}: the cascade routed the same utterances differently in two processes")
    fell = next(iter(routes), None)
    spread = float(p50s.max() / max(p50s.min(), 1e-9))
    return UtteranceCost(
        name=job.name, n_utterances=walls.shape[1],
        audio_seconds_mean=float(np.mean([len(a) for a in audio])) / SAMPLE_RATE,
        latency_mean_ms=float(np.median(walls.mean(1))), latency_p50_ms=float(np.median(p50s)),
        latency_p90_ms=float(np.median(np.percentile(walls, 90, axis=1))), latency_p50_ms_lo=ci.low,
        latency_p50_ms_hi=ci.high, cpu_ms_mean=float(np.median(np.mean([r.cpu_ms for r in runs], 1))),
        spread=spread, stable=spread <= max_spread, processes=len(runs),
        peak_rss_mb=float(np.median([r.peak_rss_mb for r in runs])), params_m=runs[0].params_m,
        fallback_rate=None if fell is None else float(np.mean(fell)),
        utterance_ms=[round(float(v), 3) for v in np.median(walls, 0)],
        load_avg_1m=max((r.load_avg_1m or 0.0) for r in runs) or None)


def time_utterances(jobs: Sequence[UtteranceJob], audio: Sequence[np.ndarray], cfg: UtteranceTimingConfig,
                    progress: bool = False) -> list[UtteranceCost]:
    """Every job timed on every utterance of `audio` in `cfg.processes` fresh processes, the processes of
    all jobs interleaved round robin (order rotated each round)."""
    from tqdm import tqdm

    if not audio:
        raise ValueError("no utterances to time")
    for j in jobs:
        if not Path(j.model).is_dir():
            raise FileNotFoundError(f"{j.name}: model not found: {j.model}")
    clips = [np.asarray(a, dtype=np.float32) for a in audio]
    runs: list[list[ProcessTiming]] = [[] for _ in jobs]
    bar = tqdm(total=len(jobs) * cfg.processes, desc="latency on utterances", unit="proc", disable=not progress,
               leave=False)

    def rounds(indices: list[int], n: int) -> None:
        for r in range(n):
            k = r % len(indices)
            for i in indices[k:] + indices[:k]:
                runs[i].append(run_isolated(_child_time, jobs[i].model, clips, cfg.threads, cfg.warmup,
                                            cfg.passes))
                bar.update(1)

    rounds(list(range(len(jobs))), cfg.processes)
    out = [_combine(j, rs, clips, cfg.max_spread) for j, rs in zip(jobs, runs)]
    shaky = [i for i, c in enumerate(out) if not c.stable]
    if shaky and cfg.extra_processes and cfg.processes > 1:
        bar.total += len(shaky) * cfg.extra_processes
        rounds(shaky, cfg.extra_processes)
        for i in shaky:
            out[i] = _combine(jobs[i], runs[i], clips, cfg.max_spread)
    bar.close()
    return out
