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
Objectives and budgets come from the config (budgets become Optuna constraints: feasible when <= 0).
The study lives in the storage URL (sqlite:///study.db here, PostgreSQL/MySQL across machines), so
several `w2vc search` processes fill one study; every trial is also an MLflow run.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
from pathlib import Path

from w2vc.core.util import file_lock
from w2vc.experiments.config import Candidate, ConfigError, SweepConfig


def _space(cfg: SweepConfig) -> tuple[dict, list[dict], str, str]:
    s = cfg.raw.get("search")
    if not s:
        raise ConfigError(f"{cfg.source or 'config'}: no 'search:' section (see experiments/search.py)")
    bad = sorted(set(s) - {"from", "sampler", "steps", "space"})
    if bad:
        raise ConfigError(f"search: unknown key(s) {', '.join(bad)}")
    if not s.get("space") or not s.get("steps"):
        raise ConfigError("search: needs 'steps' (a template) and 'space' (knobs)")
    sampler = s.get("sampler", "tpe")
    if sampler not in ("tpe", "nsga2"):
        raise ConfigError(f"search.sampler must be tpe or nsga2, got {sampler!r}")
    return s["space"], s["steps"], str(s.get("from", "teacher")), sampler


def _suggest(trial, space: dict, steps: list[dict]) -> tuple[list[dict], dict]:
    steps = copy.deepcopy(steps)
    chosen = {}
    for key, rng in space.items():
        target, opt = key.split(".", 1)
        idx = int(target) if target.isdigit() else next((i for i, s in enumerate(steps) if s["kind"] == target), None)
        if idx is None:
            raise ConfigError(f"search.space: no step '{target}' in search.steps")
        if isinstance(rng, dict) and "choices" in rng:
            v = trial.suggest_categorical(key, list(rng["choices"]))
        elif isinstance(rng, list) and len(rng) == 2 and all(isinstance(x, int) for x in rng):
            v = trial.suggest_int(key, rng[0], rng[1])
        elif isinstance(rng, list) and len(rng) == 2:
            v = trial.suggest_float(key, float(rng[0]), float(rng[1]))
        else:
            raise ConfigError(f"search.space.{key}: expected [low, high] or {{choices: [...]}}")
        steps[idx][opt] = v
        chosen[key] = v
    return steps, chosen


def _sqlite_init_lock(url: str | None):
    """Serialise first use of a shared SQLite file across processes: Optuna (create_all) and MLflow
    (alembic migrations, set_experiment) both fail when two processes create the same fresh database."""
    if not url or not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return contextlib.nullcontext()
    return file_lock(Path(url[len("sqlite:///"):].split("?", 1)[0] + ".lock"))


def run_search(cfg: SweepConfig, trials: int, storage: str | None = None, study_name: str | None = None,
               seed: int | None = None, log_mlflow: bool = True, progress: bool = True):
    import optuna

    from w2vc.eval.evaluate import EvalData, load_eval_data
    from w2vc.experiments.runner import build_candidate, measure_candidate

    space, template, start, sampler_name = _space(cfg)
    _suggest(optuna.trial.FixedTrial({k: (v["choices"][0] if isinstance(v, dict) else v[0])
                                      for k, v in space.items()}), space, template)  # validate early
    relative = [str(b) for b in cfg.budgets if b.ref]
    if relative:  # trials are single points: there is no reference candidate to scale by
        raise ConfigError(f"search takes absolute budgets only, got {', '.join(relative)}")
    directions = ["minimize"] * len(cfg.objectives) + ["maximize"] * len(cfg.maximize)
    keys = list(cfg.objectives) + list(cfg.maximize)

    def constraints(trial):
        return trial.user_attrs.get("constraints", [0.0] * len(cfg.budgets))

    kw = {"constraints_func": constraints, "seed": seed} if cfg.budgets else {"seed": seed}
    sampler = optuna.samplers.NSGAIISampler(**kw) if sampler_name == "nsga2" else optuna.samplers.TPESampler(**kw)
    with _sqlite_init_lock(storage):
        study = optuna.create_study(storage=storage, study_name=study_name or f"w2vc-{cfg.name}",
                                    directions=directions, sampler=sampler, load_if_exists=True)
    if log_mlflow:  # create the tracking store and experiment now, one process at a time
        from w2vc.eval.tracking import DEFAULT_URI, setup_mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)
        try:
            with _sqlite_init_lock(uri):
                setup_mlflow(cfg.experiment)
        except Exception as e:  # as in log_run: MLflow trouble never stops the search (figures kept on disk)
            logging.getLogger(__name__).warning("MLflow setup failed (%s: %s)", type(e).__name__, e)
    full = load_eval_data(cfg.data.corpus, split=cfg.eval.split, noisy=any(s != "clean" for s in cfg.eval.sets),
                          limit=cfg.eval.limit)
    eval_data = EvalData(full.source, full.split, full.limit, [(e, d) for e, d in full.sets if e.name in cfg.eval.sets])
    cache = Path(cfg.work_dir) / cfg.name / "steps"
    cache.mkdir(parents=True, exist_ok=True)

    def objective(trial):
        steps, chosen = _suggest(trial, space, template)
        cand = Candidate(f"trial{trial.number}", start, tuple(steps))
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
            from w2vc.eval.tracking import log_run

            log_run(f"{study.study_name}-trial{trial.number}", {**{k: str(v) for k, v in chosen.items()},
                    "study": study.study_name, "artifact": str(art.path)},
                    {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                    tags={"w2vc.kind": "search-trial", "w2vc.study": study.study_name,
                          "optuna.trial": str(trial.number)}, text_artifacts=texts, experiment=cfg.experiment)
        return tuple(float(metrics[k]) for k in keys)

    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    return study


def with_storage_default(cfg: SweepConfig, storage: str | None) -> str:
    return storage or f"sqlite:///{Path(cfg.work_dir) / cfg.name / 'optuna.db'}"


