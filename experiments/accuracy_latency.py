"""The latency side of accuracy-controlled quantization (experiments.accuracy_control): quick in-process
timings of trial graphs, the speed pass that keeps a group in float where that is faster, and the per-group
latency cost of the chosen fallback set. Every timing is memoized in the search's JSON file.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from w2vc.experiments.accuracy_report import time_graphs

LATENCY_NOTE = ("quick in-process figure: one ORT session per graph (no spin-wait), 3 s noise, median of 20 "
                "runs in rotating blocks of 4; a rough cost, not a `w2vc bench` measurement")


def _time_states(search, states: dict, want: list[str], runs: int, processes: int = 0) -> dict:
    """Build the trial graph of every state key in `want` (the float parent as it is) and time them together:
    in-process (`runs` calls each), or with `processes` > 0 in that many fresh processes per graph, interleaved,
    as `w2vc bench` times (the median of the per-process p50s)."""
    with tempfile.TemporaryDirectory(dir=search.dir, prefix=f"{search.key}.lat.") as td:
        paths = {}
        for k in want:
            keep_k = next(v for v in states.values() if search.state_key(v) == k)
            paths[k] = search.parent.path if keep_k is None else \
                search.build(keep_k, Path(td) / str(len(paths))).path
        if not processes:
            return time_graphs(paths, search.threads, runs=runs)
        from w2vc.eval.cost import CostConfig
        from w2vc.eval.isolation import CostJob, time_interleaved

        cfg = CostConfig(runtime="onnx", seconds=(3.0,), threads=search.threads, processes=processes,
                         count_flops=False, extra_processes=0)
        got = time_interleaved([CostJob(k, str(p)) for k, p in paths.items()], cfg, progress=search.progress)
        return {k: lengths[0].latency_p50_ms for k, lengths in zip(paths, got)}


def timed(search, states: dict, slot: str, runs: int = 20, processes: int = 0) -> dict:
    """p50 (ms) of each state (None = the float parent), timed together: in-process (`runs` calls each) or in
    `processes` fresh processes each; memoized under `slot` with the evaluations."""
    want = sorted({search.state_key(v) for v in states.values()})
    slot = f"{slot}@{f'{processes}proc' if processes else runs}"
    got = search.store.setdefault("timings", {}).get(slot)
    if not got or got.get("states") != want:
        p50 = _time_states(search, states, want, runs, processes)
        got = {"states": want, "p50_ms": p50, "when": time.strftime("%Y-%m-%d %H:%M"),
               "load_avg_1m": os.getloadavg()[0]}
        search.store["timings"][slot] = got
        search.save()
    return {name: got["p50_ms"][search.state_key(v)] for name, v in states.items()}


def method_default_groups(search) -> list[str]:
    """The groups the method's measured default keep list (DEFAULT_KEEP_FP32) names: every node of the group
    matches one of its patterns."""
    from w2vc.compress.quantize import matches, module_path

    pats = replace(search.qcfg, keep_fp32=None).keep_fp32  # QuantizeConfig resolves None to the default
    return [g.name for g in search.groups
            if all(any(matches(n, module_path(n), p) for p in pats) for n in g.nodes)]


def speed_pass(search, keep: frozenset, ok) -> dict:
    """Groups still quantized that are faster in float, on top of the budget's set `keep`.

    Each is first timed alone in float (quick, in-process). Then up to four sets are tried, each only if its
    dev figures stay within budget: the groups faster alone by `min_speedup`; every group faster alone at all
    (gains too small to see one by one can add up); the groups of the method's default keep list (the Q/DQ
    around the attention-score products and lm_head can cost more than their int8 kernels save: in-process
    timing saw < 1 % for each where fresh processes saw 3-5 % for both, on an AVX2 machine); the first and
    the third together. The sets and the budget's own are timed together, in `speed_processes` fresh
    processes each as `w2vc bench` does (in-process if 0), and the fastest set is taken if it beats the
    budget's set by `min_speedup`."""
    c = search.control
    rest = [g.name for g in search.groups if g.name not in keep]
    if not rest:
        return {"tried": [], "faster": [], "accepted": False, "kept": sorted(keep), "sets": []}
    ms = timed(search, {"chosen": keep, **{n: keep | {n} for n in rest}}, "speed_single:" + search.state_key(keep),
               runs=40)
    base = ms["chosen"]
    gains = {n: base - ms[n] for n in rest}
    faster = [n for n in rest if ms[n] < (1 - c.min_speedup) * base]
    sets: list[dict] = []
    default = [n for n in method_default_groups(search) if n in rest]
    for why, names in (("faster alone", faster), ("any gain alone", [n for n in rest if gains[n] > 0]),
                       ("method default", default),
                       ("faster alone + method default", sorted(set(faster) | set(default)))):
        trial = keep | set(names)
        if names and all(trial != s["state"] for s in sets):
            e = search.evaluate(trial)
            sets.append({"why": why, "groups": sorted(names), "state": trial, "dev_wer": e["wer"],
                         "within_budget": bool(ok(e))})
    out = {"tried": rest, "chosen_ms": base, "gain_ms": gains, "faster": faster, "accepted": False,
           "kept": sorted(keep), "sets": sets, "timing": f"{c.speed_processes} fresh processes per graph"
           if c.speed_processes else "in-process, 160 runs per graph"}
    good = [s for s in sets if s["within_budget"]]
    if good:
        states = {"chosen": keep, **{str(i): s["state"] for i, s in enumerate(good)}}
        both = timed(search, states, "speed_sets:" + "|".join(sorted(search.state_key(v) for v in states.values())),
                     runs=160, processes=c.speed_processes)
        for i, s in enumerate(good):
            s["ms"] = both[str(i)]
        best = min(good, key=lambda s: s["ms"])
        out.update(before_ms=both["chosen"], trial_ms=best["ms"], trial_wer=best["dev_wer"], best=best["why"],
                   accepted=best["ms"] < (1 - c.min_speedup) * both["chosen"])
        if out["accepted"]:
            out["kept"] = [g.name for g in search.groups if g.name in best["state"]]
    for s in sets:
        s.pop("state")
    return out


def chosen_latency(search, keep) -> dict:
    """Quick in-process latency of float, all-quantized, chosen and chosen-minus-each-group graphs,
    timed together (round robin, so machine load hits them alike); memoized with the evaluations."""
    states = {"float": None, "all_quantized": frozenset(), "chosen": keep,
              **{f"without:{n}": keep - {n} for n in sorted(keep)}}
    want = sorted({search.state_key(s) for s in states.values()})
    got = search.store["latency"]
    if got.get("states") != want:
        p50 = _time_states(search, states, want, 20)
        got = {"states": want, "p50_ms": p50,
               "threads": search.threads, "when": time.strftime("%Y-%m-%d %H:%M"),
               "load_avg_1m": os.getloadavg()[0]}
        search.store["latency"] = got
        search.save()
    ms = got["p50_ms"]
    return {"note": LATENCY_NOTE, "when": got["when"], "load_avg_1m": got["load_avg_1m"],
            "threads": got["threads"], "float_ms": ms[search.state_key(None)],
            "all_quantized_ms": ms[search.state_key(frozenset())],
            "chosen_ms": ms[search.state_key(keep)],
            "without": {n: ms[search.state_key(keep - {n})] for n in sorted(keep)}}
