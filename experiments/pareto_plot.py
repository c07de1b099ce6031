"""The Pareto plot of two objectives, made to be read: labels that do not collide, WER in %, a log axis where
values span decades, marker area proportional to size, 95 % intervals as error bars, and the front drawn as
what it is in 2-D.

A 3-objective front projected to two axes is not a curve (a member can sit above and right of another because
it wins on the third objective), so the line drawn is the 2-D non-dominated set of the plotted pair, and the
members of the full front are told apart by fill (filled: on the front of every objective; hollow: dominated).
Labels are placed greedily (front first) at the nearest free offset around their point, tried in widening
rings, checked against the text extents matplotlib's renderer reports; a label moved away gets a leader line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from w2vc.experiments import pareto as P

PERCENT_PREFIXES = ("wer", "cer")  # fractions shown as %
LOG_SPAN = 10.0  # an axis whose values (all > 0) span more than this ratio is drawn log
MAX_AREA = 600.0  # pt², the marker area of the largest model
MIN_AREA = 10.0  # pt², so the smallest model stays visible (area ∝ size above it)
DPI = 120
RINGS_PT = (2, 6, 12, 20, 30, 44, 62, 85, 115, 150, 200, 260)  # label offsets beyond the marker, points
ANGLES = (45, 0, -45, 90, -90, 135, 180, -135, 22.5, -22.5, 67.5, -67.5, 112.5, -112.5, 157.5, -157.5)


def scale_of(metric: str) -> float:
    return 100.0 if metric.startswith(PERCENT_PREFIXES) else 1.0


def wants_log(values: Sequence[float]) -> bool:
    return len(values) >= 2 and min(values) > 0 and max(values) / min(values) > LOG_SPAN


def front_2d(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates in these two coordinates (minimised)."""
    ranks = P.pareto_ranks(points) if points else []
    return [i for i, r in enumerate(ranks) if r == 1]


def marker_areas(sizes: Sequence[float | None]) -> list[float]:
    """pt² per point, proportional to its size (the largest MAX_AREA); 60 where no size is known."""
    known = [s for s in sizes if s is not None and s > 0]
    top = max(known) if known else None
    return [60.0 if top is None or s is None or s <= 0 else max(MIN_AREA, MAX_AREA * s / top) for s in sizes]


def _num(r: dict, k: str) -> float | None:
    return None if P._isnan(r.get(k)) else float(r[k])


