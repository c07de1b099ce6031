"""Long-form chunked inference and its evaluation, on tiny real models and synthesized speech.

The chunking must be transformers' ASR-pipeline chunking (so our long-form figures are the ones
`pipeline(..., chunk_length_s=C)` gives): checked against its own helpers and its transcripts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import Wav2Vec2FeatureExtractor, pipeline
from transformers.pipelines.automatic_speech_recognition import chunk_iter, rescale_stride

from w2vc.cli import main
from w2vc.core.chunking import (
    Window,
    chunk_windows,
    chunked_logits,
    kept_frames,
    plan_chunks,
    transcribe_long,
)
from w2vc.core.load import load
from w2vc.core.runnable import inputs_to_logits_ratio, normalize_audio, pad_batch
from w2vc.data.datasets import load_dataset

GAP = np.zeros(4000, dtype=np.float32)  # 0.25 s between utterances


def _concat(audio):
    return np.concatenate([x for a in audio for x in (a, GAP)][:-1]).astype(np.float32)


@pytest.fixture(scope="module")
def long_audio(tiny_corpus):
    """~30 s of real synthesized speech: the test and dev utterances, then the test ones in reverse."""
    test = load_dataset(tiny_corpus / "manifests" / "test.jsonl").audio
    x = _concat(test + load_dataset(tiny_corpus / "manifests" / "dev.jsonl").audio + test[::-1])
    assert 20 * 16000 < len(x) < 60 * 16000
    return x


@pytest.fixture(scope="module")
def models(tiny_layer_model, tiny_group_model):
    return {"layer": load(tiny_layer_model), "group": load(tiny_group_model)}


def _unchunked(t, x):
    values, mask = pad_batch([x])
    return t.logits(values, mask if t.uses_attention_mask else None)[0]


def test_plan_windows_and_kept_frames_are_hfs():
    plan = plan_chunks(10)  # stride 10/6 s = 83.3 frames -> 83 frames = 26560 samples, as HF rounds
    assert (plan.chunk, plan.left, plan.right, plan.ratio) == (160000, 26560, 26560, 320)
    assert plan_chunks(7.31, (0.5, 1.3)).chunk % 320 == 0
    with pytest.raises(ValueError, match="must exceed"):
        plan_chunks(2, 1)
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    for chunk_s, stride in ((10, None), (4, (1.0, 0.5)), (3, 0), (2.5, 0.4)):
        plan = plan_chunks(chunk_s, stride)
        for n in (1000, 47999, 48000, 160000, 160321, 523457):
            ours = chunk_windows(n, plan)
            hf = [item["stride"] for item in chunk_iter(np.zeros(n, np.float32), fe, plan.chunk, plan.left,
                                                        plan.right)]
            assert [(w.length, w.left, w.right) for w in ours] == hf
            assert ours[0].start == 0 and ours[-1].end == n
            for w in ours:
                (tokens, lo, r), = rescale_stride([(w.length, w.left, w.right)], 1 / 320)
                assert kept_frames(w, 320) == (lo, tokens - r)


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_one_window_equals_unchunked(models, long_audio, norm):
    t = models[norm]
    x = long_audio[: 16000 * 9 + 123]
    full = _unchunked(t, x)
    for chunk_s in (None, 9.5, 30.0):
        lg, windows, ms = chunked_logits(t, x, chunk_s)
        assert windows == [Window(0, len(x), 0, 0)] and len(ms) == 1 and ms[0] > 0
        np.testing.assert_array_equal(lg, full)
    assert transcribe_long(t, x, 30.0).text == t.transcribe([x])[0]


def test_strided_windows_match_unchunked_in_their_middle(models, long_audio):
    """Layer-norm model. What differs by design is each window's own normalisation (HF's); with that taken
    out (windows cut from the once-normalised recording), a window's kept middle is the unchunked output
    up to the attention context it lacks, while its edges (conv / positional receptive field) are not."""
    t = models["layer"]
    full = _unchunked(t, long_audio)
    ratio = inputs_to_logits_ratio(t)
    assert ratio == 320
    xn = normalize_audio(long_audio)
    ones = np.ones((1, len(xn)), dtype=np.int64)
    full_n = t.logits(xn[None], ones)[0]
    for chunk_s in (4, 7.5):
        lg, windows, _ = chunked_logits(t, long_audio, chunk_s)
        assert len(windows) > 2 and abs(len(lg) - len(full)) <= 1
        at = 0  # the kept frames of consecutive windows tile the recording's frames without gap or overlap
        kept_err, edge_err, shifted_err = [], [], []
        for w in windows:
            lo, hi = kept_frames(w, ratio)
            off = w.start // ratio
            hi = min(hi, len(full) - off)
            assert off + lo == at
            at += hi - lo
            raw = t.logits(xn[None, w.start:w.end], ones[:, : w.length])[0]
            kept_err.append(np.abs(raw[lo:hi] - full_n[off + lo:off + hi]).max())
            shifted_err.append(np.abs(raw[lo:hi - 1] - full_n[off + lo + 1:off + hi]).mean())
            if w.left:
                edge_err.append(np.abs(raw[:3] - full_n[off:off + 3]).mean())
        assert at == len(lg)
        assert max(kept_err) < 2e-3, kept_err
        assert min(edge_err) > 10 * max(kept_err) and min(shifted_err) > 10 * max(kept_err)
        # HF's per-window normalisation moves the logits a little, never the picture
        n = min(len(lg), len(full))
        corr = np.corrcoef(lg[:n].ravel(), full[:n].ravel())[0, 1]
        agree = (lg[:n].argmax(-1) == full[:n].argmax(-1)).mean()
        assert corr > 0.97 and agree > 0.85, (corr, agree)


def test_equal_length_windows_batch_without_padding(models, long_audio):
    t = models["group"]  # group norm: padding would change it, but full windows need none
    one, w1, _ = chunked_logits(t, long_audio, 4, batch_size=1)
    many, w4, _ = chunked_logits(t, long_audio, 4, batch_size=4)
    assert w1 == w4
    np.testing.assert_allclose(many, one, atol=1e-4)


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_transcript_equals_hf_pipeline(models, long_audio, tiny_layer_model, tiny_group_model, norm):
    """Random tiny models emit garbage, but the same garbage: the strings must be identical. The pipeline
    runs batch 1 (its default), so no padding differs from ours."""
    path = {"layer": tiny_layer_model, "group": tiny_group_model}[norm]
    t = models[norm]
    for chunk_s, stride in ((10, None), (4, (1.0, 0.5))):
        asr = pipeline("automatic-speech-recognition", model=str(path), chunk_length_s=chunk_s,
                       stride_length_s=stride, device="cpu")
        ref = asr(long_audio.copy())["text"]
        ours = transcribe_long(t, long_audio, chunk_s, stride)
        assert len(ours.windows) > 2 and len(ref) > 20
        assert ours.text == ref, (norm, chunk_s)


@pytest.fixture(scope="module")
def onnx_model(tiny_layer_model, tmp_path_factory):
    from w2vc.compress.export import ExportConfig, export_onnx
    from w2vc.core.artifact import Artifact

    return export_onnx(Artifact.open(tiny_layer_model), ExportConfig(parity_random=2),
                       tmp_path_factory.mktemp("lf_onnx") / "onnx").path


def test_onnx_export_gives_the_same_chunked_text(models, long_audio, onnx_model):
    o = load(onnx_model, threads=1)
    assert o.runtime == "onnx" and inputs_to_logits_ratio(o) == 320
    for chunk_s in (4, 10):
        a, b = transcribe_long(models["layer"], long_audio, chunk_s), transcribe_long(o, long_audio, chunk_s)
        assert a.windows == b.windows and a.logits.shape == b.logits.shape
        np.testing.assert_allclose(b.logits, a.logits, atol=1e-3)
        assert a.text == b.text and b.rtf > 0


def test_eval_long_cli(long_corpus, tiny_layer_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rc = main(["eval", "--model", str(tiny_layer_model), "--data", str(long_corpus), "--long", "--chunk-seconds",
               "2,4", "--stride-seconds", "0.4", "--long-unchunked", "--threads", "1", "--experiment", "w2vc-long",
               "--json", "out.json"])
    assert rc == 0
    out = capsys.readouterr().out
    d = json.loads((tmp_path / "out.json").read_text())
    m = d["metrics"]
    for k in ("2s", "4s", "full"):
        assert 0 <= m[f"wer_long_{k}"] and m[f"rtf_long_{k}"] > 0 and m[f"chunk_p50_ms_long_{k}"] > 0
        assert m[f"chunk_p90_ms_long_{k}"] >= m[f"chunk_p50_ms_long_{k}"]
    # every test utterance is a part exactly once: the per-utterance WER is the clean set's, reused
    assert m["wer_parts"] == pytest.approx(m["wer_clean"]) and d["long"]["parts"]["reused"] == m["n_utterances"]
    if m["wer_parts"] > 0:
        assert m["wer_long_ratio_4s"] == pytest.approx(m["wer_long_4s"] / m["wer_parts"])
    assert m["n_long_recordings"] == 2
    scores = {s["label"]: s for s in d["long"]["scores"]}
    assert scores["2s"]["stride_s"] == [0.4, 0.4] and scores["2s"]["n_chunks"] > scores["4s"]["n_chunks"] >= 2
    assert scores["full"]["n_chunks"] == 2
    # the unchunked figure is the plain one-pass transcript of each recording
    t = load(tiny_layer_model)
    ds = load_dataset(long_corpus / "manifests" / "test_long.jsonl")
    from w2vc.core.wer import word_error_rate

    assert m["wer_long_full"] == pytest.approx(word_error_rate(ds.ids, ds.texts, t.transcribe(ds.audio)).wer)
    assert "long-form test_long (2 recordings" in out and "per-utterance WER of the same speech" in out

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("w2vc-long").experiment_id])
    for key in ("wer_long_2s", "rtf_long_4s", "wer_long_full", "wer_parts", "wer_clean"):
        assert run.data.metrics[key] == pytest.approx(m[key])
    assert run.data.params["long_chunk_seconds"] == "2,4" and run.data.params["long_split"] == "test_long"
    assert "transcripts_long_4s.tsv" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_eval_long_without_long_split_fails_before_loading(long_corpus, tmp_path, capsys):
    root = tmp_path / "corpus"
    (root / "manifests").mkdir(parents=True)
    (root / "manifests" / "test.jsonl").write_text((long_corpus / "manifests" / "test.jsonl").read_text())
    rc = main(["eval", "--model", str(tmp_path / "absent-model"), "--data", str(root), "--long", "--no-mlflow"])
    err = capsys.readouterr().err
    assert rc != 0 and "test_long.jsonl" in err and "absent-model" not in err
    rc = main(["eval", "--model", str(tmp_path / "absent-model"), "--data", str(long_corpus), "--long",
               "--chunk-seconds", "1", "--stride-seconds", "0.5", "--no-mlflow"])
    assert rc != 0 and "must exceed" in capsys.readouterr().err
