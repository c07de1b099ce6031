"""`w2vc sweep`: config → recipes → cached artifacts → measurements → MLflow → Pareto → exported picks.

Nothing is lost on interruption (even `kill -9`): a step writes into `<key>.work/` and is renamed into
the cache only when finished (distillation resumes from its checkpoint), a candidate's figures are
written to `evals/<key>.json` atomically before MLflow is touched, and a candidate run is found again by
its `w2vc.candidate_key` tag, so a re-run logs nothing twice.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from w2vc.core.artifact import Artifact, step_key
from w2vc.core.util import file_lock
from w2vc.experiments import pareto as P
from w2vc.experiments.config import Candidate, SweepConfig
from w2vc.experiments.recipes import StepContext, get_step

CANDIDATE_KIND = "candidate"


@dataclass
class CandidateResult:
    name: str
    artifact: str
    lineage: list[str]
    recipe: list[dict]
    metrics: dict
    key: str
    run_id: str | None = None
    build_seconds: float = 0.0

    def row(self) -> dict:
        return {"name": self.name, **self.metrics, "artifact": self.artifact, "run_id": self.run_id}


@dataclass
class SweepResult:
    config: SweepConfig
    candidates: list[CandidateResult]
    pareto: P.ParetoResult
    report: Path
    plot: Path
    table_csv: Path
    exports: list[Path] = field(default_factory=list)
    parent_run_id: str | None = None


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def _resolve_refs(params: dict, cfg: SweepConfig) -> dict:
    """`@teacher` / `@student` in step options name the sweep's models."""
    return {k: (cfg.start_path(v[1:]) if isinstance(v, str) and v in ("@teacher", "@student") else v)
            for k, v in params.items()}


def build_candidate(c: Candidate, cfg: SweepConfig, cache: Path, progress: bool = True) -> Artifact:
    """Run (or find in the cache) each step of the chain; returns the final artifact."""
    start = cfg.start_path(c.start)
    if not Path(start).is_dir():
        raise FileNotFoundError(f"candidate {c.name}: start model not found: {start}")
    art = Artifact.open(start)
    root = art
    ctx = StepContext(root=root, progress=progress)
    for s in c.steps:
        spec = get_step(s["kind"])
        params = _resolve_refs({k: v for k, v in s.items() if k != "kind"}, cfg)
        step_cfg = spec.make_config(params, cfg.data.corpus)
        key = step_key(art.hash, s["kind"], step_cfg.to_dict())
        done = cache / key
        # one builder per step: processes sharing the cache (search workers, a sweep beside them) wait
        # for a step another one is building, then find it finished
        with file_lock(cache / f"{key}.lock"):
            if not (done / "w2vc.json").exists():
                work = cache / f"{key}.work"
                if s["kind"] not in ("distill", "recover"):  # these resume from their checkpoint; others restart
                    shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True, exist_ok=True)
                out = spec(art, step_cfg, work / "out", ctx)
                os.replace(out.path, done)  # the cache entry appears only when the step finished
                shutil.rmtree(work, ignore_errors=True)
        art = Artifact.open(done)
    return art


