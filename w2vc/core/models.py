"""Model presets and the character vocabulary, in one place.

`large` / `base` are the true Hugging Face shapes (hub ids when reachable, random weights for cost-only
use). `large-s` / `base-s` are the offline shapes trained here: scaled down, but they keep the family
traits (Large: stable layer norm + layer-norm feature encoder, deeper and wider; Base: group-norm feature
encoder) and the Large/Base parameter ratio (~3.3x).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

from w2vc.core.artifact import Artifact, write_provenance
from w2vc.core.shapes import load_pruned

# blank = pad = 0, as in facebook/wav2vec2-base-960h; "|" is the word delimiter.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "'"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]

_CONV = dict(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
_COMMON = dict(vocab_size=len(VOCAB), pad_token_id=0, bos_token_id=1, eos_token_id=2,
               ctc_loss_reduction="mean", ctc_zero_infinity=True, mask_time_prob=0.05)


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict
    hub_id: str | None = None
    about: str = ""

    def wav2vec2_config(self) -> Wav2Vec2Config:
        return Wav2Vec2Config(**self.config)


PRESETS: dict[str, Preset] = {
    "large-s": Preset("large-s", dict(
        hidden_size=256, num_hidden_layers=8, num_attention_heads=4, intermediate_size=1024,
        conv_dim=(128,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.05, feat_proj_dropout=0.05,
        final_dropout=0.05, layerdrop=0.0, **_CONV, **_COMMON),
        about="offline teacher: Large-style (stable layer norm, layer-norm CNN), 8x256, FFN 1024"),
    "base-s": Preset("base-s", dict(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=640,
        conv_dim=(128,) * 7, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.05, feat_proj_dropout=0.05,
        final_dropout=0.05, layerdrop=0.0, **_CONV, **_COMMON),
        about="offline student: Base-style (group-norm CNN), 4x192, FFN 640"),
    "large": Preset("large", dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        conv_dim=(512,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
        **_CONV, **_COMMON), hub_id="facebook/wav2vec2-large-960h-lv60-self",
        about="true Large shape (317M)"),
    "base": Preset("base", dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=(512,) * 7, feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
        **_CONV, **_COMMON), hub_id="facebook/wav2vec2-base-960h",
        about="true Base shape (95M)"),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}") from None


def make_processor(feat_extract_norm: str = "layer") -> Wav2Vec2Processor:
    """Character tokenizer + feature extractor; group-norm models take no attention mask (HF convention)."""
    with tempfile.TemporaryDirectory() as td:
        vocab_file = Path(td) / "vocab.json"
        vocab_file.write_text(json.dumps({c: i for i, c in enumerate(VOCAB)}))
        tok = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", word_delimiter_token="|", do_lower_case=False)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=feat_extract_norm == "layer")
    return Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok)


def new_model(preset: str, seed: int = 0) -> tuple[Wav2Vec2ForCTC, Wav2Vec2Processor]:
    """A randomly initialised model of a preset shape with its processor."""
    import torch

    torch.manual_seed(seed)
    p = get_preset(preset)
    model = Wav2Vec2ForCTC(p.wav2vec2_config())
    return model, make_processor(p.config["feat_extract_norm"])


def load_pretrained(name_or_path: str | os.PathLike, **kw) -> tuple[Wav2Vec2ForCTC, Wav2Vec2Processor]:
    """A local save_pretrained directory or a hub id (never with remote code).

    Structurally pruned directories (config.json has `w2vc_pruned_shapes`: per-layer head counts and FFN
    widths Wav2Vec2Config cannot express) are rebuilt to those shapes before their weights load.
    """
    src = str(name_or_path)
    if not Path(src).exists() and "/" not in src:
        raise FileNotFoundError(f"model not found: {src} (give a directory, a hub id, or a preset: "
                                f"{', '.join(PRESETS)})")
    cfg_file = Path(src) / "config.json"
    if cfg_file.is_file() and "w2vc_pruned_shapes" in json.loads(cfg_file.read_text()):
        model = load_pruned(src, **kw)
    else:
        model = Wav2Vec2ForCTC.from_pretrained(src, trust_remote_code=False, **kw)
    processor = Wav2Vec2Processor.from_pretrained(src, trust_remote_code=False)
    return model, processor


def pack_fp16(src: str | os.PathLike, dst: str | os.PathLike, note: str = "") -> Path:
    """A trained model as fp16 safetensors + processor (what the repository commits; loads as fp32 by default).

    Provenance: step `pack` with the trained directory as parent; the trainer's record (its exact config,
    hence its command) is kept whole under `source_provenance`."""
    import shutil

    import torch

    parent = Artifact.open(src)
    model, processor = load_pretrained(src)
    out = Path(dst)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    write_provenance(tmp, "pack", {"dtype": "float16", "note": note}, parent,
                     source_provenance=parent.provenance)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
