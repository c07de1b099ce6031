"""Peak memory of a command and all its children (DataLoader workers, torchrun ranks): the highest sum of
their resident set sizes, sampled. `/usr/bin/time -v` reports only the largest single process, which hides
a loader whose workers each hold a copy of the data.

    python -m w2vc.eval.peak_rss [--interval 0.2] [--json F] -- w2vc train ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def tree_rss_mb(proc: psutil.Process) -> float:
    """Resident memory of `proc` and its descendants, MiB (shared pages count once per process)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / 2**20


def run(cmd: list[str], interval: float = 0.2) -> dict:
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    proc = psutil.Process(child.pid)
    peak, peak_procs = 0.0, 0
    while child.poll() is None:
        try:
            mb = tree_rss_mb(proc)
            if mb > peak:
                peak, peak_procs = mb, 1 + len(proc.children(recursive=True))
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    return {"cmd": cmd, "returncode": child.returncode, "peak_tree_rss_mb": round(peak, 1),
            "processes_at_peak": peak_procs, "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m w2vc.eval.peak_rss", description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    ap.add_argument("--json", help="append the result as one JSON line to this file")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("give the command after --")
    res = run(cmd, a.interval)
    print(f"peak RSS of the process tree: {res['peak_tree_rss_mb']:.1f} MiB ({res['processes_at_peak']} processes), "
          f"wall {res['wall_s']:.1f} s, exit {res['returncode']}")
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(res) + "\n")
    return res["returncode"]


if __name__ == "__main__":
    sys.exit(main())
