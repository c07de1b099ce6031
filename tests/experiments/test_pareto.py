"""Pareto selection against brute force on point sets the code never saw."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys

import pytest

from w2vc.experiments.pareto import Budget, dominates, pareto_ranks, select


def brute_front(points):
    return {i for i, p in enumerate(points)
            if not any(all(q[k] <= p[k] for k in range(len(p))) and any(q[k] < p[k] for k in range(len(p)))
                       for q in points)}


@pytest.mark.parametrize("seed", range(20))
def test_front_equals_brute_force(seed):
    rng = random.Random(seed)
    m = rng.randint(2, 4)
    pts = [[rng.choice([rng.random(), float(rng.randint(0, 5))]) for _ in range(m)] for _ in range(rng.randint(1, 60))]
    ranks = pareto_ranks(pts)
    assert {i for i, r in enumerate(ranks) if r == 1} == brute_front(pts)
    # rank k = front of what is left after removing ranks < k
    for k in range(2, max(ranks) + 1):
        rest = [i for i, r in enumerate(ranks) if r >= k]
        sub = brute_front([pts[i] for i in rest])
        assert {rest[j] for j in sub} == {i for i, r in enumerate(ranks) if r == k}


def test_maximize_budget_and_knee():
    rows = [dict(name="a", wer=0.10, ms=10, acc=1), dict(name="b", wer=0.05, ms=30, acc=1),
            dict(name="c", wer=0.05, ms=40, acc=1), dict(name="d", wer=0.20, ms=5, acc=2)]
    res = select(rows, minimize=["wer", "ms"], maximize=["acc"], budgets=["ms <= 35"])
    front = {r["name"] for r in res.front}
    assert front == {"a", "b", "d"}  # c dominated by b; d survives through acc
    assert {r["name"] for r in res.picks} == {"a", "b", "d"}
    assert sum(r["knee"] for r in res.rows) == 1 and res.picks[0]["knee"]
    assert not dominates([1, 1], [1, 1])
    with pytest.raises(ValueError):
        Budget.parse("latency is small")


def test_cli_csv_returns_exactly_the_front(tmp_path):
    rng = random.Random(99)
    pts = [[round(rng.random(), 3), round(rng.random(), 3), round(rng.random(), 3)] for _ in range(40)]
    f = tmp_path / "pts.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "a", "b", "c"])
        for i, p in enumerate(pts):
            w.writerow([f"p{i}", *p])
    out = tmp_path / "front.json"
    r = subprocess.run([sys.executable, "-m", "w2vc.cli", "pareto", "--csv", str(f), "--minimize", "a,b",
                        "--maximize", "c", "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = {row["id"] for row in json.loads(out.read_text())["front"]}
    want = brute_front([[p[0], p[1], -p[2]] for p in pts])
    assert got == {f"p{i}" for i in want}
    bad = subprocess.run([sys.executable, "-m", "w2vc.cli", "pareto", "--csv", str(f), "--minimize", "zz"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "zz" in bad.stderr and "Traceback" not in bad.stderr


def test_relative_budget_scales_by_the_named_row():
    rows = [{"name": "teacher", "wer": 0.20, "ms": 40.0}, {"name": "int8", "wer": 0.22, "ms": 10.0},
            {"name": "pruned", "wer": 0.30, "ms": 4.0}]
    res = select(rows, ["wer", "ms"], budgets=["wer <= 1.15 x teacher", "ms <= 20"])
    within = {r["name"] for r in res.rows if r["within_budget"]}
    assert within == {"int8"}, within  # 0.22 <= 0.23; pruned 0.30 is over; teacher is too slow
    assert [r["name"] for r in res.picks] == ["int8"]
    assert str(Budget.parse("wer <= 1.15 x teacher")) == "wer <= 1.15 x teacher"
    with pytest.raises(ValueError, match="no row named 'ghost'"):
        select(rows, ["wer", "ms"], budgets=["wer <= 1.1 x ghost"])
