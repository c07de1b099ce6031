"""Sweep configs: validation names the bad key; grids expand; recipe strings parse."""

from __future__ import annotations

import pytest
import yaml

from w2vc.experiments.config import ConfigError, load_config, parse_config
from w2vc.experiments.recipes import parse_chain

BASE = {"name": "t", "teacher": "models/teacher-large-s", "candidates": [{"name": "teacher"}]}


def test_default_config_is_valid_and_spans_the_methods():
    cfg = load_config("experiments/configs/default.yaml")
    kinds = {s["kind"] for c in cfg.candidates for s in c.steps}
    methods = {s.get("method") for c in cfg.candidates for s in c.steps}
    assert len(cfg.candidates) >= 7
    assert {"export", "quantize"} <= kinds and not {"distill", "recover"} & kinds  # the main job trains nothing
    assert {"bf16", "ort_static_int8", "ort_int4", "inc_int4_rtn"} <= methods
    assert {"teacher", "student-scratch"} <= {c.name for c in cfg.candidates}
    # full.yaml: the default's candidates plus the training ones; trained.yaml: exactly the trained models
    full = load_config("experiments/configs/full.yaml")
    assert {"distill", "prune", "recover"} <= {s["kind"] for c in full.candidates for s in c.steps}
    trained = load_config("experiments/configs/trained.yaml")
    assert {s["kind"] for c in trained.candidates for s in c.steps} == {"distill", "prune", "recover"}
    assert all(c.start == "teacher" for c in (*full.candidates, *trained.candidates)
               if any(s["kind"] == "distill" for s in c.steps))  # the input of distill is the teacher
    # structured.yaml: the learned run and its ablations at one GFLOPs target and one step count
    structured = {c.name: c for c in load_config("experiments/configs/structured.yaml").candidates}
    learned, oneshot = structured["learned"].steps[0], structured["oneshot-taylor"].steps
    assert learned["kind"] == "learned_prune" and oneshot[0]["kind"] == "prune"
    assert learned["target_gflops_ratio"] == oneshot[0]["target_gflops_ratio"]
    assert learned["gate_steps"] + learned["distill_steps"] == oneshot[1]["steps"]
    assert structured["learned-no-hidden"].steps[0]["alpha_hidden"] == 0
    no_hidden = structured["oneshot-taylor-no-hidden"].steps  # the one-shot cut's ablation: only the loss differs
    assert no_hidden[0] == oneshot[0] and no_hidden[1]["alpha_hidden"] == 0 < oneshot[1]["alpha_hidden"]
    assert {k: v for k, v in no_hidden[1].items() if k != "alpha_hidden"} == \
        {k: v for k, v in oneshot[1].items() if k != "alpha_hidden"}
    # cnn-lever.yaml: the CNN-only fit and the ordinary recovery differ in train_only alone
    lever = {c.name: c for c in load_config("experiments/configs/cnn-lever.yaml").candidates}
    fit, rec = lever["cnn50-fit"].steps, lever["cnn50-recover"].steps
    assert fit[0] == rec[0] == lever["cnn50-cut"].steps[0] and fit[0]["cnn"] > 0 == fit[0]["heads"]
    assert {k: v for k, v in fit[1].items() if k != "train_only"} == rec[1] and fit[1]["train_only"]
    # cnn-fit.yaml: one CNN-only fit to the layer-0 states, direct, at both cuts
    cnnfit = {c.name: c for c in load_config("experiments/configs/cnn-fit.yaml").candidates}
    hid = cnnfit["cnn50-fit-hidden"].steps[1]
    assert hid["hidden_direct"] and hid["train_only"] and hid["hidden_layer_map"] == [[0, 0]]
    assert cnnfit["cnn25-fit-hidden"].steps[1] == hid and cnnfit["cnn25-fit-hidden"].steps[0]["cnn"] == 0.25


