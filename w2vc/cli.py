"""The `w2vc` command: one entry point, one subcommand per job. Errors print one line, not a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from w2vc.core.util import write_json as _write_json


def cmd_data_synth(a) -> int:
    from w2vc.data.synth import SynthConfig, synthesize_corpus

    extra = {k: v for k, v in (("workers", a.workers), ("piper_share", a.piper_share), ("long_min_s", a.long_min_s))
             if v is not None}
    cfg = SynthConfig(hours=a.hours, seed=a.seed, **extra)
    meta = synthesize_corpus(a.out, cfg)
    print(f"corpus {a.out} ({'cached' if meta['cached'] else 'built'}, seed {a.seed})")
    print(f"{'split':<18}{'hours':>8}{'utts':>7}{'speakers':>10}{'voices':>8}  synthesizers")
    for split, s in meta["splits"].items():
        print(f"{split:<18}{s['hours']:>8.3f}{s['utterances']:>7}{s['speakers']:>10}{s['voices']:>8}  "
              f"{','.join(s['synths'])}" + (f"  ({s['seconds'][0]:g}-{s['seconds'][1]:g} s each)" if "seconds" in s else ""))
    lf = meta.get("long_form", {})
    kinds = meta["splits"]["train"].get("kinds", {})
    if kinds:
        print(f"train long-form: streams {kinds.get('stream', 0):.3f} h, crops {kinds.get('crop', 0):.3f} h "
              f"({100 * lf.get('train_share', 0):.0f} % of train, made from its utterances)")
    for split in ("dev_long", "test_long"):
        if split in lf:
            print(f"{split}: {lf[split]}")
    _write_json(a.json, meta)
    return 0


def _oversample(rules: list[str]) -> dict[str, int]:
    """COLUMN=VALUE:K strings → TrainConfig.oversample (which checks the rule itself)."""
    out = {}
    for rule in rules:
        key, _, k = rule.rpartition(":")
        if not k.isdigit():
            raise SystemExit(f"error: --oversample wants COLUMN=VALUE:K (K an integer >= 1), got {rule!r}")
        out[key] = int(k)
    return out


def _options(pairs: list[str], flag: str) -> dict:
    """KEY=VALUE strings → a dict for a config's from_dict: numbers as numbers, a,b as a list."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE, got {pair!r}")
        items = [v.strip() for v in value.split(",")]
        nums = []
        for v in items:
            try:
                nums.append(float(v))
            except ValueError:
                nums.append(v)
        out[key.strip()] = nums if len(nums) > 1 else nums[0]
    return out


def cmd_train(a) -> int:
    from w2vc.data.augment import AugmentConfig
    from w2vc.train import TrainConfig, train

    cfg = TrainConfig(arch=a.arch, data=a.data, out=a.out, steps=a.steps, lr=a.lr, warmup_steps=a.warmup,
                      batch_seconds=a.batch_seconds, eval_every=a.eval_every, seed=a.seed,
                      init_from=a.init_from, bf16={"auto": None, "on": True, "off": False}[a.bf16],
                      dev_limit=a.dev_limit, threads=a.threads, dropout=a.dropout,
                      freeze_feature_encoder=a.freeze_feature_encoder, oversample=_oversample(a.oversample),
                      device=a.device, num_workers=a.num_workers, lengths=a.lengths, pair_share=a.pair_share,
                      augment=AugmentConfig.from_dict(_options(a.augment, "--augment")) if not a.no_augment
                      else AugmentConfig.off())
    res = train(cfg, resume=a.resume, stop_at_step=a.stop_at_step)
    print(f"done: {res['steps']} steps in {res['minutes']:.1f} min; best model: {res['best_dir']}")
    _write_json(a.json, res)
    return 0


def cmd_wer(a) -> int:
    from w2vc.eval.cli_cmds import run_wer

    return run_wer(a)


def cmd_eval(a) -> int:
    from w2vc.eval.cli_cmds import run_eval

    return run_eval(a)


def cmd_distill(a) -> int:
    from w2vc.compress.distill import DistillConfig, distill
    from w2vc.core.artifact import Artifact

    cfg = DistillConfig(student=a.student, init=a.init, data=a.data, steps=a.steps, lr=a.lr,
                        warmup_steps=a.warmup, batch_seconds=a.batch_seconds,
                        teacher_layers=tuple(a.teacher_layers or ()),
                        alpha_ctc=a.alpha_ctc, alpha_kd=a.alpha_kd, alpha_hidden=a.alpha_hidden,
                        temperature=a.temperature, eval_every=a.eval_every, seed=a.seed, device=a.device,
                        bf16={"auto": None, "on": True, "off": False}[a.bf16],
                        hidden_layer_map=tuple(tuple(int(x) for x in p.split(":")) for p in (a.hidden_map or [])))
    art = distill(Artifact.open(a.teacher), cfg, a.out)
    if art is None:  # a non-zero rank of a data-parallel run
        return 0
    print(f"distilled student: {art.path}  report: {json.dumps(art.provenance['report'])}")
    return 0


