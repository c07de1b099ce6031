"""Export: tiny real models → ONNX bundles that optimum loads, parity-checked against PyTorch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from w2vc.compress.export import ExportConfig, ParityError, check_parity, export_onnx
from w2vc.compress.quantize import QuantizeConfig, quantize
from w2vc.core.artifact import PROCESSOR_FILES, Artifact, dir_hash
from w2vc.core.load import load
from w2vc.data.datasets import load_dataset, resolve_split


@pytest.fixture(scope="module")
def exported(tiny_layer_model, tiny_corpus, tmp_path_factory):
    src = Artifact.open(tiny_layer_model)
    before = dir_hash(src.path)
    cfg = ExportConfig(parity_data=str(tiny_corpus), parity_count=3)
    out = export_onnx(src, cfg, tmp_path_factory.mktemp("export") / "onnx", metrics={"wer_test": 0.123})
    assert dir_hash(src.path) == before  # the input is never modified
    return src, out, cfg


def test_config_round_trip_and_validation():
    cfg = ExportConfig(opset=17, parity_data="data/corpus", parity_count=4, min_agreement=0.8)
    assert ExportConfig.from_dict(cfg.to_dict()) == cfg
    assert ExportConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown export option.*opsett"):
        ExportConfig.from_dict({"opsett": 17})
    with pytest.raises(ValueError, match="min_agreement"):
        ExportConfig(min_agreement=1.5)
    with pytest.raises(ValueError, match="at least one utterance"):
        ExportConfig(parity_random=0)
    with pytest.raises(TypeError):
        ExportConfig(17)  # keyword-only


def test_export_bundle(exported):
    src, out, _ = exported
    assert out.format == "onnx" and (out.path / "model.onnx").exists()
    for f in ("config.json", "preprocessor_config.json", "vocab.json", "README.md", "w2vc.json"):
        assert (out.path / f).exists(), f
    rep = out.provenance["report"]
    assert out.provenance["step"] == "export" and out.provenance["parent_hash"] == src.hash
    assert rep["graph"]["inputs"] == ["input_values"] and rep["graph"]["outputs"] == ["logits"]
    # weight_norm folded: every Conv weight (pos_conv_embed's included) is an initializer
    assert "wav2vec2.encoder.pos_conv_embed.conv" in rep["weight_norm_folded"]
    assert rep["graph"]["conv_weights_initializers"] is True
    p = rep["parity"]
    assert p["n"] >= 3 and p["transcript_agreement"] == 1.0 and p["max_abs_logit_diff"] < 1e-4
    card = (out.path / "README.md").read_text()
    assert "## Parity" in card and "max_abs_logit_diff" in card and "| wer_test | 0.123 |" in card


def test_export_group_norm_model(tiny_group_model, tmp_path):
    out = export_onnx(Artifact.open(tiny_group_model), ExportConfig(parity_random=2), tmp_path / "onnx")
    assert out.provenance["report"]["parity"]["max_abs_logit_diff"] < 1e-4


def test_parity_raises_on_corrupted_weights(exported, tmp_path):
    src, out, cfg = exported
    bad = tmp_path / "bad"
    shutil.copytree(out.path, bad)
    m = onnx.load(str(bad / "model.onnx"))
    rng = np.random.default_rng(0)
    for init in m.graph.initializer:  # perturb every MatMul weight by ~20 %
        w = numpy_helper.to_array(init)
        if w.ndim == 2:
            w = (w * (1 + 0.2 * rng.standard_normal(w.shape))).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(m, str(bad / "model.onnx"))
    assert check_parity(src, out.path, cfg)["max_abs_logit_diff"] < 1e-4  # the good one still passes
    with pytest.raises(ParityError, match="parity check failed"):
        check_parity(src, bad, cfg)


def test_failed_parity_raises_and_leaves_nothing(tiny_layer_model, tmp_path):
    out = tmp_path / "onnx"
    with pytest.raises(ParityError):
        export_onnx(Artifact.open(tiny_layer_model), ExportConfig(max_logit_diff=1e-12), out)
    assert not out.exists()


def test_optimum_loads_bundle_without_w2vc(exported, tiny_corpus, tmp_path):
    """A fresh process with only optimum + transformers gets the transcript w2vc's OnnxTranscriber gets."""
    _, out, _ = exported
    audio = load_dataset(resolve_split(tiny_corpus, "test"), limit=2).audio
    for i, a in enumerate(audio):
        np.save(tmp_path / f"a{i}.npy", a)
    script = (
        "import sys, json, numpy as np\n"
        "from optimum.onnxruntime import ORTModelForCTC\n"
        "from transformers import Wav2Vec2Processor\n"
        "d, files = sys.argv[1], sys.argv[2:]\n"
        "model = ORTModelForCTC.from_pretrained(d)\n"
        "proc = Wav2Vec2Processor.from_pretrained(d)\n"
        "out = []\n"
        "for f in files:\n"
        "    x = proc(np.load(f), sampling_rate=16000, return_tensors='np').input_values\n"
        "    out.append(proc.batch_decode(model(input_values=x).logits.argmax(-1))[0])\n"
        "assert 'w2vc' not in sys.modules\n"
        "print(json.dumps(out))\n")
    files = [str(tmp_path / f"a{i}.npy") for i in range(len(audio))]
    res = subprocess.run([sys.executable, "-c", script, str(out.path), *files], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    ours = load(out.path, threads=1).transcribe(audio)
    assert theirs == ours


def test_export_bf16_artifact_as_fp32(tiny_layer_model, tmp_path):
    bf16 = quantize(Artifact.open(tiny_layer_model), QuantizeConfig.bf16(), tmp_path / "bf16")
    out = export_onnx(bf16, ExportConfig(parity_random=2), tmp_path / "onnx")
    rep = out.provenance["report"]
    assert rep["source_dtype"] == "bfloat16" and rep["exported_dtype"] == "float32"
    assert "transcript_agreement_vs_bfloat16" in rep["parity"]
    m = onnx.load(str(out.path / "model.onnx"))
    assert {i.data_type for i in m.graph.initializer if len(i.dims) == 2} == {onnx.TensorProto.FLOAT}


def test_export_refuses_wrong_inputs(exported, tiny_layer_model, tmp_path):
    _, out, _ = exported
    with pytest.raises(ValueError, match=r"export takes torch, torch\+runtime artifacts; .* is onnx"):
        export_onnx(out, ExportConfig(), tmp_path / "x")
    q = quantize(Artifact.open(tiny_layer_model), QuantizeConfig.torch_dynamic_int8(), tmp_path / "q")
    with pytest.raises(ValueError, match="ort_dynamic_int8"):
        export_onnx(q, ExportConfig(), tmp_path / "y")
    assert set(PROCESSOR_FILES) & {p.name for p in out.path.iterdir()}
