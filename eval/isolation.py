"""Measurements in a fresh process: peak RSS is a per-process high-water mark, so only a fresh process
shows the model's own (runtime libraries included, as on a device), and one measurement cannot warm or
fragment the next one's allocator.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from w2vc.eval.cost import CostConfig, CostResult
from w2vc.eval.latency import LengthCost, combine_processes
from w2vc.eval.measure import measure_cost


def run_isolated(fn: Callable, *args):
    """Call a module-level function in a fresh Python process and return its result (errors re-raised).

    A plain subprocess, not multiprocessing: it never re-imports the caller's __main__, so scripts need no
    `if __name__ == "__main__"` guard. Arguments and result travel as pickles in a temp directory."""
    import pickle
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="w2vc-cost-") as td:
        job, out = Path(td) / "job.pkl", Path(td) / "out.pkl"
        job.write_bytes(pickle.dumps((fn, args)))
        code = f"from w2vc.eval.isolation import _child_main; _child_main({td!r})"
        proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        if not out.exists():
            tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
            raise RuntimeError(f"the measuring process died (exit {proc.returncode}; out of memory?): {tail}")
        ok, value = pickle.loads(out.read_bytes())
    if not ok:
        raise value
    return value


def _child_main(td: str) -> None:
    import pickle

    fn, args = pickle.loads((Path(td) / "job.pkl").read_bytes())
    try:
        res = (True, fn(*args))
    except Exception as e:  # sent back and re-raised in the parent
        res = (False, e)
    (Path(td) / "out.pkl").write_bytes(pickle.dumps(res))


def _child_measure(model, arch, cfg_dict, name, cost_only) -> CostResult:
    res = measure_cost(model, arch=arch, cfg=CostConfig(**cfg_dict), name=name, cost_only=cost_only)
    res.rss_isolated = True
    return res


def measure_cost_isolated(model: str | os.PathLike | None = None, *, arch: str | None = None,
                          cfg: CostConfig | None = None, name: str | None = None, cost_only: bool | None = None,
                          **overrides) -> CostResult:
    """`measure_cost` in a fresh spawned process: peak RSS is the model's own (runtime included) and one
    measurement cannot disturb the next. `model` must be a path here (or use `arch`)."""
    if model is not None and not isinstance(model, str | os.PathLike):
        raise TypeError("measure_cost_isolated takes a path or an arch; save in-memory models first "
                        "(or call measure_cost in this process)")
    cfg = cfg or CostConfig()
    if overrides:
        cfg = CostConfig(**{**cfg.to_dict(), **overrides})
    return run_isolated(_child_measure, str(model) if model is not None else None, arch, cfg.to_dict(), name,
                        cost_only)


@dataclass(frozen=True)
class CostJob:
    """One model to measure: a path (artifact directory or .onnx file) or a preset `arch` (cost-only)."""

    name: str
    model: str | None = None
    arch: str | None = None
    cost_only: bool | None = None


def measure_costs(jobs: Sequence[CostJob], cfg: CostConfig, progress: bool = False) -> list[CostResult]:
    """Every job measured once in full in a fresh process (size, peak RSS, FLOPs, latency), then timed in
    `cfg.processes - 1` more fresh processes (`time_interleaved`); the latency figures combine all of them."""
    if not jobs:
        return []
    first = [measure_cost_isolated(j.model, arch=j.arch, cfg=cfg, name=j.name, cost_only=j.cost_only)
             for j in jobs]
    lengths = time_interleaved(jobs, cfg, progress, first=first)
    return [replace(r, lengths=ls, notes=r.notes + _unstable_note(ls, cfg),
                    load_avg_1m=max(r.load_avg_1m or 0.0, *(lc.load_avg_1m or 0.0 for lc in ls)) or None)
            for r, ls in zip(first, lengths)]


def time_interleaved(jobs: Sequence[CostJob], cfg: CostConfig, progress: bool = False,
                     first: Sequence[CostResult] | None = None) -> list[list[LengthCost]]:
    """Latency of every job over fresh processes whose order interleaves the jobs (round robin, rotated
    each round), so a slow spell of the machine hits every model alike instead of one model's only process.
    `first`: processes already measured (one per job), counted in. Per length, the figure is the median of
    the per-process p50s with a bootstrap interval; a spread (max/min) above `cfg.max_spread` gets
    `cfg.extra_processes` more processes, and one that still spreads is flagged `stable=False`."""
    timing = replace(cfg, count_flops=False)
    runs: list[list[CostResult]] = [[r] for r in first] if first else [[] for _ in jobs]
    todo = cfg.processes - (1 if first else 0)
    bar = tqdm(total=len(jobs) * todo, desc="latency", unit="proc", disable=not progress, leave=False)

    def rounds(indices: list[int], n: int) -> None:
        for r in range(n):
            k = r % len(indices)
            for i in indices[k:] + indices[:k]:
                j = jobs[i]
                runs[i].append(measure_cost_isolated(j.model, arch=j.arch, cfg=timing, name=j.name,
                                                     cost_only=j.cost_only))
                bar.update(1)

    def combined(i: int) -> list[LengthCost]:
        out = []
        for lc in runs[i][0].lengths:
            c = combine_processes([r.at(lc.seconds) for r in runs[i]], cfg.max_spread)
            c.gflops, c.load_avg_1m = lc.gflops, max((r.load_avg_1m or 0.0) for r in runs[i]) or None
            out.append(c)
        return out

    rounds(list(range(len(jobs))), todo)
    out = [combined(i) for i in range(len(jobs))]
    shaky = [i for i, ls in enumerate(out) if not all(lc.stable for lc in ls)]
    if shaky and cfg.extra_processes and cfg.processes > 1:
        bar.total += len(shaky) * cfg.extra_processes
        rounds(shaky, cfg.extra_processes)
        for i in shaky:
            out[i] = combined(i)
    bar.close()
    return out


def _unstable_note(lengths: list[LengthCost], cfg: CostConfig) -> list[str]:
    return [f"latency unstable at {lc.seconds:g} s: per-process p50 spread {lc.spread:.2f} > {cfg.max_spread} "
            f"after {lc.processes} processes" for lc in lengths if not lc.stable]
