"""Pareto selection: non-dominated sort, budget filter, knee pick, report table and plot.

MLflow has no Pareto view (mlflow #2658), so w2vc computes the front itself, tags the runs and logs a plot.
Objectives are minimised; a maximised metric is negated internally and shown as is.
"""

from __future__ import annotations

import csv
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
_BUDGET = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*(?:[x*]\s*([\w.-]+))?\s*$")


@dataclass(frozen=True)
class Budget:
    """`metric op value`, or relative to a named row: `wer_clean <= 1.15 x teacher` (value × its metric)."""

    metric: str
    op: str
    value: float
    ref: str | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        m = _BUDGET.match(text)
        if not m:
            raise ValueError(f"bad budget {text!r}: expected 'metric <= number' or 'metric <= factor x candidate' "
                             f"(ops: {', '.join(_OPS)})")
        return cls(m.group(1), m.group(2), float(m.group(3)), m.group(4))

    def resolved(self, rows: Sequence[dict]) -> Budget:
        """The absolute budget: a relative one takes its reference row's figure (a missing row is an error)."""
        if self.ref is None:
            return self
        ref = [r for r in rows if r.get("name") == self.ref]
        if not ref or _isnan(ref[0].get(self.metric)):
            raise ValueError(f"budget '{self}': no row named {self.ref!r} with {self.metric}")
        return Budget(self.metric, self.op, self.value * float(ref[0][self.metric]))

    def ok(self, row: dict) -> bool:
        if self.ref is not None:
            raise ValueError(f"budget '{self}' is relative: resolve it against the rows first")
        v = row.get(self.metric)
        return v is not None and not _isnan(v) and _OPS[self.op](float(v), self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}" + (f" x {self.ref}" if self.ref else "")


def _isnan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b: no worse in every objective and strictly better in one (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_ranks(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting (rank 1 = the front). O(n² m), fine for sweeps of hundreds of candidates."""
    n = len(points)
    dominated_by = [0] * n
    dominating: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominating[i].append(j)
                dominated_by[j] += 1
            elif dominates(points[j], points[i]):
                dominating[j].append(i)
                dominated_by[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if dominated_by[i] == 0]
    r = 1
    while front:
        nxt = []
        for i in front:
            ranks[i] = r
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        front, r = nxt, r + 1
    return ranks


def knee(points: Sequence[Sequence[float]]) -> int:
    """Index of the front point closest (after min-max scaling) to the ideal point."""
    m = len(points[0])
    lo = [min(p[k] for p in points) for k in range(m)]
    hi = [max(p[k] for p in points) for k in range(m)]
    def dist(p):
        return math.sqrt(sum(((p[k] - lo[k]) / (hi[k] - lo[k]) if hi[k] > lo[k] else 0.0) ** 2 for k in range(m)))
    return min(range(len(points)), key=lambda i: dist(points[i]))


@dataclass
class ParetoResult:
    rows: list[dict]  # every input row + pareto_rank, pareto (bool), within_budget (bool), knee (bool)
    minimize: list[str]
    maximize: list[str]
    budgets: list[Budget]

    @property
    def front(self) -> list[dict]:
        return [r for r in self.rows if r["pareto"]]

    @property
    def picks(self) -> list[dict]:
        """Front members that meet every budget (the edge picks), knee first."""
        return sorted((r for r in self.front if r["within_budget"]), key=lambda r: not r["knee"])


def select(rows: Sequence[dict], minimize: Sequence[str], maximize: Sequence[str] = (),
           budgets: Sequence[Budget | str] = ()) -> ParetoResult:
    """Rank all rows with a complete objective vector; rows missing an objective get rank None."""
    if not minimize and not maximize:
        raise ValueError("give at least one objective to minimise or maximise")
    budgets = [(b if isinstance(b, Budget) else Budget.parse(b)).resolved(rows) for b in budgets]
    keys = list(minimize) + list(maximize)
    out = [dict(r) for r in rows]
    complete = [i for i, r in enumerate(out) if all(not _isnan(r.get(k)) for k in keys)]
    vecs = [[float(out[i][k]) for k in minimize] + [-float(out[i][k]) for k in maximize] for i in complete]
    ranks = pareto_ranks(vecs) if vecs else []
    for r in out:
        r.update(pareto_rank=None, pareto=False, knee=False, within_budget=all(b.ok(r) for b in budgets))
    for i, rank in zip(complete, ranks):
        out[i]["pareto_rank"] = rank
        out[i]["pareto"] = rank == 1
    ok = [i for i, rank in zip(complete, ranks) if rank == 1 and out[i]["within_budget"]]
    if ok:
        j = knee([vecs[complete.index(i)] for i in ok])
        out[ok[j]]["knee"] = True
    return ParetoResult(out, list(minimize), list(maximize), budgets)


def read_csv(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such CSV: {p}")
    rows = list(csv.DictReader(p.read_text().splitlines()))
    if not rows:
        raise ValueError(f"{p}: no rows")
    for r in rows:
        for k, v in r.items():
            try:
                r[k] = float(v)
            except (TypeError, ValueError):
                pass
    return rows


def markdown_table(res: ParetoResult, columns: Sequence[str]) -> str:
    cols = ["front"] + list(columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    order = sorted(res.rows, key=lambda r: (r["pareto_rank"] or 1e9, *(r.get(k, 0) or 0 for k in res.minimize)))
    for r in order:
        mark = ("★ knee" if r["knee"] else "● front" if r["pareto"] else "")
        if r["pareto"] and not r["within_budget"]:
            mark += " (over budget)"
        cells = [mark] + [_fmt(r.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def plot(res: ParetoResult, x: str, y: str, path: str | Path, label: str = "name", title: str = "",
         size: str | None = "size_mb") -> Path:
    """PNG of two objectives: every candidate (filled: on the full front; area: `size`), the 2-D front of
    the pair, intervals, budgets and non-colliding labels (drawn by pareto_plot.py)."""
    from w2vc.experiments import pareto_plot

    return pareto_plot.save(pareto_plot.figure(res, x, y, label=label, size=size, title=title), path)