def test_candidates_can_be_limited_to_cpus_with_a_flag():
    cfg = parse_config({**BASE, "candidates": [{"name": "a", "when_cpu_has": ["avx512_bf16", "amx_bf16"]},
                                               {"name": "b"}]})
    a, b = cfg.candidates
    assert a.skipped_on(frozenset({"avx2"})) and "avx512_bf16" in a.skipped_on(frozenset({"avx2"}))
    assert a.skipped_on(frozenset({"avx2", "amx_bf16"})) is None and b.skipped_on(frozenset()) is None
    with pytest.raises(ConfigError, match="when_cpu_has"):
        parse_config({**BASE, "candidates": [{"name": "a", "when_cpu_has": "avx2"}]})


@pytest.mark.parametrize("patch, needle", [
    ({"bogus": 1}, "bogus"),
    ({"eval": {"limt": 3}}, "limt"),
    ({"budgets": ["latency is low"]}, "latency is low"),
    ({"candidates": [{"name": "a", "steps": [{"kind": "shrink"}]}]}, "shrink"),
    ({"candidates": [{"name": "a", "steps": [{"kind": "prune", "heads": 1.5}]}]}, "heads"),
    ({"candidates": [{"name": "a", "steps": [{"kind": "quantize", "method": "int3"}]}]}, "int3"),
    ({"candidates": [{"name": "a", "steps": [{"kind": "prune", "hedas": 0.5}]}]}, "hedas"),
    ({"candidates": [{"name": "a"}, {"name": "a"}]}, "duplicate"),
    ({"candidates": [{"name": "a", "from": "student"}]}, "student"),
])
def test_bad_configs_name_the_problem(patch, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config({**BASE, **patch})


def test_grid_expands_with_names(tmp_path):
    raw = {**BASE, "candidates": [{"name": "p", "steps": [{"kind": "prune", "heads": 0.5}, {"kind": "export"}],
                                   "grid": {"prune.heads": [0.25, 0.5], "prune.ffn": [0.0, 0.5]}}]}
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(f)
    assert [c.name for c in cfg.candidates] == ["p-heads0.25-ffn0.0", "p-heads0.25-ffn0.5", "p-heads0.5-ffn0.0",
                                                 "p-heads0.5-ffn0.5"]
    assert cfg.candidates[1].steps[0] == {"kind": "prune", "heads": 0.25, "ffn": 0.5}


def test_parse_chain():
    assert parse_chain("prune(heads=.5,ffn=.5)->quantize(int8)") == [
        {"kind": "prune", "heads": 0.5, "ffn": 0.5}, {"kind": "quantize", "method": "int8"}]
    with pytest.raises(ValueError):
        parse_chain("")


SEARCH = {"from": "teacher", "sampler": "nsga2",
          "steps": [{"kind": "prune"}, {"kind": "export"}, {"kind": "quantize"}],
          "space": {"prune.heads": [0.25, 0.75], "prune.num_drop_layers": [0, 2],
                    "quantize.method": {"choices": ["ort_dynamic_int8", "ort_int4"]}}}


def test_search_section_is_typed_and_its_knobs_resolved():
    cfg = parse_config({**BASE, "search": SEARCH})
    s = cfg.search
    assert s.start == "teacher" and s.sampler == "nsga2" and len(s.steps) == 3
    knobs = {k.key: k for k in s.space}
    assert (knobs["prune.heads"].step, knobs["prune.heads"].option) == (0, "heads")
    assert knobs["prune.num_drop_layers"].is_int and not knobs["prune.heads"].is_int
    assert knobs["quantize.method"].step == 2 and knobs["quantize.method"].choices == ("ort_dynamic_int8", "ort_int4")
    assert parse_config(BASE).search is None


@pytest.mark.parametrize("patch, needle", [
    ({"sampler": "grid"}, "sampler"),
    ({"space": {"shrink.heads": [0, 1]}}, "shrink"),
    ({"space": {"prune.heads": [0.75, 0.25]}}, "prune.heads"),
    ({"space": {"quantize.method": {"choices": []}}}, "quantize.method"),
    ({"space": {**SEARCH["space"], "quantize.method": {"choices": ["int3"]}}}, "int3"),
    ({"frm": "teacher"}, "frm"),
    ({"from": "student"}, "student"),
])
def test_bad_search_sections_name_the_problem(patch, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config({**BASE, "search": {**SEARCH, **patch}})
