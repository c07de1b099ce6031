"""Model surgery every layer shares: per-layer pruned shapes (record, rebuild, load) and weight-norm folding.

A structurally pruned model has per-layer head counts and FFN widths that Wav2Vec2Config cannot express:
they are recorded in config.json under `w2vc_pruned_shapes` and rebuilt here before the weights load, so
every loader (steps, eval, export) gets the pruned model back from a plain save_pretrained directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

SHAPES_KEY = "w2vc_pruned_shapes"
SHAPES_VERSION = 1


def fold_weight_norm(model: torch.nn.Module) -> list[str]:
    """Replace weight_norm (new parametrization or old hook) by the plain weight it computes, in place."""
    from torch.nn.utils import parametrize

    folded = []
    for name, mod in model.named_modules():
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
            folded.append(name)
        elif hasattr(mod, "weight_g") and hasattr(mod, "weight_v"):
            torch.nn.utils.remove_weight_norm(mod)
            folded.append(name)
    return folded


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def model_shapes(model) -> dict:
    """Per-module sizes that matter for pruning (also the `w2vc_pruned_shapes` entry of config.json)."""
    w2v, cfg = model.wav2vec2, model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    layers = w2v.encoder.layers
    return {"version": SHAPES_VERSION, "hidden_size": cfg.hidden_size, "num_hidden_layers": len(layers),
            "head_dim": head_dim, "conv_dim": [c.conv.out_channels for c in w2v.feature_extractor.conv_layers],
            "num_heads": [lyr.attention.q_proj.out_features // head_dim for lyr in layers],
            "intermediate_size": [lyr.feed_forward.intermediate_dense.out_features for lyr in layers]}


def config_shapes(config) -> dict:
    """The `model_shapes` entry of a config: its recorded per-layer shapes, or the uniform ones it describes."""
    if getattr(config, SHAPES_KEY, None):
        return dict(getattr(config, SHAPES_KEY))
    n = config.num_hidden_layers
    return {"version": SHAPES_VERSION, "hidden_size": config.hidden_size, "num_hidden_layers": n,
            "head_dim": config.hidden_size // config.num_attention_heads, "conv_dim": list(config.conv_dim),
            "num_heads": [config.num_attention_heads] * n, "intermediate_size": [config.intermediate_size] * n}


def transfer_shapes(before: dict, after: dict, config) -> dict:
    """The cut `before` → `after` (two `model_shapes`) at the same ratios on the unpruned `config` (another
    size of the family, e.g. the true Base shape), so a recipe learned on a small model can be costed there.

    Conv channels keep their fraction conv by conv; the share of kept layers is kept (rounded, at least one);
    kept target layer j takes the head and FFN fractions of kept source layer ⌊j · L_after / L_target⌋ (the
    same relative depth). Fractions are of the source layer's unpruned width; counts round, at least one.
    """
    full = config_shapes(config)
    if len(before["conv_dim"]) != len(after["conv_dim"]) or len(before["conv_dim"]) != len(full["conv_dim"]):
        raise ValueError(f"conv layer counts differ: cut {len(before['conv_dim'])} → {len(after['conv_dim'])}, "
                         f"target {len(full['conv_dim'])}: the ratios do not map")
    if len(set(before["num_heads"])) > 1 or len(set(before["intermediate_size"])) > 1:
        raise ValueError("the shape before the cut must be an unpruned one (uniform heads and FFN widths)")
    conv = [max(1, round(a / b * t)) for a, b, t in zip(after["conv_dim"], before["conv_dim"], full["conv_dim"])]
    n_src, n_tgt = after["num_hidden_layers"], max(1, round(full["num_hidden_layers"] * after["num_hidden_layers"]
                                                              / before["num_hidden_layers"]))
    src = [j * n_src // n_tgt for j in range(n_tgt)]
    heads = [max(1, round(after["num_heads"][i] / before["num_heads"][0] * full["num_heads"][0])) for i in src]
    ffn = [max(1, round(after["intermediate_size"][i] / before["intermediate_size"][0] * full["intermediate_size"][0]))
           for i in src]
    return {**full, "num_hidden_layers": n_tgt, "conv_dim": conv, "num_heads": heads, "intermediate_size": ffn}


def apply_shapes(config, shapes: dict):
    """A randomly initialised model of `config` at `shapes` (its config records them: save → load rebuilds)."""
    config.conv_dim, config.num_hidden_layers = list(shapes["conv_dim"]), shapes["num_hidden_layers"]
    setattr(config, SHAPES_KEY, shapes)
    return build_pruned(config)


def record_shapes(model) -> dict:
    """Write the model's actual shapes into its config (call after any surgery, before save_pretrained)."""
    shapes = model_shapes(model)
    model.config.conv_dim = shapes["conv_dim"]
    model.config.num_hidden_layers = shapes["num_hidden_layers"]
    setattr(model.config, SHAPES_KEY, shapes)
    return shapes


