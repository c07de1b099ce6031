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


def write_report(cfg: SweepConfig, res: P.ParetoResult, out_dir: Path, secs: float) -> SweepReport:
    """Table, plot and CSV of every candidate, and report.md (without exports yet)."""
    table = results_table(cfg, res)
    plot = plot_front(cfg, res, out_dir / "pareto.png")
    table_csv = write_csv(res, out_dir / "candidates.csv")
    report = out_dir / "report.md"
    report.write_text(report_md(cfg, res, table, secs))
    return SweepReport(table, report, plot, table_csv)


def add_exports(rep: SweepReport, cfg: SweepConfig, res: P.ParetoResult, secs: float,
                exports: Sequence[Path]) -> None:
    """report.md again, with the wall time to now and the exported bundles."""
    rep.report.write_text(report_md(cfg, res, rep.table, secs, exports))


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


def report_md(cfg: SweepConfig, res: P.ParetoResult, table: str, secs: float,
              exports: Sequence[Path] = ()) -> str:
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
    if exports:
        lines.append("## Exported bundles (load with `ORTModelForCTC.from_pretrained`)")
        lines += [f"- `{p}`" for p in exports]
    return "\n".join(lines) + "\n"
