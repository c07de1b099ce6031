"""The `w2vc` command: one entry point, one subcommand per job. Errors print one line, not a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _write_json(path: str | None, obj) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1, default=str))
        print(f"wrote {path}")


def cmd_data_synth(a) -> int:
    from w2vc.eval.synth import SynthConfig, synthesize_corpus

    cfg = SynthConfig(hours=a.hours, seed=a.seed, **({"workers": a.workers} if a.workers else {}))
    meta = synthesize_corpus(a.out, cfg)
    print(f"corpus {a.out} ({'cached' if meta['cached'] else 'built'}, seed {a.seed})")
    print(f"{'split':<18}{'hours':>8}{'utts':>7}{'speakers':>10}{'voices':>8}  synthesizers")
    for split, s in meta["splits"].items():
        print(f"{split:<18}{s['hours']:>8.3f}{s['utterances']:>7}{s['speakers']:>10}{s['voices']:>8}  "
              f"{','.join(s['synths'])}")
    _write_json(a.json, meta)
    return 0


def cmd_train(a) -> int:
    from w2vc.augment import AugmentConfig
    from w2vc.train import TrainConfig, train

    cfg = TrainConfig(arch=a.arch, data=a.data, out=a.out, steps=a.steps, lr=a.lr, warmup_steps=a.warmup,
                      batch_seconds=a.batch_seconds, eval_every=a.eval_every, seed=a.seed,
                      init_from=a.init_from, bf16={"auto": None, "on": True, "off": False}[a.bf16],
                      dev_limit=a.dev_limit, threads=a.threads,
                      augment=AugmentConfig() if not a.no_augment else
                      AugmentConfig(p_speed=0, p_bandlimit=0, p_noise=0, gain_db_range=(0.0, 0.0)))
    res = train(cfg, resume=a.resume)
    print(f"done: {res['steps']} steps in {res['minutes']:.1f} min; best model: {res['best_dir']}")
    _write_json(a.json, res)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="w2vc", description="compress wav2vec2 CTC models for edge devices")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="offline corpus").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("synth", help="synthesize the offline speech corpus (espeak-ng + Festival + Flite)")
    s.add_argument("--out", default="data/corpus", help="corpus directory (default: data/corpus)")
    s.add_argument("--hours", type=float, default=8.0, help="clean hours over train/dev/test (default 8)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None)
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
    t.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    t.add_argument("--threads", type=int)
    t.add_argument("--no-augment", action="store_true")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.add_argument("--json")
    t.set_defaults(fn=cmd_train)
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
        print(f"w2vc {a.cmd}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
