"""Every MLflow call in w2vc goes through here; figures are never lost if MLflow fails.

Default store `sqlite:///mlflow.db` with artifacts under ./mlruns (MLflow 3's own default);
`MLFLOW_TRACKING_URI` wins when set. Two ways in: `log_run` for a one-shot run (eval, bench, a search
trial), which writes its figures to a local JSON file first and only warns when MLflow fails; `Tracker`
for runs handled by id over a long job (a sweep's parent run, candidate runs found again by tag on resume,
re-tagged after the Pareto selection, logged and registered models), whose callers keep the figures on
disk first. Every experiment w2vc opens is tagged a custom-model one (EXPERIMENT_KIND), so MLflow 3's UI opens
it on its runs rather than on the GenAI overview.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "w2vc"
LOCAL_DIR = Path("runs") / "figures"
# The tag MLflow 3's UI reads to choose an experiment's landing tab (Runs unless "genai_development"); the
# key and values are those of mlflow/server/js (ExperimentKind), set there by the UI's kind selector.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def standard_tags() -> dict[str, str]:
    from w2vc.core.artifact import package_versions

    tags = {"cpu": cpu_model(), "git_commit": git_commit(), "host_cores": str(os.cpu_count())}
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags


def tracking_uri() -> str:
    """The store every command uses: `MLFLOW_TRACKING_URI` when set, else DEFAULT_URI."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def setup_mlflow(experiment: str = DEFAULT_EXPERIMENT):
    """Point MLflow at the store and the experiment (created when missing, tagged with EXPERIMENT_KIND
    unless it has a kind already, e.g. chosen in the UI); returns the mlflow module."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    exp = mlflow.set_experiment(experiment)
    key, kind = EXPERIMENT_KIND
    if key not in exp.tags:
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, key, kind)
    return mlflow


@dataclass
class LoggedRun:
    run_id: str | None
    local_json: Path
    error: str | None = None


def log_run(name: str, params: dict, metrics: dict, tags: dict | None = None,
            text_artifacts: dict[str, str] | None = None, file_artifacts: list[str | Path] = (),
            experiment: str = DEFAULT_EXPERIMENT, parent_run_id: str | None = None) -> LoggedRun:
    """One MLflow run. The figures go to runs/figures/<time>-<name>.json before MLflow is tried."""
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    local = LOCAL_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{name.replace('/', '_')}.json"
    all_tags = {**standard_tags(), **(tags or {})}
    local.write_text(json.dumps({"name": name, "params": params, "metrics": metrics, "tags": all_tags},
                                indent=1, default=str))
    try:
        mlflow = setup_mlflow(experiment)
        kw = {"nested": True, "parent_run_id": parent_run_id} if parent_run_id else {}
        with mlflow.start_run(run_name=name, **kw) as run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
            mlflow.set_tags(all_tags)
            with tempfile.TemporaryDirectory() as td:
                for fname, text in (text_artifacts or {}).items():
                    f = Path(td) / fname
                    f.write_text(text)
                    mlflow.log_artifact(str(f))
            for f in file_artifacts:
                mlflow.log_artifact(str(f))
            return LoggedRun(run.info.run_id, local)
    except Exception as e:  # logging must never cost the user the figures
        kept = str(local)
        if text_artifacts:  # e.g. per-utterance transcripts: keep them next to the figures
            adir = local.with_suffix("")
            adir.mkdir(parents=True, exist_ok=True)
            for fname, text in text_artifacts.items():
                (adir / fname).write_text(text)
            kept += f" (+ {adir}/)"
        msg = f"MLflow logging failed ({type(e).__name__}: {e}); figures kept in {kept}"
        log.warning(msg)
        print(f"warning: {msg}")
        return LoggedRun(None, local, str(e))


@dataclass(frozen=True)
class TrackedRun:
    """What callers read back from a run, so no MLflow type leaves this module."""

    id: str
    name: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    artifact_uri: str

    @classmethod
    def of(cls, r) -> TrackedRun:
        return cls(r.info.run_id, r.info.run_name, r.info.status, dict(r.data.tags), dict(r.data.params),
                   dict(r.data.metrics), r.info.artifact_uri)


class Tracker:
    """Runs of one experiment handled by id (MlflowClient, no active-run state), for work spanning many runs.

    Errors propagate: the caller decides what a failure costs (the sweep keeps its figures on disk first).
    """

    def __init__(self, client, experiment_id: str):
        self.client, self.experiment_id = client, experiment_id

    @classmethod
    def open(cls, experiment: str) -> Tracker:
        """The experiment on the configured store, created when missing."""
        from mlflow.tracking import MlflowClient

        mlflow = setup_mlflow(experiment)
        return cls(MlflowClient(), mlflow.get_experiment_by_name(experiment).experiment_id)

    @classmethod
    def existing(cls, experiment: str) -> Tracker | None:
        """The experiment if the store has it (reading must not create one); None otherwise."""
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(tracking_uri())
        client = MlflowClient()
        exp = client.get_experiment_by_name(experiment)
        return None if exp is None else cls(client, exp.experiment_id)

    def find_runs(self, tags: dict[str, str], max_results: int = 1000) -> list[TrackedRun]:
        """Runs carrying every tag in `tags` (any status), newest first."""
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=where,
                                       order_by=["attributes.start_time DESC"], max_results=max_results)
        return [TrackedRun.of(r) for r in runs]

    def run(self, run_id: str) -> TrackedRun:
        return TrackedRun.of(self.client.get_run(run_id))

    def create_run(self, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        """A RUNNING run with `tags` and the standard ones (CPU, commit, versions), nested under `parent_id`
        (as MLflow nests runs: the `mlflow.parentRunId` tag)."""
        nest = {"mlflow.parentRunId": parent_id} if parent_id else {}
        return self.client.create_run(self.experiment_id, run_name=name,
                                      tags={**nest, **tags, **standard_tags()}).info.run_id

    def log_params(self, run_id: str, params: dict) -> None:
        for k, v in params.items():
            self.client.log_param(run_id, k, v)

    def log_metrics(self, run_id: str, metrics: dict) -> None:
        """The numeric values of `metrics`; anything else (a list, a note) is not a metric and is skipped."""
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.client.log_metric(run_id, k, float(v))

    def log_texts(self, run_id: str, texts: dict[str, str], artifact_path: str | None = None) -> None:
        """Each `{file name: text}` as an artifact file (e.g. per-utterance transcripts)."""
        with tempfile.TemporaryDirectory() as td:
            for fname, text in texts.items():
                (Path(td) / fname).write_text(text)
                self.client.log_artifact(run_id, str(Path(td) / fname), artifact_path)

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(directory), artifact_path)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)

    def terminate(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def log_pyfunc_model(self, run_id: str, name: str, data_dir: str | Path, loader_file: str | Path,
                         pip_requirements: list[str], metadata: dict | None = None) -> str:
        """An MLflow model (MLflow 3: a LoggedModel, output of the run) whose pyfunc flavour is
        `loader_file`, a self-contained module defining `_load_pyfunc(data_path)` carried in the model's
        code/ folder, over `data_dir` (copied into the model); returns its model id.

        A loader module rather than a pickled PythonModel or a models-from-code file: the logged model
        imports neither w2vc nor mlflow, only what `pip_requirements` declares.
        """
        import mlflow
        from mlflow.models import Model

        mlflow.set_experiment(experiment_id=self.experiment_id)  # the logged model's experiment
        info = Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id,
                         loader_module=Path(loader_file).stem,
                         data_path=str(data_dir), code_paths=[str(loader_file)],
                         pip_requirements=list(pip_requirements), metadata=metadata)
        return info.model_id

    def register_version(self, name: str, run_id: str, model_id: str, description: str = "") -> str:
        """A model-registry version of `name` (created when new) whose source is the logged model
        `model_id` (`models:/<model_id>`), so `mlflow.pyfunc.load_model("models:/<name>/<version>")` loads
        it; returns "name/version"."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, description=description)
        except MlflowException:  # registered before (an earlier sweep): add a version
            pass
        v = self.client.create_model_version(name, f"models:/{model_id}", run_id=run_id, model_id=model_id)
        return f"{name}/{v.version}"
