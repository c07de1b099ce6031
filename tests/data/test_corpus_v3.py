"""Corpus v3 (Piper speakers, train streams/crops, dev_long/test_long) and the real-world augmentations.

One tiny corpus with a tiny minimum recording length, real audio throughout; nothing is mocked.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from w2vc.data import longform
from w2vc.data.augment import (
    CODEC_KINDS,
    AugmentConfig,
    augment,
    codec,
    formant_warp,
    reverberate,
    synthetic_rir,
)
from w2vc.data.synth import SynthConfig, build_speakers, plan, synthesize_chunk, synthesize_corpus

SR = 16000
CFG = SynthConfig(hours=0.03, seed=11, unseen_synth_utterances=0, workers=2, long_min_s=5.0, long_max_s=12.0,
                  dev_long_recordings=2, test_long_recordings=3)


def _rows(root, split):
    return [json.loads(x) for x in (root / "manifests" / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus_v3")
    synthesize_corpus(root, CFG, progress=False)
    return root


def test_long_recordings_are_long_and_made_of_their_split(corpus):
    meta = json.loads((corpus / "corpus.json").read_text())
    assert meta["config"]["version"] == 3
    for split in ("dev_long", "test_long"):
        src = {r["id"]: r for r in _rows(corpus, split.removesuffix("_long"))}
        rows = _rows(corpus, split)
        assert rows and meta["splits"][split]["utterances"] == len(rows)
        used = [p for r in rows for p in r["parts"]]
        assert len(used) == len(set(used))  # each utterance at most once
        for r in rows:
            audio, sr = sf.read(str(corpus / r["path"]), dtype="float32")
            assert sr == SR and len(audio) / SR == pytest.approx(r["duration"], abs=1e-3)
            assert r["duration"] >= CFG.long_min_s
            assert r["text"] == " ".join(src[p]["text"] for p in r["parts"])
            assert set(r["parts"]) <= set(src) and set(r["speakers"]) <= {s["speaker"] for s in src.values()}
            for pid, (start, end) in zip(r["parts"], r["offsets"]):
                # the part's own audio (trimmed to its speech region ± margin, level changed) is in there
                a, b = longform._Layout.window(src[pid])
                part = sf.read(str(corpus / src[pid]["path"]), dtype="float32")[0][a:b]
                seg = audio[round(start * SR):round(start * SR) + len(part)]
                assert end - start == pytest.approx(len(part) / SR, abs=2e-3)
                assert np.corrcoef(seg, part)[0, 1] > 0.99


def test_held_out_voices_stay_out_of_train(corpus):
    speakers = {int(k): v for k, v in json.loads((corpus / "speakers.json").read_text()).items()}

    def voices(rows):
        return {(speakers[s]["synth"], speakers[s]["voice"], speakers[s]["warp"], speakers[s]["formant"])
                for r in rows for s in r.get("speakers", [r["speaker"]])}

    train = voices(_rows(corpus, "train"))
    for split in ("dev", "test", "dev_long", "test_long"):
        assert not voices(_rows(corpus, split)) & train, split
    for seed in (0, 3):  # and in the speaker lists themselves, Piper included
        sp = build_speakers(seed)
        train_voices = {(s.synth, s.voice) for s in sp["train"] if s.synth == "piper"}
        for split in ("dev", "test"):
            assert not {(s.synth, s.voice) for s in sp[split] if s.synth == "piper"} & train_voices


def test_train_has_piper_streams_and_crops(corpus):
    rows = _rows(corpus, "train")
    utts = {r["id"]: r for r in rows if r["kind"] == "utt"}
    assert any(r["synth"] == "piper" for r in utts.values())
    streams = [r for r in rows if r["kind"] == "stream"]
    crops = [r for r in rows if r["kind"] == "crop"]
    assert streams and crops
    for r in streams:
        assert len(r["parts"]) >= 2 and r["text"] == " ".join(utts[p]["text"] for p in r["parts"])
        assert set(r["parts"]) <= set(utts)
    for r in crops:
        lo, hi = CFG.crop_seconds
        assert lo - 1e-3 <= r["duration"] <= hi + 1e-3 and r["text"].strip()
        words, heard = r["text"].split(), " ".join(utts[p]["text"] for p in r["parts"]).split()
        it = iter(heard)
        assert all(w in it for w in words), (r["text"], heard)  # labels: a subsequence of the parts' words
    meta = json.loads((corpus / "corpus.json").read_text())
    kinds = meta["splits"]["train"]["kinds"]
    assert kinds["stream"] > 0 and kinds["crop"] > 0 and 0 < meta["long_form"]["train_share"] < 0.6


def test_same_seed_same_bytes(corpus, tmp_path):
    """A Piper utterance synthesized again in this process, and long recordings planned again from the
    manifests and rendered elsewhere, are byte-identical to the corpus files."""
    speakers = build_speakers(CFG.seed)
    row = next(r for r in _rows(corpus, "train") if r["synth"] == "piper" and r["kind"] == "utt")
    p = plan("train", int(row["id"].split("-")[2]), speakers["train"], CFG.seed, CFG.festival_share, CFG.piper_share)
    assert p.utt_id == row["id"]
    [(duration, region)] = synthesize_chunk([p], str(tmp_path))
    assert (tmp_path / row["path"]).read_bytes() == (corpus / row["path"]).read_bytes()
    assert list(region) == row["speech"] and round(duration, 4) == row["duration"]

    test_rows = _rows(corpus, "test")
    for r in test_rows:
        (tmp_path / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / r["path"], tmp_path / r["path"])
    planned = longform.plan_long_recordings("test_long", test_rows, CFG, CFG.test_long_recordings, 8000)
    assert [row for _, row in planned][0]["parts"] == _rows(corpus, "test_long")[0]["parts"]
    for spec, _ in planned:
        longform.render(spec, str(tmp_path))
        assert (tmp_path / spec["path"]).read_bytes() == (corpus / spec["path"]).read_bytes()


def test_word_spans_follow_characters():
    spans = longform.word_spans("AB CDEF", 1.0, 1.7)  # 7 units over 0.7 s
    assert [w for w, _, _ in spans] == ["AB", "CDEF"]
    assert spans[0][1:] == pytest.approx((1.0, 1.2)) and spans[1][1:] == pytest.approx((1.3, 1.7))


# ---- augmentation


def _voiced(f0=140.0, seconds=1.0):
    """A harmonic signal under a three-formant envelope (500, 1500, 2500 Hz): pitch and formants known."""
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for k in range(1, int(7000 / f0)):
        f = k * f0
        env = sum(np.exp(-((f - fc) / 150) ** 2) for fc in (500, 1500, 2500)) + 0.02
        x += env * np.sin(2 * np.pi * f * t)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _peak(x, lo, hi):
    """Power-weighted mean frequency in [lo, hi] Hz: where the formant of _voiced in that band sits."""
    s = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    band = (f >= lo) & (f <= hi)
    return float((s[band] * f[band]).sum() / s[band].sum())


def _f0(x):
    ac = np.correlate(x[:4000], x[:4000], "full")[3999:]
    lo, hi = SR // 400, SR // 60
    return SR / (lo + int(np.argmax(ac[lo:hi])))


def test_vtlp_moves_formants_not_pitch_or_length():
    x = _voiced()
    up, down = formant_warp(x, 1.15), formant_warp(x, 0.87)
    assert len(up) == len(down) == len(x)
    for lo, hi, formant in ((1000, 2000, 1500), (2000, 3300, 2500)):  # F2, F3 move by the factor
        assert _peak(x, lo, hi) == pytest.approx(formant, abs=60)
        assert _peak(up, lo, hi) == pytest.approx(1.15 * formant, abs=60)
        assert _peak(down, lo, hi) == pytest.approx(0.87 * formant, abs=60)
    assert _f0(up) == pytest.approx(_f0(x), rel=0.02) and _f0(down) == pytest.approx(_f0(x), rel=0.02)


def test_reverb_keeps_length_and_leaves_a_decaying_tail():
    rng = np.random.default_rng(0)
    dry = np.concatenate([_voiced(seconds=0.5), np.zeros(SR // 2, np.float32)])
    wet = reverberate(dry, synthetic_rir(rng, rt60=0.5, drr_db=0.0))
    assert len(wet) == len(dry)

    def energy(a, b):
        return float(np.mean(wet[int(a * SR):int(b * SR)] ** 2))

    speech = energy(0.0, 0.5)
    assert energy(0.5, 0.6) > 1e-3 * speech  # sound after the dry signal ended
    assert energy(0.5, 0.6) > 10 * energy(0.8, 0.9) > 0  # and it decays
    assert np.corrcoef(wet[: SR // 2], dry[: SR // 2])[0, 1] > 0.3  # the direct path is still there, undelayed
    h = synthetic_rir(np.random.default_rng(1), rt60=0.4, drr_db=6.0)
    assert 10 * np.log10(h[0] ** 2 / np.sum(h[1:] ** 2)) == pytest.approx(6.0, abs=1e-3)


def test_codecs_degrade_but_keep_length():
    x = _voiced()
    for kind in CODEC_KINDS:
        y = codec(x, kind, np.random.default_rng(0))
        assert len(y) == len(x) and np.abs(y - x).max() > 1e-3, kind
    y8k = codec(x, "8k", np.random.default_rng(0))  # nothing left above 4 kHz
    spec = np.abs(np.fft.rfft(y8k)) ** 2
    f = np.fft.rfftfreq(len(y8k), 1 / SR)
    assert spec[f > 4200].sum() < 1e-4 * spec.sum()
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig(codec_kinds=("mp3",))


def test_augment_is_seeded_and_can_be_switched_off():
    x = np.concatenate([_voiced(), np.zeros(SR // 4, np.float32)])
    cfg = AugmentConfig(p_vtlp=1, p_reverb=1, p_codec=1, p_noise=0, p_speed=0)
    a, b = augment(x, np.random.default_rng([1, 2, 3]), cfg), augment(x, np.random.default_rng([1, 2, 3]), cfg)
    c = augment(x, np.random.default_rng([1, 2, 4]), cfg)
    assert len(a) == len(x) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(augment(x, np.random.default_rng(5), AugmentConfig.off()), x)
    assert AugmentConfig.from_dict(json.loads(json.dumps(AugmentConfig().to_dict()))) == AugmentConfig()
    # the newer effects at probability 0 draw nothing: audio as from the augment() that predates them
    pool = [_voiced(f0=210.0)]
    for seed in range(6):
        cfg = AugmentConfig(p_vtlp=0, p_reverb=0, p_codec=0, p_speed=0.5, p_bandlimit=0.5, p_noise=0.5)
        assert np.array_equal(augment(x, np.random.default_rng(seed), cfg, pool),
                              _augment_v2(x, np.random.default_rng(seed), cfg, pool))


def test_pad_adds_silence_around_the_speech_and_the_noise_fills_it():
    x = _voiced()
    quiet = AugmentConfig.off()
    padded = AugmentConfig.from_dict({**quiet.to_dict(), "p_pad": 1.0, "pad_seconds_range": [0.5, 2.0]})
    lengths = set()
    for seed in range(5):
        y = augment(x, np.random.default_rng(seed), padded)
        extra = len(y) - len(x)
        assert SR <= extra <= 4 * SR
        start = int(np.flatnonzero(y)[0] - np.flatnonzero(x)[0])
        assert np.array_equal(y[start:start + len(x)], x) and not y[:start].any() and not y[start + len(x):].any()
        lengths.add(len(y))
    assert len(lengths) > 1  # a fresh draw each time
    noisy = AugmentConfig.from_dict({**padded.to_dict(), "p_noise": 1.0, "snr_db_range": [10.0, 10.0]})
    y = augment(x, np.random.default_rng(0), noisy)
    assert np.abs(y[: SR // 2]).mean() > 1e-4  # the padding carries the noise floor


def test_post_gain_moves_normalised_train_rows_off_unit_variance_as_chunked_windows_do(tmp_path):
    """The trainer's batches: rows normalised per utterance, then (p_post_gain) scaled, padding left at 0."""
    from w2vc.data.stream import BatchDataset, PackedLabels

    paths = []
    for k, n in enumerate((SR, 2 * SR)):
        paths.append(str(tmp_path / f"{k}.flac"))
        sf.write(paths[-1], 0.3 * _voiced()[:n], SR)
    labels = PackedLabels([[5, 6], [7]])
    members = [(q, q % 2) for q in range(12)]

    def row_stds(aug):
        b = BatchDataset(paths, labels, seed=3, aug=aug, pool=[])[(0, 0, members)]
        v, m = b["values"].numpy(), b["mask"].numpy().astype(bool)
        assert not v[~m].any()  # padding stays silent
        return np.array([v[i, m[i]].std() for i in range(len(v))])

    off = AugmentConfig.off()
    assert np.allclose(row_stds(off), 1.0, atol=1e-3)
    on = AugmentConfig.from_dict({**off.to_dict(), "p_post_gain": 1.0, "post_gain_db_range": [-10.0, 8.0]})
    stds = row_stds(on)
    assert np.all((stds >= 10 ** (-10 / 20) - 1e-3) & (stds <= 10 ** (8 / 20) + 1e-3))
    assert len(np.unique(stds.round(3))) > 6  # a fresh level per row
    assert np.array_equal(stds, row_stds(on))  # deterministic for the seed


