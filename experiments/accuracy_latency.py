"""The latency side of accuracy-controlled quantization (experiments.accuracy_control): quick in-process
timings of trial graphs, the speed pass that keeps a group in float where that is faster, and the per-group
latency cost of the chosen fallback set. Every timing is memoized in the search's JSON file.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from w2vc.experiments.accuracy_report import time_graphs

LATENCY_NOTE = ("quick in-process figure: one ORT session per graph (no spin-wait), 3 s noise, median of 20 "
                "runs in rotating blocks of 4; a rough cost, not a `w2vc bench` measurement")


def _time_states(search, states: dict, want: list[str], runs: int) -> dict:
    """Build the trial graph of every state key in `want` (the float parent as it is) and time them together."""
    with tempfile.TemporaryDirectory(dir=search.dir, prefix=f"{search.key}.lat.") as td:
        paths = {}
        for k in want:
            keep_k = next(v for v in states.values() if search.state_key(v) == k)
            paths[k] = search.parent.path if keep_k is None else \
                search.build(keep_k, Path(td) / str(len(paths))).path
        return time_graphs(paths, search.threads, runs=runs)


def timed(search, states: dict, slot: str, runs: int = 20) -> dict:
    """Quick in-process p50 (ms) of each state (None = the float parent), timed together (`runs` calls
    each); memoized under `slot` with the evaluations."""
    want = sorted({search.state_key(v) for v in states.values()})
    slot = f"{slot}@{runs}"
    got = search.store.setdefault("timings", {}).get(slot)
    if not got or got.get("states") != want:
        p50 = _time_states(search, states, want, runs)
        got = {"states": want, "p50_ms": p50, "when": time.strftime("%Y-%m-%d %H:%M"),
               "load_avg_1m": os.getloadavg()[0]}
        search.store["timings"][slot] = got
        search.save()
    return {name: got["p50_ms"][search.state_key(v)] for name, v in states.items()}


def speed_pass(search, keep: frozenset, ok) -> dict:
    """Groups still quantized whose float version is faster: each timed kept in float on top of `keep`,
    then all the faster ones together, accepted only within budget and faster by `min_speedup`."""
    c = search.control
    rest = [g.name for g in search.groups if g.name not in keep]
    if not rest:
        return {"tried": [], "faster": [], "accepted": False, "kept": sorted(keep)}
    ms = timed(search, {"chosen": keep, **{n: keep | {n} for n in rest}}, "speed_single:" + search.state_key(keep),
               runs=40)
    base = ms["chosen"]
    gains = {n: base - ms[n] for n in rest}
    faster = [n for n in rest if ms[n] < (1 - c.min_speedup) * base]
    out = {"tried": rest, "chosen_ms": base, "gain_ms": gains, "faster": faster, "accepted": False,
           "kept": sorted(keep)}
    if faster:
        trial = keep | set(faster)
        e = search.evaluate(trial)
        both = timed(search, {"chosen": keep, "trial": trial}, "speed_set:" + search.state_key(trial), runs=160)
        out.update(trial_wer=e["wer"], trial_ms=both["trial"], before_ms=both["chosen"],
                   accepted=bool(ok(e) and both["trial"] < (1 - c.min_speedup) * both["chosen"]))
        if out["accepted"]:
            out["kept"] = [g.name for g in search.groups if g.name in trial]
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
