"""Accuracy-controlled quantization on real tiny models and real (synthesized) audio: the groups, a search
that meets its budget (checked independently on the shipped artifact), memoized evaluations, the sweep
hook and the config errors.

Random tiny models sit near 100 % WER, where a WER budget alone is met by chance; the KL budget (a third of
the all-quantized graph's) is what forces fallbacks here, and it is checked with an independent KL.
"""

from __future__ import annotations

import json
from dataclasses import replace

import onnx
import pytest
import torch
import yaml

from w2vc.cli import main
from w2vc.compress.export import ExportConfig, export_onnx
from w2vc.compress.quantize import QuantizeConfig, matches, quantize, quantized_nodes
from w2vc.core.artifact import Artifact
from w2vc.core.config import ConfigError
from w2vc.core.load import load
from w2vc.core.runnable import pad_batch
from w2vc.data.datasets import load_dataset, resolve_split
from w2vc.eval.evaluate import evaluate_model, load_eval_data
from w2vc.experiments.accuracy_control import AccuracyControl, Search, check_final, derive_groups, search
from w2vc.experiments.accuracy_latency import method_default_groups
from w2vc.experiments.config import Candidate, parse_config
from w2vc.experiments.runner import build_candidate

DEV = 4  # the tiny corpus has fewer dev utterances: all of them


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory, tiny_group_model, tiny_layer_model):
    root = tmp_path_factory.mktemp("acc")
    return {norm: export_onnx(Artifact.open(src), ExportConfig(parity_random=2), root / norm)
            for norm, src in (("group", tiny_group_model), ("layer", tiny_layer_model))}


def _static(corpus) -> QuantizeConfig:
    return QuantizeConfig(method="ort_static_int8", calibration_data=str(corpus), calibration_count=2,
                          keep_fp32=())


def test_groups_partition_the_quantized_nodes(onnx_models, tiny_corpus):
    f = onnx_models["layer"].model_file
    for q in (_static(tiny_corpus), QuantizeConfig(method="ort_dynamic_int8", keep_fp32=()),
              QuantizeConfig(method="ort_int4", keep_fp32=())):
        nodes = quantized_nodes(f, q)
        groups = derive_groups(f, q)
        assert sorted(n for g in groups for n in g.nodes) == sorted(n for n, _ in nodes)
        for g in groups:  # each group's keep_fp32 patterns select exactly its own nodes
            assert {n for n, p in nodes if any(matches(n, p, pat) for pat in g.patterns)} == set(g.nodes), g
        names = [g.name for g in groups]
        if q.method == "ort_static_int8":
            assert names == [f"conv.{i}" for i in range(7)] + [
                "feature_projection", "pos_conv", "layer.0.attention", "attention_scores", "layer.0.ffn",
                "layer.1.attention", "layer.1.ffn", "lm_head"]
            assert len(groups[names.index("attention_scores")].nodes) == 4  # QK^T and attn·V, both layers
        else:  # MatMul only; int4 packs constant weights only, so the score products are no group
            assert not any(n.startswith("conv") for n in names)
            assert ("attention_scores" in names) == (q.method == "ort_dynamic_int8")


