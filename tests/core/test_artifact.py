"""The core: artifacts know their kind, one loader runs every kind, steps refuse kinds they cannot handle,
one provenance writer (hash + parent) for steps, training and packing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from w2vc.compress.distill import DistillConfig, distill
from w2vc.compress.prune import PruneConfig, prune
from w2vc.compress.quantize import QuantizeConfig, quantize
from w2vc.core.artifact import Artifact, Kind, dir_hash
from w2vc.core.load import load, load_torch
from w2vc.core.models import pack_fp16
from w2vc.core.step import STEPS, StepContext
from w2vc.data.augment import AugmentConfig


@pytest.fixture(scope="module")
def bf16_artifact(tiny_layer_model, tmp_path_factory):
    return quantize(Artifact.open(tiny_layer_model), QuantizeConfig.bf16(), tmp_path_factory.mktemp("q") / "bf16")


def test_kinds_are_read_once_from_the_directory(tiny_layer_model, bf16_artifact):
    plain = Artifact.open(tiny_layer_model)
    assert plain.kind is Kind.TORCH and plain.transform is None and plain.format == "torch"
    assert bf16_artifact.kind is Kind.TORCH_RUNTIME and bf16_artifact.transform == "bf16"
    assert bf16_artifact.model_file.name == "model.safetensors"


def test_one_loader_applies_the_runtime_transform(bf16_artifact):
    model, _ = load_torch(bf16_artifact)
    assert model.dtype == torch.bfloat16
    assert load(bf16_artifact.path).model.dtype == torch.bfloat16
    fp32, _ = load_torch(bf16_artifact, dtype=torch.float32)  # an explicit dtype wins for float transforms
    assert fp32.dtype == torch.float32


@pytest.mark.parametrize("via_registry", [False, True])
def test_pruning_a_bf16_artifact_is_refused_in_one_line(bf16_artifact, tmp_path, via_registry):
    cfg = PruneConfig(heads=0.5)
    with pytest.raises(ValueError) as e:
        if via_registry:  # the sweep's path: the registered step checks the declared kinds
            STEPS["prune"](bf16_artifact, cfg, tmp_path / "p", StepContext(root=bf16_artifact))
        else:
            prune(bf16_artifact, cfg, tmp_path / "p")
    msg = str(e.value)
    assert "\n" not in msg and "torch+runtime (bf16)" in msg and "prune its fp32 parent" in msg
    assert not (tmp_path / "p").exists()  # nothing half-made, in particular no silent fp32 result


def test_distilling_into_a_quantized_student_is_refused(bf16_artifact, tiny_layer_model, tiny_corpus, tmp_path):
    cfg = DistillConfig(student=str(bf16_artifact.path), init="checkpoint", data=str(tiny_corpus), steps=1,
                        bf16=False, augment=AugmentConfig.off())
    with pytest.raises(ValueError, match=r"distill \(student\) takes torch artifacts; .* is torch\+runtime"):
        distill(Artifact.open(tiny_layer_model), cfg, tmp_path / "d", StepContext(progress=False))


def test_quantizing_twice_is_refused(bf16_artifact, tmp_path):
    with pytest.raises(ValueError, match="already quantized"):
        quantize(bf16_artifact, QuantizeConfig.torch_dynamic_int8(), tmp_path / "q")


def test_registered_steps_take_their_config_type(tiny_layer_model, tmp_path):
    with pytest.raises(TypeError, match="step prune takes a PruneConfig"):
        STEPS["prune"](Artifact.open(tiny_layer_model), QuantizeConfig.bf16(), tmp_path / "x")


def test_step_config_gets_declared_data_from_the_runner_only_where_needed():
    assert STEPS["quantize"].make_config({"method": "ort_static_int8"}, "corpusX").calibration_data == "corpusX"
    assert STEPS["quantize"].make_config({"method": "ort_dynamic_int8"}, "corpusX").calibration_data is None
    with pytest.raises(ValueError, match="needs calibration_data"):
        STEPS["quantize"].make_config({"method": "ort_static_int8"}, None)
    assert STEPS["distill"].make_config({"init": "scratch"}, "c").data == "c"


def test_provenance_of_steps_and_packing_has_hash_and_parent(tiny_layer_model, bf16_artifact, tmp_path):
    src = Artifact.open(tiny_layer_model)
    prov = bf16_artifact.provenance
    assert prov["hash"] == dir_hash(bf16_artifact.path) and prov["parent_hash"] == src.hash
    assert prov["lineage"][-1] == "quantize"
    packed = Artifact.open(pack_fp16(tiny_layer_model, tmp_path / "packed", note="t"))
    p = packed.provenance
    assert p["step"] == "pack" and p["hash"] == dir_hash(packed.path) and p["parent_hash"] == src.hash
    assert p["source_provenance"] == src.provenance
    model, _ = load_torch(packed)  # fp16 storage, fp32 compute
    ref, _ = load_torch(src)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32))
    with torch.no_grad():
        assert model.dtype == torch.float32
        assert torch.allclose(model(x).logits, ref(x).logits, atol=1e-2)


def test_committed_models_carry_their_hash_and_lineage():
    from pathlib import Path

    lineages = {"teacher-large-s": ["train", "pack"], "student-base-s": ["train", "pack"],
                "teacher-large-s-v2": ["train", "pack"] * 4,  # v2-6, from v2-5, from v2-1, from teacher-large-s
                "student-base-s-v2": ["train", "pack"] * 3}  # v2-s2, from v2-s1, from student-base-s
    for name, lineage in lineages.items():
        d = Path(__file__).resolve().parents[2] / "models" / name
        prov = json.loads((d / "w2vc.json").read_text())
        assert prov["hash"] == dir_hash(d) and prov["lineage"] == lineage
        assert prov["source_provenance"]["step"] == "train"
