"""Cost measurement: structure and invariants of the figures on tiny real models (no timing thresholds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2ForCTC

from tests.conftest import tiny_config
from w2vc.cli import main
from w2vc.core.models import make_processor
from w2vc.eval.cost import CostConfig, CostResult, cost_table
from w2vc.eval.isolation import measure_cost_isolated
from w2vc.eval.measure import measure_cost
from w2vc.eval.memory import state_dict_mb
from w2vc.eval.onnx_export import export_model_onnx

FAST = dict(warmup=1, repeats=3, min_repeats=1, threads=1)


def check_latency(r: CostResult, seconds) -> None:
    assert [lc.seconds for lc in r.lengths] == [float(s) for s in seconds]
    for lc in r.lengths:
        assert lc.latency_p90_ms >= lc.latency_p50_ms > 0
        assert lc.latency_min_ms <= lc.latency_p50_ms
        assert lc.repeats >= 1
        assert math.isclose(lc.rtf, lc.latency_p50_ms / 1000 / lc.seconds)
    assert r.cpu and r.threads == 1 and r.peak_rss_mb > 0


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """The tiny Large-style model and its ONNX export (optimum, weight_norm folded)."""
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny_config("layer")).eval()
    out = export_model_onnx(model, tmp_path_factory.mktemp("tiny_onnx"), make_processor("layer"))
    return model, out


def test_torch_dir_figures(tiny_layer_model):
    r = measure_cost(tiny_layer_model, seconds=(1, 2), **FAST)
    check_latency(r, (1, 2))
    assert (r.runtime, r.precision, r.cost_only, r.rss_isolated) == ("torch", "fp32", False, False)
    model = Wav2Vec2ForCTC.from_pretrained(tiny_layer_model)
    assert r.params_m == sum(p.numel() for p in model.parameters()) / 1e6
    assert r.size_source == "disk"
    assert r.size_mb == (tiny_layer_model / "model.safetensors").stat().st_size / 2**20
    g1, g2 = r.at(1).gflops, r.at(2).gflops
    assert 0 < g1 < g2 and 1.8 < g2 / g1 < 2.3, "FLOPs grow about linearly with audio length"
    assert set(r.gflops_by_kind) == {"conv", "linear", "attention"}
    assert math.isclose(sum(r.gflops_by_kind.values()), r.at(1).gflops)  # headline = first length here
    m = r.metrics()
    for k in ("latency_p50_ms", "latency_p90_ms", "rtf", "size_mb", "params_m", "peak_rss_mb", "gflops",
              "latency_p50_ms_1s", "latency_p90_ms_2s", "rtf_2s", "gflops_2s"):
        assert k in m
    assert m["latency_p50_ms"] == r.at(1).latency_p50_ms  # no 3 s measured: the first length is the headline
    assert CostResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_headline_is_three_seconds(tiny_group_model):
    r = measure_cost(tiny_group_model, seconds=(1, 3), count_flops=False, **FAST)
    assert r.headline.seconds == 3.0 and r.metrics()["rtf"] == r.at(3).rtf and r.gflops is None


def test_in_memory_and_bf16_sizes(tiny_layer_model):
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny_config("layer")).eval()
    fp32 = measure_cost(model, seconds=(1,), name="tiny", **FAST)
    disk = (tiny_layer_model / "model.safetensors").stat().st_size / 2**20
    assert fp32.model == "tiny" and fp32.size_source.startswith("parameters")
    assert 0 < disk - fp32.size_mb < 64 / 1024, "would-be size = safetensors bytes minus its small header"
    bf16 = measure_cost(tiny_layer_model, seconds=(1,), precision="bf16", **FAST)
    assert bf16.precision == "bf16" and bf16.size_source.startswith("parameters (bf16")
    assert math.isclose(bf16.size_mb, fp32.size_mb / 2, rel_tol=1e-6)
    assert bf16.params_m == fp32.params_m
    assert math.isclose(bf16.gflops, fp32.gflops), "FLOPs are counted from shapes, not dtype"
    threads = torch.get_num_threads()
    mem_bf16 = measure_cost(model.train(), seconds=(1,), precision="bf16", **FAST)
    assert mem_bf16.precision == "bf16" and math.isclose(mem_bf16.size_mb, bf16.size_mb)
    assert next(model.parameters()).dtype == torch.float32 and model.training, "the caller's model is untouched"
    assert torch.get_num_threads() == threads, "the caller's thread count is restored"


def test_onnx_runtime_matches_torch_counts(tiny_onnx):
    model, onnx_dir = tiny_onnx
    o = measure_cost(onnx_dir, seconds=(1, 2), **FAST)
    check_latency(o, (1, 2))
    assert (o.runtime, o.precision, o.size_source) == ("onnx", "fp32", "disk")
    assert o.size_mb == (onnx_dir / "model.onnx").stat().st_size / 2**20
    t = measure_cost(model, seconds=(1, 2), **FAST)
    for s in (1, 2):  # graph-counted FLOPs equal FlopCounterMode's on the same shapes
        assert math.isclose(o.at(s).gflops, t.at(s).gflops, rel_tol=1e-3)
    for k, v in t.gflops_by_kind.items():
        assert math.isclose(o.gflops_by_kind[k], v, rel_tol=1e-3)
    # the exporter stores identical tensors (untrained LayerNorm ones/zeros) once, hence "about"
    assert 0.9 * t.params_m <= o.params_m <= t.params_m


def test_onnx_int8_graph_is_counted(tiny_onnx, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _, onnx_dir = tiny_onnx
    q = tmp_path / "q"
    q.mkdir()
    quantize_dynamic(onnx_dir / "model.onnx", q / "model.onnx", op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QInt8)
    fp32 = measure_cost(onnx_dir, seconds=(1,), **FAST)
    r = measure_cost(q, seconds=(1,), **FAST)
    assert r.precision == "int8" and r.size_mb < fp32.size_mb
    assert math.isclose(r.gflops, fp32.gflops, rel_tol=1e-3), "MatMulInteger counted like MatMul"
    assert not r.notes
    with pytest.raises(ValueError, match="int8 graph"):
        measure_cost(q, seconds=(1,), precision="fp32", **FAST)


def test_base_shape_params():
    r = measure_cost(arch="base", seconds=(0.5,), warmup=0, repeats=1, min_repeats=1, count_flops=False)
    assert r.cost_only and r.arch == "base" and 94 <= r.params_m <= 96
    assert math.isclose(r.size_mb, r.params_m * 1e6 * 4 / 2**20, rel_tol=0.01)


def test_isolated_process(tiny_layer_model):
    r = measure_cost_isolated(tiny_layer_model, seconds=(1,), count_flops=False, **FAST)
    check_latency(r, (1,))
    assert r.rss_isolated and r.peak_rss_mb >= r.rss_before_load_mb > 0
    with pytest.raises(FileNotFoundError, match="model not found"):
        measure_cost_isolated(tiny_layer_model / "missing", seconds=(1,), **FAST)


def test_config_errors(tiny_layer_model, tiny_onnx):
    for bad in (dict(runtime="tflite"), dict(precision="int3"), dict(seconds=()), dict(seconds=(0,)),
                dict(threads=0), dict(repeats=2, min_repeats=3)):
        with pytest.raises(ValueError):
            CostConfig(**bad)
    with pytest.raises(ValueError, match="exactly one"):
        measure_cost()
    with pytest.raises(ValueError, match="not an ONNX artifact"):
        measure_cost(tiny_layer_model, runtime="onnx")
    with pytest.raises(ValueError, match="converts PyTorch models only"):
        measure_cost(tiny_onnx[1], precision="bf16")


def test_cli_bench_json_and_mlflow(tiny_layer_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # ./mlruns and runs/figures land here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "bench.json"
    rc = main(["bench", "--arch", "base-s", "--model", str(tiny_layer_model), "--seconds", "1,2", "--threads", "1",
               "--repeats", "2", "--min-repeats", "1", "--warmup", "1", "--in-process", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "COST-ONLY" in text and "base-s (cost-only)" in text and f"{tiny_layer_model}/base-s: params" in text
    d = json.loads(out.read_text())
    assert d["cost_only"] is True
    arch, model = d["results"]
    assert arch["cost_only"] is True and arch["arch"] == "base-s" and model["cost_only"] is False
    for r in (arch, model):
        assert r["metrics"]["latency_p90_ms_2s"] >= r["metrics"]["latency_p50_ms_2s"] > 0
        assert {"size_mb", "params_m", "peak_rss_mb", "gflops", "rtf"} <= set(r["metrics"])
    assert list(d["ratios"]) == [f"{tiny_layer_model}/base-s"]

    from mlflow.tracking import MlflowClient

    runs = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("w2vc").experiment_id])
    assert len(runs) == 2
    run = next(r for r in runs if r.data.params["arch"] == "base-s")
    assert run.data.tags["cost_only"] == "true" and run.data.tags["cpu"]
    assert run.data.params["runtime"] == "torch" and run.data.params["seconds"] == "1,2"
    assert {"latency_p50_ms", "latency_p50_ms_1s", "gflops_2s", "params_m"} <= set(run.data.metrics)


def test_table_has_one_row_per_model(tiny_layer_model):
    r = measure_cost(tiny_layer_model, seconds=(1,), count_flops=False, **FAST)
    table = cost_table([r, r]).splitlines()
    assert len(table) == 4 and "p50/p90 ms @1s" in table[0] and "-" in table[2]  # GFLOPs not counted
    assert state_dict_mb(Wav2Vec2ForCTC(tiny_config("group"))) > 0


def test_fp16_packed_dir_runs_and_costs_as_fp32(tiny_layer_model, tmp_path):
    """Committed models are stored fp16 to stay small in git; a CPU runs them (and eval scores them) in fp32."""
    from w2vc.core.models import pack_fp16

    packed = pack_fp16(tiny_layer_model, tmp_path / "packed")
    fp32 = measure_cost(tiny_layer_model, seconds=(1,), **FAST)
    r = measure_cost(packed, seconds=(1,), **FAST)
    assert r.precision == "fp32" and r.size_source == "parameters (fp32; disk holds fp16)"
    assert 0 < fp32.size_mb - r.size_mb < 64 / 1024, "fp32 parameter bytes = the fp32 directory minus small files"
    assert r.params_m == fp32.params_m


def test_cli_bench_times_each_model_in_several_fresh_processes(tiny_layer_model, tiny_group_model, tmp_path,
                                                               capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--model", str(tiny_layer_model), "--model", str(tiny_group_model), "--seconds", "1",
               "--threads", "1", "--repeats", "3", "--min-time", "0.1", "--processes", "3", "--no-flops",
               "--no-mlflow", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "median of" in text and "process p50s" in text
    for r in json.loads(out.read_text())["results"]:
        lc = r["lengths"][0]
        assert lc["processes"] >= 3 and len(lc["process_p50_ms"]) == lc["processes"]  # re-measured if shaky
        assert lc["latency_p50_low_ms"] <= lc["latency_p50_ms"] <= lc["latency_p50_high_ms"]
        assert lc["latency_p50_ms"] == pytest.approx(float(np.median(lc["process_p50_ms"])), rel=1e-3)
        assert lc["spread"] == pytest.approx(max(lc["process_p50_ms"]) / min(lc["process_p50_ms"]), rel=1e-3)
        assert r["rss_isolated"] is True and r["metrics"]["latency_processes"] == lc["processes"]