def _kl(parent, out, audio) -> float:
    """Mean per-frame KL(float ‖ quantized) with torch, independent of the module's numpy version."""
    a, b = load(parent.path, threads=1), load(out.path, threads=1)
    total, frames = 0.0, 0
    for x in audio:
        v = pad_batch([x])[0]
        lp = torch.log_softmax(torch.from_numpy(a.logits(v, None)[0]).double(), -1)
        lq = torch.log_softmax(torch.from_numpy(b.logits(v, None)[0]).double(), -1)
        total += float(torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="sum"))
        frames += lp.shape[0]
    return total / frames


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_search_meets_its_budget(onnx_models, tiny_corpus, tmp_path, norm):
    parent, q = onnx_models[norm], _static(tiny_corpus)
    zero = AccuracyControl(max_wer_increase=0.0, dev_utterances=DEV, latency=False)
    kl_all = Search(parent, q, zero, tiny_corpus, tmp_path / "work").evaluate(frozenset())["kl"]
    assert kl_all > 0
    control = replace(zero, max_kl=kl_all / 3)
    s, rep = search(parent, q, control, tiny_corpus, tmp_path / "work")
    assert rep["within_budget"] and rep["fallback"]  # a KL cap under the all-quantized KL forces fallbacks
    assert rep["keep_fp32"] == [p for g in s.groups if g.name in rep["fallback"] for p in g.patterns]
    for g in rep["per_group"]:  # minimal: without any one fallback group the budget fails
        assert g["needed"] and (g["kl_without"] > control.max_kl or g["wer_without"] > rep["float"]["wer"])
    out = quantize(parent, replace(q, keep_fp32=tuple(rep["keep_fp32"])), tmp_path / "out")

    # independent checks on what ships: WER by evaluate_model, KL by torch, fp32 nodes read from the graph
    dev = load_eval_data(tiny_corpus, split="dev", limit=DEV)
    wer_float = evaluate_model(str(parent.path), dev).metrics["wer_clean"]
    wer_out = evaluate_model(str(out.path), dev).metrics["wer_clean"]
    assert wer_out <= wer_float + control.max_wer_increase + 1e-12
    assert wer_out == pytest.approx(rep["chosen"]["wer"]) and wer_float == pytest.approx(rep["float"]["wer"])
    audio = load_dataset(resolve_split(tiny_corpus, "dev"), limit=DEV).audio
    kl = _kl(parent, out, audio)
    assert kl <= control.max_kl * (1 + 1e-6) and kl == pytest.approx(rep["chosen"]["kl"], rel=1e-5)
    g = onnx.load(str(out.path / "model.onnx")).graph
    dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    fed = {n.name for n in g.node if any(i in dq for i in n.input)}
    kept = {n for grp in s.groups if grp.name in rep["fallback"] for n in grp.nodes}
    assert kept and not kept & fed and {n for grp in s.groups for n in grp.nodes} - kept <= fed
    assert check_final(s, out, rep)["same_as_search"]


def test_speed_pass_keeps_only_faster_fallbacks_within_budget(onnx_models, tiny_corpus, tmp_path):
    """Every group the budget left quantized is timed in float; what is taken must keep the budget and be
    faster as a set, and what is refused leaves the budget's own set."""
    parent, q = onnx_models["layer"], _static(tiny_corpus)
    zero = AccuracyControl(max_wer_increase=0.0, dev_utterances=DEV, min_speedup=0.0, speed_processes=2)
    kl_all = Search(parent, q, zero, tiny_corpus, tmp_path / "work").evaluate(frozenset())["kl"]
    _, rep = search(parent, q, replace(zero, max_kl=kl_all / 3), tiny_corpus, tmp_path / "work")
    sp = rep["speed_pass"]
    budget_set = [g["group"] for g in rep["per_group"] if g["why"] == "budget"]
    assert budget_set and sorted(sp["tried"] + budget_set) == sorted(g["name"] for g in rep["groups"])
    assert set(sp["faster"]) <= set(sp["tried"]) and rep["within_budget"]
    assert all(sp["gain_ms"][n] > 0 for n in sp["faster"])
    # the method's default keep list (lm_head, score products, conv 0) is one of the sets, as its groups
    assert {"lm_head", "attention_scores", "conv.0"} <= set(method_default_groups(Search(parent, q, zero, tiny_corpus,
                                                                                     tmp_path / "work")))
    assert sp["sets"] and all(st["within_budget"] == ("ms" in st) for st in sp["sets"])
    assert all(set(st["groups"]) <= set(sp["tried"]) for st in sp["sets"])
    if sp["accepted"]:
        best = next(st for st in sp["sets"] if st["why"] == sp["best"])
        assert sp["trial_ms"] == best["ms"] < sp["before_ms"]
        assert set(rep["fallback"]) == set(budget_set) | set(best["groups"])
    else:
        assert sorted(rep["fallback"]) == sorted(budget_set)
    with pytest.raises(ConfigError, match="min_speedup"):
        AccuracyControl(min_speedup=1.5)
    with pytest.raises(ConfigError, match="speed_processes"):
        AccuracyControl(speed_processes=-1)


