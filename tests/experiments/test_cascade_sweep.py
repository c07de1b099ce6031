"""Cascades in the sweep: `@<candidate>` strong models built first, a threshold grid expanded into named
candidates, and the latency stage timing cascades (and the reference) on the test utterances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from w2vc.core.artifact import Artifact
from w2vc.core.cascade import CascadeSpec
from w2vc.core.load import load
from w2vc.eval.evaluate import evaluate_model
from w2vc.experiments.cascades import cascade_note
from w2vc.experiments.config import ConfigError, parse_config
from w2vc.experiments.runner import Sweep, build_candidate, measure, prepare, time_candidates


def _raw(tmp_path, corpus, teacher, student, candidates) -> dict:
    return {"name": "casc", "teacher": str(teacher), "student": str(student),
            "data": {"corpus": str(corpus), "hours": 0.03, "seed": 7},
            "eval": {"sets": ["clean"], "limit": 4, "threads": 1, "seconds": [1], "repeats": 3, "processes": 1,
                     "min_time_s": 0.1},
            "objectives": ["wer_clean", "latency_mean_ms", "size_mb"], "export": {"enabled": False},
            "work_dir": str(tmp_path / "sweeps"), "candidates": candidates}


def _casc(strong: str, **kw) -> dict:
    return {"name": "casc", "from": "student", "steps": [{"kind": "cascade", "strong": strong}], **kw}


def test_candidate_refs_and_threshold_grid(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model):
    bf16 = {"name": "teacher-bf16", "steps": [{"kind": "quantize", "method": "bf16"}]}
    raw = _raw(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model,
               [bf16, _casc("@teacher-bf16", grid={"cascade.threshold": [0.5, 0.9]})])
    cfg = parse_config(raw)
    assert [c.name for c in cfg.candidates] == ["teacher-bf16", "casc-threshold0.5", "casc-threshold0.9"]
    cache = Path(cfg.work_dir) / "steps"
    art = build_candidate(cfg.candidates[2], cfg, cache, progress=False)  # builds teacher-bf16 first
    strong = build_candidate(cfg.candidates[0], cfg, cache, progress=False)
    spec = CascadeSpec.read(art.path)
    assert spec.strong == str(strong.path.resolve()) and spec.fast == str(Path(tiny_group_model).resolve())
    assert spec.threshold == 0.9 and Artifact.open(strong.path).transform == "bf16"
    for cands, msg in (([_casc("@nobody")], "names no candidate"), ([_casc("@casc")], "another candidate"),
                       ([{**_casc("@casc"), "name": "a"}, _casc("@a")], "refers to none")):
        with pytest.raises(ConfigError, match=msg):
            parse_config(_raw(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model, cands))
    with pytest.raises(ConfigError, match="measure must be one of"):
        parse_config(_raw(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model,
                          [{**_casc("@teacher"), "steps": [{"kind": "cascade", "strong": "@teacher",
                                                            "measure": "entropie"}]}]))


def test_latency_stage_times_a_cascade_and_the_reference_on_the_test_utterances(tmp_path, tiny_corpus,
                                                                                tiny_layer_model, tiny_group_model):
    """The runner's measure and latency stages on a cascade that always falls back; the reference's clip
    timing is marked done (test_sweep.py covers it), so only the on-audio timing spawns processes."""
    always = {"name": "casc", "from": "student", "steps": [{"kind": "cascade", "strong": "@teacher", "threshold": 2.0}]}
    cfg = parse_config(_raw(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model, [{"name": "teacher"}, always]))
    sw = Sweep(cfg, started=0.0, progress=False)
    prepare(sw)
    cascade_art = build_candidate(cfg.candidates[1], cfg, sw.cache, progress=False)
    casc = measure(sw, cfg.candidates[1], cascade_art, "k1", 0.0)
    assert "latency_mean_ms" not in casc["metrics"] and not casc["timed"]  # timed by the latency stage only
    tr = load(tiny_layer_model, threads=1)
    res = evaluate_model(tr, sw.eval_data, threads=1)
    teacher = {"name": "teacher", "key": "k0", "artifact": str(tiny_layer_model), "timed": True,
               "metrics": dict(res.metrics), "texts": res.text_artifacts()}
    time_candidates(sw, [teacher, casc])
    c, t = casc["metrics"], teacher["metrics"]
    assert casc["timed"] and c["latency_on_test_audio"] == 1.0 and "latency_on_test_audio" not in t
    assert c["fallback_rate"] == c["fallback_rate_clean"] == 1.0  # above 1: every utterance...
    assert c["wer_clean"] == t["wer_clean"]  # ... so the teacher's transcripts
    assert c["utt_n"] == t["utt_n"] == c["n_utterances"]  # the reference timed on the same utterances
    assert c["latency_p90_ms"] >= c["latency_p50_ms"] > 0 and t["utt_latency_mean_ms"] > 0
    assert "latency_p50_ms" not in t  # its clip figures are the clip stage's, untouched here
    assert c["size_mb"] == pytest.approx(Artifact.open(tiny_layer_model).size_mb
                                         + Artifact.open(tiny_group_model).size_mb)
    saved = json.loads((sw.evals / "casc-k1.json").read_text())
    assert saved["metrics"]["fallback_rate"] == 1.0 and saved["timed"]
    rows = [{"name": "teacher", **t, "artifact": teacher["artifact"]}, {"name": "casc", **c, "artifact": casc["artifact"]}]
    note = cascade_note(cfg, rows)
    assert note.startswith("## Cascades: latency timed on the test audio") and "falls back on 100.0 %" in note
    assert f"{c['latency_mean_ms'] / t['utt_latency_mean_ms']:.2f}× teacher's mean" in note
    # the strong member (here the reference too) alone on the same utterances: what the routing saves or not
    assert f"strong member `teacher` alone on the same utterances: mean {t['utt_latency_mean_ms']:.1f} ms" in note
    assert "strong member" not in cascade_note(cfg, [{"name": "teacher", **t}, {"name": "casc", **c}])
    assert cascade_note(cfg, [{"name": "teacher", **t}]) == ""