def _candidate_key(art: Artifact, c: Candidate, cfg: SweepConfig) -> str:
    blob = json.dumps({"artifact": art.hash, "name": c.name, "eval": cfg.to_dict()["eval"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def measure_candidate(art: Artifact, cfg: SweepConfig, eval_data) -> tuple[dict, dict]:
    """WER on the preloaded sets + cost in a clean child process. Returns (metrics, text artifacts)."""
    from w2vc.core.load import load
    from w2vc.eval.cost import measure_cost_isolated
    from w2vc.eval.evaluate import evaluate_model

    tr = load(art, threads=cfg.eval.threads)
    res = evaluate_model(tr, eval_data, threads=cfg.eval.threads, model_name=str(art.path))
    metrics = {k: v for k, v in res.metrics.items()}
    cost = measure_cost_isolated(str(art.path), seconds=cfg.eval.seconds, threads=cfg.eval.threads,
                                 repeats=cfg.eval.repeats)
    metrics.update(cost.metrics())
    return metrics, res.text_artifacts()


def _mlflow():
    from w2vc.eval.tracking import setup_mlflow

    return setup_mlflow


def _find_run(client, experiment_id: str, kind: str, tag: str, value: str, finished_only: bool = True):
    runs = client.search_runs([experiment_id],
                              filter_string=f"tags.`w2vc.kind` = '{kind}' and tags.`{tag}` = '{value}'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    return [r for r in runs if r.info.status == "FINISHED" or not finished_only]


def rows_from_mlflow(experiment: str) -> list[dict]:
    """Candidate runs of an MLflow experiment as rows (name + metrics) for `w2vc pareto --experiment`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from w2vc.eval.tracking import DEFAULT_URI

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI))
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`w2vc.kind` = '{CANDIDATE_KIND}'")
    rows = [{"name": r.data.tags.get("w2vc.candidate", r.info.run_name), "run_id": r.info.run_id,
             **r.data.metrics} for r in runs if r.info.status == "FINISHED"]
    if not rows:
        raise ValueError(f"experiment {experiment!r} has no finished candidate runs")
    return rows


def run_sweep(cfg: SweepConfig, progress: bool = True, log_mlflow: bool = True) -> SweepResult:
    from w2vc.data.synth import SynthConfig, synthesize_corpus
    from w2vc.eval.evaluate import EvalData, load_eval_data
    from w2vc.eval.tracking import standard_tags

    t_start = time.time()
    for what, path in (("teacher", cfg.teacher), ("student", cfg.student)):
        if path and not Path(path).is_dir():
            raise FileNotFoundError(f"{what} model not found: {path}")
    meta_file = Path(cfg.data.corpus) / "corpus.json"
    if meta_file.exists():  # any complete corpus is used as it is (its own settings are in corpus.json)
        made = json.loads(meta_file.read_text())["config"]
        print(f"[1/5] corpus {cfg.data.corpus} (present: seed {made['seed']}, {made['hours']} h)")
    else:
        print(f"[1/5] corpus {cfg.data.corpus}: synthesizing (seed {cfg.data.seed}, {cfg.data.hours} h)")
        synthesize_corpus(cfg.data.corpus, SynthConfig(hours=cfg.data.hours, seed=cfg.data.seed))
    sweep_dir = Path(cfg.work_dir) / cfg.name
    cache, evals = sweep_dir / "steps", sweep_dir / "evals"
    cache.mkdir(parents=True, exist_ok=True)
    evals.mkdir(parents=True, exist_ok=True)
    _atomic_json(sweep_dir / "config.json", cfg.to_dict())

    full = load_eval_data(cfg.data.corpus, split=cfg.eval.split, noisy=any(s != "clean" for s in cfg.eval.sets),
                          limit=cfg.eval.limit, progress=progress)
    missing = [s for s in cfg.eval.sets if s not in {e.name for e, _ in full.sets}]
    if missing:
        raise ValueError(f"eval.sets: {', '.join(missing)} not in the corpus (have "
                         f"{', '.join(e.name for e, _ in full.sets)})")
    eval_data = EvalData(full.source, full.split, full.limit, [(e, d) for e, d in full.sets if e.name in cfg.eval.sets])

    client = parent_id = None
    if log_mlflow:
        try:
            mlflow = _mlflow()(cfg.experiment)
            from mlflow.tracking import MlflowClient

            client = MlflowClient()
            exp_id = mlflow.get_experiment_by_name(cfg.experiment).experiment_id
            found = _find_run(client, exp_id, "sweep", "w2vc.sweep", cfg.name, finished_only=False)
            if found:
                parent_id = found[0].info.run_id
            else:
                parent = client.create_run(exp_id, run_name=f"sweep-{cfg.name}",
                                           tags={"w2vc.kind": "sweep", "w2vc.sweep": cfg.name, **standard_tags()})
                parent_id = parent.info.run_id
                client.log_param(parent_id, "config", cfg.source or cfg.name)
                client.log_param(parent_id, "teacher", cfg.teacher)
                client.log_param(parent_id, "n_candidates", len(cfg.candidates))
        except Exception as e:
            print(f"warning: MLflow unavailable ({type(e).__name__}: {e}); figures kept in {evals}")
            client = None

    print(f"[2/5] {len(cfg.candidates)} candidates (cache: {cache})")
    results: list[CandidateResult] = []
    bar = tqdm(cfg.candidates, desc="candidates", unit="cand", disable=not progress)
    for c in bar:
        bar.set_postfix_str(c.name)
        t0 = time.time()
        art = build_candidate(c, cfg, cache, progress=progress)
        key = _candidate_key(art, c, cfg)
        fig_file = evals / f"{c.name}-{key}.json"
        if fig_file.exists():
            rec = json.loads(fig_file.read_text())
        else:
            metrics, texts = measure_candidate(art, cfg, eval_data)
            rec = {"name": c.name, "key": key, "artifact": str(art.path), "metrics": metrics,
                   "lineage": art.provenance.get("lineage", []), "recipe": list(c.steps), "texts": texts,
                   "build_seconds": round(time.time() - t0, 1)}
            _atomic_json(fig_file, rec)
        cr = CandidateResult(c.name, rec["artifact"], rec["lineage"], rec["recipe"], rec["metrics"], key,
                             build_seconds=rec.get("build_seconds", 0.0))
        if client is not None:
            cr.run_id = _log_candidate(client, exp_id, parent_id, cr, rec.get("texts", {}), cfg)
        results.append(cr)
    bar.close()

    print("[3/5] Pareto selection")
    rows = [r.row() for r in results]
    res = P.select(rows, cfg.objectives, cfg.maximize, cfg.budgets)
    cols = ["name", *cfg.objectives, *cfg.maximize]
    extra = [k for k in ("wer_snr10", "latency_p90_ms", "rtf", "params_m", "peak_rss_mb", "gflops") if k not in cols]
    table = P.markdown_table(res, cols + [k for k in extra if any(k in r for r in rows)])
    x, y = (cfg.objectives[1], cfg.objectives[0]) if len(cfg.objectives) > 1 else (cfg.objectives[0], cfg.objectives[0])
    plot = P.plot(res, x, y, sweep_dir / "pareto.png", title=f"sweep {cfg.name}: {y} vs {x}")
    table_csv = sweep_dir / "candidates.csv"
    keys = sorted({k for r in res.rows for k in r if k not in ("texts",)})
    with open(table_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(res.rows)
    teacher_row = next((r for r in res.rows if r["name"] == "teacher"), None)
    report = sweep_dir / "report.md"
    report.write_text(_report_md(cfg, res, table, teacher_row, time.time() - t_start))

    print("[4/5] export of the picks")
    exports = _export_picks(cfg, res, results, client) if cfg.export.enabled else []
    report.write_text(_report_md(cfg, res, table, teacher_row, time.time() - t_start, exports))

    if client is not None:
        by_name = {r.name: r for r in results}
        for r in res.rows:
            rid = by_name[r["name"]].run_id
            if rid:
                client.set_tag(rid, "pareto", str(r["pareto"]).lower())
                client.set_tag(rid, "pareto_rank", str(r["pareto_rank"]))
                client.set_tag(rid, "within_budget", str(r["within_budget"]).lower())
                client.set_tag(rid, "knee", str(r["knee"]).lower())
        for f in (report, plot, table_csv):
            client.log_artifact(parent_id, str(f))
        client.set_tag(parent_id, "pareto_front", ",".join(r["name"] for r in res.front))
        client.set_terminated(parent_id, "FINISHED")
    print("[5/5] done")
    print(table)
    return SweepResult(cfg, results, res, report, plot, table_csv, exports, parent_id)


def _log_candidate(client, exp_id, parent_id, cr: CandidateResult, texts: dict, cfg: SweepConfig) -> str:
    import tempfile

    from w2vc.eval.tracking import standard_tags

    found = _find_run(client, exp_id, CANDIDATE_KIND, "w2vc.candidate_key", cr.key, finished_only=False)
    done = [r for r in found if r.info.status == "FINISHED"]
    if done:
        return done[0].info.run_id
    for r in found:  # a run cut off by a crash mid-logging: keep it visible, mark it, log afresh
        client.set_tag(r.info.run_id, "w2vc.superseded", "true")
        if r.info.status == "RUNNING":
            client.set_terminated(r.info.run_id, "FAILED")
    tags = {"mlflow.parentRunId": parent_id, "w2vc.kind": CANDIDATE_KIND, "w2vc.candidate": cr.name,
            "w2vc.candidate_key": cr.key, "w2vc.sweep": cfg.name, "lineage": " -> ".join(cr.lineage) or "baseline",
            "artifact": cr.artifact, **standard_tags()}
    run = client.create_run(exp_id, run_name=cr.name, tags=tags)
    rid = run.info.run_id
    try:
        params = {"recipe": json.dumps(cr.recipe)[:500] or "[]", "artifact": cr.artifact,
                  "eval_sets": ",".join(cfg.eval.sets), "eval_limit": str(cfg.eval.limit),
                  "threads": str(cfg.eval.threads or "default")}
        for i, s in enumerate(cr.recipe):
            for k, v in s.items():
                params[f"step{i}.{k}"] = str(v)[:500]
        for k, v in params.items():
            client.log_param(rid, k, v)
        for k, v in cr.metrics.items():
            if isinstance(v, (int, float)):
                client.log_metric(rid, k, float(v))
        with tempfile.TemporaryDirectory() as td:
            for fname, text in texts.items():
                (Path(td) / fname).write_text(text)
                client.log_artifact(rid, str(Path(td) / fname), "transcripts")
        client.set_terminated(rid, "FINISHED")
    except Exception:
        client.set_terminated(rid, "FAILED")  # a re-run logs it again; the failed one stays visible
        raise
    return rid


def _export_picks(cfg: SweepConfig, res: P.ParetoResult, results: list[CandidateResult], client) -> list[Path]:
    from w2vc.compress.export import ExportConfig, export_onnx
    from w2vc.core.card import write_model_card

    by_name = {r.name: r for r in results}
    out_paths = []
    for row in res.picks[: cfg.export.max_picks]:
        cr = by_name[row["name"]]
        art = Artifact.open(cr.artifact)
        dst = Path(cfg.export.dir) / cfg.name / cr.name
        metrics = {k: v for k, v in cr.metrics.items() if isinstance(v, (int, float))}
        if (dst / "w2vc.json").exists() and json.loads((dst / "w2vc.json").read_text()).get("source_hash") == art.hash:
            out_paths.append(dst)
            if (client is not None and cfg.export.register and cr.run_id
                    and "registered_model" not in client.get_run(cr.run_id).data.tags):
                _register(client, cr, dst, cfg)  # exported before, but its registration failed or was cut off
            continue
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            if art.format == "onnx":
                shutil.copytree(art.path, tmp)
                write_model_card(tmp, art.provenance.get("report", {}), metrics)
            else:
                export_onnx(art, ExportConfig(parity_data=cfg.data.corpus), tmp, metrics=metrics)
        except ValueError as e:  # e.g. a torch runtime-transform candidate: no ONNX equivalent
            print(f"warning: pick {cr.name} not exported: {e}")
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        prov = json.loads((tmp / "w2vc.json").read_text()) if (tmp / "w2vc.json").exists() else {}
        prov.update(source_hash=art.hash, candidate=cr.name, sweep=cfg.name, metrics=metrics)
        (tmp / "w2vc.json").write_text(json.dumps(prov, indent=1, default=str))
        if dst.exists():
            shutil.rmtree(dst)  # our own previous export of this candidate, superseded
        os.replace(tmp, dst)
        write_model_card(dst, prov.get("report", {}), metrics, prov.get("lineage", []))  # final path in the card
        out_paths.append(dst)
        if client is not None and cfg.export.register and cr.run_id:
            _register(client, cr, dst, cfg)
    return out_paths


def _register(client, cr: CandidateResult, bundle: Path, cfg: SweepConfig) -> None:
    """Log the bundle to the candidate's run and register it (model registry name: w2vc-<sweep>-<cand>)."""
    try:
        from mlflow.exceptions import MlflowException

        client.log_artifacts(cr.run_id, str(bundle), "bundle")
        name = f"w2vc-{cfg.name}-{cr.name}".replace("/", "-")
        try:
            client.create_registered_model(name, description=f"w2vc sweep {cfg.name}: candidate {cr.name}")
        except MlflowException:  # registered by an earlier sweep: add a version
            pass
        # the bundle is a plain artifact directory (ONNX + processor), not an MLflow flavour: MLflow 3's
        # register_model("runs:/...") looks for a LoggedModel, so the version points at the artifacts directly
        source = f"{client.get_run(cr.run_id).info.artifact_uri}/bundle"
        mv = client.create_model_version(name, source, run_id=cr.run_id)
        client.set_tag(cr.run_id, "registered_model", f"{name}/{mv.version}")
    except Exception as e:
        print(f"warning: model registry skipped for {cr.name} ({type(e).__name__}: {e})")


def _report_md(cfg: SweepConfig, res: P.ParetoResult, table: str, teacher: dict | None, secs: float,
               exports: list[Path] = ()) -> str:
    lines = [f"# Sweep `{cfg.name}`", "",
             f"Config: `{cfg.source}` · teacher `{cfg.teacher}` · corpus `{cfg.data.corpus}` (seed {cfg.data.seed}) · "
             f"eval sets {', '.join(cfg.eval.sets)} (limit {cfg.eval.limit}) · wall time {secs / 60:.1f} min", "",
             f"Objectives (minimised): {', '.join(cfg.objectives)}"
             + (f"; maximised: {', '.join(cfg.maximize)}" if cfg.maximize else "")
             + f". Budgets: {', '.join(str(b) for b in cfg.budgets) or 'none'}.", "",
             "★ = knee pick (closest to the ideal point among budget-feasible front members), ● = Pareto front.", "",
             table, ""]
    if teacher and res.picks:
        lines.append("## Picks against the fp32 teacher (same run)")
        for r in res.picks:
            sp = teacher.get("latency_p50_ms", float("nan")) / r.get("latency_p50_ms", float("nan"))
            wr = r.get("wer_clean", float("nan")) / max(teacher.get("wer_clean", float("nan")), 1e-9)
            lines.append(f"- **{r['name']}**: {sp:.2f}× faster (p50), WER {100 * r.get('wer_clean', float('nan')):.2f} % "
                         f"= {wr:.2f}× the teacher's, size {r.get('size_mb', float('nan')):.1f} MB")
        lines.append("")
    if exports:
        lines.append("## Exported bundles (load with `ORTModelForCTC.from_pretrained`)")
        lines += [f"- `{p}`" for p in exports]
    return "\n".join(lines) + "\n"
