"""The offline corpus: deterministic per seed, held-out voices, LibriSpeech layout, true SNRs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import soundfile as sf

from w2vc.data.noise import speech_power
from w2vc.data.synth import FESTIVAL_VOICES, FLITE_VOICES, SynthConfig, build_speakers, synthesize_corpus


def _digest(root):
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".flac", ".txt", ".jsonl")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_corpus_bytes(tiny_corpus, tmp_path):
    again = tmp_path / "again"
    meta = synthesize_corpus(again, SynthConfig(hours=0.03, seed=7, unseen_synth_utterances=6, workers=1))
    assert not meta["cached"]
    assert _digest(again) == _digest(tiny_corpus)
    assert synthesize_corpus(again, SynthConfig(hours=0.03, seed=7, unseen_synth_utterances=6))["cached"]


def test_test_voices_never_trained():
    for seed in (0, 1):
        sp = build_speakers(seed)
        train = {(s.synth, s.voice, s.warp) for s in sp["train"]}
        for split in ("dev", "test", "test_unseen_synth"):
            assert not {(s.synth, s.voice, s.warp) for s in sp[split]} & train
        assert {s.synth for s in sp["test"]} == {"espeak", "festival", "piper"}
        assert {s.synth for s in sp["train"]} == {"espeak", "festival", "piper"}  # flite is never trained on
        for split in ("dev", "test"):  # every Festival voice is heard in training, but never at these warps
            assert {s.voice for s in sp[split] if s.synth == "festival"} == set(FESTIVAL_VOICES)
        assert {s.voice for s in sp["test_unseen_synth"]} == set(FLITE_VOICES)  # wholly unseen synthesizer
        train_piper_warps = {s.warp for s in sp["train"] if s.synth == "piper"}
        for split in ("dev", "test"):  # one Piper voice, but no held-out warp (pitch/formant scale) is trained
            assert not {s.warp for s in sp[split] if s.synth == "piper"} & train_piper_warps


def test_layout_manifests_and_audio(tiny_corpus):
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    assert set(meta["splits"]) >= {"train", "dev", "test", "test_snr20", "test_snr10", "test_snr5", "test_unseen_synth"}
    rows = [json.loads(x) for x in (tiny_corpus / "manifests" / "test.jsonl").read_text().splitlines()]
    assert rows and meta["splits"]["test"]["utterances"] == len(rows)
    for r in rows:
        f = tiny_corpus / r["path"]
        info = sf.info(str(f))
        assert info.samplerate == 16000 and info.channels == 1
        spk, chap, _ = r["id"].split("-")
        trans = (f.parent / f"{spk}-{chap}.trans.txt").read_text().splitlines()
        assert f"{r['id']} {r['text']}" in trans
        assert r["text"] == r["text"].upper() and r["text"].strip()


def test_noisy_copies_have_the_stated_snr(tiny_corpus):
    for snr in (20, 10, 5):
        rows = [json.loads(x) for x in (tiny_corpus / "manifests" / f"test_snr{snr}.jsonl").read_text().splitlines()]
        measured = []
        for r in rows:
            clean, _ = sf.read(str(tiny_corpus / r["path"].replace(f"test_snr{snr}/", "test/", 1)), dtype="float32")
            noisy, _ = sf.read(str(tiny_corpus / r["path"]), dtype="float32")
            # mixing only rescales the sum when it would clip: undo that before measuring
            scale = float(np.dot(noisy, clean) / np.dot(clean, clean))
            noise = noisy / scale - clean
            measured.append(10 * np.log10(speech_power(clean) / np.mean(noise ** 2)))
        assert abs(np.median(measured) - snr) < 1.0, (snr, measured)
        assert {r["noise"] for r in rows} <= {"white", "pink", "babble"}
