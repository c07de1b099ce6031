"""Training: the loss falls on real synthesized speech, augmentation is seeded, resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from w2vc.core.models import load_pretrained
from w2vc.data.augment import AugmentConfig, augment
from w2vc.data.datasets import load_dataset, resolve_split
from w2vc.train import TrainConfig, epoch_batches, epoch_items, lr_at, train

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def _tiny_init(seed=0):
    from transformers import Wav2Vec2ForCTC

    from tests.conftest import tiny_config
    from w2vc.core.models import make_processor

    def init():
        torch.manual_seed(seed)
        return Wav2Vec2ForCTC(tiny_config("layer")), make_processor("layer")
    return init


def _cfg(corpus, out, **kw):
    d = dict(arch="tiny", data=str(corpus), out=str(out), steps=12, lr=3e-3, warmup_steps=2, batch_seconds=8.0,
             eval_every=6, dev_limit=4, seed=3, bf16=False, threads=1)
    d.update(kw)
    return TrainConfig(**d)


def test_augmentation_is_deterministic_for_a_seed(tiny_corpus):
    ds = load_dataset(resolve_split(tiny_corpus, "dev"), limit=3)
    cfg = AugmentConfig(p_speed=1, p_bandlimit=1, p_noise=1)
    a = augment(ds.audio[0], np.random.default_rng([1, 2, 3]), cfg, ds.audio[1:])
    b = augment(ds.audio[0], np.random.default_rng([1, 2, 3]), cfg, ds.audio[1:])
    c = augment(ds.audio[0], np.random.default_rng([1, 2, 4]), cfg, ds.audio[1:])
    assert np.array_equal(a, b)
    assert not np.array_equal(a[: min(len(a), len(c))], c[: min(len(a), len(c))])


def test_batches_cover_every_utterance_once_per_epoch():
    lengths = list(np.random.default_rng(0).integers(16000, 64000, 200))
    cfg = TrainConfig(arch="x", data="x", out="x", batch_seconds=10)
    b0, b1 = epoch_batches(lengths, cfg, 0), epoch_batches(lengths, cfg, 1)
    assert sorted(i for b in b0 for i in b) == list(range(200))
    assert b0 != b1  # fresh grouping/order each epoch
    assert all(len(b) * max(lengths[i] for i in b) <= 10 * 16000 / cfg.augment.speed_range[0] for b in b0)


def test_oversample_repeats_the_matching_utterances_only(tiny_corpus):
    manifest = resolve_split(tiny_corpus, "train")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    ids = [r["id"] for r in rows]
    festival = {n for n, r in enumerate(rows) if r["synth"] == "festival"}
    assert festival and len(festival) < len(rows)
    assert epoch_items(ids, str(manifest), {}) == list(range(len(rows)))
    items = epoch_items(ids, str(manifest), {"synth=festival": 3})
    assert [items.count(n) for n in range(len(rows))] == [3 if n in festival else 1 for n in range(len(rows))]
    with pytest.raises(ValueError, match="no train utterance has synth = 'flite'"):
        epoch_items(ids, str(manifest), {"synth=flite": 2})
    with pytest.raises(ValueError, match="column=value"):
        TrainConfig(arch="x", data="x", out="x", oversample={"festival": 2})


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(arch="x", data="x", out="x", steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.5) and lr_at(100, cfg) == 0.0


def test_loss_goes_down_and_model_reloads_identically(tiny_corpus, tmp_path):
    cfg = _cfg(tiny_corpus, tmp_path / "run", steps=30, eval_every=30,
               augment=AugmentConfig.off())
    losses = []
    import w2vc.train as T

    orig = T.CTCObjective.forward

    def spy(self, model, values, mask, labels):
        loss, parts = orig(self, model, values, mask, labels)
        losses.append(loss.item())
        return loss, parts
    T.CTCObjective.forward = spy
    try:
        res = train(cfg, progress=False, model_init=_tiny_init())
    finally:
        T.CTCObjective.forward = orig
    assert res["steps"] == 30
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    model, proc = load_pretrained(tmp_path / "run" / "best")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32))
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ref, _ = _tiny_init()()
    ref.load_state_dict({k[len("model."):]: v for k, v in ck["model"].items() if k.startswith("model.") and "masked_spec" not in k})
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, ref.eval()(x).logits)
    assert proc.tokenizer.decode([5, 6, 7]) == "'AB"


def test_resume_continues_the_identical_run(tiny_corpus, tmp_path):
    full = _cfg(tiny_corpus, tmp_path / "full")
    train(full, progress=False, model_init=_tiny_init())
    part = _cfg(tiny_corpus, tmp_path / "part")
    # same run, stopped after 6 steps (as a crash after a checkpoint would), then resumed
    train(part, progress=False, model_init=_tiny_init(), stop_at_step=6)
    ck = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    state = json.loads(ck["state"])
    assert state["step"] == 6
    with pytest.raises(FileExistsError):
        train(part, progress=False, model_init=_tiny_init())
    train(part, resume=True, progress=False, model_init=_tiny_init())
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def _log_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _optim_steps(ck) -> int:
    """Optimizer steps recorded in a checkpoint: AdamW counts every .step() per parameter (restored on resume)."""
    return max(int(s["step"]) for s in ck["optim"]["state"].values())


def test_cli_train_killed_with_sigkill_resumes_from_its_checkpoint(tiny_corpus, tiny_layer_model, tmp_path):
    """`w2vc train` killed -9 mid-run (no handler runs) continues with --resume from last.pt's step, not from 0;
    without --resume the same --out is refused with one clear line."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from transformers import Wav2Vec2ForCTC

    out, steps, every = tmp_path / "run", 24, 2
    cmd = [sys.executable, "-m", "w2vc.cli", "train", "--arch", str(tiny_layer_model), "--data", str(tiny_corpus),
           "--out", str(out), "--steps", str(steps), "--eval-every", str(every), "--warmup", "2", "--lr", "3e-3",
           "--batch-seconds", "4", "--dev-limit", "2", "--seed", "3", "--bf16", "off", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log, ckpt = out / "log.jsonl", out / "last.pt"

    with open(tmp_path / "first.out", "w") as fo, open(tmp_path / "first.err", "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        try:
            deadline = time.time() + 90
            # wait until the eval at step 2*every has been logged and checkpointed (last.pt rewritten after the
            # log row), then kill -9 while the next training steps run
            while not (ckpt.exists() and any(r["step"] >= 2 * every for r in _log_rows(log))
                       and ckpt.stat().st_mtime_ns >= log.stat().st_mtime_ns):
                assert proc.poll() is None, f"run ended before it could be killed: {(tmp_path / 'first.err').read_text()[-2000:]}"
                assert time.time() < deadline, "no checkpoint within 90 s"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL  # it was still running: a real mid-run crash
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    ck_step = json.loads(ck["state"])["step"]
    assert 2 * every <= ck_step < steps and ck_step % every == 0, ck_step  # checkpoints come with each eval
    assert _optim_steps(ck) == ck_step
    rows_before = _log_rows(log)
    assert [r["step"] for r in rows_before if r["step"] <= ck_step] == list(range(every, ck_step + 1, every))
    # the kill may land between a log row and its checkpoint: at most that one row runs ahead of last.pt
    assert [r["step"] for r in rows_before if r["step"] > ck_step] in ([], [ck_step + every])
    ckpt_bytes = ckpt.read_bytes()

    # same --out without --resume: refused, one line, no traceback, nothing touched
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("w2vc train: error: FileExistsError:"), r.stderr
    assert "--resume" in err[0] and str(out) in err[0]
    assert ckpt.read_bytes() == ckpt_bytes and _log_rows(log) == rows_before

    # --resume: continues at ck_step and finishes the schedule
    t0 = time.time()
    r = subprocess.run(cmd + ["--resume", "--json", str(tmp_path / "res.json")], capture_output=True, text=True,
                       env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    resume_s = time.time() - t0
    # the log is the run's: every eval step once (a row written past the checkpoint is dropped on resume)
    assert [r_["step"] for r_ in _log_rows(log)] == list(range(every, steps + 1, every)), (ck_step, _log_rows(log))
    shown = [int(n) for n in re.findall(rf"(\d+)/{steps} \[", r.stderr)]  # tqdm progress of the resumed run
    assert shown and shown[0] == ck_step and shown[-1] == steps and min(shown) == ck_step, (ck_step, shown)
    assert f"done: {steps} steps" in r.stdout
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["steps"] == steps
    assert [h["step"] for h in res["history"]] == list(range(every, steps + 1, every))
    final = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert json.loads(final["state"])["step"] == steps
    # optimizer steps taken by the resumed process = steps - checkpoint step (AdamW's count was restored at ck_step)
    assert _optim_steps(final) - _optim_steps(ck) == steps - ck_step

    best = Wav2Vec2ForCTC.from_pretrained(out / "best").eval()
    with torch.no_grad():
        logits = best(torch.zeros(1, 16000)).logits
    assert logits.shape[-1] == best.config.vocab_size and torch.isfinite(logits).all()
    print(f"killed at checkpoint step {ck_step}/{steps}; resume took {resume_s:.1f} s")


def test_warm_start_with_frozen_cnn_and_no_dropout(tiny_corpus, tmp_path):
    """--freeze-feature-encoder leaves the CNN bit-identical while the rest learns; --dropout 0 makes the
    training-mode forward deterministic and is what the saved config says (the loop runs oversampled too)."""
    from transformers import Wav2Vec2ForCTC

    from w2vc.train import set_dropout

    start, proc = _tiny_init()()
    start.save_pretrained(tmp_path / "start")
    proc.save_pretrained(tmp_path / "start")
    cfg = _cfg(tiny_corpus, tmp_path / "run", steps=6, eval_every=6, init_from=str(tmp_path / "start"),
               freeze_feature_encoder=True, dropout=0.0, oversample={"synth=festival": 2})
    train(cfg, progress=False, model_init=_tiny_init(seed=1))
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["oversample"] == {"synth=festival": 2}
    after = Wav2Vec2ForCTC.from_pretrained(tmp_path / "run" / "best")
    before = start.state_dict()
    for name, value in after.state_dict().items():
        if name.startswith("wav2vec2.feature_extractor."):
            assert torch.equal(value, before[name]), name
    moved = [n for n, v in after.state_dict().items()
             if n in before and "feature_extractor" not in n and not torch.equal(v, before[n])]
    assert any(n.startswith("lm_head") for n in moved) and any(".encoder.layers." in n for n in moved)
    assert after.config.hidden_dropout == after.config.attention_dropout == 0.0

    model, _ = _tiny_init()()
    model.config.mask_time_prob = 0.0
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x).logits, model(x).logits)  # the tiny config has dropout
        set_dropout(model, 0.0)
        assert torch.equal(model(x).logits, model(x).logits)
    with pytest.raises(ValueError, match="dropout"):
        _cfg(tiny_corpus, tmp_path / "x", dropout=1.0)


def _in_ram_batches(corpus, cfg: TrainConfig, processor):
    """The trainer's data path before streaming, kept here as the reference: the whole split decoded and stored
    as int16, lengths from the decoded audio, babble pool from it, augmentation in the training process."""
    import itertools

    from w2vc.core.runnable import pad_batch
    from w2vc.core.wer import normalize

    train_path = resolve_split(corpus, "train")
    ds = load_dataset(train_path)
    audio16 = [np.clip(np.round(a * 32768), -32768, 32767).astype(np.int16) for a in ds.audio]
    items = epoch_items(ds.ids, str(train_path), cfg.oversample)
    lengths = [len(audio16[i]) for i in items]
    pool = [a.astype(np.float32) / 32768 for a in audio16[:: max(1, len(audio16) // 500)]]
    labels_all = [processor.tokenizer(normalize(t)).input_ids for t in ds.texts]
    for epoch in itertools.count():
        for k, pos in enumerate(epoch_batches(lengths, cfg, epoch)):
            idx = [items[q] for q in pos]
            audio = [augment(audio16[i].astype(np.float32) / 32768, np.random.default_rng([cfg.seed, epoch, q]),
                             cfg.augment, pool) for i, q in zip(idx, pos)]
            values, mask = pad_batch(audio)
            lab = [labels_all[i] for i in idx]
            labels = torch.full((len(lab), max(map(len, lab))), -100, dtype=torch.long)
            for r, seq in enumerate(lab):
                labels[r, : len(seq)] = torch.tensor(seq)
            yield {"epoch": epoch, "batch": k, "values": torch.from_numpy(values), "mask": torch.from_numpy(mask),
                   "labels": labels}


def _losses_of(monkeypatch, cfg, **kw) -> list[float]:
    import w2vc.train as T

    losses = []
    orig = T.CTCObjective.forward

    def spy(self, model, values, mask, labels):
        loss, parts = orig(self, model, values, mask, labels)
        losses.append(loss.item())
        return loss, parts
    with monkeypatch.context() as m:
        m.setattr(T.CTCObjective, "forward", spy)
        train(cfg, progress=False, model_init=_tiny_init(), **kw)
    return losses


def test_streaming_gives_the_losses_of_the_in_ram_trainer(tiny_corpus, tmp_path, monkeypatch):
    """Same seed, augmentation and oversampling on, across epoch boundaries: the streamed run (2 workers) and one
    fed by the old in-RAM data path see identical batches, hence identical losses; the train split is never
    decoded whole."""
    import w2vc.train as T
    from w2vc.core.models import make_processor

    kw = dict(steps=20, eval_every=20, batch_seconds=16.0, oversample={"synth=festival": 2})
    streamed_cfg = _cfg(tiny_corpus, tmp_path / "stream", num_workers=2, **kw)
    decoded = []
    real_load = T.load_dataset
    monkeypatch.setattr(T, "load_dataset", lambda path, **k: decoded.append(str(path)) or real_load(path, **k))
    streamed = _losses_of(monkeypatch, streamed_cfg)
    assert decoded and all("train" not in p for p in decoded), decoded  # dev only
    ref_cfg = _cfg(tiny_corpus, tmp_path / "ram", **kw)
    ref = _in_ram_batches(tiny_corpus, ref_cfg, make_processor("layer"))
    seen = []
    monkeypatch.setattr(T, "stream", lambda *a, **k: (seen.append(b["epoch"]) or b for b in ref))
    in_ram = _losses_of(monkeypatch, ref_cfg)
    assert max(seen) >= 1  # an epoch boundary crossed
    assert len(streamed) == len(in_ram) == 20 and streamed == in_ram


def test_scan_split_sizes_utterances_without_decoding_them(tiny_corpus, tmp_path):
    """Header lengths are the decoded lengths; manifest durations are within one sample (0.1 ms rounding);
    an unreadable file is skipped at scan time, and a manifest without durations falls back to headers."""
    from w2vc.data.stream import PackedLabels, scan_split

    manifest = resolve_split(tiny_corpus, "train")
    ds = load_dataset(manifest)
    head = scan_split(manifest, "header")
    assert head.ids == ds.ids and head.lengths == [len(a) for a in ds.audio]
    man = scan_split(manifest, "manifest")
    assert man.ids == ds.ids and max(abs(a - b) for a, b in zip(man.lengths, head.lengths)) <= 1
    rows = [json.loads(line) for line in manifest.read_text().splitlines()][:4]
    (tmp_path / "bad.flac").write_text("not audio")
    rows = [{"id": r["id"], "path": str(tiny_corpus / r["path"]), "text": r["text"]} for r in rows]
    rows[1]["path"] = str(tmp_path / "bad.flac")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    idx = scan_split(tmp_path / "m.jsonl", "manifest")
    assert len(idx) == 3 and idx.skipped[0][0].endswith("bad.flac") and idx.lengths == [head.lengths[i] for i in (0, 2, 3)]
    labels = PackedLabels([[5, 6], [], [7]])
    assert [list(labels[i]) for i in range(len(labels))] == [[5, 6], [], [7]]


@pytest.mark.parametrize("option, expect", [("p_padd=1", "unknown augment option.*p_padd"),
                                            ("p_pad", "KEY=VALUE")])
def test_train_cli_augment_options_fail_in_one_line_before_training(tmp_path, capsys, option, expect):
    import re

    from w2vc.cli import main

    rc = main(["train", "--arch", "base-s", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
               "--augment", option])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and re.search(expect, err), err
    assert not (tmp_path / "run").exists()


def test_pairs_put_another_utterance_in_front_with_both_transcripts(tiny_corpus, tmp_path):
    """Long-form pairing (issue 19): a share of positions, a fresh partner each epoch, never itself; a paired
    member is partner audio (at another level), the gap's silence and the utterance, normalised as one input,
    labelled partner | utterance; off, configs keep their record (and so cached step keys)."""
    from w2vc.core.models import make_processor
    from w2vc.core.runnable import normalize_audio
    from w2vc.data.stream import BatchDataset, PackedLabels, decode, pair_plan, scan_split

    partner, gap = pair_plan(2000, 3, 0, 0.5, (0.1, 1.0))
    paired = partner >= 0
    assert 0.45 < paired.mean() < 0.55 and (partner[paired] != np.arange(2000)[paired]).all()
    assert (gap[paired] >= 1600).all() and (gap[paired] <= 16000).all() and (gap[~paired] == 0).all()
    again, _ = pair_plan(2000, 3, 0, 0.5, (0.1, 1.0))
    assert np.array_equal(partner, again) and not np.array_equal(partner, pair_plan(2000, 3, 1, 0.5, (0.1, 1.0))[0])
    assert (pair_plan(50, 3, 0, 0.0, (0.1, 1.0))[0] == -1).all() and (pair_plan(1, 3, 0, 1.0, (0.1, 1.0))[0] == -1).all()

    idx = scan_split(resolve_split(tiny_corpus, "train"))
    tok = make_processor("layer").tokenizer
    labels = PackedLabels(tok(t).input_ids for t in idx.texts)
    ds = BatchDataset(idx.paths, labels, 3, AugmentConfig.off(), [], delimiter=tok.word_delimiter_token_id)
    b = ds[(0, 0, [(7, 0, 1, 4000), (8, 2)])]
    first = decode(idx.paths[1]) * np.float32(10 ** (np.random.default_rng([3, 0, 7, 2]).uniform(-6, 6) / 20))
    want = normalize_audio(np.clip(np.concatenate([first, np.zeros(4000, np.float32), decode(idx.paths[0])]), -1, 1))
    n = len(want)
    assert int(b["mask"][0].sum()) == n and np.allclose(b["values"][0, :n].numpy(), want, atol=1e-6)
    lab0 = b["labels"][0][b["labels"][0] >= 0].tolist()
    assert tok.decode(lab0, group_tokens=False) == f"{idx.texts[1]} {idx.texts[0]}"
    assert b["labels"][1][b["labels"][1] >= 0].tolist() == labels[2].tolist()

    assert "pair_share" not in _cfg(tiny_corpus, tmp_path / "a").to_dict()
    assert _cfg(tiny_corpus, tmp_path / "b", pair_share=0.5).to_dict()["pair_share"] == 0.5
    with pytest.raises(ValueError, match="pair_share"):
        _cfg(tiny_corpus, tmp_path / "c", pair_share=1.5)
    res = train(_cfg(tiny_corpus, tmp_path / "run", steps=4, eval_every=4, pair_share=0.5), progress=False,
                model_init=_tiny_init())
    assert res["steps"] == 4
