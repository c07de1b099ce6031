"""Training: the loss falls on real synthesized speech, augmentation is seeded, resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from w2vc.augment import AugmentConfig, augment
from w2vc.eval.datasets import load_dataset, resolve_split
from w2vc.models import load_pretrained
from w2vc.train import TrainConfig, epoch_batches, lr_at, train

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def _tiny_init(seed=0):
    from transformers import Wav2Vec2ForCTC

    from tests.conftest import tiny_config
    from w2vc.models import make_processor

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


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = TrainConfig(arch="x", data="x", out="x", steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.5) and lr_at(100, cfg) == 0.0


def test_loss_goes_down_and_model_reloads_identically(tiny_corpus, tmp_path):
    cfg = _cfg(tiny_corpus, tmp_path / "run", steps=30, eval_every=30,
               augment=AugmentConfig(p_speed=0, p_bandlimit=0, p_noise=0, gain_db_range=(0.0, 0.0)))
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
