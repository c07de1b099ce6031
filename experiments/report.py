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
from w2vc.experiments.seed_reference import SEED_REFERENCE

# shown after the objectives when some candidate has them
EXTRA_COLUMNS = ("wer_snr10", "wer_long_10s", "chunk_p50_ms_long_10s", "latency_p90_ms", "rtf", "params_m",
                 "peak_rss_mb", "gflops")


@dataclass
class SweepReport:
    table: str
    report: Path
    plot: Path
    table_csv: Path


def write_report(cfg: SweepConfig, res: P.ParetoResult, out_dir: Path, secs: float | None,
                 ties: dict[str, list[str]] | None = None) -> SweepReport:
    """Table, plot and CSV of every candidate, and report.md (without exports yet)."""
    table = results_table(cfg, res)
    plot = plot_front(cfg, res, out_dir / "pareto.png")
    table_csv = write_csv(res, out_dir / "candidates.csv")
    report = out_dir / "report.md"
    report.write_text(report_md(cfg, res, table, secs, ties=ties))
    return SweepReport(table, report, plot, table_csv)


def add_exports(rep: SweepReport, cfg: SweepConfig, res: P.ParetoResult, secs: float | None,
                exports: Sequence[Path], ties: dict[str, list[str]] | None = None) -> None:
    """report.md again, with the wall time to now and the exported bundles."""
    rep.report.write_text(report_md(cfg, res, rep.table, secs, exports, ties))


def results_table(cfg: SweepConfig, res: P.ParetoResult) -> str:
    cols = ["name", *cfg.objectives, *cfg.maximize]
    extra = [k for k in EXTRA_COLUMNS if k not in cols and any(k in r for r in res.rows)]
    return P.markdown_table(res, cols + extra)


def plot_front(cfg: SweepConfig, res: P.ParetoResult, path: Path) -> Path:
    """The first objective against the second (against itself when there is one); marker area = size_mb
    (pareto_plot.py: WER in %, log latency where it spans decades, the 2-D front of the pair)."""
    x, y = (cfg.objectives[1], cfg.objectives[0]) if len(cfg.objectives) > 1 else (cfg.objectives[0],) * 2
    return P.plot(res, x, y, path, title=f"sweep {cfg.name}: {y} vs {x}", size="size_mb")


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


def role_rows(cfg: SweepConfig, res: P.ParetoResult) -> tuple[dict | None, dict | None]:
    """The rows in the seed's Base and Large roles: the sweep's student and teacher as they are (the first
    candidate of each with no steps), None where the sweep has no such candidate."""
    by_name = {r["name"]: r for r in res.rows}

    def first(start: str) -> dict | None:
        return next((by_name[c.name] for c in cfg.candidates
                     if c.start == start and not c.steps and c.name in by_name), None)

    return first("student"), first("teacher")


def lineage_md(res: P.ParetoResult) -> list[str]:
    """Every step behind each candidate, from its artifact's provenance: a committed model (a pruned and
    fitted teacher, say) shows the training, pruning and packing that made it, not only this sweep's steps."""
    rows = [r for r in res.rows if r.get("lineage")]  # rows re-read from MLflow alone have none
    if not rows:
        return []
    return (["## Lineage (every step behind each candidate, from its provenance)", "",
             "| candidate | steps |", "|---|---|"]
            + [f"| {r['name']} | {r['lineage']} |" for r in sorted(rows, key=lambda r: r["name"])] + [""])


def noisy_set(cfg: SweepConfig) -> str | None:
    """The sweep's noisy set for the seed's "noisy WER": snr10 when scored, else the first non-clean set."""
    return "snr10" if "snr10" in cfg.eval.sets else next((s for s in cfg.eval.sets if s != "clean"), None)