def cmd_pareto(a) -> int:
    from w2vc.experiments import pareto as P

    minimize = [k for k in (a.minimize or "").split(",") if k]
    maximize = [k for k in (a.maximize or "").split(",") if k]
    if a.csv:
        rows = P.read_csv(a.csv)
        source = a.csv
    elif a.experiment:
        from w2vc.experiments.runner import rows_from_mlflow

        rows = rows_from_mlflow(a.experiment)
        source = f"MLflow experiment {a.experiment}"
        minimize = minimize or ["wer_clean", "latency_p50_ms", "size_mb"]
    else:
        raise ValueError("give --csv FILE or --experiment NAME")
    missing = [k for k in minimize + maximize if all(k not in r for r in rows)]
    if missing:
        raise ValueError(f"objective(s) not in {source}: {', '.join(missing)} (columns: {', '.join(rows[0])})")
    res = P.select(rows, minimize, maximize, a.budget or [])
    label = next((k for k in ("name", "id", "candidate") if k in rows[0]), None)
    cols = ([label] if label else []) + minimize + maximize
    print(P.markdown_table(res, cols))
    print(f"{len(res.front)} of {len(rows)} points on the front; {len(res.picks)} within budget")
    if a.plot and len(minimize + maximize) >= 2:
        keys = minimize + maximize
        print(f"plot: {P.plot(res, keys[1], keys[0], a.plot, label=label or 'name')}")
    _write_json(a.json, {"front": res.front, "picks": res.picks, "rows": res.rows})
    return 0


def cmd_bench(a) -> int:
    from w2vc.cli_bench import bench_command

    return bench_command(a)


def cmd_sweep(a) -> int:
    from w2vc.experiments.config import load_config
    from w2vc.experiments.runner import run_sweep

    cfg = load_config(a.config)
    res = run_sweep(cfg, log_mlflow=not a.no_mlflow, remeasure=a.remeasure)
    print(f"report: {res.report}\nplot:   {res.plot}\ntable:  {res.table_csv}")
    for p in res.exports:
        print(f"export: {p}")
    if res.parent_run_id:
        print(f"MLflow: parent run {res.parent_run_id} in experiment {cfg.experiment} "
              "(view: mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1)")
    _write_json(a.json, {"report": str(res.report), "plot": str(res.plot), "exports": [str(p) for p in res.exports],
                         "front": res.pareto.front, "picks": res.pareto.picks})
    return 0


def cmd_report(a) -> int:
    from w2vc.experiments.rerender import report_from_dir

    rep, missing = report_from_dir(a.sweep_dir, a.out)
    if missing:
        print(f"warning: no figures yet for {', '.join(missing)} (left out of the report)")
    print(rep.table)
    print(f"report: {rep.report}\nplot:   {rep.plot}\ntable:  {rep.table_csv}")
    _write_json(a.json, {"report": str(rep.report), "plot": str(rep.plot), "table": str(rep.table_csv),
                         "missing": missing})
    return 0