def figure(res: P.ParetoResult, x: str, y: str, *, label: str = "name", size: str | None = "size_mb",
           title: str = ""):
    """The plot as a matplotlib Figure (Agg canvas, no pyplot state), labels placed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(9.5, 5.5), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rows = [r for r in res.rows if _num(r, x) is not None and _num(r, y) is not None]
    sx, sy = scale_of(x), scale_of(y)
    xs, ys = [float(r[x]) * sx for r in rows], [float(r[y]) * sy for r in rows]
    areas = marker_areas([_num(r, size) for r in rows] if size else [None] * len(rows))
    log_x, log_y = wants_log(xs), wants_log(ys)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")

    def style(r):  # (face, edge) by the row's standing on the full front
        if r["knee"]:
            return "tab:red", "tab:red"
        if r["pareto"]:
            return ("tab:orange", "tab:orange") if r["within_budget"] else ("0.8", "tab:orange")
        return "none", "tab:gray"

    for r, px, py, a in zip(rows, xs, ys, areas):
        face, edge = style(r)
        err = {}
        for axis, k, s in (("xerr", x, sx), ("yerr", y, sy)):
            lo, hi, v = _num(r, f"{k}_lo"), _num(r, f"{k}_hi"), float(r[k])
            if lo is not None and hi is not None:  # 95 % interval where the figure has one
                err[axis] = [[max(0.0, (v - lo) * s)], [max(0.0, (hi - v) * s)]]
        if err:
            ax.errorbar(px, py, fmt="none", ecolor=edge, elinewidth=0.8, alpha=0.6, capsize=2, zorder=2, **err)
        ax.scatter([px], [py], s=a, facecolors=face, edgecolors=edge, linewidths=1.3, zorder=3)
    # the 2-D front of the plotted pair (a maximised objective is negated for dominance)
    sign = [-1.0 if k in res.maximize else 1.0 for k in (x, y)]
    f2 = sorted(front_2d([(sign[0] * a, sign[1] * b) for a, b in zip(xs, ys)]), key=lambda i: xs[i])
    handles = []
    if f2:
        handles += ax.step([xs[i] for i in f2], [ys[i] for i in f2], where="post", c="tab:blue", lw=1.2,
                           zorder=1, label="front of the 2 plotted objectives")
    for b in res.budgets:
        if b.metric in (x, y):
            line = (ax.axvline(b.value * sx, c="tab:green", ls=":") if b.metric == x
                    else ax.axhline(b.value * sy, c="tab:green", ls=":"))
            line.set_label(f"budget {b}")
            handles.append(line)
    n_obj = len(res.minimize) + len(res.maximize)
    kinds = [("knee pick", "tab:red", "tab:red", any(r["knee"] for r in rows)),
             (f"front of all {n_obj} objectives", "tab:orange", "tab:orange",
              any(r["pareto"] and r["within_budget"] and not r["knee"] for r in rows)),
             (f"front of all {n_obj}, over a budget", "0.8", "tab:orange",
              any(r["pareto"] and not r["within_budget"] for r in rows)),
             ("dominated (hollow)", "none", "tab:gray", any(not r["pareto"] for r in rows))]
    handles = [Line2D([], [], ls="", marker="o", ms=7, mfc=f, mec=e, mew=1.3, label=t)
               for t, f, e, present in kinds if present] + handles
    ax.set_xlabel(x + (" (%)" if sx == 100 else "") + (", log scale" if log_x else ""))
    ax.set_ylabel(y + (" (%)" if sy == 100 else "") + (", log scale" if log_y else ""))
    ax.set_title(title or f"{y} vs {x}", fontsize=10)
    ax.grid(alpha=0.3, which="both" if log_x or log_y else "major")
    ax.margins(0.12)
    leg = ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    known = [_num(r, size) for r in rows if size and (_num(r, size) or 0) > 0]
    if known:
        ax.add_artist(leg)
        leg.set_clip_on(False)  # add_artist clips to the axes: its layout extent would stop at their edge
        top = max(known)
        refs = sorted({_round(v) for v in (top, top / 4, min(known))}, reverse=True)
        ax.legend(handles=[Line2D([], [], ls="", marker="o", mfc="none", mec="0.4",
                                  ms=math.sqrt(max(MIN_AREA, MAX_AREA * v / top)), label=f"{v:g}")
                           for v in refs], title=f"{size} (marker area)", fontsize=7.5, title_fontsize=7.5,
                  loc="lower left", bbox_to_anchor=(1.02, 0.0), borderaxespad=0, labelspacing=1.6,
                  borderpad=1.0)
    fig.tight_layout()
    fig.canvas.draw()  # final layout: the label placement below measures in display space
    place_labels(ax, [(px, py) for px, py in zip(xs, ys)], [str(r.get(label, "")) for r in rows], areas,
                 order=sorted(range(len(rows)), key=lambda i: (not rows[i]["knee"], not rows[i]["pareto"], xs[i])))
    return fig


def _round(v: float) -> float:
    """Two significant digits, for the size legend."""
    return float(f"{v:.2g}") if v > 0 else v


def place_labels(ax, anchors: Sequence[tuple[float, float]], texts: Sequence[str], areas: Sequence[float],
                 order: Sequence[int], fontsize: float = 7.0) -> list:
    """One annotation per anchor (data coordinates), each at the first offset, ring by ring, whose text box
    lies inside the axes and overlaps neither an earlier label nor any marker; when none does, the least
    overlapping one. Returns the annotations in anchor order."""
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px_per_pt = ax.figure.dpi / 72.0
    disp = ax.transData.transform(list(anchors)) if anchors else []
    markers = [_box(cx, cy, math.sqrt(a) / 2 * px_per_pt) for (cx, cy), a in zip(disp, areas)]
    placed: list = []
    out: list = [None] * len(anchors)
    for i in order:
        ann = ax.annotate(texts[i], anchors[i], xytext=(0, 0), textcoords="offset points", fontsize=fontsize,
                          zorder=5, arrowprops=dict(arrowstyle="-", color="0.45", lw=0.6, shrinkA=1, shrinkB=2))
        ann.update_positions(renderer)
        radius = math.sqrt(areas[i]) / 2
        best, best_cost = None, None
        for ring in RINGS_PT:
            r = radius + ring
            for deg in ANGLES:
                c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
                ann.set_position((r * c, r * s))
                ann.set_ha("left" if c > 0.38 else "right" if c < -0.38 else "center")
                ann.set_va("bottom" if s > 0.38 else "top" if s < -0.38 else "center")
                bb = Text.get_window_extent(ann, renderer).padded(1.5)
                inside = frame.x0 <= bb.x0 and bb.x1 <= frame.x1 and frame.y0 <= bb.y0 and bb.y1 <= frame.y1
                cost = (not inside, sum(_overlap(bb, p) for p in placed), sum(_overlap(bb, m) for m in markers))
                if best_cost is None or cost < best_cost:
                    best, best_cost = (r * c, r * s, ann.get_ha(), ann.get_va(), bb, ring), cost
                if cost == (False, 0.0, 0.0):
                    break
            if best_cost == (False, 0.0, 0.0):
                break
        dx, dy, ha, va, bb, ring = best
        ann.set_position((dx, dy))
        ann.set_ha(ha)
        ann.set_va(va)
        ann.arrow_patch.set_visible(ring > RINGS_PT[2])  # a leader line once the label is moved away
        placed.append(bb)
        out[i] = ann
    return out


def _box(cx: float, cy: float, r: float):
    from matplotlib.transforms import Bbox

    return Bbox.from_extents(cx - r, cy - r, cx + r, cy + r)


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # the legends sit right of the axes
    return path
