"""Pruning on tiny real wav2vec2 models (Large-style layer norm and Base-style group norm): structure,
exact equivalence where it holds, save → load_pretrained with identical logits, and honest reports."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import save_tiny, tiny_config
from w2vc.compress.prune import PruneConfig, prune, prune_model
from w2vc.core.artifact import Artifact
from w2vc.core.load import load as load_transcriber
from w2vc.core.models import load_pretrained
from w2vc.core.shapes import SHAPES_KEY, model_shapes

SHAPE = dict(num_attention_heads=4, num_hidden_layers=4)


@pytest.fixture(scope="module", params=["layer", "group"])
def tiny4(request, tmp_path_factory):
    """A 4-layer, 4-head tiny model directory of each norm style."""
    return save_tiny(tmp_path_factory.mktemp(f"tiny4_{request.param}"), request.param, **SHAPE)


def _files_hash(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()


def _audio(seconds=1.0, seed=0):
    return torch.randn(1, int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _logits(model, x):
    return model.eval()(x).logits


def _kept_rows(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Indices of the original rows that survive in the pruned weight (pruning keeps order)."""
    kept, j = [], 0
    for i in range(original.shape[0]):
        if j < pruned.shape[0] and torch.equal(original[i], pruned[j]):
            kept.append(i)
            j += 1
    assert j == pruned.shape[0]
    return kept


def test_heads_and_ffn_half_remove_the_expected_parameters(tiny4):
    cfg = tiny_config("layer", **SHAPE)
    hidden, layers, ffn = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    model, proc = load_pretrained(tiny4)
    before = sum(p.numel() for p in model.parameters())
    report = prune_model(model, proc, PruneConfig(heads=0.5, ffn=0.5))

    c, f = hidden // 2, ffn // 2  # attention inner channels and FFN channels removed per layer
    expected = layers * (3 * (c * hidden + c) + c * hidden + (f * hidden + f) + f * hidden)
    assert report["params_before"] == before
    assert report["params_after"] == sum(p.numel() for p in model.parameters()) == before - expected
    for lyr in model.wav2vec2.encoder.layers:
        a = lyr.attention
        assert a.num_heads == 2 and a.embed_dim == a.num_heads * a.head_dim == a.q_proj.out_features
        assert a.k_proj.out_features == a.v_proj.out_features == a.out_proj.in_features == a.embed_dim
        assert a.out_proj.out_features == hidden  # residual stream kept
        assert lyr.feed_forward.output_dense.in_features == f
    assert report["shapes_after"]["num_heads"] == [2] * layers
    assert report["shapes_before"]["intermediate_size"] == [ffn] * layers
    assert _logits(model, _audio()).shape[-1] == cfg.vocab_size


@pytest.mark.parametrize("scope", ["local", "global"])
def test_pruned_heads_and_ffn_equal_the_parent_with_those_units_zeroed(tiny4, scope):
    """Heads and FFN channels act independently: removing them == zeroing what they write."""
    parent, proc = load_pretrained(tiny4)
    model = copy.deepcopy(parent)
    prune_model(model, proc, PruneConfig(heads=0.5, ffn=0.5, scope=scope))
    zeroed = copy.deepcopy(parent)
    with torch.no_grad():
        for lz, lp in zip(zeroed.wav2vec2.encoder.layers, model.wav2vec2.encoder.layers):
            kept = _kept_rows(lz.attention.q_proj.weight, lp.attention.q_proj.weight)
            assert _kept_rows(lz.attention.v_proj.weight, lp.attention.v_proj.weight) == kept
            gone = sorted(set(range(lz.attention.q_proj.out_features)) - set(kept))
            lz.attention.out_proj.weight[:, gone] = 0
            kept = _kept_rows(lz.feed_forward.intermediate_dense.weight, lp.feed_forward.intermediate_dense.weight)
            gone = sorted(set(range(lz.feed_forward.intermediate_dense.out_features)) - set(kept))
            lz.feed_forward.output_dense.weight[:, gone] = 0
    x = _audio(1.5)
    assert torch.allclose(_logits(model, x), _logits(zeroed, x), atol=1e-5)


