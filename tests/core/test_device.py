"""Device and precision decisions: pure functions, so every CUDA branch is checked on a CPU-only machine; a real
CUDA run (train on the GPU, reload the checkpoint on the CPU) where one is visible."""

from __future__ import annotations

import json

import pytest
import torch

from w2vc.core.device import (
    autocast_dtype,
    dist_backend,
    needs_grad_scaler,
    plan,
    resolve_device,
    to_cpu,
)


def test_resolve_device_prefers_cuda_and_refuses_a_missing_one():
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    assert resolve_device("cuda", cuda_available=True) == "cuda"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu", cuda_available=False)


def test_cpu_precision_is_the_trainers_old_rule():
    """bf16=None follows the CPU's bf16 instructions; an explicit flag wins; fp32 means no autocast at all."""
    assert autocast_dtype("cpu", None, cuda_bf16_supported=True, cpu_bf16=True) == torch.bfloat16
    assert autocast_dtype("cpu", None, cuda_bf16_supported=True, cpu_bf16=False) is None
    assert autocast_dtype("cpu", True, cuda_bf16_supported=False, cpu_bf16=False) == torch.bfloat16
    assert autocast_dtype("cpu", False, cuda_bf16_supported=True, cpu_bf16=True) is None


def test_cuda_precision_bf16_where_supported_else_fp16_with_a_scaler():
    assert autocast_dtype("cuda", None, cuda_bf16_supported=True) == torch.bfloat16
    assert autocast_dtype("cuda", None, cuda_bf16_supported=False) == torch.float16
    assert autocast_dtype("cuda", True, cuda_bf16_supported=True) == torch.bfloat16
    assert autocast_dtype("cuda", False, cuda_bf16_supported=True) is None
    with pytest.raises(ValueError, match="no bf16 support"):
        autocast_dtype("cuda", True, cuda_bf16_supported=False)
    assert needs_grad_scaler("cuda", torch.float16)
    assert not needs_grad_scaler("cuda", torch.bfloat16) and not needs_grad_scaler("cuda", None)
    assert not needs_grad_scaler("cpu", torch.float16)


def test_backend_nccl_for_gpus_gloo_for_cpus():
    assert dist_backend("cuda") == "nccl" and dist_backend("cpu") == "gloo"


def test_cpu_plan_and_its_autocast():
    p = plan("cpu", bf16=False)
    assert (p.type, p.amp_dtype, p.grad_scaler, p.backend) == ("cpu", None, False, "gloo")
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")
    with plan("cpu", bf16=True).autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    if not torch.cuda.is_available():
        assert plan("auto", bf16=False).type == "cpu"
        with pytest.raises(ValueError, match="no CUDA GPU"):
            plan("cuda")


def test_to_cpu_keeps_the_structure_of_an_optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sd = to_cpu(opt.state_dict())
    assert sd["param_groups"][0]["betas"] == opt.state_dict()["param_groups"][0]["betas"]
    assert all(v.device.type == "cpu" for s in sd["state"].values() for v in s.values())
    opt.load_state_dict(sd)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_checkpoint_resumes_on_cpu(tiny_corpus, tmp_path):
    """Mixed precision on the GPU; the checkpoint holds CPU tensors, so a CPU process continues the run."""
    from tests.core.test_train import _cfg, _tiny_init
    from w2vc.train import train

    out = tmp_path / "run"
    train(_cfg(tiny_corpus, out, device="cuda", bf16=None, steps=8, eval_every=4), progress=False,
          model_init=_tiny_init(), stop_at_step=4)
    ck = torch.load(out / "last.pt", weights_only=True, map_location=None)
    assert all(v.device.type == "cpu" for v in ck["model"].values())
    assert json.loads(ck["state"])["step"] == 4
    res = train(_cfg(tiny_corpus, out, device="cpu", bf16=False, steps=8, eval_every=4), resume=True,
                progress=False, model_init=_tiny_init())
    assert res["steps"] == 8 and torch.isfinite(torch.tensor(res["history"][-1]["loss"]))


def test_bf16_runs_keep_the_positional_conv_in_fp32():
    """With the base-s student's positional conv (192 channels, 16 groups: 12 per group, which torch's CPU bf16
    grouped conv gets wrong), bf16 autocast through TorchTranscriber, a bf16-weights artifact and a deep copy
    all give the fp32 logits within bf16 rounding; the wrap is idempotent."""
    import copy

    import numpy as np
    from transformers import Wav2Vec2ForCTC

    from tests.conftest import tiny_config
    from w2vc.core.models import make_processor
    from w2vc.core.runnable import TorchTranscriber
    from w2vc.core.runtime import apply_runtime, pos_conv_in_fp32

    torch.manual_seed(0)
    cfg = tiny_config("group", hidden_size=192, num_attention_heads=3, num_hidden_layers=1,
                      num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)
    model = Wav2Vec2ForCTC(cfg).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 48000)).astype(np.float32))
    with torch.no_grad():
        ref = model(x).logits

    def rel(logits) -> float:
        return float((torch.as_tensor(logits).float() - ref).norm() / ref.norm())

    tr = TorchTranscriber(copy.deepcopy(model), make_processor("group"), autocast_bf16=True)
    assert rel(tr.logits(x.numpy(), None)) < 0.05
    bf16 = apply_runtime(copy.deepcopy(model), {"transform": "bf16"})
    assert bf16.wav2vec2.encoder.layers[0].attention.q_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert rel(bf16(x.bfloat16()).logits) < 0.05
    twice = pos_conv_in_fp32(pos_conv_in_fp32(copy.deepcopy(model)))
    clone = copy.deepcopy(twice)  # the wrap follows the copy, not the original module
    assert clone.wav2vec2.encoder.pos_conv_embed.conv.forward.__self__ is clone.wav2vec2.encoder.pos_conv_embed.conv
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert rel(clone(x).logits) < 0.05
