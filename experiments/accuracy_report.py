"""Accuracy-controlled quantization, around the search (experiments/accuracy_control.py): its two measures
(logit error, quick latency), tables, the sensitivity plot, MLflow and the `w2vc quantize-search` command.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def logit_error(ref: list[np.ndarray], test: list[np.ndarray]) -> dict:
    """Mean per-frame KL(float ‖ quantized) in nats, SQNR (dB) and argmax frame agreement of the logits."""
    kl, frames, same, sig, err = 0.0, 0, 0, 0.0, 0.0
    for r, t in zip(ref, test):
        r, t = r.astype(np.float64), t.astype(np.float64)
        lp, lq = _log_softmax(r), _log_softmax(t)
        kl += float((np.exp(lp) * (lp - lq)).sum())
        frames += len(r)
        same += int((r.argmax(-1) == t.argmax(-1)).sum())
        sig += float((r ** 2).sum())
        err += float(((r - t) ** 2).sum())
    return {"kl": kl / max(frames, 1), "sqnr_db": 10 * math.log10(sig / err) if err > 0 else 99.0,
            "frame_agreement": same / max(frames, 1)}


def run_graph(path, audio, threads) -> tuple[list[np.ndarray], list[str]]:
    """Logits and greedy transcripts, one utterance at a time: what eval does with these mask-less graphs."""
    from w2vc.core.load import load
    from w2vc.core.runnable import pad_batch

    tr = load(path, threads=threads)
    logits, hyps = [], []
    for a in audio:
        lg = tr.logits(pad_batch([a])[0], None)
        logits.append(lg[0])
        hyps.append(tr.decode(lg, [lg.shape[1]])[0])
    return logits, hyps


def time_graphs(paths: dict[str, Path], threads: int | None, seconds: float = 3.0, runs: int = 20) -> dict:
    """Median ms per call of each graph on `seconds` of noise: all sessions open at once (w2vc.core.ort's
    options, but no spin-waiting: idle sessions' spinning threads would steal the timed one's cores), timed
    in short blocks (one untimed call, then 4 timed) in a rotating order, so drifting machine load hits
    every graph alike. A quick figure, not `w2vc bench`."""
    import onnxruntime as ort

    from w2vc.core.artifact import onnx_file
    from w2vc.core.runnable import normalize_audio

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    x = normalize_audio(0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000)))[None]
    sessions = [(k, ort.InferenceSession(str(onnx_file(p)), so, providers=["CPUExecutionProvider"]))
                for k, p in paths.items()]
    times: dict[str, list[float]] = {k: [] for k, _ in sessions}
    for r in range(max(1, runs // 4)):
        for k, s in sessions[r % len(sessions):] + sessions[:r % len(sessions)]:
            s.run(["logits"], {"input_values": x})
            for _ in range(4):
                t = time.perf_counter()
                s.run(["logits"], {"input_values": x})
                times[k].append(1000 * (time.perf_counter() - t))
    return {k: float(np.median(v)) for k, v in times.items()}


def summary(report: dict) -> dict:
    """The few figures a provenance record or a sweep report line needs."""
    c = report["cost"]
    return {"method": report["method"], "budget": report["budget"], "fallback": report["fallback"],
            "keep_fp32": report["keep_fp32"],
            "dev_wer": {k: report[k]["wer"] for k in ("float", "all_quantized", "chosen")},
            "within_budget": report["within_budget"], "evaluations": c["evaluations"],
            "minutes_if_uncached": round(c["minutes_if_uncached"], 2),
            "final_check": report.get("final_check"), "report": report.get("report_file")}


def one_line(report: dict) -> str:
    c, b = report["cost"], report["budget"]
    fb = ", ".join(report["fallback"]) or "none (all quantized)"
    return (f"accuracy control {report['method']}: fp32 fallback {fb}; dev WER float "
            f"{100 * report['float']['wer']:.2f} %, all quantized "
            f"{100 * report['all_quantized']['wer']:.2f} %, "
            f"chosen {100 * report['chosen']['wer']:.2f} % (limit {100 * b['max_dev_wer']:.2f} %); "
            f"{c['evaluations']} evaluations ({c['evaluations_run']} run now), "
            f"{c['minutes']:.1f} min now, {c['minutes_if_uncached']:.1f} min uncached")


def sensitivity_table(report: dict) -> str:
    rows = report["sensitivity"]
    if not rows:
        return ("sensitivity: not needed (the all-quantized graph is within budget; "
                "accuracy_control.full_sensitivity / quantize-search --full-sensitivity measures it)")
    full = "keep" in rows[0]
    head = f"{'group':<22}{'nodes':>6}{'only quantized: WER %':>23}{'KL':>9}{'SQNR dB':>9}"
    head += f"{'only fp32: WER %':>18}{'KL':>9}" if full else ""
    lines = [f"dev WER: float {100 * report['float']['wer']:.2f} %, all quantized "
             f"{100 * report['all_quantized']['wer']:.2f} % (KL {report['all_quantized']['kl']:.4f}); "
             f"{report['dev']['utterances']} dev utterances, {report['dev']['ref_words']} words",
             head + f"{'help':>7}  chosen"]
    chosen = set(report["fallback"])
    for r in rows:
        o = r["only"]
        line = f"{r['group']:<22}{r['nodes']:>6}{100 * o['wer']:>23.2f}{o['kl']:>9.4f}{o['sqnr_db']:>9.1f}"
        if full:
            line += f"{100 * r['keep']['wer']:>18.2f}{r['keep']['kl']:>9.4f}"
        lines.append(line + f"{r['help']:>7.2f}  {'*' if r['group'] in chosen else ''}")
    return "\n".join(lines)


def chosen_table(report: dict) -> str:
    lat = report["latency"]
    lines = [f"chosen fp32 fallback: {', '.join(report['fallback']) or 'none (everything quantized)'}",
             f"keep_fp32: {json.dumps(report['keep_fp32'])}"]
    if report["per_group"]:
        lines.append(f"{'group':<22}{'dev WER % without it':>22}{'WER gain (points)':>19}"
                     + (f"{'latency cost ms':>17}" if lat else ""))
        for g in report["per_group"]:
            line = f"{g['group']:<22}{100 * g['wer_without']:>22.2f}{100 * g['wer_gain']:>19.2f}"
            lines.append(line + (f"{g['latency_cost_ms']:>17.2f}" if lat else ""))
    if lat:
        lines.append(f"latency ({lat['note']}; {lat['threads']} threads, load avg {lat['load_avg_1m']:.1f}): "
                     f"float {lat['float_ms']:.1f} ms, all quantized {lat['all_quantized_ms']:.1f} ms, "
                     f"chosen {lat['chosen_ms']:.1f} ms")
    sp = report.get("speed_pass")
    if sp and sp["tried"]:
        gains = sorted(sp["gain_ms"].items(), key=lambda kv: -kv[1])[:5]
        lines.append(f"speed pass: {len(sp['tried'])} quantized groups timed kept in float on top of the budget's "
                     f"set ({sp['chosen_ms']:.1f} ms); largest gains "
                     + ", ".join(f"{n} {g:+.2f} ms" for n, g in gains))
        for st in sp.get("sets", []):
            t = f"{st['ms']:.1f} ms" if "ms" in st else "not timed"
            lines.append(f"  set '{st['why']}' ({', '.join(st['groups'])} in float): dev WER "
                         f"{100 * st['dev_wer']:.2f} %, {'within' if st['within_budget'] else 'over'} budget, {t}")
        if "trial_ms" in sp:
            lines.append(f"  fastest set '{sp['best']}' {sp['trial_ms']:.1f} ms against the budget's set "
                         f"{sp['before_ms']:.1f} ms ({sp['timing']}): "
                         + ("kept in float" if sp["accepted"] else "not faster by the margin: the budget's set stands"))
        else:
            lines.append("  no set within budget is faster in float: the budget's set stands")
    fc = report.get("final_check")
    if fc:
        lines.append(f"final check ({fc['artifact']}): dev WER {100 * fc['wer']:.2f} %, "
                     f"{'within' if fc['within_budget'] else 'OVER'} budget, "
                     f"{'same as' if fc['same_as_search'] else 'DIFFERENT from'} the search's figure")
    c = report["cost"]
    lines.append(f"cost: {c['evaluations']} evaluations ({c['sensitivity_evaluations']} of them for the "
                 f"sensitivity table; {c['evaluations_run']} computed now, the final check included), search "
                 f"{c['minutes']:.2f} min now, {c['minutes_if_uncached']:.2f} min if nothing were cached")
    return "\n".join(lines)


def plot_sensitivity(report: dict, path: Path) -> Path:
    """Dev WER and KL per group quantized alone (and kept alone in float), chosen groups outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["sensitivity"]
    x = np.arange(len(rows))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6, 0.45 * len(rows) + 2), 6.5), sharex=True)
    halves = [("only", "only it quantized")] + ([("keep", "only it in fp32")] if "keep" in rows[0] else [])
    w = 0.8 / len(halves)
    chosen = [r["group"] in report["fallback"] for r in rows]
    for ax, key, scale in ((a1, "wer", 100), (a2, "kl", 1)):
        for j, (half, label) in enumerate(halves):
            off = (j - (len(halves) - 1) / 2) * w
            bars = ax.bar(x + off, [scale * r[half][key] for r in rows], w, label=label)
            for b, c in zip(bars, chosen):
                if c:
                    b.set_edgecolor("black")
                    b.set_linewidth(2)
        ax.axhline(scale * report["all_quantized"][key], color="red", ls="--", label="all quantized")
        ax.axhline(scale * report["float"][key], color="green", ls=":", label="float")
    a1.axhline(100 * report["budget"]["max_dev_wer"], color="gray", ls="-.", label="budget")
    a1.set_ylabel("dev WER %")
    a2.set_ylabel("mean KL vs float (nats)")
    a2.set_xticks(x, [r["group"] for r in rows], rotation=60, ha="right", fontsize=8)
    a1.legend(fontsize=7)
    a1.set_title(f"{Path(report['parent']).name} {report['method']}: sensitivity (chosen outlined)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_search(report: dict, png: Path | None, experiment: str):
    """One MLflow run: the figures, the sensitivity table (text) and the plot."""
    from w2vc.eval.tracking import log_run

    c, b = report["cost"], report["budget"]
    params = {"model": report["parent"], "method": report["method"],
              "max_wer_increase": b["max_wer_increase"], "relative": b["relative"],
              "dev_utterances": report["dev"]["utterances"],
              "fallback": ",".join(report["fallback"]) or "none",
              "keep_fp32": json.dumps(report["keep_fp32"])}
    metrics = {"dev_wer_float": report["float"]["wer"],
               "dev_wer_all_quantized": report["all_quantized"]["wer"],
               "dev_wer_chosen": report["chosen"]["wer"], "dev_kl_chosen": report["chosen"]["kl"],
               "n_fallback": len(report["fallback"]), "evaluations": c["evaluations"],
               "search_minutes_uncached": c["minutes_if_uncached"],
               "within_budget": int(report["within_budget"])}
    if report["latency"]:
        metrics.update({"quick_latency_ms_chosen": report["latency"]["chosen_ms"],
                        "quick_latency_ms_all_quantized": report["latency"]["all_quantized_ms"]})
    texts = {"sensitivity.txt": sensitivity_table(report) + "\n\n" + chosen_table(report) + "\n",
             "accuracy_control.json": json.dumps(report, indent=1, default=str)}
    return log_run(f"quantize-search-{Path(report['parent']).name}", params, metrics,
                   tags={"w2vc.kind": "quantize-search"}, text_artifacts=texts,
                   file_artifacts=[png] if png else [], experiment=experiment)


def run_quantize_search(a) -> int:
    """Body of `w2vc quantize-search` (w2vc/cli.py holds its parser)."""
    from w2vc.compress.quantize import NEEDS_DATA, QuantizeConfig, quantize
    from w2vc.core.artifact import Artifact, Kind
    from w2vc.core.util import write_json
    from w2vc.experiments.accuracy_control import AccuracyControl, check_final, search

    art = Artifact.open(a.model)
    art.require(frozenset({Kind.ONNX}), "quantize-search", "export it first (kind: export)")
    control = AccuracyControl(max_wer_increase=a.max_wer_increase, relative=a.relative,
                              dev_utterances=a.dev_utterances, max_kl=a.max_kl,
                              full_sensitivity=a.full_sensitivity)
    qcfg = QuantizeConfig.from_dict({"method": a.method, "keep_fp32": [],
                                     **({"calibration_data": a.data} if a.method in NEEDS_DATA else {})})
    s, rep = search(art, qcfg, control, a.data, a.work_dir, threads=a.threads, progress=True)
    out = quantize(art, replace(qcfg, keep_fp32=tuple(rep["keep_fp32"])), a.out)
    check_final(s, out, rep)
    png = plot_sensitivity(rep, s.dir / f"{s.key}.sensitivity.png") if rep["sensitivity"] else None
    prov_file = out.path / "w2vc.json"
    prov = json.loads(prov_file.read_text())
    prov["report"]["accuracy_control"] = summary(rep)
    prov_file.write_text(json.dumps(prov, indent=1, default=str))
    print(sensitivity_table(rep))
    print(chosen_table(rep))
    print(f"quantized artifact: {out.path}" + (f"\nplot: {png}" if png else ""))
    if not a.no_mlflow:
        log_search(rep, png, a.experiment)
    write_json(a.json, rep)
    return 0 if rep["final_check"]["within_budget"] else 2
