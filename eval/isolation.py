"""Measurements in a fresh process: peak RSS is a per-process high-water mark, so only a fresh process
shows the model's own (runtime libraries included, as on a device), and one measurement cannot warm or
fragment the next one's allocator.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from w2vc.eval.cost import CostConfig, CostResult
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
