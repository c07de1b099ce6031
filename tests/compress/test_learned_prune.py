"""Learned structured pruning on tiny real wav2vec2 models and the tiny synthesized corpus: the Lagrangian
reaches the cost target, the cut model costs what the gates expected and computes what the gated one did,
the output loads and runs, an interrupted run resumes to the same gates, and the input stays untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from tests.conftest import save_tiny
from w2vc.compress.learned_prune import Gates, LearnedPruneConfig, attach_gates, cut_model, learned_prune
from w2vc.core.artifact import Artifact
from w2vc.core.config import ConfigError
from w2vc.core.load import load
from w2vc.core.models import load_pretrained
from w2vc.core.step import STEPS, StepContext
from w2vc.data.augment import AugmentConfig
from w2vc.data.datasets import load_dataset, resolve_split
from w2vc.eval.flops import count_torch_flops

SHAPE = dict(num_attention_heads=4, num_hidden_layers=4)
TARGET = 0.5
GATE_STEPS = 60


def _files_hash(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()


def _cfg(corpus, **kw) -> LearnedPruneConfig:
    d = dict(target_gflops_ratio=TARGET, data=str(corpus), gate_steps=GATE_STEPS, target_warmup_steps=10,
             lr=1e-3, warmup_steps=2, lr_gates=1.0, lr_lambda=0.3, gate_init_drop=0.2, distill_steps=4, distill_lr=1e-3,
             distill_warmup_steps=1, batch_seconds=4, eval_every=GATE_STEPS, bf16=False, device="cpu",
             augment=AugmentConfig.off())
    d.update(kw)
    return LearnedPruneConfig(**d)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("lp_teacher"), "layer", **SHAPE)


@pytest.fixture(scope="module")
def run(teacher, tiny_corpus, tmp_path_factory):
    """One uninterrupted run (gated phase, cut, distillation phase), with the input's hash before it."""
    before = _files_hash(teacher)
    out = tmp_path_factory.mktemp("lp_run")
    art = learned_prune(Artifact.open(teacher), _cfg(tiny_corpus), out, StepContext(progress=False))
    return art, out, before


def test_expected_gflops_reach_the_target(run):
    art, _, _ = run
    g = art.provenance["report"]["gated"]
    assert g["steps"] == GATE_STEPS
    assert g["expected_gflops"] == pytest.approx(TARGET * g["full_gflops"], rel=0.10)


def test_cut_model_costs_what_the_gates_expected_and_computes_what_they_did(run):
    art, _, _ = run
    g = art.provenance["report"]["gated"]
    model, _ = load_pretrained(art.path)
    x = torch.randn(1, 48000, generator=torch.Generator().manual_seed(0))
    counted = count_torch_flops(model.eval(), x)[0] / 1e9
    assert counted == pytest.approx(g["expected_gflops"], rel=0.10)
    assert counted < 0.6 * g["full_gflops"]
    assert g["surgery_max_logit_diff"] < 1e-4  # 0/1 gates and the cut agree
    assert g["gflops"] == pytest.approx(counted, rel=0.01)


def test_output_loads_runs_and_keeps_its_lineage(run, teacher, tiny_corpus):
    art, _, before = run
    assert _files_hash(teacher) == before  # the input artifact is only read
    assert art.provenance["step"] == "learned_prune" and art.provenance["lineage"][-1] == "learned_prune"
    assert art.provenance["parent_hash"] == Artifact.open(teacher).hash
    assert art.provenance["report"]["distill"]["steps"] == 4
    dev = load_dataset(resolve_split(tiny_corpus, "dev"), limit=3)
    hyps = load(art).transcribe([a[:32000] for a in dev.audio])
    assert hyps and len(hyps) == len(dev.audio) and all(isinstance(h, str) for h in hyps)


