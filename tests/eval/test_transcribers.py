"""Transcribers: batching never changes results; ONNX Runtime agrees with PyTorch; in-memory models evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from w2vc.core.artifact import copy_processor_files
from w2vc.core.load import load as load_transcriber
from w2vc.core.models import load_pretrained
from w2vc.core.runnable import TorchTranscriber, pad_batch
from w2vc.data.datasets import load_dataset
from w2vc.eval.evaluate import evaluate_model


@pytest.fixture(scope="module")
def audio(tiny_corpus):
    """Utterances of varied length (test + dev), so a padded batch really pads."""
    a = load_dataset(tiny_corpus / "manifests" / "test.jsonl").audio + \
        load_dataset(tiny_corpus / "manifests" / "dev.jsonl").audio
    assert len({len(x) for x in a}) > 2
    return a


def reference_transcripts(model_dir, audio) -> list[str]:
    """One utterance at a time through the Hugging Face processor: the path the Transcriber must match."""
    model, proc = load_pretrained(model_dir)
    out = []
    with torch.inference_mode():
        for x in audio:
            inp = proc(x, sampling_rate=16000, return_tensors="pt")
            ids = model.eval()(inp.input_values).logits.argmax(-1)
            out.append(proc.batch_decode(ids)[0])
    return out


def test_layer_norm_batched_equals_unbatched(tiny_layer_model, audio):
    t = load_transcriber(tiny_layer_model, threads=1)
    assert t.uses_attention_mask
    batched = t.transcribe(audio, batch_seconds=600, max_batch=16)
    assert batched == t.transcribe(audio, max_batch=1) == reference_transcripts(tiny_layer_model, audio)
    assert any(batched), "a random model should still emit some characters"
    values, mask = pad_batch(audio)
    lg = t.logits(values, mask)
    frames = t.frame_lengths(mask)
    for i, x in enumerate(audio):
        v1, m1 = pad_batch([x])
        single = t.logits(v1, m1)[0]
        assert single.shape[0] == frames[i]
        np.testing.assert_allclose(lg[i, : frames[i]], single, atol=1e-4)


def test_group_norm_runs_one_at_a_time(tiny_group_model, audio):
    t = load_transcriber(tiny_group_model, threads=1)
    assert not t.uses_attention_mask
    calls = []
    logits = t.logits
    t.logits = lambda v, m: (calls.append((v.shape[0], m)), logits(v, m))[1]
    out = t.transcribe(audio, batch_seconds=600, max_batch=16)
    assert calls and all(n == 1 and m is None for n, m in calls) and len(calls) == len(audio)
    assert out == reference_transcripts(tiny_group_model, audio)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_layer_model, tmp_path_factory):
    from optimum.onnxruntime import ORTModelForCTC

    out = tmp_path_factory.mktemp("tiny_onnx")
    ORTModelForCTC.from_pretrained(tiny_layer_model, export=True).save_pretrained(out)
    copy_processor_files(tiny_layer_model, out)  # optimum's export does not carry the processor
    return out


def test_onnx_matches_torch(tiny_onnx, tiny_layer_model, audio):
    ort_t = load_transcriber(tiny_onnx, threads=1)
    torch_t = load_transcriber(tiny_layer_model, threads=1)
    assert (ort_t.runtime, torch_t.runtime) == ("onnx", "torch")
    assert ort_t.transcribe(audio) == torch_t.transcribe(audio)
    values, mask = pad_batch(audio[:1])
    np.testing.assert_allclose(ort_t.logits(values, None), torch_t.logits(values, mask), atol=1e-4)


def test_evaluate_onnx_and_in_memory(tiny_onnx, tiny_layer_model, tiny_corpus):
    by_path = evaluate_model(tiny_onnx, tiny_corpus, threads=1)
    model, proc = load_pretrained(tiny_layer_model)
    in_memory = evaluate_model(TorchTranscriber(model, proc), tiny_corpus, model_name="in-memory")
    assert by_path.runtime == "onnx" and in_memory.runtime == "torch" and in_memory.model == "in-memory"
    assert by_path.metrics["wer_clean"] == in_memory.metrics["wer_clean"]
    assert by_path.metrics["cer_clean"] == in_memory.metrics["cer_clean"]
    assert [u.hyp for u in by_path["clean"].utterances] == [u.hyp for u in in_memory["clean"].utterances]
