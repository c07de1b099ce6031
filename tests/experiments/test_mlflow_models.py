"""Picks as MLflow models: an exported bundle logged and registered, then loaded by its registry URI in a
fresh process that never imports w2vc, transcribing as w2vc's own ONNX transcriber does."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from w2vc.compress.export import ExportConfig, export_onnx
from w2vc.core.artifact import Artifact
from w2vc.core.load import load
from w2vc.data.audio import load_audio
from w2vc.data.grammar import sample_sentence
from w2vc.eval.tracking import EXPERIMENT_KIND, Tracker
from w2vc.experiments.exports import log_bundle_model, pip_requirements
from w2vc.experiments.pyfunc_asr import CtcVocab, OnnxAsr

STUDENT = Path(__file__).resolve().parents[2] / "models" / "student-base-s"  # committed, trained: real text


@pytest.fixture(scope="module")
def student_bundle(tmp_path_factory):
    return export_onnx(Artifact.open(STUDENT), ExportConfig(parity_random=1),
                       tmp_path_factory.mktemp("pick") / "onnx").path


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A grammar sentence spoken by espeak-ng, kept at its native 22.05 kHz (so loading resamples)."""
    f = tmp_path_factory.mktemp("audio") / "utt.wav"
    text = sample_sentence(random.Random(3))
    f.write_bytes(subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], check=True,
                                 capture_output=True).stdout)
    return f


# A fresh interpreter that never imports w2vc: it reads the model URI on stdin (started first, so its own
# imports overlap the store's creation), loads the registered version and transcribes every input form.
CHILD = """
import json, sys
import mlflow, numpy as np, pandas as pd
uri, wav = sys.stdin.readline().split()
m = mlflow.pyfunc.load_model(uri)
arr = np.load("utt16k.npy")
out = {"paths": m.predict([wav]), "frame": m.predict(pd.DataFrame({"path": [wav]})), "arrays": m.predict([arr, arr]),
       "imported": sorted({k.split(".")[0] for k in sys.modules} & {"w2vc", "torch", "transformers"})}
print("RESULT", json.dumps(out))
"""


def test_registered_pick_loads_and_transcribes_in_a_fresh_process(tmp_path, monkeypatch, student_bundle, speech):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "import w2vc" not in CHILD and "from w2vc" not in CHILD
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=tmp_path, text=True, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"})
    monkeypatch.chdir(tmp_path)  # artifacts under tmp_path/mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker.open("picks")
    run_id = tracker.create_run("student-onnx", {"w2vc.kind": "candidate"})
    tracker.log_metrics(run_id, {"wer_clean": 0.07})
    tracker.terminate(run_id)
    ref = log_bundle_model(tracker, run_id, student_bundle, "test-pick", description="a test pick")
    name, ver = ref.split("/")

    audio = load_audio(speech)  # 16 kHz, as w2vc reads it
    np.save(tmp_path / "utt16k.npy", audio)
    stdout, stderr = child.communicate(f"models:/{name}/{ver} {speech}\n", timeout=120)
    assert child.returncode == 0, stderr[-3000:]
    out = json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[7:])
    expected = load(student_bundle).transcribe([audio])[0]
    assert len(expected.split()) >= 2, expected  # a real transcript, not an empty or one-token one
    assert out["paths"] == out["frame"] == [expected]
    assert out["arrays"] == [expected, expected]
    assert out["imported"] == []  # neither w2vc nor torch/transformers came with the model

    # the version's source is the logged model of the candidate's run, which declares only what it imports;
    # the experiment opens on its runs
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    v = c.get_model_version(name, ver)
    model_id = c.get_run(run_id).data.tags["logged_model"]
    assert v.source == f"models:/{model_id}" and v.run_id == run_id
    logged = c.get_logged_model(model_id)
    assert logged.source_run_id == run_id
    reqs = (Path(logged.artifact_location.removeprefix("file://")) / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in reqs} == {"mlflow", *(r.split("==")[0] for r in pip_requirements())}, reqs
    assert c.get_experiment_by_name("picks").tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    # registering again (a sweep re-run whose registration was cut off) reuses the logged model
    assert log_bundle_model(tracker, run_id, student_bundle, name, reuse_logged=True) == f"{name}/2"
    assert c.get_model_version(name, "2").source == v.source


