"""`w2vc bench`: measure models and presets (w2vc.eval.cost), print the table and ratios, log each result
to MLflow. CLI layer: the measuring modules stay free of printing and tracking.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from w2vc.core.util import write_json
from w2vc.eval.cost import CostConfig, CostResult, cost_table, parse_seconds, ratio_line, ratios
from w2vc.eval.isolation import CostJob, measure_costs, run_isolated
from w2vc.eval.measure import measure_cost
from w2vc.eval.onnx_export import export_preset_onnx


def log_cost(result: CostResult, experiment: str | None = None, run_name: str | None = None,
             extra_params: dict | None = None, extra_metrics: dict | None = None, tags: dict | None = None,
             parent_run_id: str | None = None):
    """One MLflow run (local JSON fallback) with the result's params, metrics and tags."""
    from w2vc.eval.tracking import DEFAULT_EXPERIMENT, log_run

    name = run_name or f"bench-{Path(result.model).name or result.model}-{result.runtime}-{result.precision}"
    return log_run(name, {**result.params(), **(extra_params or {})}, {**result.metrics(), **(extra_metrics or {})},
                   {**result.tags(), **(tags or {})},
                   text_artifacts={"cost.json": json.dumps(result.to_dict(), indent=1)},
                   experiment=experiment or DEFAULT_EXPERIMENT, parent_run_id=parent_run_id)


def bench_command(a) -> int:
    """Body of `w2vc bench` (w2vc/cli.py holds its parser)."""
    from w2vc.core.models import PRESETS

    archs = [s.strip() for s in (a.arch or "").split(",") if s.strip()]
    for arch in archs:
        if arch not in PRESETS:
            raise ValueError(f"unknown arch {arch!r}; known: {', '.join(PRESETS)}")
    models = list(a.model or [])
    if not archs and not models:
        raise ValueError("give --model PATH or --arch base|large|large-s|base-s (comma-separated for several)")
    in_process = a.in_process
    cfg = CostConfig(runtime=a.runtime, precision=a.precision, seconds=parse_seconds(a.seconds), threads=a.threads,
                     warmup=a.warmup, repeats=a.repeats, min_repeats=min(a.min_repeats, a.repeats),
                     budget_s=a.budget, count_flops=not a.no_flops, min_time_s=a.min_time,
                     processes=1 if in_process else a.processes)
    with tempfile.TemporaryDirectory(prefix="w2vc-bench-") as td:
        jobs = []
        for arch in archs:
            if cfg.runtime == "onnx":
                print(f"exporting random {arch} to ONNX ...", flush=True)
                out = Path(td) / arch
                if in_process:
                    export_preset_onnx(arch, str(out), cfg.seed)
                else:  # the export's memory stays out of this process
                    run_isolated(export_preset_onnx, arch, str(out), cfg.seed)
                jobs.append(CostJob(arch, model=str(out), cost_only=True))
            else:
                jobs.append(CostJob(arch, arch=arch))
        jobs += [CostJob(m, model=m) for m in models]
        if in_process:
            results = [measure_cost(j.model, arch=j.arch, cfg=cfg, name=j.name, cost_only=j.cost_only) for j in jobs]
        else:
            print(f"timing {len(jobs)} model(s) in {cfg.processes} fresh processes each, interleaved ...", flush=True)
            results = measure_costs(jobs, cfg, progress=sys.stderr.isatty())
    for j, r in zip(jobs, results):
        if j.arch or j.cost_only:
            r.arch = j.name
        if cfg.runtime == "onnx" and j.name in archs:
            r.notes.append("random weights exported with optimum onnx_export_from_model (weight_norm folded)")

    cost_only = any(r.cost_only for r in results)
    print()
    if cost_only:
        print("COST-ONLY: random weights of the true shapes — latency, size, memory and FLOPs only, no WER")
    threads = sorted({r.threads for r in results})
    print(f"cpu {results[0].cpu}; threads {','.join(map(str, threads))}; batch 1, white-noise audio at 16 kHz; "
          f"peak RSS {'per fresh process' if not a.in_process else 'of this process (not isolated)'}")
    print(cost_table(results))
    for r in results:
        h = r.headline
        if h.processes > 1:
            print(f"{r.model}: p50 {h.latency_p50_ms:.2f} ms (95 % CI {h.latency_p50_low_ms:.2f}-"
                  f"{h.latency_p50_high_ms:.2f}) = median of {h.processes} process p50s, spread {h.spread:.2f}"
                  + ("" if h.stable else f" UNSTABLE (> {cfg.max_spread})"))
    busy = [r for r in results if r.contended]
    if busy:
        print(f"warning: load average {max(r.load_avg_1m for r in busy):.1f} on {os.cpu_count()} cores while "
              "measuring: other processes compete, wall-clock latency is inflated and ratios distorted; "
              "CPU ms (and --threads 1) are the steadier figures")
    ratio_out = {}
    for r in results[1:]:
        print(ratio_line(results[0], r))
        ratio_out[f"{r.model}/{results[0].model}"] = ratios(results[0], r)
    for r in results:
        for n in r.notes:
            print(f"note ({r.model}): {n}")
    if not a.no_mlflow:
        for r in results:
            logged = log_cost(r, experiment=a.experiment)
            if logged.run_id:
                print(f"MLflow run {logged.run_id} ({r.model}); figures also in {logged.local_json}")
    write_json(a.json, {"cost_only": cost_only, "results": [r.to_dict() for r in results], "ratios": ratio_out})
    return 0
