"""FLOPs and parameters of a Wav2Vec2ForCTC from its structure sizes, as arithmetic (no forward pass).

The same quantity eval/flops.py counts with FlopCounterMode (2 x multiply-accumulates of the convs, weight
GEMMs and attention matmuls; biases, norms, activations and softmax left out), written over per-layer sizes
that may be tensors. Learned pruning needs that: its target is the *expected* cost under gates, a
differentiable function of the gates' open probabilities, and compress may not import eval. Kept equal to
eval's count by tests/core/test_flops_model.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Widths:
    """The sizes pruning changes: out channels per conv layer, heads and FFN units per transformer layer, and
    per layer a weight in [0, 1] (1 = present; an expected value under a layer gate). Numbers or tensors."""

    conv_dim: Sequence
    num_heads: Sequence
    intermediate_size: Sequence
    layer_keep: Sequence | None = None

    def keep(self, i: int):
        return 1.0 if self.layer_keep is None else self.layer_keep[i]


def widths_of(model) -> Widths:
    """The actual sizes of a (possibly pruned) model."""
    w2v = model.wav2vec2
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    return Widths(conv_dim=[c.conv.out_channels for c in w2v.feature_extractor.conv_layers],
                  num_heads=[lyr.attention.q_proj.out_features // head_dim for lyr in w2v.encoder.layers],
                  intermediate_size=[lyr.feed_forward.intermediate_dense.out_features for lyr in w2v.encoder.layers])


def conv_frames(n_samples: int, kernels: Sequence[int], strides: Sequence[int]) -> list[int]:
    """Output length of each conv layer for an input of n_samples (no padding, as the feature encoder)."""
    out, n = [], n_samples
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1
        out.append(n)
    return out


def forward_flops(config, w: Widths, n_samples: int):
    """FLOPs of one batch-1 forward over n_samples of audio (a tensor when any width is one)."""
    frames = conv_frames(n_samples, config.conv_kernel, config.conv_stride)
    t, hidden = frames[-1], config.hidden_size
    head_dim = hidden // config.num_attention_heads
    total = 0.0
    c_in = 1
    for k, length, c_out in zip(config.conv_kernel, frames, w.conv_dim):
        total = total + 2 * length * c_out * c_in * k
        c_in = c_out
    total = total + 2 * t * c_in * hidden  # feature projection
    pos_k = config.num_conv_pos_embeddings  # "same" padding k // 2 gives t + 1 frames before the trim
    total = total + 2 * (t + 2 * (pos_k // 2) - pos_k + 1) * hidden * (hidden // config.num_conv_pos_embedding_groups) * pos_k
    for i, (h, f) in enumerate(zip(w.num_heads, w.intermediate_size)):
        inner = h * head_dim
        layer = 2 * t * hidden * inner * 4 + 2 * 2 * t * t * inner + 2 * 2 * t * hidden * f  # q k v out, QK AV, FFN
        total = total + w.keep(i) * layer
    return total + 2 * t * hidden * config.vocab_size  # lm_head


def varying_params(config, w: Widths):
    """Parameters of the parts whose size depends on `w`: conv layers (+ their norms), the feature projection's
    norm and input, and the transformer layers (each times its keep weight). The rest is fixed."""
    total = 0.0
    c_in = 1
    norm = config.feat_extract_norm
    for i, (k, c_out) in enumerate(zip(config.conv_kernel, w.conv_dim)):
        total = total + c_out * c_in * k + (c_out if config.conv_bias else 0)
        if norm == "layer" or (norm == "group" and i == 0):
            total = total + 2 * c_out
        c_in = c_out
    hidden = config.hidden_size
    head_dim = hidden // config.num_attention_heads
    total = total + 2 * c_in + c_in * hidden  # feature projection LayerNorm + Linear weight
    for i, (h, f) in enumerate(zip(w.num_heads, w.intermediate_size)):
        inner = h * head_dim
        layer = 3 * (hidden * inner + inner) + inner * hidden + hidden + 2 * hidden * f + f + hidden + 4 * hidden
        total = total + w.keep(i) * layer
    return total


def model_gflops(model, seconds: float = 3.0) -> float:
    """Counted GFLOPs of the model's own shapes for `seconds` of audio (what eval's FlopCounterMode gives)."""
    return float(forward_flops(model.config, widths_of(model), int(round(seconds * SAMPLE_RATE)))) / 1e9
