"""The shape-based cost (w2vc.core.flops_model) against what eval counts and what the model holds, on tiny real
models of both norm styles, a pruned one with uneven widths, and the large-s preset."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import save_tiny
from w2vc.compress.prune import PruneConfig, prune_model, remove_units
from w2vc.core.flops_model import forward_flops, model_gflops, varying_params, widths_of
from w2vc.core.models import load_pretrained, new_model
from w2vc.core.shapes import n_params, record_shapes
from w2vc.eval.flops import count_torch_flops


def _counted_gflops(model, seconds: float) -> float:
    x = torch.randn(1, int(round(seconds * 16000)), generator=torch.Generator().manual_seed(0))
    return count_torch_flops(model.eval(), x)[0] / 1e9


def _pruned(path):
    """Uneven widths everywhere: a layer dropped, heads, FFN units and CNN channels removed per layer."""
    model, proc = load_pretrained(path)
    prune_model(model, proc, PruneConfig(drop_layers=(1,)))
    remove_units(model, {"heads": [[0], [], [1, 2]], "ffn": [list(range(10)), [3], []],
                         "cnn": [[0, 1], [], [5], list(range(8)), [], [2], [0, 15]]})
    record_shapes(model)
    return model


@pytest.fixture(scope="module", params=["layer", "group"])
def tiny_dir(request, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp(f"fm_{request.param}"), request.param, num_attention_heads=4,
                     num_hidden_layers=4)


@pytest.mark.parametrize("seconds", [1.0, 3.0])
def test_formula_equals_the_counted_flops(tiny_dir, seconds):
    for model in (load_pretrained(tiny_dir)[0], _pruned(tiny_dir)):
        counted = _counted_gflops(model, seconds)
        assert model_gflops(model, seconds) == pytest.approx(counted, rel=0.01)


def test_formula_on_the_large_s_preset():
    model, _ = new_model("large-s", seed=0)
    assert model_gflops(model, 3.0) == pytest.approx(_counted_gflops(model, 3.0), rel=0.01)


def test_varying_params_account_for_every_removed_parameter(tiny_dir):
    full, _ = load_pretrained(tiny_dir)
    fixed = n_params(full) - varying_params(full.config, widths_of(full))
    pruned = _pruned(tiny_dir)
    assert n_params(pruned) < n_params(full)
    assert fixed + varying_params(pruned.config, widths_of(pruned)) == n_params(pruned)


def test_cost_is_differentiable_in_tensor_widths(tiny_dir):
    model, _ = load_pretrained(tiny_dir)
    w = widths_of(model)
    heads = torch.tensor([4.0, 4.0, 4.0, 4.0], requires_grad=True)
    cost = forward_flops(model.config, type(w)(w.conv_dim, list(heads), w.intermediate_size), 48000)
    cost.backward()
    assert float(cost.detach()) == pytest.approx(forward_flops(model.config, w, 48000))
    assert (heads.grad > 0).all()