def test_recover_after_the_cut_takes_its_hidden_map_from_the_cut(run, teacher, tiny_corpus, tmp_path):
    from w2vc.compress.distill import RecoverConfig, recover

    art, _, _ = run
    cfg = RecoverConfig(data=str(tiny_corpus), steps=2, lr=1e-4, warmup_steps=1, batch_seconds=4, eval_every=2,
                        alpha_hidden=1.0, bf16=False, device="cpu", augment=AugmentConfig.off())
    ctx = StepContext(root=Artifact.open(teacher), progress=False)
    out = recover(art, cfg, tmp_path / "rec", ctx)
    want = [list(p) for p in art.provenance["report"]["gated"]["hidden_layer_map_after"]]
    assert [list(p) for p in out.provenance["params"]["hidden_layer_map"]] == want
    with pytest.raises(ValueError, match="no learned cut"):  # a model that recorded no cut needs the map given
        recover(Artifact.open(teacher), cfg, tmp_path / "rec2", ctx)


def test_rerun_returns_the_finished_artifact(run, teacher, tiny_corpus):
    art, out, _ = run
    again = learned_prune(Artifact.open(teacher), _cfg(tiny_corpus), out, StepContext(progress=False))
    assert again.path == art.path and again.hash == art.hash


def test_resume_after_interruption_gives_the_same_gates(run, teacher, tiny_corpus, tmp_path):
    _, out, _ = run
    cfg = _cfg(tiny_corpus, distill_steps=0)
    assert learned_prune(Artifact.open(teacher), cfg, tmp_path, StepContext(progress=False), stop_at_step=15) is None
    assert (tmp_path / "gated" / "last.pt").exists() and not (tmp_path / "pruned").exists()
    art = learned_prune(Artifact.open(teacher), cfg, tmp_path, StepContext(progress=False))
    whole = torch.load(out / "gated" / "last.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "gated" / "last.pt", weights_only=True)["model"]
    keys = [k for k in whole if ".gates." in k or "lambda" in k]
    assert keys and all(torch.equal(whole[k], resumed[k]) for k in keys)
    cut = Artifact.open(out / "pruned").provenance["report"]
    assert art.provenance["report"]["gated"]["num_heads"] == cut["num_heads"]


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_gated_model_with_closed_gates_equals_the_cut_model(norm, tmp_path):
    """No training: random gates, some closed in every structure; hooks in eval mode vs the physical cut."""
    path = save_tiny(tmp_path / "m", norm, **SHAPE)
    model, proc = load_pretrained(path)
    gates = Gates(model, _cfg(tmp_path, lr=1.0, lr_gates=1.0))
    with torch.no_grad():
        for k, th in gates.theta.items():
            th.copy_(torch.randn(th.shape, generator=torch.Generator().manual_seed(len(k))) * 4)
        gates.theta["layers"].copy_(torch.tensor([5.0, -5.0, 5.0, 5.0]))
    handles = attach_gates(model, gates)
    summary: dict = {}
    cut_model(model, proc, gates, handles, model.config, (2, 4), Artifact.open(path), tmp_path / "cut",
              _cfg(tmp_path), summary)
    assert summary["surgery_max_logit_diff"] < 1e-4
    assert summary["kept_layers"] == [0, 2, 3]
    assert summary["hidden_layer_map_after"] == [(1, 2), (3, 4)]  # layer 1 gone: its output is layer 0's
    cut, _ = load_pretrained(tmp_path / "cut")
    assert len(cut.wav2vec2.encoder.layers) == 3
    assert sum(cut.config.conv_dim) < 7 * 16 and min(cut.config.conv_dim) >= 1


def test_config_round_trip_registry_and_refusals(tmp_path):
    cfg = _cfg(tmp_path, structures=("heads", "ffn"), hidden_layers=(2, 4))
    assert LearnedPruneConfig.from_dict(cfg.to_dict()) == cfg
    assert STEPS["learned_prune"].config is LearnedPruneConfig
    for bad in (dict(target_gflops_ratio=None), dict(target_params_ratio=0.5), dict(target_gflops_ratio=1.5),
                dict(structures=("heads", "nope")), dict(gate_l=0.1), dict(lr_gates=0.0), dict(alpha_ctc=-1.0)):
        with pytest.raises(ValueError):
            _cfg(tmp_path, **bad)
    with pytest.raises(ConfigError):
        LearnedPruneConfig.from_dict({"target_gflops_ratio": 0.5, "ratio": 0.5})
