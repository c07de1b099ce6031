"""`w2vc report SWEEP_DIR`: the report, plot and table of a sweep rendered again from its files alone.

A sweep leaves `config.json` (the parsed config) and one `evals/<name>-<key>.json` record per candidate;
those hold every figure the report uses, so a new report section (or a fixed plot) reaches a finished sweep
without rebuilding or re-measuring anything, and without MLflow. Paired WER differences and ties are
recomputed from the stored transcripts exactly as the sweep computes them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from w2vc.experiments import pareto as P
from w2vc.experiments.config import Candidate, DataConfig, EvalConfig, ExportPicks, SweepConfig
from w2vc.experiments.report import SweepReport, add_exports, write_report


def config_from_json(path: str | Path) -> SweepConfig:
    """The SweepConfig a sweep recorded in its `config.json` (SweepConfig.to_dict); its `search:` section,
    if any, is left out (no report figure depends on it)."""
    d = json.loads(Path(path).read_text())
    return SweepConfig(
        name=d["name"], teacher=d["teacher"], student=d.get("student"),
        data=DataConfig.from_dict(d.get("data") or {}), eval=EvalConfig.from_dict(d.get("eval") or {}),
        objectives=tuple(d["objectives"]), maximize=tuple(d.get("maximize") or ()),
        budgets=tuple(P.Budget.parse(b) for b in d.get("budgets") or ()),
        candidates=tuple(Candidate(c["name"], c["start"], tuple(c.get("steps") or ())) for c in d["candidates"]),
        export=ExportPicks.from_dict(d.get("export") or {}), experiment=d.get("experiment", "w2vc-sweeps"),
        work_dir=d.get("work_dir", "runs/sweeps"), source=d.get("source", ""))


def latest_records(evals: Path, names: list[str]) -> dict[str, dict]:
    """Per candidate name, its newest record in `evals/` (a name measured under an older config has several)."""
    found: dict[str, tuple[float, dict]] = {}
    for f in evals.glob("*.json"):
        rec = json.loads(f.read_text())
        t = f.stat().st_mtime
        if rec.get("name") in names and (rec["name"] not in found or t > found[rec["name"]][0]):
            found[rec["name"]] = (t, rec)
    return {n: found[n][1] for n in names if n in found}


def report_from_dir(sweep_dir: str | Path, out_dir: str | Path | None = None) -> tuple[SweepReport, list[str]]:
    """report.md, pareto.png and candidates.csv of the sweep in `sweep_dir`, written to `out_dir` (default:
    the sweep's directory). Returns the report and the config's candidates that have no record yet."""
    from w2vc.experiments.runner import Sweep, compare_with_reference, find_ties

    root = Path(sweep_dir)
    if not (root / "config.json").exists() or not (root / "evals").is_dir():
        raise FileNotFoundError(f"{root}: not a sweep directory (needs config.json and evals/)")
    cfg = config_from_json(root / "config.json")
    names = [c.name for c in cfg.candidates]
    recs = latest_records(root / "evals", names)
    if not recs:
        raise ValueError(f"{root / 'evals'}: no figures of any candidate of sweep {cfg.name}")
    missing = [n for n in names if n not in recs]
    compare_with_reference(Sweep(cfg, started=0.0, progress=False), list(recs.values()))
    run_ids = {}
    if (root / "candidates.csv").exists():  # keep the MLflow run ids the sweep wrote
        run_ids = {r["name"]: r.get("run_id") or None for r in csv.DictReader(open(root / "candidates.csv"))}
    rows = [{"name": n, **r["metrics"], "artifact": r["artifact"], "run_id": run_ids.get(n)} for n, r in recs.items()]
    res = P.select(rows, cfg.objectives, cfg.maximize, cfg.budgets)
    ties = find_ties(res, recs, cfg)
    out = Path(out_dir) if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    rep = write_report(cfg, res, out, None, ties)
    exports = [p for p in (Path(cfg.export.dir) / cfg.name / r["name"] for r in res.picks[: cfg.export.max_picks])
               if (p / "w2vc.json").exists()] if cfg.export.enabled else []
    add_exports(rep, cfg, res, None, exports, ties)
    return rep, missing
