"""Cost of running a model on this CPU: latency p50/p90 and real-time factor per audio length (batch 1),
size on disk, parameters, peak resident memory and counted FLOPs — for PyTorch and ONNX Runtime artifacts,
in-memory models, and random-weight presets of the true shapes (`arch="base"|"large"`, labelled cost-only:
latency, size and memory do not depend on weight values, but such a model has no WER).

This module holds the request (CostConfig), the result (CostResult, LengthCost), `measure_cost` and the
report; the jobs live next to it: timing in latency.py, FLOP counting in flops.py, memory and the isolated
child process in memory.py, the per-runtime measurement in measure.py, ONNX export of in-memory models in
onnx_export.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

from w2vc.eval.latency import LengthCost, is_contended

__all__ = ["CostConfig", "CostResult", "LengthCost", "cost_table", "parse_seconds", "ratio_line", "ratios"]

HEADLINE_SECONDS = 3.0
RUNTIMES = ("torch", "onnx")
PRECISIONS = ("fp32", "bf16")


# --- results -------------------------------------------------------------------------------------------

@dataclass
class CostResult:
    """One model's cost on this machine. `lengths` holds one LengthCost per audio length measured."""

    model: str
    runtime: str
    precision: str
    threads: int
    cost_only: bool
    params_m: float
    size_mb: float
    size_source: str
    peak_rss_mb: float
    rss_before_load_mb: float
    rss_isolated: bool
    flops_source: str
    lengths: list[LengthCost]
    cpu: str
    warmup: int
    arch: str | None = None
    load_seconds: float = 0.0
    gflops_by_kind: dict[str, float] = field(default_factory=dict)
    quantized_size_mb: float | None = None
    load_avg_1m: float | None = None
    notes: list[str] = field(default_factory=list)

    def at(self, seconds: float) -> LengthCost:
        for lc in self.lengths:
            if math.isclose(lc.seconds, seconds):
                return lc
        raise KeyError(f"{self.model}: no measurement at {seconds:g} s (have {_secs(self.lengths)})")

    @property
    def headline(self) -> LengthCost:
        """The 3 s figures when measured (the seed's reference length), else the first length."""
        return headline_of(self.lengths)

    @property
    def latency_p50_ms(self) -> float:
        return self.headline.latency_p50_ms

    @property
    def latency_p90_ms(self) -> float:
        return self.headline.latency_p90_ms

    @property
    def rtf(self) -> float:
        return self.headline.rtf

    @property
    def gflops(self) -> float | None:
        return self.headline.gflops

    def metrics(self) -> dict[str, float]:
        """Flat figures for MLflow/Pareto: headline (3 s) names plus `_<s>s`-suffixed ones per length."""
        m = {"size_mb": self.size_mb, "params_m": self.params_m, "peak_rss_mb": self.peak_rss_mb}
        if self.quantized_size_mb is not None:
            m["quantized_size_mb"] = self.quantized_size_mb
        return {**length_metrics(self.lengths), **m}

    def params(self) -> dict:
        return {"model": self.model, "arch": self.arch, "runtime": self.runtime, "precision": self.precision,
                "threads": self.threads, "seconds": _secs(self.lengths), "warmup": self.warmup,
                "repeats": ",".join(str(lc.repeats) for lc in self.lengths), "batch": 1,
                "flops_source": self.flops_source, "size_source": self.size_source,
                "rss_isolated": self.rss_isolated, "load_avg_1m": self.load_avg_1m}

    @property
    def contended(self) -> bool:
        """Other processes wanted the cores while we measured: wall-clock figures are inflated."""
        return is_contended(self.load_avg_1m)

    def tags(self) -> dict[str, str]:
        return {"cost_only": str(self.cost_only).lower(), "cpu": self.cpu, "kind": "bench",
                "contended": str(self.contended).lower()}

    def to_dict(self) -> dict:
        return {**asdict(self), "metrics": self.metrics()}

    @classmethod
    def from_dict(cls, d: dict) -> CostResult:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["lengths"] = [LengthCost(**lc) for lc in d["lengths"]]
        return cls(**kw)


def length_metrics(lengths: Sequence[LengthCost]) -> dict[str, float]:
    """Latency (and GFLOPs) figures of measured lengths: headline names plus `_<s>s`-suffixed ones; the
    interval and spread over processes where several were timed."""
    h = headline_of(list(lengths))
    m = {"latency_p50_ms": h.latency_p50_ms, "latency_p90_ms": h.latency_p90_ms, "rtf": h.rtf,
         "cpu_ms_p50": h.cpu_ms_p50}
    if h.gflops is not None:
        m["gflops"] = h.gflops
    if h.latency_p50_low_ms is not None:
        m.update(latency_p50_ms_lo=h.latency_p50_low_ms, latency_p50_ms_hi=h.latency_p50_high_ms,
                 latency_spread=h.spread, latency_processes=h.processes, latency_stable=float(h.stable))
    for lc in lengths:
        s = f"_{lc.seconds:g}s"
        m.update({f"latency_p50_ms{s}": lc.latency_p50_ms, f"latency_p90_ms{s}": lc.latency_p90_ms,
                  f"rtf{s}": lc.rtf, f"cpu_ms_p50{s}": lc.cpu_ms_p50})
        if lc.latency_p50_low_ms is not None:
            m.update({f"latency_p50_ms_lo{s}": lc.latency_p50_low_ms,
                      f"latency_p50_ms_hi{s}": lc.latency_p50_high_ms, f"latency_spread{s}": lc.spread})
        if lc.gflops is not None:
            m[f"gflops{s}"] = lc.gflops
    return m