def cmd_whatif(a) -> int:
    from w2vc.eval.cost import parse_seconds
    from w2vc.experiments.whatif import whatif

    if not a.recipe and not a.shape_of:
        raise SystemExit("error: whatif needs --recipe, --shape-of, or both")
    res = whatif(a.arch, a.recipe, seconds=parse_seconds(a.seconds), threads=a.threads, repeats=a.repeats,
                 data=a.data, processes=a.processes, shape_of=a.shape_of, shape_from=a.shape_from)
    print(f"COST-ONLY (random weights, true {a.arch} shape; no WER): {a.recipe or '(no recipe)'}")
    if res["shapes"]:
        s = res["shapes"]
        print(f"shape of {a.shape_of} at its ratios: {s['num_hidden_layers']} layers, heads {s['num_heads']}, "
              f"FFN {s['intermediate_size']}, conv {s['conv_dim']}")
    for n in res["notes"]:
        print(f"note: {n}")
    print(res["table"])
    r = res["ratio_vs_fp32"]
    print("recipe / fp32: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()))
    _write_json(a.json, res)
    return 0


def cmd_search(a) -> int:
    from w2vc.experiments.config import load_config
    from w2vc.experiments.search import run_search, with_storage_default

    cfg = load_config(a.config)
    storage = with_storage_default(cfg, a.storage)
    Path(cfg.work_dir, cfg.name).mkdir(parents=True, exist_ok=True)
    study = run_search(cfg, a.trials, storage=storage, study_name=a.study, seed=a.seed, log_mlflow=not a.no_mlflow)
    print(f"study {study.study_name} in {storage}: {len(study.trials)} trials; Pareto-optimal:")
    for t in study.best_trials:
        print(f"  trial {t.number}: {dict(zip(list(cfg.objectives) + list(cfg.maximize), t.values))} {t.params}")
    _write_json(a.json, {"study": study.study_name, "storage": storage, "n_trials": len(study.trials),
                         "best": [{"number": t.number, "values": t.values, "params": t.params} for t in study.best_trials]})
    return 0


def cmd_quantize_search(a) -> int:
    from w2vc.experiments.accuracy_report import run_quantize_search

    return run_quantize_search(a)


def cmd_transcribe(a) -> int:
    from w2vc import transcribe as T

    cfg = T.TranscribeConfig(chunk_s=a.chunk_s, stride_s=a.stride_s, threads=a.threads)
    inputs = T.find_audio(a.inputs)
    if a.format == "srt" and len(inputs) > 1 and not a.out:
        raise T.TranscribeError(f"{len(inputs)} inputs give {len(inputs)} SRT files: give --out FOLDER")
    model = T.open_model(a.model, cfg.threads)
    results = T.transcribe_files(model, inputs, cfg, progress=not a.no_progress)
    if a.out:
        for p in T.write_outputs(results, a.format, a.out, a.model, model.runtime, cfg):
            print(f"wrote {p}", file=sys.stderr)
    else:
        sys.stdout.write(T.render(results, a.format, a.model, model.runtime, cfg))
    audio_s, compute_s = sum(r.duration_s for r in results), sum(r.compute_s for r in results)
    print(f"{len(results)} file(s), {audio_s:.1f} s of audio in {compute_s:.2f} s "
          f"(RTF {compute_s / audio_s:.3f}, {model.runtime})", file=sys.stderr)
    return 0


def cmd_pack(a) -> int:
    from w2vc.core.models import pack_fp16

    out = pack_fp16(a.src, a.out, note=a.note or "")
    size = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20
    print(f"packed {a.src} -> {out} (fp16 safetensors, {size:.1f} MiB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="w2vc", description="compress wav2vec2 CTC models for edge devices")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="offline corpus").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("synth", help="synthesize the offline speech corpus (espeak-ng, Festival, Piper; Flite "
                        "for the unseen-synthesizer test) with long-form train/dev/test material")
    s.add_argument("--out", default="data/corpus", help="corpus directory (default: data/corpus)")
    s.add_argument("--hours", type=float, default=8.0, help="clean hours over train/dev/test (default 8)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--piper-share", type=float, default=None,
                   help="fraction of utterances by Piper speakers (default 0.2; 0 = no Piper needed)")
    s.add_argument("--long-min-s", type=float, default=None,
                   help="shortest dev_long/test_long recording in seconds (default 60)")
    s.add_argument("--json", help="write the summary as JSON")
    s.set_defaults(fn=cmd_data_synth)

    t = sub.add_parser("train", help="CTC training (from scratch, warm start or fine-tune), resumable")
    t.add_argument("--arch", required=True, help="large-s | base-s | large | base | a model directory")
    t.add_argument("--data", required=True, help="corpus root (train/dev manifests) or data path")
    t.add_argument("--out", required=True, help="run directory (checkpoints, log.jsonl, best/)")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--warmup", type=int, default=400)
    t.add_argument("--batch-seconds", type=float, default=30.0)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--dev-limit", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init-from", help="initialise weights from this model directory (new schedule)")
    t.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="mixed precision: auto = bf16 where the CPU/GPU has it (fp16 + loss scaling on older "
                   "GPUs, fp32 on CPUs without bf16); on = bf16; off = fp32")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA when a GPU is visible (under torchrun: GPU LOCAL_RANK)")
    t.add_argument("--num-workers", type=int, default=2, help="DataLoader processes decoding/augmenting ahead")
    t.add_argument("--lengths", choices=["header", "manifest"], default="header",
                   help="batch-plan lengths from file headers (exact) or the manifest's duration column")
    t.add_argument("--threads", type=int)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--augment", action="append", metavar="KEY=VALUE", default=[],
                   help="augmentation option (w2vc.data.augment.AugmentConfig), repeatable: p_pad=0.5, "
                   "pad_seconds_range=0,4, p_reverb=0.5")
    t.add_argument("--dropout", type=float, help="one rate for every dropout (default: the preset's)")
    t.add_argument("--freeze-feature-encoder", action="store_true",
                   help="keep the CNN feature encoder fixed (warm starts: ~1.6x faster steps here)")
    t.add_argument("--oversample", action="append", default=[], metavar="COLUMN=VALUE:K",
                   help="see train utterances with this manifest value K times an epoch (e.g. synth=festival:2)")
    t.add_argument("--pair-share", type=float, default=0.0, metavar="P",
                   help="share of train utterances heard right after another one in the same input (long-form)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.add_argument("--stop-at-step", type=int, help="checkpoint and exit at this step (continue with --resume)")
    t.add_argument("--json")
    t.set_defaults(fn=cmd_train)

    d = sub.add_parser("distill", help="distil a teacher into a student (CTC + KL + hidden-state losses)")
    d.add_argument("--teacher", required=True, help="teacher model directory")
    d.add_argument("--student", default="base-s", help="preset (init scratch) or model dir (init checkpoint)")
    d.add_argument("--init", default="scratch", choices=["scratch", "checkpoint", "teacher_layers"])
    d.add_argument("--teacher-layers", type=int, nargs="*", help="layers copied for init teacher_layers")
    d.add_argument("--data", default="data/corpus")
    d.add_argument("--out", required=True, help="output directory (run/ checkpoints, model/ artifact)")
    d.add_argument("--steps", type=int, default=2000)
    d.add_argument("--lr", type=float, default=1e-3)
    d.add_argument("--warmup", type=int, default=200)
    d.add_argument("--batch-seconds", type=float, default=30.0, help="audio per batch and process")
    d.add_argument("--eval-every", type=int, default=250)
    d.add_argument("--alpha-ctc", type=float, default=0.5)
    d.add_argument("--alpha-kd", type=float, default=0.5)
    d.add_argument("--alpha-hidden", type=float, default=0.0)
    d.add_argument("--hidden-map", nargs="*", help="student:teacher hidden_states pairs, e.g. 2:4 4:8")
    d.add_argument("--temperature", type=float, default=2.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--bf16", choices=["auto", "on", "off"], default="auto", help="as for train")
    d.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="teacher and student")
    d.set_defaults(fn=cmd_distill)

    w = sub.add_parser("wer", help="WER/CER of two Kaldi-style text files (utt-id words...)")
    w.add_argument("--ref", required=True, help="reference transcripts")
    w.add_argument("--hyp", required=True, help="hypothesis transcripts (scored on the ids both files share)")
    w.add_argument("--json", help="write the figures (and per-utterance errors) as JSON")
    w.set_defaults(fn=cmd_wer)

    e = sub.add_parser("eval", help="greedy-CTC WER/CER of a model (PyTorch or ONNX) on clean/noisy test sets")
    e.add_argument("--model", required=True, help="model directory (PyTorch or ONNX artifact) or hub id")
    e.add_argument("--data", required=True, help="corpus root (has manifests/), LibriSpeech folder, "
                   ".jsonl/.csv manifest, or folder of audio + transcript file")
    e.add_argument("--noisy", action="store_true", help="also score the noisy copies (<split>_snr<N>)")
    e.add_argument("--split", default="test", help="split of a corpus root (default: test)")
    e.add_argument("--limit", type=int, help="first N utterances of each set")
    e.add_argument("--threads", type=int, help="intra-op threads (torch or ONNX Runtime)")
    e.add_argument("--bf16", action="store_true", help="PyTorch models: run under bf16 autocast")
    e.add_argument("--by", metavar="COLUMN", help="also WER per manifest column, e.g. synth, voice, speaker")
    e.add_argument("--transcripts", help="also write per-utterance transcripts (TSV) to this directory")
    e.add_argument("--json", help="write the figures as JSON")
    e.add_argument("--no-mlflow", action="store_true", help="do not log an MLflow run")
    e.add_argument("--experiment", default="w2vc", help="MLflow experiment (default: w2vc)")
    e.add_argument("--long", action="store_true", help="also score the long recordings <split>_long in "
                   "overlapping windows (HF pipeline chunking): WER, RTF, per-window latency vs per-utterance WER")
    e.add_argument("--chunk-seconds", default="5,10,20", help="--long: window lengths, comma-separated (default 5,10,20)")
    e.add_argument("--stride-seconds", type=float, help="--long: overlap dropped on each side (default chunk/6)")
    e.add_argument("--long-unchunked", action="store_true", help="--long: also each recording in one pass "
                   "(memory grows with length squared)")
    e.set_defaults(fn=cmd_eval)
    tr = sub.add_parser("transcribe", help="transcribe audio files or folders (any length; PyTorch or ONNX) to "
                        "text, JSON with per-chunk timings, or SRT subtitles")
    tr.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (searched recursively); "
                    "wav/flac/ogg/mp3 via soundfile, m4a/aac/webm/... via ffmpeg when installed")
    tr.add_argument("--model", required=True, help="model directory (PyTorch or ONNX artifact) or hub id")
    tr.add_argument("--chunk-s", type=float, default=10.0, help="window length in seconds (default 10; 0 = "
                    "each file in one pass)")
    tr.add_argument("--stride-s", type=float, help="overlap dropped on each side of a window (default chunk/6)")
    tr.add_argument("--threads", type=int, help="intra-op threads (torch or ONNX Runtime)")
    tr.add_argument("--format", choices=["text", "json", "srt"], default="text")
    tr.add_argument("--out", help="output file, or folder (existing, or ending in /; several SRT inputs always) "
                    "for one <name>.<txt|json|srt> per input; default stdout")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    tr.set_defaults(fn=cmd_transcribe)

    pk = sub.add_parser("pack", help="store a trained model as fp16 safetensors + processor (for committing)")
    pk.add_argument("src")
    pk.add_argument("out")
    pk.add_argument("--note")
    pk.set_defaults(fn=cmd_pack)

    sw = sub.add_parser("sweep", help="run a sweep of compression recipes (the main job)")
    sw.add_argument("config", nargs="?", default="experiments/configs/default.yaml", help="sweep YAML")
    sw.add_argument("--no-mlflow", action="store_true", help="skip MLflow (figures still written to disk)")
    sw.add_argument("--remeasure", action="store_true", help="re-time every candidate of a finished sweep "
                    "(nothing rebuilt; WER kept), e.g. to confirm a front on a quieter machine")
    sw.add_argument("--json")
    sw.set_defaults(fn=cmd_sweep)

    rp = sub.add_parser("report", help="render a sweep's report, plot and table again from its files "
                        "(config.json + evals/; nothing rebuilt or re-measured, no MLflow)")
    rp.add_argument("sweep_dir", help="the sweep's directory, e.g. runs/sweeps/offline-default")
    rp.add_argument("--out", help="write there instead of the sweep's directory")
    rp.add_argument("--json")
    rp.set_defaults(fn=cmd_report)

    wi = sub.add_parser("whatif", help="cost of a recipe on the true Base/Large shape (random weights, cost-only)")
    wi.add_argument("--arch", required=True, choices=["base", "large", "base-s", "large-s"])
    wi.add_argument("--recipe", default="", help='e.g. "prune(heads=.5,ffn=.5)->quantize(int8)"; or --shape-of')
    wi.add_argument("--shape-of", help="a structurally pruned model (learned or one-shot): cut the true shape at "
                    "its per-layer ratios instead of a prune step")
    wi.add_argument("--shape-from", help="the unpruned model --shape-of was cut from (default: found in its "
                    "provenance)")
    wi.add_argument("--seconds", default="3")
    wi.add_argument("--threads", type=int)
    wi.add_argument("--repeats", type=int, default=10)
    wi.add_argument("--processes", type=int, default=5, help="fresh processes per row, interleaved (default 5)")
    wi.add_argument("--data", help="corpus for steps that need calibration audio (int8-static)")
    wi.add_argument("--json")
    wi.set_defaults(fn=cmd_whatif)

    se = sub.add_parser("search", help="Optuna multi-objective search over recipe knobs (shared storage)")
    se.add_argument("config")
    se.add_argument("--trials", type=int, default=10)
    se.add_argument("--storage", help="Optuna storage URL (default sqlite:///<work_dir>/<name>/optuna.db)")
    se.add_argument("--study", help="study name (default w2vc-<config name>)")
    se.add_argument("--seed", type=int)
    se.add_argument("--no-mlflow", action="store_true")
    se.add_argument("--json")
    se.set_defaults(fn=cmd_search)

    qs = sub.add_parser("quantize-search", help="keep in fp32 only the layers a dev-WER budget needs "
                        "(sensitivity table, greedy + backward search), then quantize with them")
    qs.add_argument("--model", required=True, help="ONNX artifact directory (an export)")
    qs.add_argument("--method", required=True, choices=["ort_static_int8", "ort_dynamic_int8", "ort_int4"])
    qs.add_argument("--data", required=True, help="corpus root: its dev split is searched (and calibrates "
                    "static int8)")
    qs.add_argument("--max-wer-increase", type=float, required=True,
                    help="allowed dev WER increase over the float model, absolute (0.005 = 0.5 points)")
    qs.add_argument("--relative", action="store_true",
                    help="--max-wer-increase is a fraction of the float model's dev WER")
    qs.add_argument("--dev-utterances", type=int, default=40, help="dev utterances scored (default 40)")
    qs.add_argument("--max-kl", type=float, help="also cap the mean KL of the logits against the float model")
    qs.add_argument("--out", required=True, help="directory for the quantized artifact")
    qs.add_argument("--work-dir", default="runs/accuracy-control", help="memoized evaluations (default "
                    "runs/accuracy-control)")
    qs.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (default 2)")
    qs.add_argument("--full-sensitivity", action="store_true", help="measure the sensitivity table even when "
                    "the all-quantized graph already meets the budget (2 + 2 x groups evaluations)")
    qs.add_argument("--no-mlflow", action="store_true")
    qs.add_argument("--experiment", default="w2vc", help="MLflow experiment (default: w2vc)")
    qs.add_argument("--json", help="write the search report as JSON")
    qs.set_defaults(fn=cmd_quantize_search)

    pa = sub.add_parser("pareto", help="non-dominated set of any table of points (CSV) or of MLflow runs")
    pa.add_argument("--csv", help="CSV file with a header row")
    pa.add_argument("--experiment", help="MLflow experiment name (uses its candidate runs)")
    pa.add_argument("--minimize", help="comma-separated columns to minimise")
    pa.add_argument("--maximize", help="comma-separated columns to maximise")
    pa.add_argument("--budget", action="append", help="e.g. 'latency_p50_ms <= 50' (repeatable)")
    pa.add_argument("--plot", help="write a PNG of the first two objectives")
    pa.add_argument("--json")
    pa.set_defaults(fn=cmd_pareto)

    b = sub.add_parser("bench", help="cost: latency p50/p90 + RTF per audio length, size, params, peak RSS, "
                       "GFLOPs (fresh process per model)")
    b.add_argument("--model", action="append", help="artifact directory (PyTorch or ONNX); repeatable")
    b.add_argument("--arch", help="preset shape(s) with random weights, COST-ONLY: base,large,large-s,base-s")
    b.add_argument("--runtime", choices=["torch", "onnx"], help="default: by artifact (torch for --arch; "
                   "onnx with --arch exports the random shape first)")
    b.add_argument("--precision", choices=["fp32", "bf16"], help="torch: cast weights (default: as stored)")
    b.add_argument("--seconds", default="3", help="audio lengths, comma-separated (default 3)")
    b.add_argument("--threads", type=int, help="intra-op threads (default: one per physical core)")
    b.add_argument("--repeats", type=int, default=10, help="timed runs per length, at most (default 10)")
    b.add_argument("--min-repeats", type=int, default=3, help="timed runs per length, at least (default 3)")
    b.add_argument("--budget", type=float, default=20.0, help="seconds per length after which runs stop "
                   "once --min-repeats are done (default 20)")
    b.add_argument("--warmup", type=int, default=2, help="untimed runs per length (default 2)")
    b.add_argument("--processes", type=int, default=5, help="fresh processes per model, interleaved; the "
                   "figure is the median of their p50s (default 5)")
    b.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per length and process, "
                   "at least (default 1.0)")
    b.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    b.add_argument("--in-process", action="store_true", help="measure in this process (peak RSS not isolated)")
    b.add_argument("--json", help="write the figures as JSON")
    b.add_argument("--no-mlflow", action="store_true", help="do not log MLflow runs")
    b.add_argument("--experiment", default="w2vc", help="MLflow experiment (default: w2vc)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return a.fn(a)
    except KeyboardInterrupt as e:
        print(f"w2vc: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; --verbose for the traceback
        if a.verbose:
            raise
        msg = (str(e).strip().splitlines() or [""])[0]
        msg = msg if len(msg) <= 400 else msg[:400] + " …"
        print(f"w2vc {a.cmd}: error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
