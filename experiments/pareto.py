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


def plot(res: ParetoResult, x: str, y: str, path: str | Path, label: str = "name", title: str = "") -> Path:
    """Scatter of two objectives: all candidates, the front as a step line, picks highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    pts = [r for r in res.rows if not _isnan(r.get(x)) and not _isnan(r.get(y))]
    for r in pts:
        color = "tab:red" if r["knee"] else "tab:orange" if r["pareto"] else "tab:gray"
        ax.scatter(float(r[x]), float(r[y]), c=color, s=60 if r["pareto"] else 30, zorder=3)
        err = {a: [[float(r[k]) - float(r[f"{k}_lo"])], [float(r[f"{k}_hi"]) - float(r[k])]]
               for a, k in (("xerr", x), ("yerr", y)) if not _isnan(r.get(f"{k}_lo")) and not _isnan(r.get(f"{k}_hi"))}
        if err:  # 95 % intervals where the figure has one
            ax.errorbar(float(r[x]), float(r[y]), fmt="none", ecolor=color, elinewidth=0.8, alpha=0.7, **err)
        ax.annotate(str(r.get(label, "")), (float(r[x]), float(r[y])), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    front2 = sorted((r for r in pts if r["pareto"]), key=lambda r: float(r[x]))
    if front2:
        ax.plot([float(r[x]) for r in front2], [float(r[y]) for r in front2], "--", c="tab:orange", lw=1,
                label="Pareto front (all objectives)")
    for b in res.budgets:
        if b.metric == x:
            ax.axvline(b.value, c="tab:green", ls=":", label=f"budget {b}")
        if b.metric == y:
            ax.axhline(b.value, c="tab:green", ls=":", label=f"budget {b}")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or f"{y} vs {x}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
