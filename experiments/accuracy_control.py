"""Accuracy-controlled quantization: which layers must stay in float for an ORT method to keep its dev WER
within a budget, found by measurement instead of by hand.

Why: int8/int4 error is not spread evenly. The Base-style student lost 14 WER points in static int8 until a
manual bisection kept convs 0-3 in fp32, while the Large-style teacher needs almost nothing kept; a fixed
keep_fp32 list is wrong for one of them, and re-bisecting by hand for every model does not scale.

- Groups: the units kept or quantized together, read from the nodes the method quantizes in the ONNX graph
  (so any wav2vec2 shape works): each CNN conv, the feature projection, the positional conv, per transformer
  layer its attention projections and its FFN, the attention-score products (all layers), lm_head; any
  other quantized node is its own group. Each is a keep_fp32 pattern set that matches exactly its nodes.
- Sensitivity: dev WER and logit error (mean KL, SQNR against the float parent's logits) when only that
  group is quantized ("only"), and in the full table also when only that group is kept in float ("keep").
- Search: the all-quantized graph first (within budget: done, no table needed); else the sensitivity
  table (2 + groups graphs), then groups are added in order of helpfulness (`Search.sensitivity`) until
  the dev WER is within budget, and backward passes drop groups the budget does not need (least helpful
  first) until every group left is needed: without any one of them the budget fails. That per-group
  figure (WER gain, and a quick latency cost) is the report's.
- Every evaluation is memoized in one JSON file under the work dir, keyed by (parent hash, method config
  without keep_fp32, dev set); trial graphs share one static calibration (ranges do not depend on
  keep_fp32: the graphs are byte-identical to the step's own). A second search, with any budget, replays.
- The result is only a keep_fp32 list: the artifact is the ordinary quantize step with it, so it caches
  and exports like any other; `check_final` scores that artifact on dev again. The budget holds on dev only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from w2vc.core.config import ConfigBase, ConfigError
from w2vc.core.util import file_lock, write_json_atomic
from w2vc.experiments.accuracy_latency import chosen_latency, speed_pass

SEARCH_METHODS = ("ort_static_int8", "ort_dynamic_int8", "ort_int4")
FLOAT = "float"
_SCORES = "*/attention/MatMul*"
# (module-path regex, group name, pattern suffix): the prefix `p` plus suffix is the group's keep_fp32 glob
_RULES = (
    (r"(?P<p>(?:.*\.)?feature_extractor\.conv_layers\.(?P<i>\d+))(\..*)?", "conv.{i}", ""),
    (r"(?P<p>(?:.*\.)?feature_projection)(\..*)?", "feature_projection", ""),
    (r"(?P<p>(?:.*\.)?pos_conv_embed)(\..*)?", "pos_conv", ""),
    (r"(?P<p>(?:.*\.)?encoder\.layers\.(?P<i>\d+)\.attention)\..+", "layer.{i}.attention", ".*"),
    (r"(?P<p>(?:.*\.)?encoder\.layers\.(?P<i>\d+)\.feed_forward)(\..*)?", "layer.{i}.ffn", ""),
    (r"(?P<p>lm_head)(\..*)?", "lm_head", ""),
)

@dataclass(frozen=True)
class AccuracyControl(ConfigBase):
    """A quantize step's `accuracy_control:` (YAML) / the search's settings.

    Args:
        max_wer_increase: allowed dev WER increase over the float parent, absolute (0.005 = 0.5 points), or
            with `relative` a fraction of the parent's dev WER.
        dev_utterances: first N utterances of `dev_split` the search scores (never a test split).
        dev_data: corpus root / manifest; None takes the sweep's corpus (or the CLI's --data).
        max_kl: optional second budget: mean per-frame KL (nats) of the logits against the float parent's.
            WER on a few dozen utterances moves in whole words; the KL guards what WER cannot resolve (and
            is what a test on random tiny models, all near 100 % WER, can check).
        full_sensitivity: measure the sensitivity table even when the all-quantized graph meets the budget
            (the search needs it only when it does not), with its "kept alone in float" half too.
        latency: time the chosen set's fallbacks (quick in-process figure).
        speed_pass: (with `latency`) after the budget search, time every group still quantized kept in float instead, and
            keep in float those whose float version is faster by `min_speedup` (and the set only if it still
            meets the budget and is faster as a whole). Why: quantizing is not always cheaper: on the
            Base-style student the Q/DQ around the attention-score products and lm_head cost more than
            their int8 kernels save (hand-picked set with them in float: 22.6 ms against 23.7 ms without).
            The candidate sets are judged in `speed_processes` fresh processes each (`w2vc bench`'s way;
            0 = in-process): in-process timing saw < 1 % where fresh processes saw 3-5 % (AVX2 machine).
    """

    WHAT = "accuracy_control"

    max_wer_increase: float = 0.005
    relative: bool = False
    dev_utterances: int = 40
    dev_split: str = "dev"
    dev_data: str | None = None
    max_kl: float | None = None
    full_sensitivity: bool = False
    latency: bool = True
    speed_pass: bool = True
    min_speedup: float = 0.01
    speed_processes: int = 5

    def __post_init__(self):
        x = self.max_wer_increase
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise ConfigError(f"accuracy_control.max_wer_increase must be a number >= 0, got {x!r}")
        if isinstance(self.dev_utterances, bool) or not isinstance(self.dev_utterances, int) \
                or self.dev_utterances < 1:
            raise ConfigError("accuracy_control.dev_utterances must be an integer >= 1, "
                              f"got {self.dev_utterances!r}")
        kl = self.max_kl
        if kl is not None and (isinstance(kl, bool) or not isinstance(kl, (int, float)) or not kl >= 0):
            raise ConfigError(f"accuracy_control.max_kl must be a number >= 0 or null, got {kl!r}")
        ms = self.min_speedup
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms < 1:
            raise ConfigError(f"accuracy_control.min_speedup must be a fraction in [0, 1), got {ms!r}")
        sp = self.speed_processes
        if isinstance(sp, bool) or not isinstance(sp, int) or sp < 0:
            raise ConfigError(f"accuracy_control.speed_processes must be an integer >= 0, got {sp!r}")
        if str(self.dev_split).startswith("test"):
            raise ConfigError(f"accuracy_control.dev_split {self.dev_split!r}: the search never looks at a "
                              "test split")

    def budget(self, float_wer: float) -> float:
        """The allowed absolute dev WER increase."""
        return self.max_wer_increase * (float_wer if self.relative else 1.0)


def check_step_params(params: dict) -> dict:
    """A quantize step's YAML options with `accuracy_control` validated and taken out (keep_fp32 left for the
    search: an empty list stands in), so the rest is checked by QuantizeConfig as usual."""
    rest = {k: v for k, v in params.items() if k != "accuracy_control"}
    AccuracyControl.from_dict(params["accuracy_control"])
    if "keep_fp32" in rest:
        raise ConfigError("accuracy_control chooses keep_fp32 itself: give one or the other")
    if rest.get("method") not in SEARCH_METHODS:
        raise ConfigError(f"accuracy_control works with {', '.join(SEARCH_METHODS)}, "
                          f"not {rest.get('method')!r}")
    return {**rest, "keep_fp32": []}


# ------------------------------------------------------------------------------------------------- groups

@dataclass(frozen=True)
class Group:
    name: str
    patterns: tuple[str, ...]
    nodes: tuple[str, ...]


def derive_groups(onnx_path: str | os.PathLike, qcfg) -> list[Group]:
    """The groups of the nodes `qcfg`'s method quantizes, in graph order; each group's patterns are checked
    to match exactly its own nodes (else the node names themselves are its patterns)."""
    from w2vc.compress.quantize import matches, quantized_nodes

    nodes = quantized_nodes(onnx_path, qcfg)
    order: list[str] = []
    found: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for name, path in nodes:
        key, pattern = None, None
        if fnmatch(name, _SCORES):
            key, pattern = "attention_scores", _SCORES
        else:
            for rx, label, suffix in _RULES:
                m = re.fullmatch(rx, path)
                if m:
                    key, pattern = label.format(i=m.groupdict().get("i")), m.group("p") + suffix
                    break
        if key is None:
            key, pattern = path or name, path or name
        if key not in found:
            order.append(key)
            found[key] = (pattern, [])
        found[key][1].append((name, path))
    groups = []
    for key in order:
        pattern, members = found[key]
        hit = {n for n, p in nodes if matches(n, p, pattern)}
        own = tuple(n for n, _ in members)
        pats = (pattern,) if hit == set(own) else tuple(n.replace("[", "[[]") for n in own)
        groups.append(Group(key, pats, own))
    return groups


class Search:
    """One parent, one method config, one dev set: memoized evaluations of fallback sets ("states")."""

    def __init__(self, parent, qcfg, control: AccuracyControl, data: str | os.PathLike,
                 work_dir: str | os.PathLike, threads: int | None = 2, progress: bool = False):
        from w2vc.data.datasets import iter_utterances, resolve_split

        if qcfg.method not in SEARCH_METHODS:
            raise ValueError(f"accuracy control works with {', '.join(SEARCH_METHODS)}, not {qcfg.method}")
        self.parent, self.control, self.threads, self.progress = parent, control, threads, progress
        self.qcfg = replace(qcfg, keep_fp32=())
        self.groups = derive_groups(parent.model_file, self.qcfg)
        if not self.groups:
            raise ValueError(f"{parent.path}: {qcfg.method} quantizes no node of this graph")
        self.by_name = {g.name: g for g in self.groups}
        self.manifest = resolve_split(data, control.dev_split) if Path(data).is_dir() else Path(data)
        if self.manifest.stem.startswith("test"):
            raise ValueError(f"accuracy control searches on dev data, not {self.manifest}")
        utts = [u for _, u in zip(range(control.dev_utterances), iter_utterances(self.manifest))]
        method = {k: v for k, v in self.qcfg.to_dict().items() if k != "keep_fp32"}
        ids = hashlib.sha256(json.dumps([(u.id, u.text) for u in utts]).encode()).hexdigest()
        ident = {"parent": parent.hash, "method": method, "version": 1,
                 "dev": {"manifest": str(self.manifest.resolve()), "n": len(utts), "ids": ids}}
        self.key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file = self.dir / f"{self.key}.json"
        self.store = json.loads(self.file.read_text()) if self.file.exists() else {
            "identity": ident, "groups": [g.__dict__ for g in self.groups], "evals": {}, "latency": {}}
        self.run_now = 0  # evaluations computed in this process (the rest came from the file)
        self.used: set[str] = set()
        self._dev = self._float_logits = None

    # states: frozensets of group names kept in float; keyed in graph order
    def state_key(self, keep) -> str:
        return FLOAT if keep is None else "keep:" + "+".join(g.name for g in self.groups if g.name in keep)

    def label(self, key: str) -> str:
        """A state key for people: 'all quantized', 'fp32: conv.0+conv.1', 'quantized only: lm_head'."""
        if not key.startswith("keep:"):
            return key
        keep = [n for n in key[5:].split("+") if n]
        if not keep:
            return "all quantized"
        if len(keep) > len(self.groups) / 2:
            return "quantized only: " + "+".join(g.name for g in self.groups if g.name not in keep)
        return "fp32: " + "+".join(keep)

    def patterns(self, keep) -> list[str]:
        return [p for g in self.groups if g.name in keep for p in g.patterns]

    def _dev_data(self):
        if self._dev is None:
            from w2vc.data.datasets import load_dataset

            self._dev = load_dataset(self.manifest, limit=self.control.dev_utterances)
        return self._dev

    def _run(self, path):
        from w2vc.experiments.accuracy_report import run_graph

        return run_graph(path, self._dev_data().audio, self.threads)

    def _score(self, logits, hyps) -> dict:
        from w2vc.core.wer import word_error_rate
        from w2vc.experiments.accuracy_report import logit_error

        ds = self._dev_data()
        w = word_error_rate(ds.ids, ds.texts, hyps)
        errors = w.substitutions + w.deletions + w.insertions
        return {"wer": w.wer, "errors": errors, "ref_words": w.ref_words, "utterances": w.utterances,
                **logit_error(self._float_logits, logits)}

    def _float(self) -> None:
        """The parent's logits (the reference of every logit error), kept in the work dir beside the JSON."""
        if self._float_logits is not None:
            return
        npz = self.dir / f"{self.key}.float.npz"
        if npz.exists() and FLOAT in self.store["evals"]:
            with np.load(npz) as z:
                self._float_logits = [z[f"u{i}"] for i in range(len(z.files))]
            return
        t0 = time.perf_counter()
        logits, hyps = self._run(self.parent.path)
        self._float_logits = logits
        np.savez(npz, **{f"u{i}": x for i, x in enumerate(logits)})
        if FLOAT not in self.store["evals"]:
            self._record(FLOAT, {**self._score(logits, hyps), "seconds": time.perf_counter() - t0})

    def save(self) -> None:
        write_json_atomic(self.file, self.store)

    def _record(self, key: str, figures: dict) -> None:
        self.store["evals"][key] = figures
        self.run_now += 1
        write_json_atomic(self.file, self.store)
        if self.progress:
            print(f"  [{len(self.store['evals'])} evals] {self.label(key)}: dev WER "
                  f"{100 * figures['wer']:.2f} % KL {figures['kl']:.4f} ({figures['seconds']:.1f} s)",
                  flush=True)

    def build(self, keep, out: Path):
        """The trial graph of a fallback set: the ordinary quantize step (one shared static calibration)."""
        from w2vc.compress.quantize import quantize

        cal = self.dir / f"{self.key}.calibration.json" if self.qcfg.method == "ort_static_int8" else None
        cfg = replace(self.qcfg, keep_fp32=tuple(self.patterns(keep)))
        return quantize(self.parent, cfg, out, calibration_cache=cal)

    def evaluate(self, keep) -> dict:
        """Dev figures of a fallback set (None: the float parent), from the file or measured now."""
        key = self.state_key(keep)
        self.used.add(key)
        if key not in self.store["evals"]:
            self._float()
        if key not in self.store["evals"]:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=self.dir, prefix=f"{self.key}.trial.") as td:
                art = self.build(keep, Path(td) / "q")
                logits, hyps = self._run(art.path)
            self._record(key, {**self._score(logits, hyps), "seconds": time.perf_counter() - t0})
        return self.store["evals"][key]

    def evaluate_artifact(self, art) -> dict:
        """Dev figures of a finished artifact (the final check), memoized by its content hash."""
        key = f"artifact:{art.hash}"
        if key not in self.store["evals"]:
            self._float()
            t0 = time.perf_counter()
            logits, hyps = self._run(art.path)
            self._record(key, {**self._score(logits, hyps), "seconds": time.perf_counter() - t0})
        return self.store["evals"][key]

    # --------------------------------------------------------------------------------------- sensitivity
    def sensitivity(self, full: bool = False) -> list[dict]:
        """Per group: dev figures with only it quantized ("only") and, if `full`, with only it kept in float
        ("keep"). `help`, the search's order, is the share of the all-quantized logit KL that the group
        causes quantized alone (keeping it in float removes about that much); the WER share only when the
        KL cannot tell. Quantized alone, because damage can saturate: on the Base-style student, keeping any
        one of convs 1-3 in float alone gained nothing, while each quantized alone did most of it. KL, not
        WER, because on 40 utterances one word is 0.3 points: conv 0 quantized alone "improved" that
        student's dev WER from 7.19 to 5.94 % while holding most of the KL left once convs 1-3 were kept
        (and kept in fp32 or not, it made 7.15 or 7.90 % on 200 test utterances, fp32 7.08 %)."""
        fl, base = self.evaluate(None), self.evaluate(frozenset())
        names = {g.name for g in self.groups}
        excess = {"wer": base["wer"] - fl["wer"], "kl": base["kl"]}
        rows = []
        for g in self.groups:
            only = self.evaluate(frozenset(names - {g.name}))
            k = "kl" if excess["kl"] > 0 else "wer"
            helps = (only[k] - fl[k]) / excess[k] if excess[k] > 0 else 0.0
            rows.append({"group": g.name, "nodes": len(g.nodes), "patterns": list(g.patterns),
                         "only": _brief(only), "help": helps})
            if full:
                rows[-1]["keep"] = _brief(self.evaluate(frozenset({g.name})))
        return rows

    # --------------------------------------------------------------------------------------------- search
    def run(self) -> dict:
        """Greedy forward by helpfulness, backward pass, per-group figures of the chosen set; the report."""
        t0, c = time.perf_counter(), self.control
        fl, base = self.evaluate(None), self.evaluate(frozenset())
        budget = c.budget(fl["wer"])
        limit = fl["wer"] + budget + 1e-12

        def ok(e):
            return e["wer"] <= limit and (c.max_kl is None or e["kl"] <= c.max_kl + 1e-15)

        rows, trace, chosen = None, [], []
        if c.full_sensitivity or not ok(base):
            rows = self.sensitivity(full=c.full_sensitivity)
        if not ok(base):
            helpful = {r["group"]: r["help"] for r in rows}
            order = sorted(self.groups, key=lambda g: -helpful[g.name])  # stable: ties in graph order
            for g in order:
                chosen.append(g.name)
                e = self.evaluate(frozenset(chosen))
                trace.append({"phase": "add", "group": g.name, "wer": e["wer"], "within_budget": ok(e)})
                if ok(e):
                    break
            dropped = True
            while dropped:  # until no single group can go: each one left is needed by the budget
                dropped = False
                for name in sorted(chosen, key=lambda n: helpful[n]):  # least helpful first
                    trial = [n for n in chosen if n != name]
                    e = self.evaluate(frozenset(trial))
                    trace.append({"phase": "drop", "group": name, "wer": e["wer"], "within_budget": ok(e)})
                    if ok(e):
                        chosen, dropped = trial, True
        keep = frozenset(chosen)
        speed = speed_pass(self, keep, ok) if c.speed_pass and c.latency else None
        for_budget = keep
        if speed and speed["accepted"]:
            keep = frozenset(speed["kept"])
        final = self.evaluate(keep)
        per_group = []
        for name in [g.name for g in self.groups if g.name in keep]:
            without = self.evaluate(keep - {name})
            per_group.append({"group": name, "patterns": list(self.by_name[name].patterns),
                              "wer_without": without["wer"], "wer_gain": without["wer"] - final["wer"],
                              "kl_without": without["kl"], "kl_gain": without["kl"] - final["kl"],
                              "needed": not ok(without), "why": "budget" if name in for_budget else "speed"})
        latency = chosen_latency(self, keep) if c.latency else {}
        for row in per_group:
            if latency:
                row["latency_cost_ms"] = latency["chosen_ms"] - latency["without"][row["group"]]
        used = [self.store["evals"][k] for k in sorted(self.used)]
        n_sens = 2 + len(self.groups) * (2 if c.full_sensitivity else 1) if rows else 0
        return {
            "method": self.qcfg.method, "parent": str(self.parent.path), "parent_hash": self.parent.hash,
            "search_key": self.key, "cache": str(self.file),
            "dev": {"manifest": str(self.manifest), "utterances": fl["utterances"],
                    "ref_words": fl["ref_words"]},
            "budget": {"max_wer_increase": c.max_wer_increase, "relative": c.relative, "absolute": budget,
                       "max_dev_wer": fl["wer"] + budget, "max_kl": c.max_kl},
            "float": _brief(fl), "all_quantized": _brief(base), "chosen": _brief(final),
            "within_budget": ok(final), "fallback": [g.name for g in self.groups if g.name in keep],
            "keep_fp32": self.patterns(keep),
            "groups": [{"name": g.name, "nodes": len(g.nodes), "patterns": list(g.patterns)}
                       for g in self.groups],
            "sensitivity": rows, "trace": trace, "speed_pass": speed, "per_group": per_group, "latency": latency,
            "cost": {"evaluations": len(used), "evaluations_run": self.run_now,
                     "sensitivity_evaluations": n_sens,
                     "minutes": (time.perf_counter() - t0) / 60,
                     "minutes_if_uncached": sum(e["seconds"] for e in used) / 60},
        }