def seed_table_md(cfg: SweepConfig, res: P.ParetoResult) -> list[str]:
    """The seed's Base-vs-Large table beside this sweep's figures for its student (Base role), teacher (Large
    role) and edge pick, with the Large/Base ratios of both and each budget checked per row."""
    seed = SEED_REFERENCE
    base, large, pick = *role_rows(cfg, res), (res.picks[0] if res.picks else None)
    noisy = noisy_set(cfg)
    cols = [(base, "Base role"), (large, "Large role"), (pick, "edge pick")]
    head = ["figure", f"seed {seed.base.name}", f"seed {seed.large.name}", "seed Large/Base",
            *(f"{r['name']} ({role})" if r else f"({role}: none)" for r, role in cols[:2]), "measured Large/Base",
            f"{pick['name']} (edge pick)" if pick else "(edge pick: none)"]
    lines = ["## Base vs Large (the seed's table, measured here)", "",
             f"Seed columns: {seed.source}; its WER is LibriSpeech test-clean and an unnamed noisy set. Measured "
             f"columns: this sweep's candidates on its {cfg.eval.split} split ({cfg.eval.limit or 'all'} utterances "
             f"per set), latency on this CPU ({cfg.eval.threads or 'default'} threads, median of the p50s of "
             f"{cfg.eval.processes} fresh processes). Base role = `{base['name'] if base else '-'}` "
             f"(`{cfg.student}`), Large role = `{large['name'] if large else '-'}` (`{cfg.teacher}`), edge pick = "
             + (f"`{pick['name']}` ({'knee' if pick['knee'] else 'first pick'} of the Pareto front)" if pick
                else "none (no front member meets every budget)") + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    figures = [("params (M)", "params_m", "params_m", False),
               ("CPU latency p50, 3 s of audio (ms)", "latency_3s_ms", "latency_p50_ms_3s", False),
               ("size, weights as run (MB; seed: fp32)", "fp32_mb", "size_mb", False),
               ("peak memory, RSS (MB)", None, "peak_rss_mb", False),
               ("WER clean (%)", "wer_clean", "wer_clean", True),
               (f"WER noisy (%; here {noisy or 'not scored'})", "wer_noisy", f"wer_{noisy}", True)]
    for text, seed_key, key, pct in figures:
        sb, sl = (getattr(seed.base, seed_key), getattr(seed.large, seed_key)) if seed_key else (None, None)
        cells = [text, _fig(sb, pct), _fig(sl, pct), _ratio(sl, sb)]
        cells += [_fig(r.get(key) if r else None, pct) for r, _ in cols[:2]]
        cells += [_ratio(large.get(key) if large else None, base.get(key) if base else None),
                  _fig(pick.get(key) if pick else None, pct)]
        lines.append("| " + " | ".join(cells) + " |")
    for given, b in zip(cfg.budgets, res.budgets):
        value = f"{100 * b.value:.2f} %" if b.metric.startswith(("wer", "cer")) else f"{b.value:.4g}"
        shown = f"`{given}`" + (f" (= {value})" if given.ref else "")
        ok = [("✓" if b.ok(r) else "✗") if r else "-" for r, _ in cols]
        lines.append("| " + " | ".join([f"budget {shown}", "", "", "", *ok[:2], "", ok[2]]) + " |")
    fits = [("-" if r is None else "yes" if r["within_budget"] else
             f"no ({sum(b.ok(r) for b in res.budgets)} of {len(res.budgets)} budgets met)") for r, _ in cols]
    lines.append("| " + " | ".join(["fits the device budget", "", "", "", *fits[:2], "", fits[2]]) + " |")
    return lines + ["", "Ratios are Large / Base (below 1: Large is better). The seed's MB are fp32 weights "
                    "(params × 4 bytes); here size is the weights as the candidate runs (MiB) and peak memory the "
                    "measuring process's peak RSS, runtime included (no seed figure).", ""]


def _fig(v, pct: bool = False) -> str:
    if v is None or P._isnan(v):
        return "-"
    v = float(v)
    if pct:
        return f"{100 * v:.2f}"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def _ratio(num, den) -> str:
    if num is None or den is None or P._isnan(num) or P._isnan(den) or float(den) == 0:
        return "-"
    return f"{float(num) / float(den):.2f}×"


def report_md(cfg: SweepConfig, res: P.ParetoResult, table: str, secs: float | None,
              exports: Sequence[Path] = (), ties: dict[str, list[str]] | None = None) -> str:
    nan = float("nan")
    lines = [f"# Sweep `{cfg.name}`", "",
             f"Config: `{cfg.source}` · teacher `{cfg.teacher}` · corpus `{cfg.data.corpus}` "
             f"(seed {cfg.data.seed}) · eval sets {', '.join(cfg.eval.sets)} (limit {cfg.eval.limit}) · "
             + (f"wall time {secs / 60:.1f} min" if secs is not None else "re-rendered from the sweep's files"), "",
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
    lines += seed_table_md(cfg, res)
    lines += lineage_md(res)
    lines += uncertainty_md(cfg, res, ties)
    if exports:
        lines.append("## Exported bundles (load with `ORTModelForCTC.from_pretrained`)")
        lines += [f"- `{p}`" for p in exports]
    return "\n".join(lines) + "\n"
