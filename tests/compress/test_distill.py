"""Distillation: the student moves towards the teacher; every init and loss term runs on real audio."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from w2vc.compress.distill import DistillConfig, distill
from w2vc.core.artifact import Artifact
from w2vc.core.models import load_pretrained
from w2vc.core.runnable import pad_batch
from w2vc.core.step import StepContext
from w2vc.data.augment import AugmentConfig
from w2vc.data.datasets import load_dataset, resolve_split

NO_AUG = AugmentConfig.off()


def _kl_to_teacher(student_dir, teacher_dir, audio) -> float:
    s, _ = load_pretrained(student_dir)
    t, _ = load_pretrained(teacher_dir)
    values, mask = pad_batch(audio)
    with torch.no_grad():
        ls = F.log_softmax(s.eval()(torch.from_numpy(values)).logits, -1)
        lt = F.log_softmax(t.eval()(torch.from_numpy(values), attention_mask=torch.from_numpy(mask)).logits, -1)
    return float((lt.exp() * (lt - ls)).sum(-1).mean())


def test_kd_pulls_student_towards_teacher(tiny_corpus, tiny_layer_model, tiny_group_model, tmp_path):
    dev = load_dataset(resolve_split(tiny_corpus, "dev"), limit=4)
    audio = [a[:32000] for a in dev.audio]
    before = _kl_to_teacher(tiny_group_model, tiny_layer_model, audio)
    cfg = DistillConfig(student=str(tiny_group_model), init="checkpoint", data=str(tiny_corpus), steps=25,
                        lr=3e-3, warmup_steps=2, batch_seconds=8, eval_every=25, alpha_ctc=0.0, alpha_kd=1.0,
                        temperature=1.0, bf16=False, augment=NO_AUG)
    out = distill(Artifact.open(tiny_layer_model), cfg, tmp_path / "d", StepContext(progress=False))
    after = _kl_to_teacher(out.path, tiny_layer_model, audio)
    assert after < 0.7 * before, (before, after)
    assert out.provenance["step"] == "distill" and out.provenance["report"]["steps"] == 25
    assert out.provenance["parent_hash"] == Artifact.open(tiny_layer_model).hash


def test_distilling_a_model_from_itself_is_refused(tiny_corpus, tiny_group_model, tmp_path):
    cfg = DistillConfig(student=str(tiny_group_model), init="checkpoint", data=str(tiny_corpus), steps=2)
    with pytest.raises(ValueError, match="same model"):
        distill(Artifact.open(tiny_group_model), cfg, tmp_path / "d", StepContext(progress=False))


def test_teacher_layer_init_with_hidden_loss(tiny_corpus, tiny_layer_model, tmp_path):
    cfg = DistillConfig(init="teacher_layers", teacher_layers=(1,), data=str(tiny_corpus), steps=4,
                        warmup_steps=1, batch_seconds=8, eval_every=4, alpha_hidden=1.0,
                        hidden_layer_map=((1, 2),), bf16=False, augment=NO_AUG)
    out = distill(Artifact.open(tiny_layer_model), cfg, tmp_path / "d", StepContext(progress=False))
    model, _ = load_pretrained(out.path)
    teacher, _ = load_pretrained(tiny_layer_model)
    assert len(model.wav2vec2.encoder.layers) == 1 and model.config.num_hidden_layers == 1
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in teacher.parameters())
    x = torch.from_numpy(np.zeros((1, 16000), np.float32))
    assert model.eval()(x).logits.shape == teacher.eval()(x).logits.shape


@pytest.mark.parametrize("bad", [dict(init="nope"), dict(init="scratch", student="/no/such/dir"),
                                 dict(init="teacher_layers"), dict(temperature=0.0),
                                 dict(alpha_hidden=1.0)])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        DistillConfig(**bad)


def test_config_round_trip():
    cfg = DistillConfig(init="teacher_layers", teacher_layers=(0, 3), hidden_layer_map=((1, 2),), alpha_hidden=0.5)
    assert DistillConfig.from_dict(cfg.to_dict()) == cfg


def test_train_only_moves_the_named_modules_and_nothing_else(tiny_corpus, tiny_layer_model, tmp_path):
    """A CNN-only recovery (train_only: feature encoder + projection, hidden loss on the CNN output): only
    those weights change (the feature encoder's among them), every transformer and lm_head weight stays
    bit-identical; a prefix naming nothing is refused."""
    from w2vc.compress.prune import PruneConfig, prune

    cut = prune(Artifact.open(tiny_layer_model), PruneConfig(heads=0.0, ffn=0.0, cnn=0.5), tmp_path / "cut")
    only = ("wav2vec2.feature_extractor", "wav2vec2.feature_projection")
    cfg = DistillConfig(student=str(cut.path), init="checkpoint", data=str(tiny_corpus), steps=6, lr=3e-3,
                        warmup_steps=1, batch_seconds=8, eval_every=6, alpha_ctc=0.0, alpha_kd=1.0, alpha_hidden=1.0,
                        hidden_layer_map=((0, 0),), bf16=False, augment=NO_AUG, train_only=only)
    out = distill(Artifact.open(tiny_layer_model), cfg, tmp_path / "d", StepContext(progress=False))
    before, _ = load_pretrained(cut.path)
    after, _ = load_pretrained(out.path)
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    moved = {n for n in b if not torch.equal(b[n], a[n])}
    assert moved and all(n.startswith(only) for n in moved), sorted(moved)[:5]
    assert any(n.startswith("wav2vec2.feature_extractor") for n in moved)
    assert tuple(out.provenance["params"]["train_only"]) == only
    # off, the option stays out of the config record (cached step keys of older configs keep)
    assert "train_only" not in DistillConfig().to_dict()
    with pytest.raises(ValueError, match="names no parameter"):
        distill(Artifact.open(tiny_layer_model), replace(cfg, train_only=("wav2vec2.cnn",)), tmp_path / "bad",
                StepContext(progress=False))


def _layer0_gap(student_dir, teacher_dir, audio) -> float:
    s, _ = load_pretrained(student_dir)
    t, _ = load_pretrained(teacher_dir)
    values, mask = pad_batch(audio)
    x, m = torch.from_numpy(values), torch.from_numpy(mask)
    with torch.no_grad():
        hs = s.eval()(x, attention_mask=m, output_hidden_states=True).hidden_states[0]
        ht = t.eval()(x, attention_mask=m, output_hidden_states=True).hidden_states[0]
    return float((hs - ht).abs().mean())


def test_hidden_direct_fits_a_cut_cnn_to_the_states_its_frozen_layers_read(tiny_corpus, tiny_layer_model, tmp_path):
    """hidden_direct compares the states themselves (no projection to absorb a linear map): a CNN-only fit of a
    cut copy moves its layer-0 states towards the unpruned model's; unequal hidden sizes are refused."""
    from w2vc.compress.distill import DistillObjective
    from w2vc.compress.prune import PruneConfig, prune

    dev = load_dataset(resolve_split(tiny_corpus, "dev"), limit=4)
    audio = [a[:32000] for a in dev.audio]
    cut = prune(Artifact.open(tiny_layer_model), PruneConfig(heads=0.0, ffn=0.0, cnn=0.5), tmp_path / "cut")
    cfg = DistillConfig(student=str(cut.path), init="checkpoint", data=str(tiny_corpus), steps=20, lr=3e-3,
                        warmup_steps=1, batch_seconds=8, eval_every=20, alpha_ctc=0.0, alpha_kd=0.0, alpha_hidden=1.0,
                        hidden_layer_map=((0, 0),), bf16=False, augment=NO_AUG, hidden_direct=True,
                        train_only=("wav2vec2.feature_extractor", "wav2vec2.feature_projection"))
    before = _layer0_gap(cut.path, tiny_layer_model, audio)
    out = distill(Artifact.open(tiny_layer_model), cfg, tmp_path / "d", StepContext(progress=False))
    after = _layer0_gap(out.path, tiny_layer_model, audio)
    assert after < 0.8 * before, (before, after)
    assert out.provenance["params"]["hidden_direct"] is True
    assert "hidden_direct" not in DistillConfig().to_dict()
    teacher, _ = load_pretrained(tiny_layer_model)
    with pytest.raises(ValueError, match="equal hidden sizes"):
        DistillObjective(teacher, cfg, student_hidden=16, use_bf16=False)