def test_cnn_channel_pruning_keeps_kernels_and_shrinks_norms(tiny4):
    model, proc = load_pretrained(tiny4)
    kernels = [c.conv.kernel_size for c in model.wav2vec2.feature_extractor.conv_layers]
    report = prune_model(model, proc, PruneConfig(cnn=0.5))
    convs = model.wav2vec2.feature_extractor.conv_layers
    assert [c.conv.out_channels for c in convs] == [8] * 7 == list(model.config.conv_dim)
    assert [c.conv.kernel_size for c in convs] == kernels
    assert [c.conv.in_channels for c in convs[1:]] == [8] * 6
    for c in convs:
        norm = getattr(c, "layer_norm", None)
        if isinstance(norm, torch.nn.GroupNorm):  # Base style: per-channel GroupNorm shrinks consistently
            assert norm.num_groups == norm.num_channels == 8 == norm.weight.numel()
        elif norm is not None:
            assert norm.normalized_shape == (8,)
    proj = model.wav2vec2.feature_projection
    assert proj.layer_norm.normalized_shape == (8,) and proj.projection.in_features == 8
    assert report["reached"]["cnn"] == 0.5
    assert torch.isfinite(_logits(model, _audio())).all()


def test_layers_dropped_explicitly_and_by_score(tiny4):
    parent, proc = load_pretrained(tiny4)
    model = copy.deepcopy(parent)
    report = prune_model(model, proc, PruneConfig(drop_layers=(1, 3)))
    assert report["layers"]["kept"] == [0, 2] and model.config.num_hidden_layers == 2
    for i, lyr in zip([0, 2], model.wav2vec2.encoder.layers):
        assert torch.equal(lyr.attention.q_proj.weight, parent.wav2vec2.encoder.layers[i].attention.q_proj.weight)

    model = copy.deepcopy(parent)
    report = prune_model(model, proc, PruneConfig(num_drop_layers=1))
    scores = report["layers"]["scores"]
    assert report["layers"]["dropped"] == [scores.index(min(scores))]
    assert len(model.wav2vec2.encoder.layers) == 3
    with pytest.raises(ValueError, match="out of range"):
        prune_model(copy.deepcopy(parent), proc, PruneConfig(drop_layers=(4,)))


def test_save_load_gives_identical_logits_and_input_is_unchanged(tiny4, tmp_path):
    cfg = PruneConfig(ratio=0.5, scope="global", cnn=0.25, round_to=4, num_drop_layers=1)
    before = _files_hash(tiny4)
    in_memory, proc = load_pretrained(tiny4)
    prune_model(in_memory, proc, cfg)
    art = prune(Artifact.open(tiny4), cfg, tmp_path / "pruned")
    assert _files_hash(tiny4) == before

    stored = json.loads((art.path / "config.json").read_text())[SHAPES_KEY]
    assert stored == model_shapes(in_memory)
    loaded, _ = load_pretrained(art.path)
    assert model_shapes(loaded) == stored
    x = _audio(2.0, seed=1)
    assert (_logits(loaded, x) - _logits(in_memory, x)).abs().max() < 1e-6
    assert art.provenance["step"] == "prune" and art.provenance["params"] == cfg.to_dict()
    assert art.provenance["report"]["params_after"] < art.provenance["report"]["params_before"]
    # downstream code loads through load_pretrained: the transcriber and a dtype option work
    assert len(load_transcriber(art.path).transcribe([x[0].numpy()])) == 1
    assert next(load_pretrained(art.path, dtype=torch.float32)[0].parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="out_dir must differ"):
        prune(Artifact.open(tiny4), cfg, tiny4)


def test_taylor_importance_uses_calibration_audio(tiny_corpus, tmp_path):
    model_dir = save_tiny(tmp_path / "src", "layer", **SHAPE)
    model, proc = load_pretrained(model_dir)
    cfg = PruneConfig(heads=0.5, ffn=0.5, importance="taylor", num_drop_layers=1, data=str(tiny_corpus),
                      calib_utterances=2)
    report = prune_model(model, proc, cfg)
    assert report["calibration"]["utterances"] == 2 and report["calibration"]["seconds"] > 0
    assert report["layers"]["by"] == "taylor" and all(s > 0 for s in report["layers"]["scores"])
    assert report["shapes_after"]["num_heads"] == [2, 2, 2]
    assert all(p.grad is None for p in model.parameters())
    assert torch.isfinite(_logits(model, _audio())).all()


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_reaches_sparsity_and_reports_dense_bytes(tiny_group_model, tmp_path, scope):
    art = prune(Artifact.open(tiny_group_model), PruneConfig(sparsity=0.6, sparsity_scope=scope), tmp_path / "s")
    rep = art.provenance["report"]["unstructured"]
    assert abs(rep["sparsity_reached"] - 0.6) < 0.01
    if scope == "layer":
        lo, hi = rep["per_module_sparsity_range"]
        assert abs(lo - 0.6) < 0.01 and abs(hi - 0.6) < 0.01
    assert rep["csr_bytes_targeted"] < rep["dense_bytes_targeted"]
    assert rep["model_bytes_if_stored_sparse"] < rep["dense_bytes_model"]
    assert "unchanged" in rep["note"]
    # the stored file stays dense: same parameter count and the same size as the parent
    parent = Artifact.open(tiny_group_model)
    assert art.provenance["report"]["params_after"] == art.provenance["report"]["params_before"]
    assert abs(art.size_mb - parent.size_mb) < 1e-3
    model, _ = load_pretrained(art.path)
    zeros = sum(int((m.weight == 0).sum()) for n, m in model.named_modules()
                if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d)) and "lm_head" not in n
                and "pos_conv_embed" not in n)
    assert zeros / rep["targeted_params"] == pytest.approx(rep["sparsity_reached"], abs=1e-4)
    assert int((model.lm_head.weight == 0).sum()) == 0  # sparse_ignore respected


