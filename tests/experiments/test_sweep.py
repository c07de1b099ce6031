"""Golden end-to-end: a tiny sweep through the CLI — cache, MLflow nesting, Pareto, export, kill -9 resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.experiments.test_pareto import brute_front

OBJ = ["wer_clean", "latency_p50_ms", "size_mb"]


def _config(tmp_path, corpus, teacher, student) -> Path:
    raw = {
        "name": "tiny", "teacher": str(teacher), "student": str(student),
        "data": {"corpus": str(corpus), "hours": 0.03, "seed": 7},
        "eval": {"sets": ["clean", "snr10"], "limit": 3, "threads": 1, "seconds": [1], "repeats": 3,
                 "processes": 2, "min_time_s": 0.1},
        "objectives": OBJ, "budgets": ["size_mb <= 100"],
        "export": {"max_picks": 1, "dir": str(tmp_path / "exports")},
        "work_dir": str(tmp_path / "sweeps"), "experiment": "tiny-sweep",
        "candidates": [
            {"name": "teacher", "from": "teacher"},
            {"name": "student-scratch", "from": "student"},
            {"name": "teacher-bf16", "from": "teacher", "steps": [{"kind": "quantize", "method": "bf16"}]},
            {"name": "teacher-int8", "from": "teacher",
             "steps": [{"kind": "export"}, {"kind": "quantize", "method": "ort_dynamic_int8"}]},
            {"name": "distilled", "from": "teacher",
             "steps": [{"kind": "distill", "init": "checkpoint", "student": "@student", "steps": 2,
                        "warmup_steps": 1, "batch_seconds": 8, "eval_every": 2, "bf16": False}]},
            {"name": "pruned", "from": "teacher",
             "steps": [{"kind": "prune", "heads": 0.5, "ffn": 0.5},
                       {"kind": "recover", "steps": 2, "warmup_steps": 1, "batch_seconds": 8, "eval_every": 2,
                        "bf16": False}]},
        ],
    }
    f = tmp_path / "sweep.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f


def _run(cfg: Path, cwd: Path, **kw):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "w2vc.cli", "sweep", str(cfg)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _candidate_runs(db: Path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = c.get_experiment_by_name("tiny-sweep")
    runs = c.search_runs([exp.experiment_id])
    return [r for r in runs if r.data.tags.get("w2vc.kind") == "candidate"], \
        [r for r in runs if r.data.tags.get("w2vc.kind") == "sweep"]


def test_tiny_sweep_end_to_end_and_kill9_resume(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model):
    cfg = _config(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model)
    # 1) start, kill -9 as soon as the first candidate's figures are on disk
    p = _run(cfg, tmp_path)
    evals = tmp_path / "sweeps" / "tiny" / "evals"
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None and not (evals.exists() and len(list(evals.glob("*.json"))) >= 2):
        time.sleep(0.5)
    assert p.poll() is None, p.stdout.read()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # 2) re-run to completion
    p = _run(cfg, tmp_path)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    everything, parents = _candidate_runs(tmp_path / "mlflow.db")
    cands = [r for r in everything if r.info.status == "FINISHED"]
    # a run cut off mid-logging by kill -9 is marked, never left looking like a result
    assert all(r.info.status == "FAILED" and r.data.tags.get("w2vc.superseded") == "true"
               for r in everything if r not in cands)
    names = sorted(r.data.tags["w2vc.candidate"] for r in cands)
    assert names == sorted(["teacher", "student-scratch", "teacher-bf16", "teacher-int8", "distilled", "pruned"])
    assert len(parents) == 1
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in cands)
    assert all("wer_clean" in r.data.metrics and "latency_p50_ms" in r.data.metrics for r in cands)
    lineage = {r.data.tags["w2vc.candidate"]: r.data.tags["lineage"] for r in cands}
    assert lineage["pruned"].endswith("prune -> recover") and lineage["distilled"].endswith("distill"), lineage
    # 3) the reported front is exactly the non-dominated set of the measured table
    rows = list(csv.DictReader(open(tmp_path / "sweeps" / "tiny" / "candidates.csv")))
    pts = [[float(r[k]) for k in OBJ] for r in rows]
    assert {rows[i]["name"] for i in brute_front(pts)} == {r["name"] for r in rows if r["pareto"] == "True"}
    assert {r.data.tags["w2vc.candidate"] for r in cands if r.data.tags.get("pareto") == "true"} == \
        {r["name"] for r in rows if r["pareto"] == "True"}
    report = (tmp_path / "sweeps" / "tiny" / "report.md").read_text()
    assert "★" in report and (tmp_path / "sweeps" / "tiny" / "pareto.png").stat().st_size > 1000
    pruned_row = next(ln for ln in report.splitlines() if ln.startswith("| pruned | "))
    assert pruned_row.endswith("prune -> recover |"), pruned_row  # the report shows each candidate's provenance
    bundles = list((tmp_path / "exports" / "tiny").iterdir())
    assert bundles and all((b / "model.onnx").exists() or list(b.glob("*.onnx")) for b in bundles)
    assert all((b / "vocab.json").exists() and (b / "README.md").exists() for b in bundles)
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for b in bundles:  # each exported pick: a registered version whose source is the model logged to its run
        versions = c.search_model_versions(f"name='w2vc-tiny-{b.name}'")
        assert len(versions) == 1 and versions[0].source.startswith("models:/m-"), versions
        assert c.get_run(versions[0].run_id).data.tags["w2vc.candidate"] == b.name
        model_id = versions[0].source.removeprefix("models:/")  # search results leave .model_id unset
        assert c.get_logged_model(model_id).source_run_id == versions[0].run_id
    # 4) a third run rebuilds nothing and logs nothing new
    t0 = time.time()
    p = _run(cfg, tmp_path)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    again, _ = _candidate_runs(tmp_path / "mlflow.db")
    assert len(again) == len(everything)
    assert time.time() - t0 < 120
