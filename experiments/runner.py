"""`w2vc sweep`: config → recipes → cached artifacts → measurements → MLflow → Pareto → exported picks.

The sweep runs as stages: build (the step cache) → measure (evals/) → log (MLflow) for each candidate in
turn, then select (Pareto) → report (report.py) → export (exports.py) → the selection logged.
Nothing is lost on interruption (even `kill -9`): a step writes into `<key>.work/` and is renamed into
the cache only when finished (distillation resumes from its checkpoint), a candidate's figures are
written to `evals/<name>-<key>.json` atomically before MLflow is touched, and a candidate run is found again
by its `w2vc.candidate_key` tag, so a re-run logs nothing twice. MLflow goes through eval/tracking.py only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from w2vc.core.artifact import Artifact, Kind, step_key
from w2vc.core.util import file_lock, write_json_atomic
from w2vc.eval.tracking import Tracker
from w2vc.experiments import pareto as P
from w2vc.experiments.cascades import cascade_note, is_cascade, measure_cascade, time_on_audio
from w2vc.experiments.config import Candidate, SweepConfig
from w2vc.experiments.exports import export_picks
from w2vc.experiments.recipes import StepContext, get_step
from w2vc.experiments.report import SweepReport, add_exports, write_report

CANDIDATE_KIND = "candidate"
SWEEP_KIND = "sweep"


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

    @property
    def lineage_text(self) -> str:
        """The steps behind the candidate as one string: the MLflow tag and the report's lineage table."""
        return " -> ".join(self.lineage) or "baseline"

    def row(self) -> dict:
        return {"name": self.name, **self.metrics, "artifact": self.artifact, "run_id": self.run_id,
                "lineage": self.lineage_text}


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


@dataclass
class Sweep:
    """One sweep in progress: what the stages hand each other."""

    cfg: SweepConfig
    started: float
    progress: bool = True
    eval_data: object = None  # EvalData, loaded once for every candidate
    tracker: Tracker | None = None  # None: no MLflow (--no-mlflow, or it failed to start)
    parent_id: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.cfg.work_dir) / self.cfg.name

    @property
    def cache(self) -> Path:
        return self.root / "steps"

    @property
    def evals(self) -> Path:
        return self.root / "evals"


def run_sweep(cfg: SweepConfig, progress: bool = True, log_mlflow: bool = True,
              remeasure: bool = False) -> SweepResult:
    """Every candidate built and measured (WER, cost), all of them timed together (interleaved processes),
    their WER compared with the reference's on the same utterances, then logged; the Pareto selection
    reported and its picks exported. Re-running resumes: cached steps and figures are reused and nothing is
    logged twice. `remeasure`: re-time every candidate (nothing is rebuilt), e.g. on a quieter machine."""
    cfg, skipped = skip_for_cpu(cfg)
    sw = Sweep(cfg, started=time.time(), progress=progress)
    prepare(sw)
    if log_mlflow:
        open_tracking(sw)
    print(f"[2/5] {len(cfg.candidates)} candidates (cache: {sw.cache})")
    for name, why in skipped.items():
        print(f"      skipped {name}: {why}")
    recs = []
    bar = tqdm(cfg.candidates, desc="candidates", unit="cand", disable=not progress)
    for c in bar:
        bar.set_postfix_str(c.name)
        recs.append(build_and_measure(sw, c))
    bar.close()
    time_candidates(sw, recs, force=remeasure)
    compare_with_reference(sw, recs)
    results = [log_record(sw, rec, remeasured=remeasure) for rec in recs]
    print("[3/5] Pareto selection")
    res = P.select([r.row() for r in results], cfg.objectives, cfg.maximize, cfg.budgets)
    ties = find_ties(res, {r["name"]: r for r in recs}, cfg)
    rep = write_report(cfg, res, sw.root, time.time() - sw.started, ties)
    # beside the table they qualify: what this CPU skipped, how cascades were timed (the report is
    # re-rendered with the table by add_exports below)
    notes = [*(f"Skipped on this CPU: {n} ({why})." for n, why in skipped.items()), cascade_note(cfg, res.rows)]
    if any(notes):
        rep.table = "\n\n".join([rep.table, "\n".join(n for n in notes if n)])
    print("[4/5] export of the picks")
    exports = export_picks(cfg, res, results, sw.tracker) if cfg.export.enabled else []
    add_exports(rep, cfg, res, time.time() - sw.started, exports, ties)
    if sw.tracker is not None:
        log_selection(sw, res, results, rep)
    print("[5/5] done")
    print(rep.table)
    return SweepResult(cfg, results, res, rep.report, rep.plot, rep.table_csv, exports, sw.parent_id)