def _linear(n_in: int, n_out: int, like: nn.Linear) -> nn.Linear:
    return nn.Linear(n_in, n_out, bias=like.bias is not None, dtype=like.weight.dtype)


def build_pruned(config):
    """A randomly initialised Wav2Vec2ForCTC with the per-layer shapes of config.w2vc_pruned_shapes."""
    from transformers import Wav2Vec2ForCTC

    s = getattr(config, SHAPES_KEY)
    if s.get("version") != SHAPES_VERSION:
        raise ValueError(f"{SHAPES_KEY} version {s.get('version')} not supported (expected {SHAPES_VERSION})")
    if (s["num_hidden_layers"] != config.num_hidden_layers or list(s["conv_dim"]) != list(config.conv_dim)
            or not len(s["num_heads"]) == len(s["intermediate_size"]) == s["num_hidden_layers"]):
        raise ValueError(f"config.json {SHAPES_KEY} disagrees with num_hidden_layers/conv_dim (stale? call "
                         "w2vc.compress.prune.record_shapes(model) before save_pretrained)")
    model = Wav2Vec2ForCTC(config)
    hidden, d = config.hidden_size, s["head_dim"]
    for lyr, h, f in zip(model.wav2vec2.encoder.layers, s["num_heads"], s["intermediate_size"]):
        a, ff = lyr.attention, lyr.feed_forward
        if a.head_dim != d:
            raise ValueError(f"{SHAPES_KEY} head_dim {d} != hidden_size / num_attention_heads ({a.head_dim})")
        a.q_proj, a.k_proj, a.v_proj = (_linear(hidden, h * d, getattr(a, n)) for n in ("q_proj", "k_proj", "v_proj"))
        a.out_proj = _linear(h * d, hidden, a.out_proj)
        a.num_heads, a.embed_dim = h, h * d
        ff.intermediate_dense = _linear(hidden, f, ff.intermediate_dense)
        ff.output_dense = _linear(f, hidden, ff.output_dense)
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if (path / "model.safetensors").exists():
        return load_file(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.exists():
        sd = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            sd.update(load_file(path / shard))
        return sd
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors(.index.json) or pytorch_model.bin")


def load_pruned(path: str | Path, **kw):
    """Load a save_pretrained directory whose config.json carries w2vc_pruned_shapes (eval mode)."""
    from transformers import Wav2Vec2Config

    path = Path(path)
    dtype = kw.pop("torch_dtype", None) or kw.pop("dtype", None)
    attn = kw.pop("attn_implementation", None)
    kw.pop("trust_remote_code", None)
    if kw:
        raise ValueError(f"load options {', '.join(sorted(kw))} are not supported for pruned models ({path})")
    config = Wav2Vec2Config.from_pretrained(path)
    if attn:
        config._attn_implementation = attn
    model = build_pruned(config)
    try:
        model.load_state_dict(_read_state_dict(path), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match config.json {SHAPES_KEY} (stale? call record_shapes "
                         f"before save_pretrained): {str(e).splitlines()[1:2]}") from e
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    return model.eval()
