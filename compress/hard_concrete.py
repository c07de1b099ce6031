"""Hard-concrete (L0) gates (Louizos et al. 2018) for learned_prune, and the forward hooks that apply them to a
wav2vec2 model without touching its modules or state dict."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from w2vc.core.flops_model import Widths, widths_of

if TYPE_CHECKING:
    from w2vc.compress.learned_prune import LearnedPruneConfig

LOG_ALPHA_MAX = 5.0


class Gates(nn.Module):
    """Hard-concrete gates of one model, by key: cnn_<i> (conv layer i's channels), heads_<i>, ffn_<i>
    (transformer layer i) and layers (one per layer). Training draws a relaxed sample per step (`resample`);
    evaluation uses the deterministic choice (`keep`), the one the surgery applies."""

    def __init__(self, model, cfg: LearnedPruneConfig):
        super().__init__()
        self.beta, self.l, self.r = cfg.gate_beta, cfg.gate_l, cfg.gate_r
        w = widths_of(model)
        sizes = {f"{part}_{i}": n for part, per_layer in (("cnn", w.conv_dim), ("heads", w.num_heads),
                                                          ("ffn", w.intermediate_size))
                 if part in cfg.structures for i, n in enumerate(per_layer)}
        if "layers" in cfg.structures:
            sizes["layers"] = len(w.num_heads)
        init = math.log((1 - cfg.gate_init_drop) / cfg.gate_init_drop)
        g = torch.Generator().manual_seed(cfg.seed)
        self.theta = nn.ParameterDict({k: nn.Parameter(init + 0.01 * torch.randn(n, generator=g))
                                       for k, n in sizes.items()})
        self.z: dict[str, torch.Tensor] = {}

    def log_alpha(self, key: str) -> torch.Tensor:
        return self.theta[key].float()

    def open_prob(self, key: str) -> torch.Tensor:
        """P(z > 0): the expected L0 norm per gate, differentiable in log α."""
        return torch.sigmoid(self.log_alpha(key) - self.beta * math.log(-self.l / self.r))

    @torch.no_grad()
    def project(self) -> None:
        """Keep log α in ±LOG_ALPHA_MAX: past it P(open) saturates, the gate's gradient vanishes and the
        Lagrangian can no longer close it (measured: a higher lr_gates opened gates for good in the first steps)."""
        for th in self.theta.values():
            th.clamp_(-LOG_ALPHA_MAX, LOG_ALPHA_MAX)

    def resample(self) -> None:
        self.z = {}
        for key in self.theta:
            la = self.log_alpha(key)
            u = torch.rand(la.shape, device=la.device).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / self.beta)
            self.z[key] = (s * (self.r - self.l) + self.l).clamp(0.0, 1.0)

    @torch.no_grad()
    def keep(self, key: str) -> torch.Tensor:
        """Deterministic 0/1 gates: per group the round(E[L0]) units with the largest log α (>= 1 unit);
        a layer stays when P(open) >= 0.5 (>= 1 layer)."""
        p, la = self.open_prob(key), self.log_alpha(key)
        if key == "layers":
            out = (p >= 0.5).float()
            if not out.any():
                out[la.argmax()] = 1.0
            return out
        k = min(len(p), max(1, int(round(float(p.sum())))))
        out = torch.zeros_like(p)
        out[torch.topk(la, k).indices] = 1.0
        return out

    def mask(self, key: str, training: bool) -> torch.Tensor:
        if training and key not in self.z:
            self.resample()
        return self.z[key] if training else self.keep(key)

    def expected_widths(self, base: Widths) -> Widths:
        """`base` with every gated size replaced by its expectation, the sum of its gates' open probabilities."""
        def sizes(part, per_layer):
            return [self.open_prob(f"{part}_{i}").sum() if f"{part}_{i}" in self.theta else n
                    for i, n in enumerate(per_layer)]

        return Widths(conv_dim=sizes("cnn", base.conv_dim), num_heads=sizes("heads", base.num_heads),
                      intermediate_size=sizes("ffn", base.intermediate_size),
                      layer_keep=self.open_prob("layers") if "layers" in self.theta else None)


def attach_gates(model, gates: Gates) -> list:
    """Forward hooks that apply `gates` to `model` (the model's own modules and state dict stay as they are);
    returns the hook handles."""
    w2v = model.wav2vec2
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    handles = []
    convs = w2v.feature_extractor.conv_layers
    for i, conv in enumerate(convs):
        key = f"cnn_{i}"
        if key not in gates.theta:
            continue
        if isinstance(getattr(conv, "layer_norm", None), nn.LayerNorm):
            handles.append(conv.layer_norm.register_forward_hook(_weighted_layer_norm(gates, key)))
        if i < len(convs) - 1:  # the last conv's channels are gated in the feature projection's norm
            handles.append(conv.register_forward_hook(_scale_output(gates, key)))
        else:
            handles.append(w2v.feature_projection.layer_norm.register_forward_hook(
                _weighted_layer_norm(gates, key, gate_output=True)))
    for i, lyr in enumerate(w2v.encoder.layers):
        if f"heads_{i}" in gates.theta:
            handles.append(lyr.attention.out_proj.register_forward_pre_hook(_scale_input(gates, f"heads_{i}", head_dim)))
        if f"ffn_{i}" in gates.theta:
            handles.append(lyr.feed_forward.output_dense.register_forward_pre_hook(_scale_input(gates, f"ffn_{i}")))
        if "layers" in gates.theta:
            handles.append(lyr.register_forward_hook(_layer_gate(gates, i), with_kwargs=True))
    return handles


def _scale_output(gates, key):
    def hook(mod, args, out):  # conv layer output [B, C, T]
        return out * gates.mask(key, mod.training).to(out.dtype)[None, :, None]
    return hook


def _scale_input(gates, key, repeat: int = 1):
    def hook(mod, args):  # [B, T, units * repeat] into out_proj / output_dense
        z = gates.mask(key, mod.training)
        return (args[0] * z.repeat_interleave(repeat).to(args[0].dtype),)
    return hook


def _weighted_layer_norm(gates, key, gate_output: bool = False):
    """LayerNorm over the channels with statistics weighted by their gates: with 0/1 gates exactly the
    LayerNorm of the kept channels alone, which is what the cut model computes."""
    def hook(mod, args, out):
        x = args[0].float()
        z = gates.mask(key, mod.training).to(x.device)
        zs = z.sum().clamp_min(1e-6)
        mean = (x * z).sum(-1, keepdim=True) / zs
        var = (((x - mean) ** 2) * z).sum(-1, keepdim=True) / zs
        y = (x - mean) * torch.rsqrt(var + mod.eps) * mod.weight.float() + mod.bias.float()
        return (y * z if gate_output else y).to(out.dtype)
    return hook


def _layer_gate(gates, i: int):
    def hook(mod, args, kwargs, out):  # x + z · (layer(x) − x): z = 0 is the layer removed
        x = args[0] if args else kwargs["hidden_states"]
        y = out[0] if isinstance(out, tuple) else out
        z = gates.mask("layers", mod.training)[i].to(y.dtype)
        new = x + z * (y - x)
        return (new, *out[1:]) if isinstance(out, tuple) else new
    return hook
