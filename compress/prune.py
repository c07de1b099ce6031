"""Structured and unstructured pruning of Wav2Vec2ForCTC.

Structured: whole attention heads, FFN intermediate channels, CNN feature-encoder channels (each conv
layer's out channels; layer count, kernels and strides kept) and whole transformer layers. The hidden size
is kept: it is the residual stream every layer reads and writes. torch-pruning's DependencyGraph supplies
the couplings (a head takes the same channels out of q/k/v and the input of out_proj; a conv channel takes
its norm entry and the next conv's input, or the feature projection's LayerNorm + Linear input) and its
Magnitude/Taylor importances. Which units go is chosen here rather than by MetaPruner: that keeps the
residual stream out of reach, keeps >= 1 unit per layer, and lets us shrink the Base-style
GroupNorm(num_groups=channels) consistently (torch-pruning lowers num_channels but not num_groups).

Unstructured: magnitude masking of Linear/Conv1d weights (one global threshold, or per tensor), made
permanent. The weights are still stored and multiplied dense, so the report gives the sparsity reached and
what CSR / bitmask storage would take, never a speed-up.

A pruned model has per-layer head counts and FFN widths that Wav2Vec2Config cannot express: they are
recorded in config.json under `w2vc_pruned_shapes`, and `w2vc.core.models.load_pretrained` rebuilds them
(`w2vc.core.shapes.load_pruned`) before loading the weights. Recovery fine-tuning is a separate step (distill).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from w2vc.core.artifact import Artifact, Kind, copy_processor_files, finalize
from w2vc.core.config import ConfigBase
from w2vc.core.flops_model import model_gflops
from w2vc.core.load import load_torch
from w2vc.core.runnable import normalize_audio
from w2vc.core.shapes import model_shapes, n_params, record_shapes
from w2vc.core.step import StepContext, register
from w2vc.core.wer import normalize
from w2vc.data.datasets import load_dataset, resolve_split

PARTS = ("heads", "ffn", "cnn")
IMPORTANCES = ("magnitude", "taylor")
SCOPES = ("local", "global")
SPARSITY_SCOPES = ("global", "layer")
LAYER_IMPORTANCES = (*IMPORTANCES, "loss")


@dataclass(frozen=True, kw_only=True)
class PruneConfig(ConfigBase):
    """Args:
        heads / ffn / cnn: fraction in [0, 1) of attention heads / FFN intermediate channels / CNN
            feature-encoder channels to remove; None takes `ratio`.
        ratio: one fraction for every width part left None (0 = no width pruning).
        target_gflops_ratio: counted GFLOPs (3 s audio) to reach, as a fraction of the input's: sets `ratio` to the
            smallest that reaches it (bisection over trial cuts); one-shot at a learned run's cost, for ablations.
        scope: "local" removes the fraction from every layer; "global" ranks a part's units across all
            layers, so important layers keep more (still >= 1 head, >= round_to channels per layer).
        importance: "magnitude" (L2 norm of the unit's weights over its dependency group; no data) or
            "taylor" (|w * dL/dw|, the first-order loss change; CTC loss on `calib_utterances` of `data`).
        drop_layers: transformer layer indices to remove.
        num_drop_layers: remove this many layers, the lowest by `layer_importance`. Exclusive with drop_layers.
        layer_importance: None = `importance`; "magnitude": norm of the weights that write into the residual
            stream (no data, crude); "taylor": |g . (x_in - x_out)|, the first-order loss change of skipping
            the layer; "loss": the calibration CTC loss increase measured with the layer skipped (one
            calibration pass per layer; the most faithful, and the first-order estimate can misrank layers).
        round_to: kept FFN / CNN channel counts rounded to a multiple of this (SIMD-friendly widths).
        sparsity: fraction of the targeted weights zeroed by magnitude (unstructured, after the rest).
        sparsity_scope: "global" (one threshold over all targeted weights) or "layer" (per tensor).
        sparse_ignore: module-name substrings left dense by unstructured pruning.
        data / split / calib_utterances: calibration audio for taylor: a w2vc corpus root + split name, or
            any data path eval.datasets reads.
    """

    heads: float | None = None
    ffn: float | None = None
    cnn: float | None = None
    ratio: float = 0.0
    target_gflops_ratio: float | None = None
    scope: str = "local"
    importance: str = "magnitude"
    drop_layers: tuple[int, ...] = ()
    num_drop_layers: int = 0
    layer_importance: str | None = None
    round_to: int = 1
    sparsity: float = 0.0
    sparsity_scope: str = "global"
    sparse_ignore: tuple[str, ...] = ("lm_head", "pos_conv_embed")
    data: str = "data/corpus"
    split: str = "dev"
    calib_utterances: int = 16
    version: int = 1

    def __post_init__(self):
        for name in (*PARTS, "ratio", "sparsity"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        for name, v, known in (("scope", self.scope, SCOPES), ("importance", self.importance, IMPORTANCES),
                               ("layer_importance", self.layer_importance or self.importance, LAYER_IMPORTANCES),
                               ("sparsity_scope", self.sparsity_scope, SPARSITY_SCOPES)):
            if v not in known:
                raise ValueError(f"{name} must be one of {', '.join(known)}, got {v!r}")
        if self.drop_layers and self.num_drop_layers:
            raise ValueError("give drop_layers or num_drop_layers, not both")
        if any(i < 0 for i in self.drop_layers) or len(set(self.drop_layers)) != len(self.drop_layers):
            raise ValueError(f"drop_layers must be distinct indices >= 0, got {self.drop_layers}")
        if self.num_drop_layers < 0 or self.round_to < 1 or self.calib_utterances < 1:
            raise ValueError("num_drop_layers must be >= 0, round_to and calib_utterances >= 1")
        if (t := self.target_gflops_ratio) is not None and not (0 < t < 1 and not self.ratio
                                                                and any(getattr(self, p) is None for p in PARTS)):
            raise ValueError(f"target_gflops_ratio must be in (0, 1) and sets `ratio`: leave ratio at 0 and one of "
                             f"heads/ffn/cnn unset, got {t}")
        if not (any(self.part_ratios().values()) or self.target_gflops_ratio or self.drop_layers or self.num_drop_layers or self.sparsity):
            raise ValueError("nothing to prune: set heads/ffn/cnn or ratio, drop_layers/num_drop_layers, or sparsity")

    @property
    def layer_criterion(self) -> str:
        return self.layer_importance or self.importance

    def part_ratios(self, ratio: float | None = None) -> dict[str, float]:
        """Each part's fraction; `ratio` overrides the config's for the parts left None (the GFLOPs search)."""
        r = self.ratio if ratio is None else ratio
        return {p: r if getattr(self, p) is None else getattr(self, p) for p in PARTS}

    WHAT = "prune"

    @classmethod
    def data_fields(cls, params: dict) -> tuple[str, ...]:
        return ("data",)


# ---------------------------------------------------------------------------------------------- step


ACCEPTS = frozenset({Kind.TORCH})


@register("prune", PruneConfig, ACCEPTS, "structured (heads, FFN, CNN, layers) or unstructured pruning")
def prune(artifact: Artifact, cfg: PruneConfig, out_dir: str | Path, ctx: StepContext | None = None) -> Artifact:
    """Prune a plain PyTorch artifact into a new directory (the input is only read).

    A torch+runtime artifact (bf16, dynamic int8, fake-quant int4) is refused: pruning its stored weights
    would save a plain fp32 model while the lineage claimed quantize -> prune. Prune first, then quantize."""
    artifact.require(ACCEPTS, "prune", "prune its fp32 parent, then quantize the pruned model")
    out = Path(out_dir)
    if out.resolve() == Path(artifact.path).resolve():
        raise ValueError(f"out_dir must differ from the input artifact {artifact.path}: steps never modify it")
    model, processor = load_torch(artifact)
    model.float().eval()
    report = prune_model(model, processor, cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    copy_processor_files(artifact.path, out)
    return finalize(out, "prune", cfg.to_dict(), artifact, report)


def prune_model(model, processor, cfg: PruneConfig) -> dict:
    """Prune an in-memory Wav2Vec2ForCTC in place (layers, then widths, then sparsity); returns the report."""
    shapes_before, params_before = model_shapes(model), n_params(model)
    gflops_before = model_gflops(model)
    ratios = cfg.part_ratios()
    width = any(ratios.values()) or cfg.target_gflops_ratio is not None
    calib = None
    if (cfg.importance == "taylor" and width) or (cfg.num_drop_layers and cfg.layer_criterion != "magnitude"):
        calib = load_calibration(processor, cfg)
    report: dict = {"importance": cfg.importance, "scope": cfg.scope, "ratios": ratios}

    if cfg.drop_layers or cfg.num_drop_layers:
        report["layers"] = _prune_layers(model, cfg, calib)
    if width:
        if cfg.importance == "taylor":
            accumulate_grads(model, calib)
        if cfg.target_gflops_ratio is not None:
            ratios, report["target_search"] = _ratios_for_target(model, cfg, cfg.target_gflops_ratio * gflops_before)
            report["ratios"] = ratios
        report["reached"] = _prune_width(model, ratios, cfg)
        model.zero_grad(set_to_none=True)
    record_shapes(model)
    report.update(gflops_before=round(gflops_before, 4), gflops_after=round(model_gflops(model), 4))
    report.update(params_before=params_before, params_after=n_params(model),
                  shapes_before=shapes_before, shapes_after=model_shapes(model))
    report["params_removed"] = round(1 - report["params_after"] / params_before, 4)
    if calib is not None:
        report["calibration"] = {"data": calib.source, "utterances": len(calib.items),
                                 "seconds": round(sum(len(a) for a, _ in calib.items) / 16000, 1)}
    if cfg.sparsity:
        report["unstructured"] = sparsify(model, cfg.sparsity, cfg.sparsity_scope, cfg.sparse_ignore)
    return report


# ------------------------------------------------------------------------------------- calibration


@dataclass
class Calibration:
    source: str
    items: list[tuple[np.ndarray, list[int]]]  # (raw 16 kHz audio, label ids)


def load_calibration(processor, cfg: PruneConfig) -> Calibration:
    path = resolve_split(cfg.data, cfg.split)
    ds = load_dataset(path, limit=cfg.calib_utterances, name="calibration")
    items = [(a, processor.tokenizer(normalize(t)).input_ids) for a, t in zip(ds.audio, ds.texts)]
    return Calibration(str(path), items)


def _ctc_losses(model, calib: Calibration):
    """One utterance at a time: exact for group-norm encoders (zero padding would change them), eval mode so
    dropout and SpecAugment masking stay off."""
    model.eval()
    for audio, labels in calib.items:
        x = torch.from_numpy(normalize_audio(audio))[None]
        yield model(x, labels=torch.tensor([labels])).loss / len(calib.items)


def accumulate_grads(model, calib: Calibration) -> None:
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for loss in _ctc_losses(model, calib):
            loss.backward()


# ---------------------------------------------------------------------------------------- layers


def layer_scores(model, importance: str, calib: Calibration | None = None) -> list[float]:
    """Per transformer layer: higher = more needed. See PruneConfig.num_drop_layers for the two criteria."""
    layers = model.wav2vec2.encoder.layers
    if importance == "magnitude":
        return [float(torch.sqrt(lyr.attention.out_proj.weight.detach().pow(2).sum()
                                 + lyr.feed_forward.output_dense.weight.detach().pow(2).sum())) for lyr in layers]
    if calib is None:
        raise ValueError(f"{importance} layer scores need calibration data")
    if importance == "loss":
        return _skip_losses(model, calib)
    scores = [0.0] * len(layers)
    caught: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(i):
        def f(_mod, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            y.retain_grad()
            caught[i] = (x.detach(), y)
        return f

    handles = [lyr.register_forward_hook(hook(i), with_kwargs=True) for i, lyr in enumerate(layers)]
    try:
        with torch.enable_grad():
            for loss in _ctc_losses(model, calib):  # each forward refills `caught`
                loss.backward()
                for i, (x, y) in caught.items():  # skipping layer i moves its output from y back to x
                    scores[i] += abs(float((y.grad * (x - y.detach())).sum()))
                caught.clear()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return scores


@torch.no_grad()
def _skip_losses(model, calib: Calibration) -> list[float]:
    """Calibration CTC loss with each layer skipped, minus the loss with all layers."""
    enc = model.wav2vec2.encoder
    layers = list(enc.layers)
    full = sum(float(v) for v in _ctc_losses(model, calib))
    out = []
    try:
        for i in range(len(layers)):
            enc.layers = nn.ModuleList(layers[:i] + layers[i + 1:])
            out.append(sum(float(v) for v in _ctc_losses(model, calib)) - full)
    finally:
        enc.layers = nn.ModuleList(layers)
    return out


def _prune_layers(model, cfg: PruneConfig, calib: Calibration | None) -> dict:
    layers = model.wav2vec2.encoder.layers
    n = len(layers)
    scores = None
    if cfg.drop_layers:
        bad = [i for i in cfg.drop_layers if i >= n]
        if bad:
            raise ValueError(f"drop_layers {bad} out of range: the model has {n} layers")
        drop = sorted(cfg.drop_layers)
    else:
        scores = layer_scores(model, cfg.layer_criterion, calib)
        drop = sorted(int(i) for i in np.argsort(scores, kind="stable")[: cfg.num_drop_layers])
    if len(drop) >= n:
        raise ValueError(f"cannot drop {len(drop)} of {n} layers: at least one must stay")
    keep = [i for i in range(n) if i not in drop]
    model.wav2vec2.encoder.layers = nn.ModuleList(layers[i] for i in keep)
    model.config.num_hidden_layers = len(keep)
    return {"dropped": drop, "kept": keep, "by": "explicit" if cfg.drop_layers else cfg.layer_criterion,
            "scores": [round(s, 6) for s in scores] if scores else None}


# ----------------------------------------------------------------------------------------- widths


def _keep_counts(scores: list[torch.Tensor], ratio: float, scope: str, min_keep: int, round_to: int) -> list[int]:
    """How many units each layer keeps: the fraction per layer (local) or by a ranking across layers (global),
    then >= min_keep and rounded to a multiple of round_to, never above the layer's size."""
    sizes = [len(s) for s in scores]
    if scope == "local":
        counts = [n - int(ratio * n + 1e-9) for n in sizes]
    else:  # each layer's best min_keep units first, the rest of the budget by one ranking over all layers
        flat = torch.cat(scores).clone()
        k = len(flat) - int(ratio * len(flat) + 1e-9)
        chosen = torch.zeros(len(flat), dtype=torch.bool)
        start = 0
        for s in scores:
            chosen[start + torch.topk(s, min(min_keep, len(s))).indices] = True
            start += len(s)
        flat[chosen] = -torch.inf
        chosen[torch.topk(flat, max(0, k - int(chosen.sum()))).indices] = True
        counts = [int(c.sum()) for c in torch.split(chosen, sizes)]
    if round_to > 1:
        counts = [int(c / round_to + 0.5) * round_to for c in counts]
    return [min(n, max(c, min_keep)) for c, n in zip(counts, sizes)]


def _surgery_graph(model, cnn: bool):
    """torch-pruning's DependencyGraph of the model; CNN pruning refused where a GroupNorm mixes channels."""
    import torch_pruning as tp

    w2v = model.wav2vec2
    norms = [c.layer_norm for c in w2v.feature_extractor.conv_layers
             if isinstance(getattr(c, "layer_norm", None), nn.GroupNorm)]
    if cnn and any(g.num_groups != g.num_channels for g in norms):
        raise ValueError("CNN pruning supports per-channel GroupNorm only (num_groups == channels, Base style)")
    example = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    spec = getattr(w2v, "masked_spec_embed", None)  # SpecAugment vector, hidden-sized: never pruned here
    return tp.DependencyGraph().build_dependency(model, example_inputs=example, output_transform=lambda o: o.logits.sum(),
                                                 unwrapped_parameters=[(spec, 0)] if spec is not None else None)


def _apply_width_plans(model, dg, plans) -> None:
    """Remove (root module, torch-pruning fn, channel indices) groups, then fix what torch-pruning leaves: the
    attention's head count and embed_dim, per-channel GroupNorm groups, config.conv_dim."""
    for m, fn, idxs in plans:
        dg.get_pruning_group(m, fn, idxs=idxs).prune()
    w2v = model.wav2vec2
    for lyr in w2v.encoder.layers:  # torch-pruning changes tensors only; the attention's own bookkeeping follows
        a = lyr.attention
        inner = a.q_proj.out_features
        if not (a.k_proj.out_features == a.v_proj.out_features == a.out_proj.in_features == inner):
            raise RuntimeError("attention projections disagree after pruning (torch-pruning grouping changed?)")
        a.num_heads, a.embed_dim = inner // a.head_dim, inner
    convs = w2v.feature_extractor.conv_layers
    for c in convs:
        if isinstance(getattr(c, "layer_norm", None), nn.GroupNorm):
            c.layer_norm.num_groups = c.layer_norm.num_channels
    model.config.conv_dim = [c.conv.out_channels for c in convs]


def remove_units(model, gone: dict[str, list[list[int]]]) -> None:
    """Remove chosen units in place: gone[part][i] lists the units of layer i to remove (part "heads": head
    numbers of transformer layer i; "ffn": its FFN channels; "cnn": out channels of conv layer i). The same
    surgery as importance pruning with the choice made by the caller (learned gates); record_shapes after."""
    import torch_pruning as tp

    bad = sorted(set(gone) - set(PARTS))
    if bad:
        raise ValueError(f"unknown part(s) {', '.join(bad)}; known: {', '.join(PARTS)}")
    w2v = model.wav2vec2
    layers, convs = w2v.encoder.layers, w2v.feature_extractor.conv_layers
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    roots = {"heads": ([lyr.attention.q_proj for lyr in layers], tp.prune_linear_out_channels, head_dim),
             "ffn": ([lyr.feed_forward.intermediate_dense for lyr in layers], tp.prune_linear_out_channels, 1),
             "cnn": ([c.conv for c in convs], tp.prune_conv_out_channels, 1)}
    plans = []
    for part, per_layer in gone.items():
        mods, fn, unit = roots[part]
        if len(per_layer) != len(mods):
            raise ValueError(f"{part}: {len(per_layer)} index lists for {len(mods)} layers")
        for m, units in zip(mods, per_layer):
            n = (m.out_features if fn is tp.prune_linear_out_channels else m.out_channels) // unit
            if units and (len(set(units)) >= n or min(units) < 0 or max(units) >= n):
                raise ValueError(f"{part}: cannot remove units {sorted(units)} of {n} (>= 1 must stay)")
            if units:
                plans.append((m, fn, [u * unit + j for u in sorted(set(units)) for j in range(unit)]))
    if plans:
        _apply_width_plans(model, _surgery_graph(model, cnn=any(gone.get("cnn", []))), plans)


def _prune_width(model, ratios: dict[str, float], cfg: PruneConfig) -> dict:
    import torch_pruning as tp

    w2v = model.wav2vec2
    layers, convs = w2v.encoder.layers, w2v.feature_extractor.conv_layers
    dg = _surgery_graph(model, cnn=bool(ratios["cnn"]))
    # Taylor scores are loss changes, comparable across layers as they are; weight norms are not (fan-in and
    # scale differ per layer), so magnitude is divided by each layer's mean before a global ranking.
    if cfg.importance == "taylor":
        imp = tp.importance.GroupTaylorImportance(normalizer=None)
    else:
        imp = tp.importance.GroupMagnitudeImportance(p=2, normalizer="mean")

    def unit_scores(module, fn, n):
        with torch.no_grad():
            return imp(dg.get_pruning_group(module, fn, idxs=list(range(n)))).float().cpu()

    head_dim = model.config.hidden_size // model.config.num_attention_heads
    lin_out, conv_out = tp.prune_linear_out_channels, tp.prune_conv_out_channels
    # part -> (root modules, pruning fn, unit size in channels, min units kept, round_to)
    parts = {"heads": ([lyr.attention.q_proj for lyr in layers], lin_out, head_dim, 1, 1),
             "ffn": ([lyr.feed_forward.intermediate_dense for lyr in layers], lin_out, 1, cfg.round_to, cfg.round_to),
             "cnn": ([c.conv for c in convs], conv_out, 1, cfg.round_to, cfg.round_to)}
    plans, reached = [], {}
    for part, (roots, fn, unit, min_keep, round_to) in parts.items():
        if not ratios[part]:
            continue
        scores = []
        for m in roots:
            n = m.out_features if fn is lin_out else m.out_channels
            scores.append(unit_scores(m, fn, n).view(n // unit, unit).sum(1))
        counts = _keep_counts(scores, ratios[part], cfg.scope, min_keep, round_to)
        for m, s, k in zip(roots, scores, counts):
            gone = sorted(set(range(len(s))) - set(torch.topk(s, k).indices.tolist()))
            if gone:
                plans.append((m, fn, [u * unit + j for u in gone for j in range(unit)]))
        reached[part] = round(1 - sum(counts) / sum(len(s) for s in scores), 4)
    _apply_width_plans(model, dg, plans)
    return reached


def _ratios_for_target(model, cfg: PruneConfig, target_gflops: float, iterations: int = 12):
    """The smallest uniform `ratio` (for the parts left None) whose cut reaches `target_gflops`: bisection over
    trial cuts of copies (kept counts round and, with global scope, depend on the scores, so the cut itself is
    counted rather than a formula). Taylor scores come along as the copies' gradients."""
    import copy

    def trial(r: float) -> float:
        twin = copy.deepcopy(model)
        for a, b in zip(model.parameters(), twin.parameters()):
            b.grad = None if a.grad is None else a.grad.clone()
        _prune_width(twin, cfg.part_ratios(r), cfg)
        return model_gflops(twin)

    lo, hi = 0.0, 0.99
    if (least := trial(hi)) > target_gflops:
        raise ValueError(f"target_gflops_ratio {cfg.target_gflops_ratio} is out of reach by width pruning "
                         f"({least:.3f} GFLOPs at ratio 0.99); lower it or drop layers")
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if trial(mid) <= target_gflops else (mid, hi)
    return cfg.part_ratios(hi), {"target_gflops": round(target_gflops, 4), "ratio": hi, "trials": iterations + 1}


# ----------------------------------------------------------------------------------- unstructured


def sparsify(model, sparsity: float, scope: str = "global",
             ignore: tuple[str, ...] = ("lm_head", "pos_conv_embed")) -> dict:
    """Zero the smallest-|w| weights of every Linear/Conv1d not matched by `ignore` (permanent, in place)."""
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv1d)) and not any(p in n for p in ignore)]
    if not targets:
        raise ValueError("unstructured pruning found no Linear/Conv1d weights outside sparse_ignore")
    weighted_norm = [n for n, m in targets if parametrize.is_parametrized(m, "weight")]
    if weighted_norm:
        raise ValueError(f"{weighted_norm[0]} is weight-normed (its weight is computed); add it to sparse_ignore")
    with torch.no_grad():
        if scope == "global":
            flat = torch.cat([m.weight.abs().flatten() for _, m in targets])
            k = int(round(sparsity * flat.numel()))
            thr = torch.kthvalue(flat, k).values if k else flat.new_tensor(-1.0)
            del flat
            for _, m in targets:
                m.weight.mul_(m.weight.abs() > thr)
        else:
            for _, m in targets:
                w = m.weight.view(-1)
                k = int(round(sparsity * w.numel()))
                if k:
                    w[torch.topk(w.abs(), k, largest=False).indices] = 0
    per, zeros, total, csr, bitmask, dense = [], 0, 0, 0, 0, 0
    for _, m in targets:
        w = m.weight
        nz = int(torch.count_nonzero(w))
        rows, es = w.shape[0], w.element_size()
        zeros, total = zeros + w.numel() - nz, total + w.numel()
        per.append(1 - nz / w.numel())
        dense += w.numel() * es
        csr += nz * (es + 4) + (rows + 1) * 4          # values + int32 column indices + int32 row pointers
        bitmask += (w.numel() + 7) // 8 + nz * es      # 1 bit per weight + the nonzero values
    model_dense = sum(p.numel() * p.element_size() for p in model.parameters())
    model_zeros = sum(p.numel() - int(torch.count_nonzero(p)) for p in model.parameters())
    return {"sparsity_target": sparsity, "scope": scope, "modules": len(targets), "targeted_params": total,
            "sparsity_reached": round(zeros / total, 5),
            "sparsity_model": round(model_zeros / sum(p.numel() for p in model.parameters()), 5),
            "per_module_sparsity_range": [round(min(per), 4), round(max(per), 4)],
            "dense_bytes_model": model_dense, "dense_bytes_targeted": dense,
            "csr_bytes_targeted": csr, "bitmask_bytes_targeted": bitmask,
            "model_bytes_if_stored_sparse": model_dense - dense + min(csr, bitmask),
            "note": "weights stay dense in model.safetensors and in every runtime here: file size and latency "
                    "are unchanged; the csr/bitmask figures are what a sparse store would take"}
