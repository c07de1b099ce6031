"""Readers and eval-set resolution: odd audio files are decoded or counted as skipped, never hidden."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from w2vc.cli import main
from w2vc.data.datasets import DatasetError, load_dataset
from w2vc.eval.evaluate import find_eval_sets


def _tone(sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


@pytest.fixture
def messy_librispeech(tmp_path):
    """LibriSpeech layout: 8 kHz wav, 8 kHz flac, 44.1 kHz stereo flac, an empty file, a text 'flac'."""
    root = tmp_path / "messy"
    ch = root / "19" / "198"
    ch.mkdir(parents=True)
    sf.write(ch / "19-198-0000.wav", _tone(8000, 1.0), 8000)
    sf.write(ch / "19-198-0001.flac", _tone(8000, 0.5), 8000, format="FLAC")
    sf.write(ch / "19-198-0002.flac", _tone(44100, 0.75, channels=2), 44100, format="FLAC")
    (ch / "19-198-0003.flac").write_bytes(b"")
    (ch / "19-198-0004.flac").write_text("this is not audio at all\n" * 20)
    (ch / "19-198.trans.txt").write_text("19-198-0000 TURN ON THE LIGHTS\n19-198-0001 STOP\n"
                                         "19-198-0002 SET A TIMER\n19-198-0003 EMPTY\n19-198-0004 TEXT\n")
    return root


def test_librispeech_mixed_audio_and_skips(messy_librispeech):
    ds = load_dataset(messy_librispeech)
    assert ds.ids == ["19-198-0000", "19-198-0001", "19-198-0002"]
    assert [len(a) for a in ds.audio] == [16000, 8000, 12000]  # all resampled to 16 kHz mono
    assert all(a.ndim == 1 and a.dtype == np.float32 for a in ds.audio)
    assert sorted(p.rsplit("/", 1)[1] for p, _ in ds.skipped) == ["19-198-0003.flac", "19-198-0004.flac"]


def test_eval_counts_skipped_files(messy_librispeech, tiny_layer_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "e.json"
    rc = main(["eval", "--model", str(tiny_layer_model), "--data", str(messy_librispeech), "--threads", "1",
               "--no-mlflow", "--json", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["metrics"]["skipped_files"] == 2 and d["metrics"]["n_utterances"] == 3
    assert len(d["sets"][0]["skipped"]) == 2 and all(s["reason"] for s in d["sets"][0]["skipped"])
    assert "clean: skipped 2 unreadable file(s)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["eval", "--model", "M", "--data", "/no/such/corpus"],
                                  ["eval", "--model", "M", "--data", "HERE", "--noisy"]])
def test_bad_data_is_one_line_error(tiny_layer_model, tmp_path, capsys, argv):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "transcripts.txt").write_text("a HELLO\n")
    argv = [str(tiny_layer_model) if x == "M" else str(tmp_path / "plain") if x == "HERE" else x for x in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("w2vc eval: error: DatasetError: ")
    assert "Traceback" not in err


def test_jsonl_csv_manifests_and_folder_reader(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for i, sec in enumerate((0.5, 1.0)):
        sf.write(audio / f"u{i}.wav", _tone(16000, sec), 16000)
    rows = [{"id": "first", "path": "audio/u0.wav", "text": "HELLO"},
            {"path": str(audio / "u1.wav"), "text": "TWO WORDS"}]  # absolute path, id from the file stem
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "text"])
        w.writeheader()
        w.writerows([{"id": r.get("id", ""), **r} for r in rows])
    for manifest in ("m.jsonl", "m.csv"):
        ds = load_dataset(tmp_path / manifest)
        assert ds.ids == ["first", "u1"] and ds.texts == ["HELLO", "TWO WORDS"]
        assert [len(a) for a in ds.audio] == [8000, 16000]
    (audio / "transcripts.txt").write_text("u1 TWO WORDS\nu0 HELLO\n")
    ds = load_dataset(audio)
    assert ds.ids == ["u1", "u0"] and [len(a) for a in ds.audio] == [16000, 8000]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"file": "x.wav"}) + "\n")
    with pytest.raises(DatasetError, match="lacks 'path' or 'text'"):
        load_dataset(tmp_path / "bad.jsonl")


def test_find_eval_sets(tiny_corpus, tmp_path):
    names = [s.name for s in find_eval_sets(tiny_corpus, "test", noisy=True)]
    assert names[:4] == ["clean", "snr20", "snr10", "snr5"]
    assert names[4:] == (["unseen_synth"] if (tiny_corpus / "manifests/test_unseen_synth.jsonl").exists() else [])
    assert [s.name for s in find_eval_sets(tiny_corpus, "test")] == ["clean"]
    with pytest.raises(DatasetError, match="no split 'nope'"):
        find_eval_sets(tiny_corpus, "nope")
    # a plain manifest: noisy siblings are found next to it by name
    sets = find_eval_sets(tiny_corpus / "manifests" / "test.jsonl", noisy=True)
    assert [s.path.name for s in sets][:4] == ["test.jsonl", "test_snr20.jsonl", "test_snr10.jsonl",
                                                "test_snr5.jsonl"]
    # a plain LibriSpeech folder: sibling folders, only when they exist
    shutil.copytree(tiny_corpus / "test", tmp_path / "clean")
    with pytest.raises(DatasetError, match="no noisy copies"):
        find_eval_sets(tmp_path / "clean", noisy=True)
    shutil.copytree(tiny_corpus / "test_snr10", tmp_path / "clean_snr10")
    assert [(s.name, s.path.name) for s in find_eval_sets(tmp_path / "clean", noisy=True)] == [
        ("clean", "clean"), ("snr10", "clean_snr10")]


def test_missing_model_is_one_line_error(tiny_corpus, tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "no_model"), "--data", str(tiny_corpus), "--no-mlflow"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"w2vc eval: error: FileNotFoundError: model not found: "
                                        f"{tmp_path / 'no_model'} (give a model directory or a hub id "
                                        f"namespace/name)"]