def skip_for_cpu(cfg: SweepConfig) -> tuple[SweepConfig, dict[str, str]]:
    """The config without the candidates this CPU cannot run meaningfully (`when_cpu_has`, e.g. bf16 where
    it is emulated: 7x slower than fp32 on an AVX2-only machine), and why each was left out."""
    from dataclasses import replace

    from w2vc.core.device import cpu_flags

    flags = cpu_flags()
    skipped = {c.name: why for c in cfg.candidates if (why := c.skipped_on(flags))}
    if not skipped:
        return cfg, {}
    return replace(cfg, candidates=tuple(c for c in cfg.candidates if c.name not in skipped)), skipped


# ---------------------------------------------------------------------------------------------- prepare

def prepare(sw: Sweep) -> None:
    """[1/5]: the models exist, the corpus is there (synthesized if missing), the sweep's directories and
    config.json, and the eval sets, loaded once for all candidates (a set missing fails before any build)."""
    cfg = sw.cfg
    for what, path in (("teacher", cfg.teacher), ("student", cfg.student)):
        if path and not Path(path).is_dir():
            raise FileNotFoundError(f"{what} model not found: {path}")
    ensure_corpus(cfg)
    sw.cache.mkdir(parents=True, exist_ok=True)
    sw.evals.mkdir(parents=True, exist_ok=True)
    write_json_atomic(sw.root / "config.json", cfg.to_dict())
    sw.eval_data = load_eval_sets(cfg, progress=sw.progress)


def ensure_corpus(cfg: SweepConfig) -> None:
    from w2vc.data.synth import synthesize_corpus

    meta_file = Path(cfg.data.corpus) / "corpus.json"
    if meta_file.exists():  # any complete corpus is used as it is (its own settings are in corpus.json)
        made = json.loads(meta_file.read_text())["config"]
        print(f"[1/5] corpus {cfg.data.corpus} (present: seed {made['seed']}, {made['hours']} h)")
    else:
        print(f"[1/5] corpus {cfg.data.corpus}: synthesizing (seed {cfg.data.seed}, {cfg.data.hours} h)")
        synthesize_corpus(cfg.data.corpus, cfg.data.synth_config())


def load_eval_sets(cfg: SweepConfig, progress: bool = False):
    """The config's `eval.sets` of its test split, decoded once (EvalData); a set the corpus lacks is an
    error now, not a missing column after every candidate was built."""
    from w2vc.eval.evaluate import EvalData, load_eval_data

    noisy = any(s != "clean" for s in cfg.eval.sets)
    full = load_eval_data(cfg.data.corpus, split=cfg.eval.split, noisy=noisy, limit=cfg.eval.limit,
                          progress=progress)
    missing = [s for s in cfg.eval.sets if s not in {e.name for e, _ in full.sets}]
    if missing:
        raise ValueError(f"eval.sets: {', '.join(missing)} not in the corpus (have "
                         f"{', '.join(e.name for e, _ in full.sets)})")
    if cfg.eval.long_chunk_seconds:  # the same early failure for missing long recordings
        from w2vc.eval.longform import find_long_sets

        find_long_sets(cfg.data.corpus, cfg.eval.split)
    sets = [(e, d) for e, d in full.sets if e.name in cfg.eval.sets]
    return EvalData(full.source, full.split, full.limit, sets)


