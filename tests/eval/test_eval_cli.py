"""`w2vc eval --noisy` end to end: JSON figures, an MLflow run readable by MlflowClient, and no lost figures."""

from __future__ import annotations

import json

import pytest

from w2vc.cli import main


def test_eval_noisy_logs_mlflow_run(tiny_corpus, tiny_layer_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # ./mlruns and runs/figures land here
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rc = main(["eval", "--model", str(tiny_layer_model), "--data", str(tiny_corpus), "--noisy", "--threads", "1",
               "--experiment", "w2vc-test", "--json", "out.json"])
    assert rc == 0
    stdout = capsys.readouterr().out
    d = json.loads((tmp_path / "out.json").read_text())
    m = d["metrics"]
    for key in ("wer_clean", "cer_clean", "wer_snr20", "wer_snr10", "cer_snr10", "wer_snr5", "n_utterances",
                "skipped_files"):
        assert key in m, key
    assert m["skipped_files"] == 0 and m["n_utterances"] > 0 and 0 <= m["wer_clean"]
    assert m["n_utterances_snr10"] == m["n_utterances"]  # noisy sets are copies of test
    assert d["run_id"] and "snr10" in stdout and d["run_id"] in stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("w2vc-test")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [d["run_id"]]
    run = runs[0]
    assert run.data.metrics["wer_clean"] == pytest.approx(m["wer_clean"])
    assert run.data.metrics["wer_snr10"] == pytest.approx(m["wer_snr10"])
    assert run.data.params["runtime"] == "torch" and run.data.params["split"] == "test"
    assert run.data.params["threads"] == "1" and run.data.params["model"] == str(tiny_layer_model)
    assert "git_commit" in run.data.tags and "cpu" in run.data.tags
    arts = {a.path for a in client.list_artifacts(d["run_id"])}
    assert {"transcripts_clean.tsv", "transcripts_snr10.tsv"} <= arts
    # the logged transcripts add up to the logged metric
    tsv = client.download_artifacts(d["run_id"], "transcripts_clean.tsv", str(tmp_path))
    rows = [line.split("\t") for line in open(tsv).read().splitlines()[1:]]
    assert len(rows) == m["n_utterances"]
    assert sum(int(r[3]) for r in rows) / sum(int(r[4]) for r in rows) == pytest.approx(m["wer_clean"])
    assert (tmp_path / "mlruns").is_dir() and list((tmp_path / "runs" / "figures").glob("*.json"))


def test_eval_keeps_figures_when_mlflow_fails(tiny_corpus, tiny_layer_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file where the store's directory should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/blocker/mlflow.db")
    rc = main(["eval", "--model", str(tiny_layer_model), "--data", str(tiny_corpus), "--limit", "2",
               "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "MLflow logging failed" in out and "figures kept in" in out
    (local,) = (tmp_path / "runs" / "figures").glob("*.json")
    assert local.name in out
    assert set(json.loads(local.read_text())["metrics"]) >= {"wer_clean", "cer_clean", "skipped_files"}
    assert (local.with_suffix("") / "transcripts_clean.tsv").exists()


def test_eval_by_synth_splits_the_errors(tiny_corpus, tiny_layer_model, tmp_path, capsys):
    rc = main(["eval", "--model", str(tiny_layer_model), "--data", str(tiny_corpus), "--noisy", "--threads", "1",
               "--by", "synth", "--no-mlflow", "--json", str(tmp_path / "out.json")])
    assert rc == 0
    out = capsys.readouterr().out
    d = json.loads((tmp_path / "out.json").read_text())
    manifests = tiny_corpus / "manifests"
    for s in d["sets"]:
        rows = [json.loads(x) for x in (manifests / f"{s['path'].rsplit('/', 1)[1]}").read_text().splitlines()]
        groups = d["by"]["synth"][s["name"]]
        assert set(groups) == {r["synth"] for r in rows}
        assert sum(g["n_utterances"] for g in groups.values()) == s["n_utterances"]
        errors = sum(g["errors"] for g in groups.values())
        assert errors / sum(g["ref_words"] for g in groups.values()) == pytest.approx(s["wer"])
        assert f"{s['name']} WER by synth: " in out
    assert set(d["by"]["synth"]["unseen_synth"]) == {"flite"}
    assert set(d["by"]["synth"]["clean"]) == {"espeak", "festival", "piper"}


def test_eval_by_unknown_column_fails_before_loading(tiny_corpus, tmp_path, capsys):
    rc = main(["eval", "--model", str(tmp_path / "absent-model"), "--data", str(tiny_corpus), "--by", "accent",
               "--no-mlflow"])
    err = capsys.readouterr().err
    assert rc != 0 and "no column 'accent'" in err and "absent-model" not in err
