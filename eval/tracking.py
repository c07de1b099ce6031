"""MLflow logging for every measuring command; figures are never lost if MLflow fails.

Default store `sqlite:///mlflow.db` with artifacts under ./mlruns (MLflow 3's own default);
`MLFLOW_TRACKING_URI` wins when set. Every run also writes its figures to a local JSON file first.
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
    from w2vc.artifact import package_versions

    tags = {"cpu": cpu_model(), "git_commit": git_commit(), "host_cores": str(os.cpu_count())}
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags


def setup_mlflow(experiment: str = DEFAULT_EXPERIMENT):
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI))
    mlflow.set_experiment(experiment)
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