def open_tracking(sw: Sweep) -> None:
    """The sweep's parent run (found again by its name tag, else created); MLflow trouble here is a warning
    and the sweep goes on without it (its figures are in evals/)."""
    cfg = sw.cfg
    try:
        tracker = Tracker.open(cfg.experiment)
        tags = {"w2vc.kind": SWEEP_KIND, "w2vc.sweep": cfg.name}
        found = tracker.find_runs(tags, max_results=20)
        if found:
            sw.parent_id = found[0].id
        else:
            sw.parent_id = tracker.create_run(f"sweep-{cfg.name}", tags)
            tracker.log_params(sw.parent_id, {"config": cfg.source or cfg.name, "teacher": cfg.teacher,
                                              "n_candidates": len(cfg.candidates)})
        sw.tracker = tracker
    except Exception as e:
        print(f"warning: MLflow unavailable ({type(e).__name__}: {e}); figures kept in {sw.evals}")


# ---------------------------------------------------------------------------------- build → measure → log

def build_and_measure(sw: Sweep, c: Candidate) -> dict:
    """One candidate built (step cache) and measured (WER, one-process cost): its record, on disk."""
    t0 = time.time()
    art = build_candidate(c, sw.cfg, sw.cache, progress=sw.progress)
    return measure(sw, c, art, _candidate_key(art, c, sw.cfg), t0)


def log_record(sw: Sweep, rec: dict, remeasured: bool = False) -> CandidateResult:
    cr = CandidateResult(rec["name"], rec["artifact"], rec["lineage"], rec["recipe"], rec["metrics"], rec["key"],
                         build_seconds=rec.get("build_seconds", 0.0))
    if sw.tracker is not None:
        cr.run_id = log_candidate(sw, cr, rec.get("texts", {}))
        if remeasured:  # the run stays the candidate's; its latency metrics get the new values
            sw.tracker.log_metrics(cr.run_id, {k: v for k, v in cr.metrics.items() if _is_timing(k)})
            sw.tracker.set_tags(cr.run_id, {"w2vc.remeasured": str(len(rec.get("latency_history", [])))})
    return cr


def _resolve_refs(params: dict, cfg: SweepConfig, cache: Path | None = None, progress: bool = True) -> dict:
    """`@teacher` / `@student` in step options name the sweep's models; `@<candidate>` (e.g. a cascade's
    strong model) the artifact that candidate builds, built first when `cache` is given."""
    named = {c.name: c for c in cfg.candidates}

    def ref(v):
        if isinstance(v, str) and v in ("@teacher", "@student"):
            return cfg.start_path(v[1:])
        if isinstance(v, str) and v[1:] in named and v.startswith("@") and cache is not None:
            return str(build_candidate(named[v[1:]], cfg, cache, progress).path)
        return v

    return {k: ref(v) for k, v in params.items()}


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
        params = _resolve_refs({k: v for k, v in s.items() if k != "kind"}, cfg, cache, progress)
        control = None
        if "accuracy_control" in params:  # a measured search picks keep_fp32 first (accuracy_control.py)
            from w2vc.experiments.accuracy_control import StepControl

            control = StepControl(art, params, cfg.data.corpus, cache, progress)
            params = control.params
        step_cfg = spec.make_config(params, cfg.data.corpus)
        key = step_key(art.hash, s["kind"], step_cfg.to_dict())
        done = cache / key
        # one builder per step: processes sharing the cache (search workers, a sweep beside them) wait
        # for a step another one is building, then find it finished
        with file_lock(cache / f"{key}.lock"):
            if not (done / "w2vc.json").exists():
                work = cache / f"{key}.work"
                if not spec.resumable:  # distill, recover, learned_prune resume from their checkpoints
                    shutil.rmtree(work, ignore_errors=True)  # the others restart
                work.mkdir(parents=True, exist_ok=True)
                out = spec(art, step_cfg, work / "out", ctx)
                if control is not None:  # final dev check; report in <key>.accuracy.json and provenance
                    control.finish(out, cache / f"{key}.accuracy.json")
                os.replace(out.path, done)  # the cache entry appears only when the step finished
                shutil.rmtree(work, ignore_errors=True)
        art = Artifact.open(done)
    return art


