"""A cascade timed on real utterances in fresh processes (committed student fast, teacher strong): the timed
fallback rate is the transcriber's own count, fallbacks cost more per second of audio, and WER is scored per
set with that set's fallback rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from w2vc.compress.cascade import CascadeConfig, cascade
from w2vc.core.artifact import Artifact
from w2vc.core.cascade import CascadeSpec, CascadeTranscriber
from w2vc.core.load import load
from w2vc.core.wer import word_error_rate
from w2vc.data.datasets import load_dataset
from w2vc.eval.cascade_cost import UtteranceJob, UtteranceTimingConfig, evaluate_cascade, time_utterances
from w2vc.eval.evaluate import load_eval_data

ROOT = Path(__file__).resolve().parents[2]
FAST, STRONG = ROOT / "models" / "student-base-s", ROOT / "models" / "teacher-large-s"


@pytest.fixture(scope="module")
def mid_cascade(tiny_corpus, tmp_path_factory):
    """A cascade whose threshold lies between two measured confidences of the test + dev audio."""
    audio = load_dataset(tiny_corpus / "manifests" / "test.jsonl").audio + \
        load_dataset(tiny_corpus / "manifests" / "dev.jsonl").audio
    fast, strong = load(FAST, threads=1), load(STRONG, threads=1)
    conf = sorted({c for _, c in CascadeTranscriber(fast, strong, CascadeSpec(str(FAST), str(STRONG))).first_pass(audio)})
    threshold = (conf[len(conf) // 2 - 1] + conf[len(conf) // 2]) / 2
    art = cascade(Artifact.open(FAST), CascadeConfig(strong=str(STRONG), threshold=threshold),
                  tmp_path_factory.mktemp("cascade") / "c")
    return art.path, audio


def test_timed_fallback_rate_is_the_transcribers_count(mid_cascade):
    path, audio = mid_cascade
    routes = load(path, threads=1).route(audio, max_batch=1)
    fell = np.array([r.fell_back for r in routes])
    assert 0 < fell.sum() < len(audio)
    [casc] = time_utterances([UtteranceJob("cascade", str(path))], audio,
                             UtteranceTimingConfig(threads=1, processes=1, warmup=1))
    assert casc.fallback_rate == fell.mean()
    ms = np.array(casc.utterance_ms)
    assert casc.n_utterances == len(audio) == len(ms) and casc.processes == 1 and casc.peak_rss_mb > 0
    assert ms.min() <= casc.latency_p50_ms <= casc.latency_p90_ms <= ms.max()
    assert casc.latency_mean_ms == pytest.approx(ms.mean(), rel=1e-3)
    per_second = ms / np.array([len(a) / 16000 for a in audio])
    assert per_second[fell].mean() > per_second[~fell].mean(), "a fallback runs both models"
    assert casc.params_m == pytest.approx(_torch_params(FAST) + _torch_params(STRONG))
    m = casc.headline_metrics()
    assert m["latency_on_test_audio"] == 1.0 and m["fallback_rate"] == fell.mean()
    assert m["latency_mean_ms"] == m["utt_latency_mean_ms"] and m["rtf"] == pytest.approx(
        casc.latency_mean_ms / 1000 / np.mean([len(a) / 16000 for a in audio]))
    assert "latency_p50_ms" not in casc.metrics()  # the utt_ names only: comparable with any model timed so


def _torch_params(path) -> float:
    from w2vc.core.load import load_torch

    model, _ = load_torch(path)
    return sum(p.numel() for p in model.parameters()) / 1e6


def test_evaluate_cascade_scores_each_set_with_its_fallback_rate(tiny_corpus, mid_cascade):
    path, _ = mid_cascade
    data = load_eval_data(tiny_corpus, noisy=True, limit=2)
    tr = load(path, threads=1)
    res, rates = evaluate_cascade(tr, data, threads=1)
    assert [s.name for s in res.sets] == [e.name for e, _ in data.sets] and len(res.sets) > 2
    assert set(rates) == {f"fallback_rate_{e.name}" for e, _ in data.sets}
    for (e, ds), s in zip(data.sets, res.sets):
        routes = tr.route(ds.audio)
        assert rates[f"fallback_rate_{e.name}"] == sum(r.fell_back for r in routes) / len(routes)
        assert s.wer == word_error_rate(ds.ids, ds.texts, [r.text for r in routes]).wer
        assert res.metrics[f"wer_{e.name}"] == s.wer
    assert res.runtime == "cascade"