def _brief(e: dict) -> dict:
    return {k: e[k] for k in ("wer", "errors", "ref_words", "kl", "sqnr_db", "frame_agreement")}


# ------------------------------------------------------------------------------------------------ entries

def _locked(search: Search, fn):
    with file_lock(search.dir / f"{search.key}.lock"):  # processes sharing a work dir measure each state once
        if search.file.exists():
            search.store = json.loads(search.file.read_text())
        return fn()


def sensitivity(parent, qcfg, control: AccuracyControl, data, work_dir, full: bool = True,
                **kw) -> list[dict]:
    """The sensitivity table of `parent` (an ONNX Artifact) under `qcfg`'s method: which groups hurt."""
    s = Search(parent, qcfg, control, data, work_dir, **kw)
    return _locked(s, lambda: s.sensitivity(full))


def search(parent, qcfg, control: AccuracyControl, data, work_dir, **kw) -> tuple[Search, dict]:
    """The search and its report (chosen fallback groups, their keep_fp32 patterns, figures, cost)."""
    s = Search(parent, qcfg, control, data, work_dir, **kw)
    return s, _locked(s, s.run)


def check_final(s: Search, art, report: dict) -> dict:
    """Score the ordinary quantize step's output on the dev set again (into `report["final_check"]`): the
    budget must hold for what ships, not only for the trial graph (built alike, so the figures agree)."""
    e = _locked(s, lambda: s.evaluate_artifact(art))
    out = {"artifact": str(art.path), "hash": art.hash, **_brief(e),
           "within_budget": e["wer"] <= report["budget"]["max_dev_wer"] + 1e-12
           and (report["budget"]["max_kl"] is None or e["kl"] <= report["budget"]["max_kl"] + 1e-15),
           "same_as_search": e["errors"] == report["chosen"]["errors"]
           and abs(e["kl"] - report["chosen"]["kl"]) < 1e-9}
    report["final_check"] = out
    report["cost"]["evaluations_run"] = s.run_now
    if not out["within_budget"]:
        print(f"warning: accuracy control: {art.path} has dev WER {100 * e['wer']:.2f} %, over the budget "
              f"({100 * report['budget']['max_dev_wer']:.2f} %)")
    return out


