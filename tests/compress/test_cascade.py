"""Cascade step and CascadeTranscriber on the committed models (student-base-s fast, teacher-large-s strong)
and real synthesized speech: the threshold's two ends reproduce each member exactly, a threshold in between
routes exactly the utterances below it, and a correct transcript is more confident than noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from w2vc.compress.cascade import CascadeConfig, cascade
from w2vc.core.artifact import CASCADE_FILE, Artifact, Kind, kind_of
from w2vc.core.cascade import (
    MEASURES,
    CascadeSpec,
    CascadeTranscriber,
    frame_confidence,
    utterance_confidence,
)
from w2vc.core.config import ConfigError
from w2vc.core.load import load, load_torch
from w2vc.core.wer import normalize
from w2vc.data.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[2]
FAST, STRONG = ROOT / "models" / "student-base-s", ROOT / "models" / "teacher-large-s"


def make_cascade(out: Path, threshold: float, measure: str = "max_prob", fast: Path = FAST,
                 strong: Path = STRONG) -> Artifact:
    return cascade(Artifact.open(fast), CascadeConfig(strong=str(strong), measure=measure, threshold=threshold),
                   out)


@pytest.fixture(scope="module")
def speech(tiny_corpus):
    ds = load_dataset(tiny_corpus / "manifests" / "test.jsonl")
    dev = load_dataset(tiny_corpus / "manifests" / "dev.jsonl")
    return ds.audio + dev.audio, ds.texts + dev.texts


@pytest.fixture(scope="module")
def members():
    return load(FAST, threads=1), load(STRONG, threads=1)


def test_step_writes_a_cascade_directory_with_provenance(tmp_path):
    art = make_cascade(tmp_path / "c", 0.9)
    assert art.kind is Kind.CASCADE and kind_of(art.path) is Kind.CASCADE and art.format == "cascade"
    spec = json.loads((art.path / CASCADE_FILE).read_text())
    assert (spec["fast"], spec["strong"]) == (str(FAST), str(STRONG))
    assert (spec["measure"], spec["aggregation"], spec["threshold"]) == ("max_prob", "mean", 0.9)
    assert (spec["fast_hash"], spec["strong_hash"]) == (Artifact.open(FAST).hash, Artifact.open(STRONG).hash)
    prov = json.loads((art.path / "w2vc.json").read_text())
    assert prov["step"] == "cascade" and prov["parent"] == str(FAST) and prov["lineage"][-1] == "cascade"
    assert prov["params"]["strong"] == str(STRONG) and prov["hash"] == art.hash
    assert art.size_mb == pytest.approx(Artifact.open(FAST).size_mb + Artifact.open(STRONG).size_mb)
    assert sorted(p.name for p in art.path.iterdir()) == ["w2vc.json", CASCADE_FILE]  # names, copies nothing
    with pytest.raises(ValueError, match="cascade of two models"):
        load_torch(art)


def test_config_round_trip_and_one_line_errors(tmp_path, tiny_group_model):
    cfg = CascadeConfig(strong="x", measure="entropy", aggregation="min", threshold=0.5)
    assert CascadeConfig.from_dict(cfg.to_dict()) == cfg
    for bad, msg in (({}, "needs strong"), ({"strong": "x", "measure": "gibbs"}, "measure must be one of"),
                     ({"strong": "x", "aggregation": "max"}, "aggregation must be"),
                     ({"strong": "x", "threshold": -0.1}, "threshold must be"),
                     ({"strong": "x", "alpha": 1.0}, "alpha")):
        with pytest.raises(ValueError, match=msg):
            CascadeConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="unknown cascade option"):
        CascadeConfig.from_dict({"strong": "x", "treshold": 0.5})
    with pytest.raises(FileNotFoundError, match="strong model not found"):
        make_cascade(tmp_path / "a", 0.5, strong=tmp_path / "missing")
    with pytest.raises(ValueError, match="same model"):
        make_cascade(tmp_path / "b", 0.5, strong=FAST)
    c = make_cascade(tmp_path / "c", 0.5)
    with pytest.raises(ValueError, match="takes .* artifacts; .* is cascade"):
        make_cascade(tmp_path / "d", 0.5, fast=c.path)
    with pytest.raises(ValueError, match=r"cascade \(strong\) takes"):
        make_cascade(tmp_path / "e", 0.5, strong=c.path)
    other_vocab = tmp_path / "vocab"
    other_vocab.mkdir()
    for f in tiny_group_model.iterdir():
        (other_vocab / f.name).write_bytes(f.read_bytes())
    (other_vocab / "vocab.json").write_text(json.dumps({"<pad>": 0, "A": 1}))
    with pytest.raises(ValueError, match="different vocabularies"):
        make_cascade(tmp_path / "f", 0.5, strong=other_vocab)


def test_frame_confidence_spans_uniform_to_certain():
    v = 32
    uniform, certain = np.zeros((1, v)), np.eye(v)[:1] * 60.0
    for m in MEASURES:
        lo, hi = frame_confidence(uniform, m)[0], frame_confidence(certain, m)[0]
        assert hi > 0.999 and lo == pytest.approx(1 / v if m == "max_prob" else 0.0, abs=1e-9)
    peaked = np.log(np.array([[0.7, 0.2, 0.1] + [1e-9] * (v - 3)]))
    assert frame_confidence(peaked, "max_prob")[0] == pytest.approx(0.7, rel=1e-6)
    h = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    assert frame_confidence(peaked, "entropy")[0] == pytest.approx(1 - h / np.log(v), rel=1e-4)
    blank_only = np.tile(np.eye(v)[0] * 10.0, (5, 1))
    assert utterance_confidence(blank_only, blank_id=0) == 0.0  # nothing emitted: the strong model decides
    sure, unsure = np.eye(v)[5] * 60.0, np.roll(peaked[0], 3)
    frames = np.stack([sure, unsure, np.eye(v)[0] * 60.0])  # two non-blank frames and a blank one
    for m in MEASURES:
        pair = frame_confidence(np.stack([sure, unsure]), m)
        assert utterance_confidence(frames, 0, m, "mean") == pytest.approx(pair.mean())
        assert utterance_confidence(frames, 0, m, "min") == pytest.approx(pair.min()) and pair.min() < pair.mean()


def test_threshold_ends_reproduce_each_member(tmp_path, speech, members):
    audio, _ = speech
    fast, strong = members
    never = load(make_cascade(tmp_path / "never", 0.0).path, threads=1)
    assert isinstance(never, CascadeTranscriber) and never.runtime == "cascade"
    assert never.transcribe(audio) == fast.transcribe(audio)
    assert not any(r.fell_back for r in never.last_routes) and never.last_fallback_rate == 0.0
    always = load(make_cascade(tmp_path / "always", 1.01).path, threads=1)
    assert always.transcribe(audio) == strong.transcribe(audio)
    assert all(r.fell_back for r in always.last_routes) and always.last_fallback_rate == 1.0
    assert [r.fast_text for r in always.last_routes] == fast.transcribe(audio)


@pytest.mark.parametrize("measure", ["max_prob", "entropy"])
def test_intermediate_threshold_routes_exactly_the_unsure(tmp_path, speech, members, measure):
    audio, _ = speech
    fast, strong = members
    probe = CascadeTranscriber(fast, strong, CascadeSpec(fast=str(FAST), strong=str(STRONG), measure=measure))
    conf = [c for _, c in probe.first_pass(audio)]
    distinct = sorted(set(conf))
    assert len(distinct) >= 2, "real speech should give the fast model different confidences"
    mid = len(distinct) // 2
    threshold = (distinct[mid - 1] + distinct[mid]) / 2  # between two measured values: no tie at the bound
    tr = load(make_cascade(tmp_path / "mid", threshold, measure).path, threads=1)
    texts = tr.transcribe(audio)
    fell = [r.fell_back for r in tr.last_routes]
    assert fell == [c < threshold for c in conf]
    assert 0 < sum(fell) < len(audio) and tr.last_fallback_rate == sum(fell) / len(audio)
    f_texts, s_texts = fast.transcribe(audio), strong.transcribe(audio)
    assert texts == [s if b else f for f, s, b in zip(f_texts, s_texts, fell)]


def test_correct_transcript_is_more_confident_than_noise(speech, members):
    audio, refs = speech
    fast, strong = members
    hyps = fast.transcribe(audio)
    correct = [a for a, h, r in zip(audio, hyps, refs) if normalize(h) == normalize(r)]
    assert correct, "the committed student should get some utterance of its own corpus right"
    x = correct[0]
    noise = np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    for m in MEASURES:
        for agg in ("mean", "min"):
            spec = CascadeSpec(fast=str(FAST), strong=str(STRONG), measure=m, aggregation=agg, threshold=0.0)
            (_, speech_conf), (_, noise_conf) = CascadeTranscriber(fast, strong, spec).first_pass([x, noise])
            assert speech_conf > noise_conf, (m, agg, speech_conf, noise_conf)


def test_a_changed_member_is_refused(tmp_path, tiny_layer_model, tiny_group_model):
    fast = tmp_path / "fast"
    fast.mkdir()
    for f in tiny_group_model.iterdir():
        (fast / f.name).write_bytes(f.read_bytes())
    c = make_cascade(tmp_path / "c", 0.5, fast=fast, strong=tiny_layer_model)
    load(c.path, threads=1)
    (fast / "model.safetensors").write_bytes((tiny_layer_model / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="changed since the cascade was built"):
        load(c.path, threads=1)