@pytest.mark.parametrize("scope", ["local", "global"])
def test_gflops_target_finds_the_smallest_uniform_ratio_that_reaches_it(tiny4, scope):
    from w2vc.core.flops_model import model_gflops

    model, proc = load_pretrained(tiny4)
    full = model_gflops(model)
    report = prune_model(model, proc, PruneConfig(target_gflops_ratio=0.6, cnn=0.25, scope=scope))
    ratio = report["target_search"]["ratio"]
    assert report["ratios"] == {"heads": ratio, "ffn": ratio, "cnn": 0.25}
    assert report["gflops_before"] == pytest.approx(full, abs=1e-4)
    assert report["gflops_after"] == pytest.approx(model_gflops(model), abs=1e-4)
    assert model_gflops(model) <= 0.6 * full
    # a ratio 0.01 smaller no longer reaches the target
    looser, _ = load_pretrained(tiny4)
    prune_model(looser, proc, PruneConfig(heads=ratio - 0.01, ffn=ratio - 0.01, cnn=0.25, scope=scope))
    assert model_gflops(looser) > 0.6 * full
    with pytest.raises(ValueError, match="out of reach by width pruning"):
        prune_model(looser, proc, PruneConfig(target_gflops_ratio=0.01, cnn=0.0))


def test_config_round_trip():
    cfg = PruneConfig(heads=0.5, ffn=0.25, cnn=0.0, scope="global", importance="taylor", num_drop_layers=2,
                      layer_importance="loss", round_to=8, sparsity=0.3, sparsity_scope="layer",
                      sparse_ignore=("lm_head",), data="x/corpus", calib_utterances=4)
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
    assert PruneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert PruneConfig(ratio=0.4, ffn=0.1).part_ratios() == {"heads": 0.4, "ffn": 0.1, "cnn": 0.4}


@pytest.mark.parametrize("kw, message", [
    (dict(heads=1.5), r"heads must be in \[0, 1\), got 1.5"),
    (dict(ratio=-0.1), r"ratio must be in \[0, 1\)"),
    (dict(ffn=0.5, importance="l1"), "importance must be one of magnitude, taylor"),
    (dict(ffn=0.5, scope="everywhere"), "scope must be one of local, global"),
    (dict(drop_layers=(1,), num_drop_layers=1), "not both"),
    (dict(num_drop_layers=1, layer_importance="cosine"), "layer_importance must be one of magnitude, taylor, loss"),
    (dict(), "nothing to prune"),
    (dict(target_gflops_ratio=0.5, ratio=0.3), "target_gflops_ratio must be in"),
    (dict(target_gflops_ratio=0.5, heads=0.1, ffn=0.1, cnn=0.1), "leave ratio at 0 and one of"),
])
def test_bad_config_is_a_clear_value_error(kw, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kw)


def test_unknown_part_is_a_clear_value_error():
    with pytest.raises(ValueError, match="unknown prune option.* attention; known: heads, ffn, cnn"):
        PruneConfig.from_dict({"attention": 0.5})


def test_loss_layer_importance_drops_the_layer_that_costs_least(tiny_corpus, tmp_path):
    """The reported score of the dropped layer is the calibration loss increase the pruned model shows."""
    from w2vc.compress.prune import _ctc_losses, load_calibration

    parent, proc = load_pretrained(save_tiny(tmp_path / "src", "group", **SHAPE))
    cfg = PruneConfig(num_drop_layers=1, layer_importance="loss", data=str(tiny_corpus), calib_utterances=2)
    model = copy.deepcopy(parent)
    report = prune_model(model, proc, cfg)["layers"]
    assert report["by"] == "loss" and report["dropped"] == [report["scores"].index(min(report["scores"]))]
    calib = load_calibration(proc, cfg)
    with torch.no_grad():
        increase = sum(float(v) for v in _ctc_losses(model, calib)) - sum(float(v) for v in _ctc_losses(parent, calib))
    assert increase == pytest.approx(min(report["scores"]), abs=1e-5)
