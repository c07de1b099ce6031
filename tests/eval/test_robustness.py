"""The level/silence probe on real tiny models: it must tell a level-invariant CNN from one that is not."""

from __future__ import annotations

import numpy as np

from w2vc.core.load import load
from w2vc.core.runnable import normalize_audio
from w2vc.core.wer import word_error_rate
from w2vc.data.datasets import load_dataset
from w2vc.eval.robustness import Condition, conditions, main, prepared_logits, probe


def test_conditions_make_the_inputs_they_name(tiny_corpus):
    x = load_dataset(tiny_corpus / "manifests" / "test.jsonl", limit=1).audio[0]
    pad = int(3.5 * 16000)
    whole, unit = Condition("w", pad_seconds=3.5), Condition("u", pad_seconds=3.5, normalize_whole=False)
    y = whole.apply(x)
    assert len(y) == len(x) + 2 * pad and abs(y.std() - 1) < 1e-3 and y[pad:-pad].std() > 1.5  # speech raised
    z = unit.apply(x)
    assert not z[:pad].any() and np.allclose(z[pad:-pad], normalize_audio(x))
    assert np.allclose(Condition("g", gain_db=-20).apply(x), 0.1 * normalize_audio(x), atol=1e-6)
    lead = Condition("l", lead_seconds=1.0).apply(x)
    assert not lead[:16000].any() and np.allclose(lead[16000:], normalize_audio(x))
    other = load_dataset(tiny_corpus / "manifests" / "test.jsonl", limit=2).audio[1]
    pair = Condition("o", after_other=True, gap_seconds=0.5).apply(x, other)
    n = len(other)
    assert np.allclose(pair[:n], normalize_audio(other)) and not pair[n: n + 8000].any()
    assert np.allclose(pair[n + 8000:], normalize_audio(x))


def test_probe_tells_a_level_invariant_cnn_from_a_level_sensitive_one(tiny_corpus, tiny_group_model,
                                                                      tiny_layer_model):
    ds = load_dataset(tiny_corpus / "manifests" / "test.jsonl", limit=3)
    quiet = Condition("quiet", gain_db=-20)
    drift = {}
    for name, model in (("group", tiny_group_model), ("layer", tiny_layer_model)):
        t = load(model, threads=1)
        a, b = (prepared_logits(t, c.apply(ds.audio[0])) for c in (Condition("alone"), quiet))
        drift[name] = float(np.abs(a - b).max() / np.abs(a).max())
        wers = probe(t, ds.ids, ds.texts, ds.audio)
        assert list(wers) == [c.name for c in conditions()]
        # "alone" is what `w2vc eval` scores: the same texts through the ordinary transcribe path
        assert wers["alone"] == word_error_rate(ds.ids, ds.texts, t.transcribe(ds.audio)).wer
    assert drift["group"] < 1e-2  # group norm without conv bias: a level change changes ~nothing (eps)
    assert drift["layer"] > 10 * drift["group"]  # layer norm after a biased conv: it does


def test_cli_prints_every_condition_and_fails_in_one_line_on_bad_data(tiny_corpus, tiny_layer_model, capsys,
                                                                      tmp_path):
    assert main(["--model", str(tiny_layer_model), "--data", str(tiny_corpus), "--limit", "2",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert all(f"{c.name} " in out for c in conditions())
    assert main(["--model", str(tiny_layer_model), "--data", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
