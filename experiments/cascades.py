"""Cascade candidates in the sweep (a `kind: cascade` step, compress/cascade.py): how the runner measures
and times them, and the report's note on it. No method code: routing is w2vc.core.cascade, the
measurements are w2vc.eval.cascade_cost.

A cascade's cost depends on its input, so it is not timed on the synthetic clip the other candidates are
timed on: it transcribes the eval set's utterances one at a time in fresh processes, and the reference
candidate (the teacher) and each cascade's strong member (when it is a candidate) are timed the same way on the
same utterances (`utt_*` figures), so "mean latency ≤ 0.6 × the teacher's" compares like with like and the
report can say what the routing saves against running the strong model alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from w2vc.core.artifact import Kind, kind_of
from w2vc.experiments.config import SweepConfig

TIMING_SET = "clean"


def is_cascade(rec: dict) -> bool:
    """A candidate record (runner) or report row whose artifact is a cascade directory."""
    return bool(rec.get("artifact")) and Path(rec["artifact"]).is_dir() and kind_of(rec["artifact"]) is Kind.CASCADE


def timing_audio(eval_data) -> tuple[str, list]:
    """(set name, audio) the cascades are timed on: the clean set when scored, else the first set."""
    sets = {e.name: d for e, d in eval_data.sets}
    name = TIMING_SET if TIMING_SET in sets else eval_data.sets[0][0].name
    return name, sets[name].audio


def utterance_config(cfg: SweepConfig):
    from w2vc.eval.cascade_cost import UtteranceTimingConfig

    e = cfg.eval
    return UtteranceTimingConfig(threads=e.threads, processes=e.processes, max_spread=e.max_spread)


def measure_cascade(art, transcriber, cfg: SweepConfig, eval_data, first_timing: bool = True) -> tuple[dict, dict]:
    """WER and fallback rate per set (routes of the scoring run), size of both members, and with
    `first_timing` a first timing on the utterances in one fresh process (for callers with no latency stage,
    e.g. search; the sweep's stage times every cascade in `eval.processes`)."""
    from w2vc.eval.cascade_cost import UtteranceJob, evaluate_cascade, time_utterances

    res, rates = evaluate_cascade(transcriber, eval_data, threads=cfg.eval.threads, model_name=str(art.path))
    metrics = {**res.metrics, **rates, "size_mb": art.size_mb}
    if first_timing:
        _, audio = timing_audio(eval_data)
        first = replace(utterance_config(cfg), processes=1, extra_processes=0)
        job = UtteranceJob(str(art.path), str(art.path))
        metrics.update(time_utterances([job], audio, first)[0].headline_metrics())
    return metrics, res.text_artifacts()


def strong_member(cascade_rec: dict, recs: list[dict]) -> dict | None:
    """The record (or report row) of a cascade's strong member when it is a candidate of the sweep, else None."""
    from w2vc.core.cascade import CascadeSpec

    if not is_cascade(cascade_rec):
        return None
    strong = CascadeSpec.read(cascade_rec["artifact"]).member(cascade_rec["artifact"], "strong").resolve()
    return next((r for r in recs if r.get("artifact") and not is_cascade(r) and Path(r["artifact"]).resolve() == strong),
                None)


def time_on_audio(recs: list[dict], todo: list[dict], cfg: SweepConfig, eval_data, force: bool,
                  progress: bool) -> list[tuple[dict, object]]:
    """The cascades of `todo` and, beside them, the reference and each cascade's strong member (when it is
    a candidate) timed on the utterances in the same interleaved processes: [(record, UtteranceCost)]. With
    no cascade to time (and nothing forced), only those of them that lack their `utt_*` figures."""
    from w2vc.eval.cascade_cost import UtteranceJob, time_utterances

    cascades = [r for r in recs if is_cascade(r)]
    if not cascades:
        return []
    jobs = [r for r in todo if is_cascade(r)]
    ref = next((r for r in recs if r["name"] == cfg.eval.reference and not is_cascade(r)), None)
    beside = [ref] if ref is not None else []
    beside += [m for m in (strong_member(c, recs) for c in cascades) if m is not None]
    extra = beside if jobs or force else [r for r in beside if "utt_latency_mean_ms" not in r["metrics"]]
    for r in extra:
        if all(r["name"] != j["name"] for j in jobs):
            jobs.append(r)
    if not jobs:
        return []
    name, audio = timing_audio(eval_data)
    print(f"      timing {len(jobs)} candidate(s) on the {len(audio)} '{name}' utterances (a cascade's cost "
          f"depends on its input) in {cfg.eval.processes} fresh processes each, interleaved")
    costs = time_utterances([UtteranceJob(r["name"], r["artifact"]) for r in jobs], audio, utterance_config(cfg),
                            progress)
    return list(zip(jobs, costs))


def cascade_note(cfg: SweepConfig, rows: list[dict]) -> str:
    """The report's paragraph on cascade rows: how their latency was taken, fallback rate, ratio to the
    reference on the same utterances. Empty without cascades."""
    casc = [r for r in rows if r.get("latency_on_test_audio")]
    if not casc:
        return ""
    ref = next((r for r in rows if r["name"] == cfg.eval.reference and r.get("utt_latency_mean_ms")), None)
    n, secs = int(casc[0].get("utt_n", 0)), casc[0].get("utt_audio_s_mean", float("nan"))
    lines = ["## Cascades: latency timed on the test audio", "",
             f"A cascade's cost depends on its input, so its latency figures are not taken on the "
             f"{', '.join(f'{s:g}' for s in cfg.eval.seconds)} s synthetic clip of the other rows: the cascade "
             f"itself transcribed each of {n} '{TIMING_SET}' test utterances (mean {secs:.2f} s) on its own, once "
             f"in each of {cfg.eval.processes} fresh processes (interleaved); latency_mean/p50/p90_ms are over "
             "utterances. Its latency_p50_ms is the median utterance, which hides the fallbacks: compare cascades "
             "by latency_mean_ms (and latency_p90_ms)."
             + (f" `{ref['name']}` was timed the same way on the same utterances (utt_latency_mean_ms "
                f"{ref['utt_latency_mean_ms']:.1f} ms)." if ref else ""), ""]
    for r in casc:
        vs = (f", {r['latency_mean_ms'] / ref['utt_latency_mean_ms']:.2f}× {ref['name']}'s mean" if ref else "")
        wer = r.get("wer_clean")
        wer_vs = (f" ({wer / ref['wer_clean']:.2f}× {ref['name']}'s)" if ref and wer is not None
                  and ref.get("wer_clean") else "")
        strong = strong_member(r, rows)
        alone = ""
        if strong is not None and strong.get("utt_latency_mean_ms"):
            alone = (f"; its strong member `{strong['name']}` alone on the same utterances: mean "
                     f"{strong['utt_latency_mean_ms']:.1f} ms (the cascade {r['latency_mean_ms'] / strong['utt_latency_mean_ms']:.2f}×)"
                     + (f", WER clean {100 * strong['wer_clean']:.2f} %" if strong.get("wer_clean") is not None else ""))
        lines.append(f"- **{r['name']}**: falls back on {100 * r.get('fallback_rate', float('nan')):.1f} % of the "
                     f"utterances; latency mean {r['latency_mean_ms']:.1f} ms{vs}, p50 {r['latency_p50_ms']:.1f} ms, "
                     f"p90 {r['latency_p90_ms']:.1f} ms"
                     + (f"; WER clean {100 * wer:.2f} %{wer_vs}" if wer is not None else "") + alone)
    return "\n".join(lines)
