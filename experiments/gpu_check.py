"""One prepared GPU check: true Large teacher → true Base student distillation through the real trainer on CUDA.

Why: the trainer and distillation were written and measured on CPUs; this exercises their CUDA path (device
placement of student, objective and teacher, bf16 autocast, streamed DataLoader batches, dev decoding on the
GPU, CPU-tensor checkpoints; then a few fp16 + GradScaler steps, the path of GPUs without bf16) and measures
what a GPU buys: distillation steps/s, audio seconds/s, peak GPU memory, and batched student inference.
Weights are random and the corpus is synthetic noise with random transcripts: it checks the code path and
throughput, not accuracy. On one H200 it takes a few minutes (most of it building the random Large model).

    python -m w2vc.experiments.gpu_check --out /tmp/gpu_check        # writes /tmp/gpu_check/gpu_check.json

`--device cpu --teacher large-s --student base-s --steps 3 --batch-seconds 8` runs the same path on a CPU
(a smoke test of this script, no GPU figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

WORDS = ("turn", "the", "light", "on", "off", "please", "what", "time", "is", "it", "play", "music", "stop", "set",
         "a", "timer", "for", "ten", "minutes", "volume", "up", "down")


def synthetic_corpus(root: Path, n_train: int, n_dev: int, seed: int = 0) -> Path:
    """FLAC files of shaped noise (3–15 s) with random word transcripts, in the w2vc manifest layout."""
    from w2vc.data.audio import SAMPLE_RATE, write_flac

    rng = np.random.default_rng(seed)
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for k in range(n):
            secs = float(rng.uniform(3, 15))
            x = np.cumsum(rng.standard_normal(int(secs * SAMPLE_RATE))).astype(np.float32)  # brown noise
            x = 0.3 * (x - x.mean()) / (np.abs(x - x.mean()).max() + 1e-9)
            rel = f"{split}/{k:05d}.flac"
            write_flac(root / rel, x)
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))).upper()
            rows.append({"id": f"{split}-{k:05d}", "path": rel, "text": text, "synth": "noise",
                         "duration": round(len(x) / SAMPLE_RATE, 4)})
        (root / "manifests" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


class _Timed:
    """Wraps the objective's forward: a timestamp and the batch's audio seconds per training step."""

    def __init__(self, objective):
        self.objective, self.t, self.audio_s = objective, [], []
        orig = objective.forward

        def forward(model, values, mask, labels):
            self.t.append(time.perf_counter())
            self.audio_s.append(float(mask.sum()) / 16000)
            return orig(model, values, mask, labels)
        objective.forward = forward

    def rates(self, warmup: int) -> dict:
        """Steady state: steps after `warmup` (CUDA init, autotuning, worker start-up excluded)."""
        t, a = self.t, self.audio_s
        if len(t) < warmup + 2:
            return {"steps_timed": 0}
        dt = t[-1] - t[warmup]
        n = len(t) - 1 - warmup
        return {"steps_timed": n, "steps_per_s": n / dt, "audio_s_per_s": sum(a[warmup:-1]) / dt,
                "mean_batch_audio_s": float(np.mean(a))}


def distill_run(args, corpus: Path, out: Path, teacher, force_fp16: bool, steps: int) -> tuple[dict, dict, object]:
    import w2vc.train as T
    from w2vc.compress.distill import DistillConfig, DistillObjective
    from w2vc.core.models import get_preset, new_model

    bf16 = True if args.device == "cuda" and not force_fp16 else None  # the CPU smoke test: the CPU's choice
    dcfg = DistillConfig(student=args.student, init="scratch", data=str(corpus), steps=steps, warmup_steps=2,
                         batch_seconds=args.batch_seconds, eval_every=steps, alpha_ctc=0.5, alpha_kd=0.5,
                         bf16=bf16, device=args.device)
    tcfg = T.TrainConfig(arch=args.student, data=str(corpus), out=str(out), steps=steps, lr=dcfg.lr,
                         warmup_steps=2, batch_seconds=args.batch_seconds, eval_every=steps, dev_limit=16,
                         bf16=dcfg.bf16, device=args.device, num_workers=args.num_workers, max_batch=args.max_batch)
    built = {}

    def model_init():
        built["student"] = new_model(args.student, seed=0)
        return built["student"]
    objective = DistillObjective(teacher, dcfg, get_preset(args.student).config["hidden_size"], use_bf16=False)
    timed = _Timed(objective)
    orig_plan = T.plan
    if force_fp16:  # the path of a GPU without bf16: fp16 autocast + loss scaling
        T.plan = lambda device, bf16: replace(orig_plan(device, bf16), amp_dtype=torch.float16, grad_scaler=True)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        res = T.train(tcfg, progress=False, objective=objective, model_init=model_init, step_name="distill")
    finally:
        T.plan = orig_plan
    fig = {"steps": res["steps"], "wall_s": round(time.perf_counter() - t0, 1), **timed.rates(args.warmup),
           "final_loss": res["history"][-1]["loss"], "dev_wer": res["history"][-1]["dev_wer"]}
    if args.device == "cuda":
        fig["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        fig["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    fig["checkpoint_all_cpu_tensors"] = all(v.device.type == "cpu" for v in ck["model"].values())
    if ck.get("scaler"):
        fig["grad_scale"] = float(ck["scaler"]["scale"])
    return fig, res, built["student"][0]


@torch.inference_mode()
def batched_eval(model, device: str, batch: int, seconds: float, repeats: int) -> dict:
    """Student inference on padded batches under bf16 autocast (the serving shape of a GPU), audio s/s."""
    dev = torch.device(device)
    model = model.eval().to(dev)
    x = torch.randn(batch, int(seconds * 16000), device=dev)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    for _ in range(2):
        with amp:
            model(x).logits.float().argmax(-1).cpu()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        with amp:
            model(x).logits.float().argmax(-1).cpu()  # greedy ids back on the host, as decoding needs them
    dt = time.perf_counter() - t
    return {"batch": batch, "seconds_each": seconds, "batches_per_s": repeats / dt,
            "audio_s_per_s": repeats * batch * seconds / dt}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m w2vc.experiments.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="work directory (synthetic corpus, runs, gpu_check.json)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--teacher", default="large", help="teacher preset (default: the true Large shape)")
    p.add_argument("--student", default="base", help="student preset (default: the true Base shape)")
    p.add_argument("--steps", type=int, default=40, help="bf16 distillation steps (default 40)")
    p.add_argument("--fp16-steps", type=int, default=8, help="fp16 + GradScaler steps afterwards (0: skip)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the rates")
    p.add_argument("--batch-seconds", type=float, default=160.0, help="padded audio per step (default 160)")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=8, help="DataLoader workers (decode + augment)")
    p.add_argument("--train-utts", type=int, default=400)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--eval-seconds", type=float, default=10.0)
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to torch (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}); nothing was run. Run it where a GPU is "
              "lent, or pass --device cpu for a smoke test of the script.", file=sys.stderr)
        return 2
    from w2vc.core.models import new_model

    out = Path(a.out)
    report = {"torch": torch.__version__, "device": a.device, "teacher": a.teacher, "student": a.student,
              "batch_seconds": a.batch_seconds, "num_workers": a.num_workers}
    if a.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
        report["bf16_supported"] = torch.cuda.is_bf16_supported(including_emulation=False)
    t = time.perf_counter()
    corpus = synthetic_corpus(out / "corpus", a.train_utts, 16)
    report["corpus_build_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    teacher, _ = new_model(a.teacher, seed=1)
    report["teacher_params_m"] = sum(p.numel() for p in teacher.parameters()) / 1e6
    report["teacher_build_s"] = round(time.perf_counter() - t, 1)
    for d in ("run_bf16", "run_fp16"):
        if (out / d).exists():
            import shutil

            shutil.rmtree(out / d)
    fig, _, student = distill_run(a, corpus, out / "run_bf16", teacher, False, a.steps)
    report["student_params_m"] = sum(p.numel() for p in student.parameters()) / 1e6
    report["distill_bf16"] = fig
    print(json.dumps({"distill_bf16": fig}, indent=1), flush=True)
    if a.fp16_steps:
        fig16, _, _ = distill_run(a, corpus, out / "run_fp16", teacher, True, a.fp16_steps)
        report["distill_fp16_gradscaler"] = fig16
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    report["student_batched_eval"] = batched_eval(student, a.device, a.eval_batch, a.eval_seconds, 10)
    if a.device == "cuda":
        report["student_batched_eval"]["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"wrote {out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