def test_layer_norm_bundle_and_the_decoder_match_w2vc_and_the_processor(tiny_layer_model, tmp_path):
    """A Large-style graph transcribes as w2vc's transcriber does; the hand-written decoder equals
    Wav2Vec2CTCTokenizer.decode on random id sequences; every input form gives the same texts."""
    bundle = export_onnx(Artifact.open(tiny_layer_model), ExportConfig(parity_random=1), tmp_path / "onnx").path
    ours, theirs = OnnxAsr(bundle), load(bundle)
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 19000)]
    assert ours.predict(audio) == theirs.transcribe(audio)
    assert ours.predict(pd.DataFrame({"audio": audio})) == ours.predict({"audio": audio}) == ours.predict(audio)
    vocab = CtcVocab(bundle)
    for _ in range(50):  # repeats, blanks, delimiters and special tokens, at random
        ids = rng.integers(0, len(vocab.tokens), int(rng.integers(0, 40)))
        ids = np.repeat(ids, rng.integers(1, 3, ids.size))
        assert vocab.decode(ids) == theirs.processor.decode(ids)
    with pytest.raises(ValueError, match="one utterance"):
        ours.predict([np.zeros((2, 3), np.float32)])


def test_exported_cascade_is_one_folder_that_routes_as_w2vc_does(tmp_path, monkeypatch, student_bundle,
                                                                  tiny_layer_model, tiny_corpus):
    """A cascade pick exported (`export_bundle` → `export_cascade`): both members inside one folder (the torch one exported to
    ONNX), moved elsewhere it still loads with w2vc and as the pyfunc, routes the same utterances as the
    cascade it came from, and the pyfunc's confidence equals w2vc's for every measure."""
    from w2vc.compress.cascade import CascadeConfig, cascade
    from w2vc.core.cascade import utterance_confidence as w2vc_confidence
    from w2vc.experiments.config import parse_config
    from w2vc.experiments.exports import export_bundle
    from w2vc.experiments.pyfunc_asr import CascadeAsr, load_bundle, utterance_confidence
    from w2vc.experiments.runner import CandidateResult

    rng = random.Random(11)
    audio = []
    for _ in range(6):
        wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", sample_sentence(rng)], check=True,
                             capture_output=True).stdout
        (tmp_path / "u.wav").write_bytes(wav)
        audio.append(load_audio(tmp_path / "u.wav"))
    fast = Artifact.open(student_bundle)
    probe = cascade(fast, CascadeConfig(strong=str(tiny_layer_model), threshold=0.5), tmp_path / "probe")
    confs = sorted(r.confidence for r in load(probe.path).route(audio))
    threshold = (confs[2] + confs[3]) / 2  # half the utterances fall back
    built = cascade(fast, CascadeConfig(strong=str(tiny_layer_model), threshold=threshold), tmp_path / "casc")
    routes = load(built.path).route(audio)
    assert 0 < sum(r.fell_back for r in routes) < len(routes)

    cfg = parse_config({"name": "c", "teacher": str(tiny_layer_model), "student": str(student_bundle),
                        "data": {"corpus": str(tiny_corpus)}, "candidates": [{"name": "teacher"}]})
    cr = CandidateResult("casc", str(built.path), [], [], {"wer_clean": 0.1}, "k")
    assert export_bundle(cfg, cr, built, tmp_path / "bundle")
    assert "strong/" in (tmp_path / "bundle" / "README.md").read_text()
    assert str(tmp_path / "bundle" / "fast") in (tmp_path / "bundle" / "fast" / "README.md").read_text()
    moved = tmp_path / "elsewhere" / "pick"
    moved.parent.mkdir()
    os.rename(tmp_path / "bundle", moved)
    assert sorted(p.name for p in moved.iterdir() if p.is_dir()) == ["fast", "strong"]
    assert Artifact.open(moved).size_mb == pytest.approx(fast.size_mb + Artifact.open(moved / "strong").size_mb)
    exported = load(moved)
    assert [r.fell_back for r in exported.route(audio)] == [r.fell_back for r in routes]
    texts = exported.transcribe(audio)
    assert [t for t, r in zip(texts, routes) if not r.fell_back] == [r.text for r in routes if not r.fell_back]

    asr = load_bundle(moved)
    assert isinstance(asr, CascadeAsr) and asr.predict(audio) == texts
    monkeypatch.chdir(tmp_path)  # the registered model, loaded back through MLflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = Tracker.open("picks")
    run_id = tracker.create_run("cascade", {"w2vc.kind": "candidate"})
    tracker.terminate(run_id)
    ref = log_bundle_model(tracker, run_id, moved, "test-cascade")
    import mlflow

    assert mlflow.pyfunc.load_model(f"models:/{ref}").predict(audio) == texts
    blank = exported.blank_id
    for measure in ("max_prob", "entropy", "tsallis"):
        for aggregation in ("mean", "min"):
            for x in audio[:2]:
                lg = asr.fast.logits(x)
                assert utterance_confidence(lg, blank, measure, aggregation, 1 / 3) == pytest.approx(
                    w2vc_confidence(lg, blank, measure, aggregation, 1 / 3), abs=1e-12)