def _candidate_key(art: Artifact, c: Candidate, cfg: SweepConfig) -> str:
    blob = json.dumps({"artifact": art.hash, "name": c.name, "eval": cfg.to_dict()["eval"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def measure(sw: Sweep, c: Candidate, art: Artifact, key: str, t0: float) -> dict:
    """The candidate's figures record: `evals/<name>-<key>.json` when an earlier run measured it, else
    measured now and written there atomically (before MLflow sees it)."""
    fig_file = sw.evals / f"{c.name}-{key}.json"
    if fig_file.exists():
        return json.loads(fig_file.read_text())
    metrics, texts = measure_candidate(art, sw.cfg, sw.eval_data, timed_later=True)
    rec = {"name": c.name, "key": key, "artifact": str(art.path), "metrics": metrics, "timed": False,
           "lineage": art.provenance.get("lineage", []), "recipe": list(c.steps), "texts": texts,
           "build_seconds": round(time.time() - t0, 1)}
    write_json_atomic(fig_file, rec)
    return rec


def measure_candidate(art: Artifact, cfg: SweepConfig, eval_data, timed_later: bool = False) -> tuple[dict, dict]:
    """WER on the preloaded sets (with bootstrap intervals) + cost in a clean child process (size, peak RSS,
    FLOPs, a first latency that `time_candidates` completes; a cascade's only when not `timed_later`).
    Returns (metrics, text artifacts)."""
    from w2vc.core.load import load
    from w2vc.eval.evaluate import evaluate_model
    from w2vc.eval.isolation import measure_cost_isolated
    from w2vc.eval.longform import LongOptions

    tr = load(art, threads=cfg.eval.threads)
    if art.kind is Kind.CASCADE:  # fallback rates, and a cost that depends on the input (cascades.py)
        return measure_cascade(art, tr, cfg, eval_data, first_timing=not timed_later)
    e = cfg.eval  # long recordings: live captioning
    long = LongOptions(e.long_chunk_seconds, recordings=e.long_recordings) if e.long_chunk_seconds else None
    res = evaluate_model(tr, eval_data, threads=cfg.eval.threads, model_name=str(art.path), long=long)
    metrics = {k: v for k, v in res.metrics.items()}
    cost = measure_cost_isolated(str(art.path), cfg=cost_config(cfg))
    metrics.update(cost.metrics())
    return metrics, res.text_artifacts()


def cost_config(cfg: SweepConfig):
    from w2vc.eval.cost import CostConfig

    e = cfg.eval
    return CostConfig(seconds=e.seconds, threads=e.threads, repeats=e.repeats, min_time_s=e.min_time_s,
                      processes=e.processes, max_spread=e.max_spread)


def _is_timing(metric: str) -> bool:
    return metric.startswith(("latency_", "rtf", "cpu_ms_", "utt_latency_", "utt_rtf"))


def time_candidates(sw: Sweep, recs: list[dict], force: bool = False) -> None:
    """The latency stage: every candidate not yet timed (all with `force`) timed in `eval.processes` fresh
    processes, the processes of all candidates interleaved (w2vc.eval.isolation.time_interleaved), so the
    figures of one run compare as ratios. Records are updated on disk before anything is logged.
    Cascades are timed on the eval utterances instead (their cost depends on the input), and then the
    reference as well, on the same utterances (`utt_*`; experiments/cascades.py)."""
    from w2vc.eval.cost import headline_of, length_metrics
    from w2vc.eval.isolation import CostJob, time_interleaved

    todo = [r for r in recs if force or not r.get("timed")]
    clips = [r for r in todo if not is_cascade(r)]
    cfg = cost_config(sw.cfg)
    if clips:
        print(f"      timing {len(clips)} candidate(s) in {cfg.processes} fresh processes each, interleaved")
    lengths = time_interleaved([CostJob(r["name"], model=r["artifact"]) for r in clips], cfg, sw.progress) \
        if clips else []
    for rec, ls in zip(clips, lengths):
        _keep_history(rec)
        rec["metrics"].update({k: v for k, v in length_metrics(ls).items() if _is_timing(k)})
        rec["metrics"]["latency_mean_ms"] = headline_of(ls).latency_mean_ms  # what a cascade is ranked by
        rec["timed"] = True
        write_json_atomic(sw.evals / f"{rec['name']}-{rec['key']}.json", rec)
    for rec, cost in time_on_audio(recs, todo, sw.cfg, sw.eval_data, force, sw.progress):
        if is_cascade(rec):
            _keep_history(rec)
            rec["metrics"].update(cost.headline_metrics())
            rec["timed"] = True
        else:
            rec["metrics"].update(cost.metrics())
        write_json_atomic(sw.evals / f"{rec['name']}-{rec['key']}.json", rec)


def _keep_history(rec: dict) -> None:
    if rec.get("timed"):
        rec.setdefault("latency_history", []).append({k: v for k, v in rec["metrics"].items() if _is_timing(k)})


def compare_with_reference(sw: Sweep, recs: list[dict]) -> None:
    """Paired WER differences (same utterances, bootstrap) of every candidate against `eval.reference`,
    so the report can say "not significantly different from the teacher"."""
    from w2vc.eval.stats import paired_from_transcripts

    ref_name = sw.cfg.eval.reference
    ref = next((r for r in recs if r["name"] == ref_name), None)
    if ref is None:
        return
    for rec in recs:
        for s in sw.cfg.eval.sets:
            f = f"transcripts_{s}.tsv"
            if f not in rec.get("texts", {}) or f not in ref.get("texts", {}):
                continue
            d = paired_from_transcripts(rec["texts"][f], ref["texts"][f])
            if d is not None:
                key = f"wer_{s}_diff_vs_{ref_name}"
                rec["metrics"].update({key: d.value, f"{key}_lo": d.low, f"{key}_hi": d.high,
                                       f"wer_{s}_significant_vs_{ref_name}": float(not d.contains(0.0))})


def find_ties(res: P.ParetoResult, recs: dict[str, dict], cfg: SweepConfig) -> dict[str, list[str]]:
    """Per pick, the candidates indistinguishable from it on every objective: WER by a paired interval that
    holds 0, latency by overlapping intervals, anything without an interval within 1 %."""
    out: dict[str, list[str]] = {}
    for pick in res.picks:
        same = []
        for row in res.rows:
            if row["name"] == pick["name"]:
                continue
            if all(_indistinguishable(o, row, pick, recs) for o in (*cfg.objectives, *cfg.maximize)):
                same.append(row["name"])
        out[pick["name"]] = same
    return out


def _indistinguishable(o: str, a: dict, b: dict, recs: dict[str, dict]) -> bool:
    from w2vc.eval.stats import paired_from_transcripts

    if a.get(o) is None or b.get(o) is None:
        return False
    if o.startswith("wer_"):
        f = f"transcripts_{o[4:]}.tsv"
        ta, tb = recs[a["name"]].get("texts", {}).get(f), recs[b["name"]].get("texts", {}).get(f)
        if ta and tb:
            d = paired_from_transcripts(ta, tb)
            return d is not None and d.contains(0.0)
    lo, hi = f"{o}_lo", f"{o}_hi"
    if all(k in r for r in (a, b) for k in (lo, hi)):
        return a[lo] <= b[hi] and b[lo] <= a[hi]
    return abs(float(a[o]) - float(b[o])) <= 0.01 * max(abs(float(b[o])), 1e-12)


def log_candidate(sw: Sweep, cr: CandidateResult, texts: dict) -> str:
    """The candidate's run under the parent: the finished one of an earlier run (same key), else a new one.
    A run cut off mid-logging by a crash stays visible, marked superseded (and FAILED); a new run replaces
    it."""
    tracker, cfg = sw.tracker, sw.cfg
    found = tracker.find_runs({"w2vc.kind": CANDIDATE_KIND, "w2vc.candidate_key": cr.key}, max_results=20)
    done = [r for r in found if r.status == "FINISHED"]
    if done:
        return done[0].id
    for r in found:
        tracker.set_tags(r.id, {"w2vc.superseded": "true"})
        if r.status == "RUNNING":
            tracker.terminate(r.id, "FAILED")
    tags = {"w2vc.kind": CANDIDATE_KIND, "w2vc.candidate": cr.name, "w2vc.candidate_key": cr.key,
            "w2vc.sweep": cfg.name, "lineage": cr.lineage_text, "artifact": cr.artifact}
    rid = tracker.create_run(cr.name, tags, parent_id=sw.parent_id)
    try:
        tracker.log_params(rid, _candidate_params(cr, cfg))
        tracker.log_metrics(rid, cr.metrics)
        tracker.log_texts(rid, texts, "transcripts")
        tracker.terminate(rid, "FINISHED")
    except Exception:
        tracker.terminate(rid, "FAILED")  # a re-run logs it again; the failed one stays visible
        raise
    return rid


def _candidate_params(cr: CandidateResult, cfg: SweepConfig) -> dict[str, str]:
    """The recipe (whole, and one param per step option: MLflow compares runs by param) and the eval setup."""
    params = {"recipe": json.dumps(cr.recipe)[:500] or "[]", "artifact": cr.artifact,
              "eval_sets": ",".join(cfg.eval.sets), "eval_limit": str(cfg.eval.limit),
              "threads": str(cfg.eval.threads or "default")}
    for i, s in enumerate(cr.recipe):
        for k, v in s.items():
            params[f"step{i}.{k}"] = str(v)[:500]
    return params


# ------------------------------------------------------------------------------------ the selection logged

def log_selection(sw: Sweep, res: P.ParetoResult, results: list[CandidateResult], rep: SweepReport) -> None:
    """Pareto tags on each candidate run; report, plot and table on the parent, which is then finished."""
    tracker = sw.tracker
    by_name = {r.name: r for r in results}
    for r in res.rows:
        rid = by_name[r["name"]].run_id
        if rid:
            tracker.set_tags(rid, {"pareto": str(r["pareto"]).lower(), "pareto_rank": str(r["pareto_rank"]),
                                   "within_budget": str(r["within_budget"]).lower(),
                                   "knee": str(r["knee"]).lower()})
    for f in (rep.report, rep.plot, rep.table_csv):
        tracker.log_artifact(sw.parent_id, f)
    tracker.set_tags(sw.parent_id, {"pareto_front": ",".join(r["name"] for r in res.front)})
    tracker.terminate(sw.parent_id, "FINISHED")


def rows_from_mlflow(experiment: str) -> list[dict]:
    """Candidate runs of an MLflow experiment as rows (name + metrics) for `w2vc pareto --experiment`."""
    tracker = Tracker.existing(experiment)
    if tracker is None:
        raise ValueError(f"no MLflow experiment named {experiment!r}")
    rows = [{"name": r.tags.get("w2vc.candidate", r.name), "run_id": r.id, **r.metrics}
            for r in tracker.find_runs({"w2vc.kind": CANDIDATE_KIND}) if r.status == "FINISHED"]
    if not rows:
        raise ValueError(f"experiment {experiment!r} has no finished candidate runs")
    return rows

