"""Shared fixtures: a tiny synthesized corpus and tiny real wav2vec2 models (both Large- and Base-style).

Everything is built once per test session in a temp dir; nothing is mocked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from w2vc.core.models import VOCAB, make_processor
from w2vc.data.datasets import load_dataset
from w2vc.data.synth import SynthConfig, synthesize_corpus

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_config(norm: str = "layer", **kw) -> Wav2Vec2Config:
    """~0.1M parameters, real conv strides (so frame rates match the real models)."""
    d = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
             feat_extract_norm=norm, do_stable_layer_norm=norm == "layer", conv_bias=norm == "layer",
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=len(VOCAB),
             pad_token_id=0, ctc_loss_reduction="mean", ctc_zero_infinity=True, mask_time_prob=0.0)
    d.update(kw)
    return Wav2Vec2Config(**d)


def save_tiny(path, norm: str = "layer", seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(tiny_config(norm, **kw)).eval()
    model.save_pretrained(path)
    make_processor(norm).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """~1.5 min of train audio, a few dev/test utterances, noisy test copies, 6 Flite utterances."""
    root = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(root, SynthConfig(hours=0.03, seed=7, unseen_synth_utterances=6, workers=2))
    return root


@pytest.fixture(scope="session")
def tiny_layer_model(tmp_path_factory):
    """A Large-style (layer-norm) tiny model directory with processor files."""
    return save_tiny(tmp_path_factory.mktemp("tiny_layer"), "layer")


@pytest.fixture(scope="session")
def tiny_group_model(tmp_path_factory):
    """A Base-style (group-norm) tiny model directory with processor files."""
    return save_tiny(tmp_path_factory.mktemp("tiny_group"), "group")


@pytest.fixture(scope="session")
def long_corpus(tiny_corpus, tmp_path_factory):
    """A corpus root with the tiny corpus's test split and a test_long split of 2 recordings made of it
    (each test utterance used once), with the `parts` column another engineer's corpus will have."""
    root = tmp_path_factory.mktemp("long_corpus")
    (root / "manifests").mkdir()
    rows = [json.loads(x) for x in (tiny_corpus / "manifests" / "test.jsonl").read_text().splitlines()]
    for r in rows:
        r["path"] = str(tiny_corpus / r["path"])
    (root / "manifests" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_dataset(root / "manifests" / "test.jsonl")
    groups = [list(range(0, len(rows) // 2 + 1)), list(range(len(rows) // 2 + 1, len(rows)))]
    long_rows = []
    for k, g in enumerate(groups):
        f = root / "long" / f"long-{k}.wav"
        f.parent.mkdir(exist_ok=True)
        gap = np.zeros(4000, dtype=np.float32)  # 0.25 s between utterances
        sf.write(f, np.concatenate([x for i in g for x in (ds.audio[i], gap)][:-1]), 16000)
        long_rows.append({"id": f"long-{k}", "path": f"long/{f.name}", "text": " ".join(ds.texts[i] for i in g),
                          "parts": [ds.ids[i] for i in g]})
    (root / "manifests" / "test_long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long_rows))
    return root