def _secs(lengths: Sequence[LengthCost]) -> str:
    return ",".join(f"{lc.seconds:g}" for lc in lengths)


def headline_of(lengths: Sequence[LengthCost]) -> LengthCost:
    """The 3 s figures when measured (the seed's reference length), else the first length."""
    return next((lc for lc in lengths if math.isclose(lc.seconds, HEADLINE_SECONDS)), lengths[0])


# --- measurement ---------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CostConfig:
    """Args:
    runtime: "torch" or "onnx"; None picks by artifact (a directory with *.onnx is ONNX).
    precision: "fp32" or "bf16" (torch: weights cast); None = as stored / as the artifact runs.
    seconds: audio lengths (s) to time, batch 1.
    threads: intra-op threads (torch and ORT); None = one per physical core, set explicitly either way.
    warmup: untimed runs per length.
    repeats / min_time_s: timed runs per length: at least `repeats` calls and `min_time_s` seconds (a
        calibrated loop), but stopping past `budget_s` once `min_repeats` calls are in.
    count_flops: count FLOPs per length (one extra forward each, after the memory peak is read).
    seed: seed of the noise audio and of random preset weights.
    processes: fresh processes that time each model (`measure_costs`): the figure is the median of their
        p50s, so one disturbed process does not decide it; several models are timed interleaved.
    max_spread: max/min of the per-process p50s above which a figure is re-measured with
        `extra_processes` more processes, and flagged unstable if it still spreads.
    """

    runtime: str | None = None
    precision: str | None = None
    seconds: tuple[float, ...] = (HEADLINE_SECONDS,)
    threads: int | None = None
    warmup: int = 2
    repeats: int = 10
    min_repeats: int = 3
    budget_s: float = 20.0
    count_flops: bool = True
    seed: int = 0
    min_time_s: float = 0.0
    processes: int = 1
    max_spread: float = 1.2
    extra_processes: int = 2

    def __post_init__(self):
        object.__setattr__(self, "seconds", tuple(float(s) for s in self.seconds))
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.seconds or any(s <= 0 for s in self.seconds):
            raise ValueError(f"seconds must be positive audio lengths, got {self.seconds}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.warmup < 0 or self.min_repeats < 1 or self.repeats < self.min_repeats or self.budget_s <= 0:
            raise ValueError("need warmup >= 0, 1 <= min_repeats <= repeats, budget_s > 0")
        if self.processes < 1 or self.extra_processes < 0 or self.max_spread < 1 or self.min_time_s < 0:
            raise ValueError("need processes >= 1, extra_processes >= 0, max_spread >= 1, min_time_s >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


# --- report --------------------------------------------------------------------------------------------

def cost_table(results: Sequence[CostResult]) -> str:
    """Markdown table in the seed's Base-vs-Large shape; RTF and GFLOPs at the headline (3 s) length."""
    secs = sorted({lc.seconds for r in results for lc in r.lengths})
    h = headline_of(results[0].lengths).seconds
    head = (["model", "runtime", "params"] + [f"p50/p90 ms @{s:g}s" for s in secs]
            + [f"RTF @{h:g}s", f"CPU ms @{h:g}s", "size MB", "peak RSS MB", f"GFLOPs @{h:g}s"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lat = []
        for s in secs:
            try:
                lc = r.at(s)
                lat.append(f"{lc.latency_p50_ms:.0f} / {lc.latency_p90_ms:.0f}")
            except KeyError:
                lat.append("-")
        g = _num(r.gflops) if r.gflops is not None else "-"
        label = r.model + (" (cost-only)" if r.cost_only else "")
        cells = [label, f"{r.runtime} {r.precision}", f"{_num(r.params_m)} M", *lat, f"{r.rtf:.3f}",
                 f"{r.headline.cpu_ms_p50:.0f}", _num(r.size_mb), f"{r.peak_rss_mb:.0f}", g]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _num(v: float) -> str:
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def ratios(a: CostResult, b: CostResult) -> dict[str, float]:
    """b / a for every shared figure (e.g. large / base)."""
    out = {"params": b.params_m / a.params_m, "size": b.size_mb / a.size_mb,
           "peak_rss": b.peak_rss_mb / a.peak_rss_mb}
    for lc in a.lengths:
        try:
            other = b.at(lc.seconds)
        except KeyError:
            continue
        out[f"latency_p50_{lc.seconds:g}s"] = other.latency_p50_ms / lc.latency_p50_ms
        if lc.cpu_ms_p50 > 0:
            out[f"cpu_time_{lc.seconds:g}s"] = other.cpu_ms_p50 / lc.cpu_ms_p50
        if lc.gflops and other.gflops:
            out[f"gflops_{lc.seconds:g}s"] = other.gflops / lc.gflops
    return out


def ratio_line(a: CostResult, b: CostResult) -> str:
    r = ratios(a, b)
    parts = [f"params {r['params']:.2f}x"] + [f"latency p50 {v:.2f}x @{k.split('_')[-1]}" for k, v in r.items()
                                              if k.startswith("latency")]
    parts += [f"CPU time {v:.2f}x @{k.split('_')[-1]}" for k, v in r.items() if k.startswith("cpu_time")]
    parts += [f"size {r['size']:.2f}x", f"peak RSS {r['peak_rss']:.2f}x"]
    parts += [f"GFLOPs {v:.2f}x @{k.split('_')[-1]}" for k, v in r.items() if k.startswith("gflops")]
    return f"{b.model}/{a.model}: " + ", ".join(parts)


def parse_seconds(text: str) -> tuple[float, ...]:
    try:
        out = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seconds takes comma-separated numbers, e.g. 1,3,10 (got {text!r})") from None
    if not out:
        raise ValueError("--seconds is empty")
    return out
