"""`w2vc search`: Optuna multi-objective search over recipe knobs, sharable across processes/machines.

The config's `search:` section names a starting model, a step template and a space:
    search:
      from: teacher
      sampler: nsga2            # or tpe
      steps: [{kind: prune}, {kind: recover, steps: 200}, {kind: export}, {kind: quantize}]
      space:
        prune.heads: [0.0, 0.75]          # float range
        prune.num_drop_layers: [0, 4]     # int range (both ends int)
        quantize.method: {choices: [ort_dynamic_int8, ort_static_int8, ort_int4]}
It is parsed into `config.SearchConfig` when the config loads (every knob must address a template step, and
the template must accept each range end and choice), so a bad space fails before any study is created.
Objectives and budgets come from the config (budgets become Optuna constraints: feasible when <= 0).
The study lives in the storage URL (sqlite:///study.db here, PostgreSQL/MySQL across machines), so
several `w2vc search` processes fill one study; every trial is also an MLflow run.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

from w2vc.core.util import file_lock
from w2vc.eval import tracking
from w2vc.experiments.config import Candidate, ConfigError, SearchConfig, SweepConfig


def _suggest(trial, search: SearchConfig) -> tuple[list[dict], dict]:
    """The trial's steps: the template with every knob of the (parse-time validated) space set by Optuna."""
    chosen = {}
    for k in search.space:
        if k.choices:
            chosen[k.key] = trial.suggest_categorical(k.key, list(k.choices))
        elif k.is_int:
            chosen[k.key] = trial.suggest_int(k.key, k.low, k.high)
        else:
            chosen[k.key] = trial.suggest_float(k.key, k.low, k.high)
    return search.trial_steps(chosen), chosen


_PG_INIT_LOCK = 0x77327663  # "w2vc": the advisory-lock key of first use, in the study's own database


@contextlib.contextmanager
def _pg_advisory_lock(url: str):
    """Held on its own connection, so it spans machines; released on unlock or when that connection closes."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_INIT_LOCK})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_INIT_LOCK})
    finally:
        engine.dispose()


def _init_lock(url: str | None):
    """Serialise first use of a shared database across processes: Optuna (create_all, version row) and MLflow
    (alembic migrations, set_experiment) both fail when two processes create the same fresh database.
    SQLite: a lock file next to it; PostgreSQL: an advisory lock in it (workers on several machines)."""
    if url and url.startswith("sqlite:///") and not url.endswith(":memory:"):
        return file_lock(Path(url[len("sqlite:///"):].split("?", 1)[0] + ".lock"))
    if url and url.split("://", 1)[0].split("+", 1)[0] == "postgresql":
        return _pg_advisory_lock(url)
    return contextlib.nullcontext()


def run_search(cfg: SweepConfig, trials: int, storage: str | None = None, study_name: str | None = None,
               seed: int | None = None, log_mlflow: bool = True, progress: bool = True):
    import optuna

    from w2vc.experiments.runner import build_candidate, load_eval_sets, measure_candidate

    search = cfg.search
    if search is None:
        raise ConfigError(f"{cfg.source or 'config'}: no 'search:' section (see experiments/search.py)")
    relative = [str(b) for b in cfg.budgets if b.ref]
    if relative:  # trials are single points: there is no reference candidate to scale by
        raise ConfigError(f"search takes absolute budgets only, got {', '.join(relative)}")
    directions = ["minimize"] * len(cfg.objectives) + ["maximize"] * len(cfg.maximize)
    keys = list(cfg.objectives) + list(cfg.maximize)

    def constraints(trial):
        return trial.user_attrs.get("constraints", [0.0] * len(cfg.budgets))

    kw = {"constraints_func": constraints, "seed": seed} if cfg.budgets else {"seed": seed}
    samplers = {"nsga2": optuna.samplers.NSGAIISampler, "tpe": optuna.samplers.TPESampler}
    sampler = samplers[search.sampler](**kw)
    with _init_lock(storage):
        study = optuna.create_study(storage=storage, study_name=study_name or f"w2vc-{cfg.name}",
                                    directions=directions, sampler=sampler, load_if_exists=True)
    if log_mlflow:  # create the tracking store and experiment now, one process at a time
        try:
            with _init_lock(tracking.tracking_uri()):
                tracking.setup_mlflow(cfg.experiment)
        except Exception as e:  # as in log_run: MLflow trouble never stops the search (figures kept on disk)
            logging.getLogger(__name__).warning("MLflow setup failed (%s: %s)", type(e).__name__, e)
    eval_data = load_eval_sets(cfg)
    cache = Path(cfg.work_dir) / cfg.name / "steps"
    cache.mkdir(parents=True, exist_ok=True)

    def objective(trial):
        steps, chosen = _suggest(trial, search)
        cand = Candidate(f"trial{trial.number}", search.start, tuple(steps))
        art = build_candidate(cand, cfg, cache, progress=progress)  # locks each step it builds
        metrics, texts = measure_candidate(art, cfg, eval_data)
        trial.set_user_attr("artifact", str(art.path))
        trial.set_user_attr("metrics", {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        cons = []
        for b in cfg.budgets:
            v = float(metrics.get(b.metric, math.inf))
            cons.append(v - b.value if b.op in ("<=", "<") else b.value - v)
        trial.set_user_attr("constraints", cons)
        if log_mlflow:
            params = {**{k: str(v) for k, v in chosen.items()}, "study": study.study_name,
                      "artifact": str(art.path)}
            tracking.log_run(f"{study.study_name}-trial{trial.number}", params,
                             {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                             tags={"w2vc.kind": "search-trial", "w2vc.study": study.study_name,
                                   "optuna.trial": str(trial.number)}, text_artifacts=texts,
                             experiment=cfg.experiment)
        return tuple(float(metrics[k]) for k in keys)

    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    return study


def with_storage_default(cfg: SweepConfig, storage: str | None) -> str:
    return storage or f"sqlite:///{Path(cfg.work_dir) / cfg.name / 'optuna.db'}"


