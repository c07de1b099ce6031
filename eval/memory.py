"""Memory of a measurement: resident set (now and peak), would-be size of in-memory weights, and the child
process that makes the peak the model's own.

Why a child process (`measure_cost_isolated`): peak RSS is a per-process high-water mark, so only a fresh
process shows the model's own (runtime libraries included, as on a device), and one measurement cannot warm
or fragment the next one's allocator. `measure_cost` itself runs in the calling process.
"""

from __future__ import annotations

import os
import resource
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from w2vc.eval.cost import CostConfig, CostResult


def peak_rss_mb() -> float:
    """This process's resident high-water mark in MiB. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork+exec, so a child started by a big parent would report the parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def state_dict_mb(model) -> float:
    """Would-be safetensors size of an in-memory model: bytes of its state-dict tensors, in MiB."""
    import torch

    seen, total = set(), 0
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor) and not t.is_quantized and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**20


# --- isolation -----------------------------------------------------------------------------------------

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
        code = f"from w2vc.eval.memory import _child_main; _child_main({td!r})"
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
    from w2vc.eval.cost import CostConfig, measure_cost  # cost.py re-exports this module's entry point

    res = measure_cost(model, arch=arch, cfg=CostConfig(**cfg_dict), name=name, cost_only=cost_only)
    res.rss_isolated = True
    return res


def measure_cost_isolated(model: str | os.PathLike | None = None, *, arch: str | None = None,
                          cfg: CostConfig | None = None, name: str | None = None, cost_only: bool | None = None,
                          **overrides) -> CostResult:
    """`measure_cost` in a fresh spawned process: peak RSS is the model's own (runtime included) and one
    measurement cannot disturb the next. `model` must be a path here (or use `arch`)."""
    from w2vc.eval.cost import CostConfig

    if model is not None and not isinstance(model, str | os.PathLike):
        raise TypeError("measure_cost_isolated takes a path or an arch; save in-memory models first "
                        "(or call measure_cost in this process)")
    cfg = cfg or CostConfig()
    if overrides:
        cfg = CostConfig(**{**cfg.to_dict(), **overrides})
    return run_isolated(_child_measure, str(model) if model is not None else None, arch, cfg.to_dict(), name,
                        cost_only)