class StepControl:
    """The sweep runner's hook for a quantize step with `accuracy_control:`: the search is run (or replayed
    from `<cache>/accuracy/`) for the step's input, `params` carries the concrete keep_fp32 (so the step key
    names the chosen list), and `finish` checks the built step and records the report beside its cache
    entry."""

    def __init__(self, art, params: dict, corpus: str, cache: Path, progress: bool = True):
        from w2vc.experiments.recipes import get_step

        rest = check_step_params(params)
        self.control = AccuracyControl.from_dict(params["accuracy_control"])
        qcfg = get_step("quantize").make_config(rest, corpus)
        self.search, self.report = search(art, qcfg, self.control, self.control.dev_data or corpus,
                                          Path(cache) / "accuracy", progress=progress)
        self.params = {**rest, "keep_fp32": self.report["keep_fp32"]}
        from w2vc.experiments.accuracy_report import one_line

        print(one_line(self.report))

    def finish(self, out, record: Path) -> None:
        """`out`: the finished step output (still in its work dir). Final check, `record` (JSON) and a plot
        next to it, and the summary in the step's provenance report (w2vc.json is not part of its hash)."""
        from w2vc.experiments.accuracy_report import plot_sensitivity, summary

        check_final(self.search, out, self.report)
        self.report["final_check"]["artifact"] = str(record).removesuffix(".accuracy.json")  # once renamed
        self.report["report_file"] = str(record)
        if self.report["sensitivity"]:
            self.report["plot"] = str(plot_sensitivity(self.report, record.with_suffix(".png")))
        write_json_atomic(record, self.report)
        prov_file = Path(out.path) / "w2vc.json"
        prov = json.loads(prov_file.read_text())
        prov["report"]["accuracy_control"] = summary(self.report)
        write_json_atomic(prov_file, prov)