def test_post_gain_off_keeps_the_config_record_and_so_the_cached_step_keys():
    from w2vc.compress.distill import DistillConfig

    off = AugmentConfig()
    assert not {"p_post_gain", "post_gain_db_range"} & set(off.to_dict())  # as recorded before the option
    assert not {"p_post_gain", "post_gain_db_range"} & set(DistillConfig(augment=off).to_dict()["augment"])
    on = AugmentConfig(p_post_gain=0.5)
    assert on.to_dict()["p_post_gain"] == 0.5 and list(on.to_dict()["post_gain_db_range"]) == [-10.0, 8.0]
    assert AugmentConfig.from_dict(on.to_dict()) == on and AugmentConfig.from_dict(off.to_dict()) == off


def _augment_v2(x, rng, cfg, babble_pool):
    """augment() as it was before reverb, codecs and VTLP (copied from w2vc/data/augment.py, corpus v2)."""
    import soxr

    from w2vc.data.augment import bandlimit
    from w2vc.data.noise import NOISE_TYPES, make_noise, mix_at_snr

    if rng.random() < cfg.p_speed:
        factor = rng.uniform(*cfg.speed_range)
        x = soxr.resample(x, SR * factor, SR, quality="LQ").astype(np.float32)
    if rng.random() < cfg.p_bandlimit:
        x = bandlimit(x, rng.uniform(50, 400), rng.uniform(3000, 7500))
    x = x * np.float32(10 ** (rng.uniform(*cfg.gain_db_range) / 20))
    if rng.random() < cfg.p_noise:
        kinds = NOISE_TYPES if len(babble_pool) else NOISE_TYPES[:2]
        kind = kinds[int(rng.integers(len(kinds)))]
        x = mix_at_snr(x, make_noise(kind, len(x), rng, babble_pool), rng.uniform(*cfg.snr_db_range))
    return np.clip(x, -1, 1).astype(np.float32)