def test_cli_and_memoized_evaluations(onnx_models, tiny_corpus, tmp_path, capsys):
    args = ["quantize-search", "--model", str(onnx_models["group"].path), "--method", "ort_dynamic_int8",
            "--data", str(tiny_corpus), "--max-wer-increase", "0", "--max-kl", "0",
            "--dev-utterances", str(DEV),
            "--work-dir", str(tmp_path / "work"), "--no-mlflow", "--threads", "1", "--full-sensitivity"]
    assert main([*args, "--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    for text in ("only quantized: WER %", "only fp32: WER %", "chosen fp32 fallback", "cost:", "evaluations"):
        assert text in printed
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["cost"]["evaluations_run"] > len(first["groups"])  # sensitivity (both halves) + search
    assert len(first["sensitivity"]) == len(first["groups"])
    assert {"only", "keep"} <= set(first["sensitivity"][0])
    assert first["final_check"]["within_budget"] and first["latency"]["chosen_ms"] > 0
    prov = json.loads((tmp_path / "a" / "w2vc.json").read_text())
    assert prov["params"]["keep_fp32"] == first["keep_fp32"]
    assert prov["report"]["accuracy_control"]["fallback"] == first["fallback"]
    # the same search again: every figure (latency and the final check too) comes from the work dir
    assert main([*args, "--out", str(tmp_path / "b"), "--json", str(tmp_path / "b.json")]) == 0
    second = json.loads((tmp_path / "b.json").read_text())
    assert second["cost"]["evaluations_run"] == 0
    assert second["fallback"] == first["fallback"] and second["sensitivity"] == first["sensitivity"]


def _raw(corpus, teacher, control: dict, **step) -> dict:
    return {"name": "acc", "teacher": str(teacher), "data": {"corpus": str(corpus)},
            "candidates": [{"name": "q", "from": "teacher", "steps": [
                {"kind": "export"}, {"kind": "quantize", "method": "ort_static_int8", "calibration_count": 2,
                                     "accuracy_control": control, **step}]}]}


@pytest.mark.parametrize("control, step, msg", [
    ({"max_wer_increase": 0.005, "max_wer": 1}, {}, "unknown accuracy_control option(s) max_wer; known:"),
    ({"max_wer_increase": -1}, {}, "max_wer_increase must be a number >= 0"),
    ({"dev_split": "test"}, {}, "never looks at a test split"),
    ({}, {"keep_fp32": ["lm_head"]}, "give one or the other"),
    ({}, {"method": "bf16"}, "accuracy_control works with"),
])
def test_config_errors(tiny_corpus, tiny_layer_model, control, step, msg):
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(tiny_corpus, tiny_layer_model, control, **step))
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert "candidate q, step 1 (quantize)" in str(e.value)


def test_default_config_parses():
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).parents[2] / "experiments/configs/default.yaml").read_text())
    cfg = parse_config(raw)
    steps = {c.name: c.steps[-1] for c in cfg.candidates if c.steps}
    assert "keep_fp32" not in steps["student-int8-static"]
    assert steps["student-int8-static"]["accuracy_control"]["max_wer_increase"] == 0.005
    assert "accuracy_control" in steps["teacher-int8-static"]


def test_sweep_hook(tiny_corpus, tiny_layer_model, tmp_path):
    cfg = parse_config(_raw(tiny_corpus, tiny_layer_model, {"max_wer_increase": 0.0, "dev_utterances": DEV,
                                                            "latency": False}))
    cache = tmp_path / "steps"
    cand: Candidate = cfg.candidates[0]
    art = build_candidate(cand, cfg, cache, progress=False)
    rec = json.loads((cache / f"{art.path.name}.accuracy.json").read_text())
    assert art.provenance["params"]["keep_fp32"] == rec["keep_fp32"]  # the step key names the chosen list
    assert rec["final_check"]["same_as_search"] and rec["final_check"]["within_budget"]
    assert art.provenance["report"]["accuracy_control"]["fallback"] == rec["fallback"]
    again = build_candidate(cand, cfg, cache, progress=False)  # replayed from cache/accuracy: no evaluation
    assert again.path == art.path
    store = next((cache / "accuracy").glob("*[0-9a-f].json"))
    assert len(json.loads(store.read_text())["evals"]) == rec["cost"]["evaluations"] + 1  # + the final check
