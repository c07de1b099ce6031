"""Peak memory of a process tree: a child that holds 200 MiB in a grandchild shows at least that much, and
the exit status comes back."""

from __future__ import annotations

import sys

from w2vc.eval.peak_rss import run

HOLD = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
        "\"import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)\"]); "
        "sys.exit(3)")


def test_peak_counts_descendants_and_keeps_the_exit_status():
    res = run([sys.executable, "-c", HOLD], interval=0.05)
    assert res["returncode"] == 3
    assert res["peak_tree_rss_mb"] >= 200 and res["processes_at_peak"] == 2
