"""The sweep's readable outputs from its Pareto selection: table, pareto.png, candidates.csv, report.md.

report.md is written as soon as the selection exists and again once the picks are exported, so a failed
export still leaves the report of what was measured.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from w2vc.experiments import pareto as P
from w2vc.experiments.config import SweepConfig

# shown after the objectives when some candidate has them
EXTRA_COLUMNS = ("wer_snr10", "latency_p90_ms", "rtf", "params_m", "peak_rss_mb", "gflops")


@dataclass
class SweepReport:
    table: str
    report: Path
    plot: Path
    table_csv: Path


def write_report(cfg: SweepConfig, res: P.ParetoResult, out_dir: Path, secs: float,
                 ties: dict[str, list[str]] | None = None) -> SweepReport:
    """Table, plot and CSV of every candidate, and report.md (without exports yet)."""
    table = results_table(cfg, res)
    plot = plot_front(cfg, res, out_dir / "pareto.png")
    table_csv = write_csv(res, out_dir / "candidates.csv")
    report = out_dir / "report.md"
    report.write_text(report_md(cfg, res, table, secs, ties=ties))
    return SweepReport(table, report, plot, table_csv)


def add_exports(rep: SweepReport, cfg: SweepConfig, res: P.ParetoResult, secs: float,
                exports: Sequence[Path], ties: dict[str, list[str]] | None = None) -> None:
    """report.md again, with the wall time to now and the exported bundles."""
    rep.report.write_text(report_md(cfg, res, rep.table, secs, exports, ties))


def results_table(cfg: SweepConfig, res: P.ParetoResult) -> str:
    cols = ["name", *cfg.objectives, *cfg.maximize]
    extra = [k for k in EXTRA_COLUMNS if k not in cols and any(k in r for r in res.rows)]
    return P.markdown_table(res, cols + extra)


def plot_front(cfg: SweepConfig, res: P.ParetoResult, path: Path) -> Path:
    """The first objective against the second (against itself when there is one)."""
    x, y = (cfg.objectives[1], cfg.objectives[0]) if len(cfg.objectives) > 1 else (cfg.objectives[0],) * 2
    return P.plot(res, x, y, path, title=f"sweep {cfg.name}: {y} vs {x}")


def write_csv(res: P.ParetoResult, path: Path) -> Path:
    keys = sorted({k for r in res.rows for k in r if k != "texts"})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(res.rows)
    return path


def uncertainty_md(cfg: SweepConfig, res: P.ParetoResult, ties: dict[str, list[str]] | None) -> list[str]:
    """Intervals of every candidate, the paired WER difference to the reference, ties with the picks, and
    how budgets treat noisy figures."""
    ref = cfg.eval.reference
    lines = ["## Uncertainty", "",
             f"WER: 95 % bootstrap interval over utterances; Δ = WER minus {ref}'s on the same utterances with a "
             "paired bootstrap interval (Bisani & Ney), *n.s.* when it holds 0. Latency: median of the per-process "
             f"p50s over {cfg.eval.processes} fresh processes per candidate, interleaved over candidates, with a "
             "bootstrap interval of that median; spread = max/min of the process p50s.", ""]
    head = ["candidate", *(f"WER {s} % [95 % CI]" for s in cfg.eval.sets), *(f"Δ {s} vs {ref} (pts)" for s in
            cfg.eval.sets), "p50 ms [95 % CI]", "spread"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(r, k):
        v, lo, hi = r.get(k), r.get(f"{k}_lo"), r.get(f"{k}_hi")
        if v is None:
            return "-"
        return f"{100 * v:.2f}" + (f" [{100 * lo:.2f}, {100 * hi:.2f}]" if lo is not None else "")

    for r in res.rows:
        cells = [r["name"]] + [pct(r, f"wer_{s}") for s in cfg.eval.sets]
        for s in cfg.eval.sets:
            k = f"wer_{s}_diff_vs_{ref}"
            if r.get(k) is None or r["name"] == ref:
                cells.append("-")
                continue
            sig = "" if r.get(f"wer_{s}_significant_vs_{ref}") else " *n.s.*"
            cells.append(f"{100 * r[k]:+.2f} [{100 * r[k + '_lo']:+.2f}, {100 * r[k + '_hi']:+.2f}]{sig}")
        lat = r.get("latency_p50_ms")
        lo, hi = r.get("latency_p50_ms_lo"), r.get("latency_p50_ms_hi")
        cells.append("-" if lat is None else f"{lat:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""))
        spread = r.get("latency_spread")
        cells.append("-" if spread is None else f"{spread:.2f}" + ("" if r.get("latency_stable", 1.0) else " UNSTABLE"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if ties:
        for pick, same in ties.items():
            lines.append(f"- Ties with **{pick}** (indistinguishable on every objective: WER by a paired interval "
                         f"holding 0, latency by overlapping intervals, others within 1 %): "
                         + (", ".join(same) if same else "none"))
    marginal = [(r["name"], b) for r in res.rows for b in res.budgets
                if r.get(f"{b.metric}_lo") is not None and r[f"{b.metric}_lo"] <= b.value <= r[f"{b.metric}_hi"]]
    lines.append("- Budgets are checked on the point figures (corpus WER; median latency); a candidate whose "
                 "interval straddles a bound is listed here as marginal: "
                 + (", ".join(f"{n} ({b})" for n, b in marginal) if marginal else "none") + ".")
    return lines + [""]


def report_md(cfg: SweepConfig, res: P.ParetoResult, table: str, secs: float,
              exports: Sequence[Path] = (), ties: dict[str, list[str]] | None = None) -> str:
    nan = float("nan")
    lines = [f"# Sweep `{cfg.name}`", "",
             f"Config: `{cfg.source}` · teacher `{cfg.teacher}` · corpus `{cfg.data.corpus}` "
             f"(seed {cfg.data.seed}) · eval sets {', '.join(cfg.eval.sets)} (limit {cfg.eval.limit}) · "
             f"wall time {secs / 60:.1f} min", "",
             f"Objectives (minimised): {', '.join(cfg.objectives)}"
             + (f"; maximised: {', '.join(cfg.maximize)}" if cfg.maximize else "")
             + f". Budgets: {', '.join(str(b) for b in cfg.budgets) or 'none'}.", "",
             "★ = knee pick (closest to the ideal point among budget-feasible front members), "
             "● = Pareto front.", "",
             table, ""]
    teacher = next((r for r in res.rows if r["name"] == "teacher"), None)
    if teacher and res.picks:
        lines.append("## Picks against the fp32 teacher (same run)")
        for r in res.picks:
            sp = teacher.get("latency_p50_ms", nan) / r.get("latency_p50_ms", nan)
            wr = r.get("wer_clean", nan) / max(teacher.get("wer_clean", nan), 1e-9)
            lines.append(f"- **{r['name']}**: {sp:.2f}× faster (p50), "
                         f"WER {100 * r.get('wer_clean', nan):.2f} % = {wr:.2f}× the teacher's, "
                         f"size {r.get('size_mb', nan):.1f} MB")
        lines.append("")
    lines += uncertainty_md(cfg, res, ties)
    if exports:
        lines.append("## Exported bundles (load with `ORTModelForCTC.from_pretrained`)")
        lines += [f"- `{p}`" for p in exports]
    return "\n".join(lines) + "\n"
