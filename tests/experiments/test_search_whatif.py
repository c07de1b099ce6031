"""`w2vc search` (two processes, one shared Optuna study) and `w2vc whatif` (cost-only), through the CLI.

Real tiny models and the real tiny corpus from tests/conftest.py; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SPACE = {
    "prune.heads": [0.0, 0.5],                 # float range
    "prune.ffn": [0.0, 0.75],                  # float range
    "quantize.method": {"choices": ["ort_dynamic_int8", "ort_int4"]},
}
TRIALS = (2, 1)  # --trials of the two concurrent processes
STUDY = "tiny-shared"


def _search_config(tmp_path: Path, corpus, teacher, student, steps=None, space=None) -> Path:
    raw = {
        "name": "tiny-search", "teacher": str(teacher), "student": str(student),
        "data": {"corpus": str(corpus), "hours": 0.03, "seed": 7},
        "eval": {"sets": ["clean"], "limit": 2, "threads": 1, "seconds": [1], "repeats": 3},
        "objectives": ["wer_clean", "size_mb"], "budgets": ["size_mb <= 100"],
        "work_dir": str(tmp_path / "sweeps"), "experiment": "tiny-search",
        "candidates": [{"name": "teacher", "from": "teacher"}],  # required by the schema, unused by search
        "search": {
            "from": "teacher", "sampler": "tpe",
            # no training step: prune -> export -> quantize is seconds per trial on a tiny model
            "steps": steps or [{"kind": "prune"}, {"kind": "export"}, {"kind": "quantize"}],
            "space": space or SPACE,
        },
    }
    f = tmp_path / "search.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}


def _w2vc(*args, cwd: Path, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "w2vc.cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run_concurrently(cmds: list[tuple[list, Path]], env: dict, timeout: float = 900) -> list[str]:
    """Start every `w2vc` command at once (output to files: a full pipe must not stall a process while
    the test waits on another), wait for all, and return their stdout; fails with the output of any error."""
    procs = []
    for i, (args, cwd) in enumerate(cmds):
        out, err = open(cwd / f"stdout{i}.txt", "w+"), open(cwd / f"stderr{i}.txt", "w+")
        procs.append((subprocess.Popen([sys.executable, "-m", "w2vc.cli", *map(str, args)], cwd=cwd, env=env,
                                       stdout=out, stderr=err, text=True), out, err))
    texts = []
    for p, out, err in procs:
        p.wait(timeout=timeout)
        out.seek(0)
        err.seek(0)
        o, e = out.read(), err.read()
        out.close()
        err.close()
        assert p.returncode == 0, f"stdout:\n{o}\nstderr:\n{e}"
        texts.append(o)
    return texts


def _in_space(key: str, value) -> bool:
    rng = SPACE[key]
    if isinstance(rng, dict):
        return value in rng["choices"]
    return rng[0] <= value <= rng[1]


def test_two_search_processes_fill_one_study(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model):
    import optuna
    from mlflow.tracking import MlflowClient

    cfg = _search_config(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = _env(tmp_path)
    # each process in its own cwd: its local figure files (runs/figures/*.json) say which trials it ran
    cwds = [tmp_path / f"proc{i}" for i in range(len(TRIALS))]
    for cwd in cwds:
        cwd.mkdir()
    outs = _run_concurrently([(["search", cfg, "--trials", n, "--storage", storage, "--study", STUDY,
                                "--json", cwd / "out.json"], cwd) for cwd, n in zip(cwds, TRIALS)], env)
    assert all(f"study {STUDY} in {storage}" in out for out in outs)

    # one study holds the trials of both processes, all complete, knobs inside the space
    assert optuna.study.get_all_study_names(storage) == [STUDY]
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.trials
    assert len(trials) == sum(TRIALS)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * sum(TRIALS)
    assert sorted(t.number for t in trials) == list(range(sum(TRIALS)))
    assert len(study.directions) == 2  # wer_clean, size_mb
    for t in trials:
        assert set(t.params) == set(SPACE)
        assert all(_in_space(k, v) for k, v in t.params.items()), t.params
        assert len(t.values) == 2 and 0.0 <= t.values[0] and t.values[1] > 0
        assert Path(t.user_attrs["artifact"]).is_dir()
        assert t.user_attrs["metrics"]["size_mb"] == pytest.approx(t.values[1])
        assert t.user_attrs["constraints"] == [pytest.approx(t.values[1] - 100)]  # size_mb <= 100
    # the study's storage, not the processes' memory, is the shared state: the last to finish saw everything
    reports = [json.loads((c / "out.json").read_text()) for c in cwds]
    assert {r["study"] for r in reports} == {STUDY} and {r["storage"] for r in reports} == {storage}
    assert max(r["n_trials"] for r in reports) == sum(TRIALS)

    # which process ran which trial, from the figure files each wrote in its own cwd
    ran = []
    for c in cwds:
        names = [json.loads(f.read_text())["name"] for f in (c / "runs" / "figures").glob("*.json")]
        ran.append({int(n.rsplit("trial", 1)[1]) for n in names})
    assert [len(r) for r in ran] == list(TRIALS)
    assert set.union(*ran) == {t.number for t in trials} and not set.intersection(*ran)
    # ... and they ran at the same time, not one after the other
    spans = [(min(trials[i].datetime_start for i in r), max(trials[i].datetime_complete for i in r)) for r in ran]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], f"processes did not overlap: {spans}"

    # every trial is one finished MLflow run carrying its knobs and figures
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("tiny-search")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`w2vc.kind` = 'search-trial'")
    assert len(runs) == sum(TRIALS)
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in runs}
    assert set(by_trial) == {t.number for t in trials}
    for t in trials:
        r = by_trial[t.number]
        assert r.info.status == "FINISHED"
        assert r.info.run_name == f"{STUDY}-trial{t.number}"
        assert r.data.tags["w2vc.study"] == STUDY and r.data.params["study"] == STUDY
        assert r.data.params["artifact"] == t.user_attrs["artifact"]
        assert {k: r.data.params[k] for k in SPACE} == {k: str(v) for k, v in t.params.items()}
        assert r.data.metrics["wer_clean"] == pytest.approx(t.values[0])
        assert r.data.metrics["size_mb"] == pytest.approx(t.values[1])


def test_concurrent_trials_needing_the_same_steps_share_the_step_cache(tmp_path, tiny_corpus, tiny_layer_model,
                                                                        tiny_group_model):
    """Only the quantize method varies, so every trial of both processes needs the same prune and export:
    built once into the shared cache, never twice into the same work directory at once."""
    cfg = _search_config(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model,
                         steps=[{"kind": "prune", "heads": 0.5}, {"kind": "export"}, {"kind": "quantize"}],
                         space={"quantize.method": SPACE["quantize.method"]})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _run_concurrently([(["search", cfg, "--trials", 1, "--storage", storage, "--study", "shared-steps",
                         "--no-mlflow"], tmp_path)] * 2, _env(tmp_path))
    import optuna

    trials = optuna.load_study(study_name="shared-steps", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    cache = tmp_path / "sweeps" / "tiny-search" / "steps"
    assert not list(cache.glob("*.work"))  # no half-built step left behind
    built = [json.loads(f.read_text())["step"] for f in cache.glob("*/w2vc.json")]
    assert built.count("prune") == 1 and built.count("export") == 1
    assert built.count("quantize") == len({t.params["quantize.method"] for t in trials})
    parents = {Path(t.user_attrs["artifact"]).parent for t in trials}
    assert parents == {cache}


RECIPE = "prune(heads=.5,ffn=.5)->quantize(int8)"


def _walk_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_keys(v)


def test_whatif_cost_only_rows_and_structure(tmp_path):
    out_json = tmp_path / "whatif.json"
    p = _w2vc("whatif", "--arch", "base-s", "--recipe", RECIPE, "--seconds", "1", "--repeats", "3",
              "--threads", "1", "--processes", "2", "--json", out_json, cwd=tmp_path, env=_env(tmp_path))
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert out.splitlines()[0] == f"COST-ONLY (random weights, true base-s shape; no WER): {RECIPE}"
    assert "wer" not in out.lower().replace("no wer", "")

    res = json.loads(out_json.read_text())
    assert res["cost_only"] is True and res["arch"] == "base-s" and res["recipe"] == RECIPE
    assert not [k for k in _walk_keys(res) if "wer" in k.lower()]
    # recipe grammar: int8 is dynamic int8 in ONNX, so an export step is inserted before it
    assert res["steps"] == [{"kind": "prune", "heads": 0.5, "ffn": 0.5}, {"kind": "export"},
                            {"kind": "quantize", "method": "ort_dynamic_int8"}]
    assert res["notes"] == []
    rows = res["results"]
    # fp32 shape, the pruned shape once exported (still fp32: labelled with the steps it holds), the recipe
    assert [r["model"] for r in rows] == ["base-s fp32 (torch)", "base-s prune(heads=0.5,ffn=0.5)->fp32 (onnx)",
                                          f"base-s {RECIPE}"]
    assert all(r["cost_only"] for r in rows)
    assert all(r["lengths"][0]["processes"] >= 2 and r["lengths"][0]["latency_p50_low_ms"] is not None for r in rows)
    assert [(r["runtime"], r["precision"]) for r in rows] == [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
    fp32, pruned, recipe = rows
    # structure moves the right way: pruning removes parameters, int8 keeps them but shrinks their bytes
    assert pruned["params_m"] < 0.9 * fp32["params_m"] and pruned["size_mb"] < fp32["size_mb"]
    assert recipe["params_m"] == pytest.approx(pruned["params_m"], rel=0.02)
    assert recipe["size_mb"] < 0.75 * pruned["size_mb"]
    r = res["ratio_vs_fp32"]
    assert r["params"] == pytest.approx(recipe["params_m"] / fp32["params_m"])
    assert r["size"] == pytest.approx(recipe["size_mb"] / fp32["size_mb"]) and r["size"] < r["params"] < 1
    for row in rows:  # the printed table has every row, labelled cost-only
        assert f"| {row['model']} (cost-only) |" in res["table"]
        assert f"| {row['model']} (cost-only) |" in out


@pytest.mark.parametrize("recipe, expect", [
    ("prune(heads=.5", "bad recipe step"),
    ("frobnicate(x=1)", "unknown step kind 'frobnicate'"),
    ("quantize(int8-static)", "--data"),
])
def test_whatif_bad_recipe_is_one_clean_line(tmp_path, recipe, expect):
    p = _w2vc("whatif", "--arch", "base-s", f"--recipe={recipe}", "--seconds", "1", "--repeats", "3",
              cwd=tmp_path, env=_env(tmp_path))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2vc whatif: error: ") and expect in lines[0], err


def test_whatif_unknown_arch_is_a_usage_error(tmp_path):
    p = _w2vc("whatif", "--arch", "huge", "--recipe", RECIPE, cwd=tmp_path, env=_env(tmp_path))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and out == ""
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "--arch" in errors[0] and "'huge'" in errors[0] and "base-s" in errors[0], err


def test_whatif_api_rejects_unknown_arch_before_building():
    from w2vc.experiments.whatif import whatif

    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        whatif("huge", RECIPE, progress=False)


@pytest.mark.parametrize("recipe, expect", [
    ("->", "empty recipe"),
    ("prune(heads=.5", "bad recipe step"),
    ("distill(steps=5)->recover(steps=5)", "no shape-changing step"),
    ("quantize(int8-static)", "--data"),
    ("frobnicate(x=1)", "unknown step kind 'frobnicate'"),
    ("prune(hedas=.5)->quantize(int8)", "unknown prune option.*hedas"),
    ("prune(heads=.5)->quantize(int9)", "unknown quantize method 'int9'"),
    ("prune(heads=1.5)", "heads"),
])
def test_expand_recipe_validates_every_step_before_any_model_is_built(recipe, expect):
    """The checks run on the recipe text alone, so a typo never costs building the (Large: 1.2 GB) model."""
    from w2vc.experiments.whatif import expand_recipe

    with pytest.raises(ValueError, match=expect):
        expand_recipe(recipe)


def test_whatif_shape_of_costs_a_pruned_models_cut_on_the_true_shape(tmp_path, tiny_layer_model):
    """`--shape-of` takes a real pruned model's per-layer cut (found against its unpruned parent through the
    provenance) to base-s at the same ratios, and the recipe runs on that shape."""
    from w2vc.compress.prune import PruneConfig, prune
    from w2vc.core.artifact import Artifact
    from w2vc.core.models import get_preset
    from w2vc.core.shapes import transfer_shapes
    from w2vc.experiments.whatif import cut_shapes

    pruned = prune(Artifact.open(tiny_layer_model), PruneConfig(heads=0.5, ffn=0.25, cnn=0.25, drop_layers=(1,)),
                   tmp_path / "pruned")
    before, after, original = cut_shapes(pruned.path)
    assert original == Path(tiny_layer_model)
    assert (before["num_hidden_layers"], after["num_hidden_layers"]) == (2, 1)
    assert after["num_heads"] == [1] and after["intermediate_size"] == [48] and after["conv_dim"] == [12] * 7
    base_s = transfer_shapes(before, after, get_preset("base-s").wav2vec2_config())  # 4 x 3 heads, FFN 640, 128 ch
    assert base_s["num_hidden_layers"] == 2 and base_s["num_heads"] == [2, 2]  # half the layers; 1/2 of 3 heads
    assert base_s["intermediate_size"] == [480, 480] and base_s["conv_dim"] == [96] * 7  # 3/4 of 640 and of 128
    with pytest.raises(ValueError, match="records no structural cut"):
        cut_shapes(tiny_layer_model)

    out_json = tmp_path / "whatif.json"
    p = _w2vc("whatif", "--arch", "base-s", "--shape-of", pruned.path, "--recipe", "quantize(int8)", "--seconds", "1",
              "--repeats", "3", "--threads", "1", "--processes", "1", "--json", out_json, cwd=tmp_path, env=_env(tmp_path))
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "shape of" in out and "2 layers, heads [2, 2], FFN [480, 480], conv [96, 96" in out
    res = json.loads(out_json.read_text())
    assert res["shapes"]["num_heads"] == [2, 2]
    rows = res["results"]
    assert [r["model"] for r in rows] == ["base-s fp32 (torch)", "base-s shape_of(pruned) fp32 (torch)",
                                          "base-s shape_of(pruned)->fp32 (onnx)", "base-s shape_of(pruned)->quantize(int8)"]
    fp32, shaped, onnx, int8 = rows
    assert shaped["params_m"] < 0.6 * fp32["params_m"] and onnx["params_m"] == pytest.approx(shaped["params_m"], rel=0.02)
    assert int8["size_mb"] < 0.75 * onnx["size_mb"]
