"""Long-form in the sweep: with `eval.long_chunk_seconds` every candidate gets the long recordings' WER and
per-window latency, the same figures `w2vc eval --long` gives; a corpus without them fails before any build."""

from __future__ import annotations

import pytest

from w2vc.core.artifact import Artifact
from w2vc.data.datasets import DatasetError
from w2vc.eval.evaluate import evaluate_model
from w2vc.eval.longform import LongOptions
from w2vc.experiments.config import parse_config
from w2vc.experiments.runner import load_eval_sets, measure_candidate


def _cfg(tmp_path, corpus, teacher, student):
    return parse_config({
        "name": "long", "teacher": str(teacher), "student": str(student), "data": {"corpus": str(corpus)},
        "eval": {"sets": ["clean"], "limit": 4, "threads": 1, "seconds": [1], "repeats": 3, "processes": 1,
                 "min_time_s": 0.1, "long_chunk_seconds": [2, 4]},
        "export": {"enabled": False}, "work_dir": str(tmp_path / "sweeps"), "candidates": [{"name": "teacher"}]})


def test_candidates_get_long_form_figures(tmp_path, long_corpus, tiny_corpus, tiny_layer_model, tiny_group_model):
    cfg = _cfg(tmp_path, long_corpus, tiny_layer_model, tiny_group_model)
    assert cfg.eval.long_chunk_seconds == (2.0, 4.0)
    metrics, texts = measure_candidate(Artifact.open(tiny_layer_model), cfg, load_eval_sets(cfg))
    for k in ("2s", "4s"):
        assert metrics[f"chunk_p90_ms_long_{k}"] >= metrics[f"chunk_p50_ms_long_{k}"] > 0
        assert f"transcripts_long_{k}.tsv" in texts
    assert metrics["n_long_recordings"] == 2 and "latency_p50_ms" in metrics
    ref = evaluate_model(tiny_layer_model, long_corpus, limit=4, threads=1, long=LongOptions((2.0, 4.0)))
    for k in ("wer_long_2s", "wer_long_4s", "wer_parts", "wer_clean"):
        assert metrics[k] == pytest.approx(ref.metrics[k])

    one = parse_config({**cfg.raw, "eval": {**cfg.raw["eval"], "long_recordings": 1}})
    assert measure_candidate(Artifact.open(tiny_layer_model), one, load_eval_sets(one))[0]["n_long_recordings"] == 1
    no_long = _cfg(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model)
    with pytest.raises(DatasetError, match="test_long"):
        load_eval_sets(no_long)
