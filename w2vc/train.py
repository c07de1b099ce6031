"""CTC training from scratch (or warm start) for wav2vec2-family models, on CPU or CUDA, resumable exactly.

One loop, nanoGPT style: length-grouped batches, fresh augmentation per utterance and epoch, mixed precision
where the device has it (CPU: bf16 with AVX512_BF16/AMX; CUDA: bf16, or fp16 with loss scaling), AdamW
with warm-up + linear decay, dev WER (clean and 10 dB) at intervals, best-by-dev kept, a checkpoint every
few minutes. Train audio is streamed (decoded and augmented per batch by DataLoader workers, w2vc.data.stream)
so memory does not grow with the corpus. Every random draw is seeded from (seed, epoch, step/utterance),
so resuming from `last.pt` continues the identical run; checkpoints hold CPU tensors and load on any device.

Data parallel, unchanged, under torchrun or accelerate (NCCL between GPUs, gloo between CPU processes);
each process takes every world-th batch. One machine, 8 GPUs:

    torchrun --standalone --nproc_per_node 8 -m w2vc.cli train --arch large-s --data data/corpus --out runs/t

Several machines (here 2 x 8 GPUs): the same command on every node, with one rendezvous endpoint (a host:port
all nodes reach; node ranks are assigned by the c10d rendezvous) and a job id shared by the nodes:

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST0:29500 \
        --rdzv_id job42 -m w2vc.cli train --arch large-s --data /shared/corpus --out /shared/runs/t

    accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank {0|1} \
        --main_process_ip HOST0 --main_process_port 29500 -m w2vc.cli train --arch large-s ...

--data and --out must be the same shared path on every node (rank 0 writes checkpoints; every rank reads
them on --resume). --batch-seconds is per process: the global batch is world x batch_seconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from w2vc.core.artifact import Artifact, write_provenance
from w2vc.core.config import ConfigBase
from w2vc.core.device import DEVICES, DevicePlan, plan, to_cpu
from w2vc.core.device import cpu_has_bf16 as cpu_has_bf16  # re-exported: callers import it from here
from w2vc.core.models import PRESETS, load_pretrained, new_model
from w2vc.core.runnable import TorchTranscriber
from w2vc.core.runtime import pos_conv_in_fp32
from w2vc.core.wer import normalize, word_error_rate
from w2vc.data.augment import AugmentConfig
from w2vc.data.datasets import load_dataset, manifest_column, resolve_split
from w2vc.data.noise import NOISE_TYPES, make_noise, mix_at_snr
from w2vc.data.stream import (
    LENGTH_SOURCES,
    BatchDataset,
    PackedLabels,
    PlanSampler,
    babble_pool,
    pair_plan,
    scan_split,
    stream,
)


@dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """Args:
        arch: preset name (large-s, base-s, ...) or a save_pretrained directory to fine-tune.
        data: a w2vc corpus root (uses manifests/train.jsonl and dev.jsonl) or a train data path.
        out: run directory (checkpoints, log, best/).
        steps: optimizer steps; the LR schedule is warm-up then linear decay to 0 at `steps`.
        batch_seconds: audio per batch (padded), the unit of compute per step.
        bf16: mixed precision. None = the device's fast one (CPU: bf16 when it has AVX512_BF16/AMX, else fp32;
            CUDA: bf16 where supported, else fp16 with gradient scaling); True = bf16; False = fp32.
        device: auto (CUDA when torch sees a GPU) | cpu | cuda (under torchrun: GPU LOCAL_RANK).
        num_workers: DataLoader processes decoding and augmenting train batches ahead (0 = in this process).
        lengths: where the batch plan's utterance lengths come from: "header" (each file's header: exact, the
            plan the in-RAM trainer made) or "manifest" (the .jsonl duration column: opens no file at start;
            its 0.1 ms rounding regroups a few utterances, so a seed's run differs from the header plan's).
        eval_every: steps between dev evaluations; ckpt_minutes: wall time between checkpoints.
        init_from: a directory whose weights initialise the model (warm start, new schedule).
        freeze_feature_encoder: keep the CNN fixed (a warm start whose CNN is already trained: its backward
            is ~40 % of a step here, and HF fine-tuning freezes it too).
        dropout: one rate for every dropout of the model (None = the preset's). An underfitting model (train
            WER close to dev WER) learns faster without it; augmentation still regularises.
        oversample: {"column=value": k}: train utterances whose manifest column has that value are seen k times
            an epoch, each copy with its own augmentation draw (the errors of a corpus can sit in its smaller part,
            as Festival's do here; changing the corpus instead would change its test split).
        pair_share: share of epoch positions whose utterance follows another train utterance in one input,
            after a pause drawn from pair_gap_seconds (`w2vc.data.stream.pair_plan`: utterance starts inside a
            window, as every chunk of a long recording has them; a fresh pairing each epoch).
    """

    arch: str
    data: str
    out: str
    steps: int = 6000
    lr: float = 1e-3
    warmup_steps: int = 400
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    batch_seconds: float = 30.0
    max_batch: int = 32
    grad_clip: float = 1.0
    bf16: bool | None = None
    eval_every: int = 250
    ckpt_minutes: float = 5.0
    dev_limit: int = 200
    dev_data: str | None = None
    seed: int = 0
    mask_time_prob: float = 0.05
    init_from: str | None = None
    threads: int | None = None
    freeze_feature_encoder: bool = False
    dropout: float | None = None
    oversample: dict[str, int] = field(default_factory=dict)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    num_workers: int = 2
    lengths: str = "header"
    pair_share: float = 0.0
    pair_gap_seconds: tuple[float, float] = (0.1, 1.0)

    LATER_FIELDS = {"pair_share": "pair_share", "pair_gap_seconds": "pair_share"}

    def __post_init__(self):
        if self.steps <= 0 or self.batch_seconds <= 0 or self.lr <= 0:
            raise ValueError("steps, batch_seconds and lr must be > 0")
        if self.device not in DEVICES or self.lengths not in LENGTH_SOURCES or self.num_workers < 0:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, lengths one of "
                             f"{', '.join(LENGTH_SOURCES)}, num_workers >= 0; got {self.device!r}, "
                             f"{self.lengths!r}, {self.num_workers}")
        if not 0.0 <= self.pair_share <= 1.0 or not 0.0 <= self.pair_gap_seconds[0] <= self.pair_gap_seconds[1]:
            raise ValueError(f"pair_share must be in [0, 1] and pair_gap_seconds a (low, high) range >= 0, got "
                             f"{self.pair_share}, {self.pair_gap_seconds}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for key, k in self.oversample.items():
            if "=" not in key or not isinstance(k, int) or k < 1:
                raise ValueError(f"oversample wants column=value: k with an integer k >= 1, got {key!r}: {k!r}")

    WHAT = "train"


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps))


def epoch_batches(lengths: list[int], cfg: TrainConfig, epoch: int) -> list[list[int]]:
    """Length-grouped batches (with jitter so groups differ each epoch), in a shuffled order."""
    rng = np.random.default_rng([cfg.seed, epoch, 17])
    jitter = rng.uniform(0.9, 1.1, len(lengths))
    order = np.argsort(np.asarray(lengths) * jitter, kind="stable")
    budget = cfg.batch_seconds * 16000 / cfg.augment.speed_range[0]  # speed-up can lengthen audio
    batches, cur, cur_max = [], [], 0
    for i in order.tolist():
        m = max(cur_max, lengths[i])
        if cur and ((len(cur) + 1) * m > budget or len(cur) >= cfg.max_batch):
            batches.append(cur)
            cur, m = [], lengths[i]
        cur.append(i)
        cur_max = m
    if cur:
        batches.append(cur)
    perm = rng.permutation(len(batches))
    return [batches[k] for k in perm]


def epoch_items(ids: list[str], manifest: str, oversample: dict[str, int]) -> list[int]:
    """Utterance index per epoch position: each utterance once, those matching an oversample rule k times."""
    repeat = [1] * len(ids)
    for rule, k in oversample.items():
        column, value = rule.split("=", 1)
        values = manifest_column(manifest, column)
        hits = [n for n, u in enumerate(ids) if values.get(u) == value]
        if not hits:
            raise ValueError(f"oversample {rule}: no train utterance has {column} = {value!r}")
        for n in hits:
            repeat[n] = max(repeat[n], k)
    return [n for n, r in enumerate(repeat) for _ in range(r)]


DROPOUT_KEYS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "final_dropout")


def set_dropout(model, p: float) -> None:
    """Every dropout of a built wav2vec2 model (modules and the attention's float rate) and its config."""
    for key in DROPOUT_KEYS:
        setattr(model.config, key, p)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = p
        elif isinstance(getattr(mod, "dropout", None), float):  # Wav2Vec2Attention keeps a float rate
            mod.dropout = p


def _noisy_dev(audio: list[np.ndarray], seed: int, snr: float = 10.0) -> list[np.ndarray]:
    out = []
    for k, x in enumerate(audio):
        rng = np.random.default_rng([seed, 4242, k])
        others = [audio[j] for j in rng.choice(len(audio), size=min(6, len(audio)), replace=False) if j != k]
        out.append(mix_at_snr(x, make_noise(NOISE_TYPES[k % 3], len(x), rng, others or [x]), snr))
    return out


class _Stop(Exception):
    pass


class CTCObjective(torch.nn.Module):
    """The training loss as a module: plain CTC here; distillation subclasses it (teacher terms, learned
    projections). Its own parameters are trained and checkpointed with the model."""

    def prepare(self, dev: DevicePlan) -> None:
        """Called by the trainer once the device is known: state outside the module tree (a frozen teacher)
        follows the model there."""

    def forward(self, model, values, mask, labels) -> tuple[torch.Tensor, dict[str, float]]:
        return model(values, attention_mask=mask, labels=labels).loss, {}

    def optimizer_groups(self) -> list[dict]:
        """Extra AdamW groups for parameters that are not weights (gates, Lagrange multipliers): each a dict of
        `params`, `lr_scale` (times the schedule's lr) and optionally `betas`. They get no weight decay and
        stay out of gradient-norm clipping, where their large-by-design gradients would set the clip factor
        of every weight."""
        return []


class _Trainee(torch.nn.Module):
    """Model + objective as one module, so DDP all-reduces the objective's parameters too."""

    def __init__(self, model, objective: CTCObjective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, values, mask, labels):
        return self.objective(self.model, values, mask, labels)


def _dist_info(backend: str = "gloo") -> tuple[int, int]:
    """(rank, world) of this process; joins the process group torchrun/accelerate set up in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    return (dist.get_rank() if world > 1 else 0), world


class _DeviceTranscriber(TorchTranscriber):
    """Dev decoding on the training device (the CPU keeps TorchTranscriber itself, hence its numbers)."""

    def __init__(self, model, processor, dev: DevicePlan):
        super().__init__(model, processor, autocast_bf16=dev.amp_dtype is not None)
        self.dev = dev

    @torch.inference_mode()
    def logits(self, values, mask):
        kw = {"attention_mask": torch.from_numpy(mask).to(self.dev.device)} if mask is not None else {}
        with self.dev.autocast():
            out = self.model(torch.from_numpy(values).to(self.dev.device), **kw).logits
        return out.float().cpu().numpy()


def save_model_dir(model, processor, dst: Path, step: str, params: dict, parent: str | None = None,
                   report: dict | None = None) -> None:
    """save_pretrained into dst atomically (tmp dir + rename): a crash never leaves half a model."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    write_provenance(tmp, step, params, Artifact.open(parent) if parent and Path(parent).is_dir() else None,
                     report)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, objective: CTCObjective | None = None,
          model_init=None, step_name: str = "train", stop_at_step: int | None = None) -> dict:
    """Train `cfg.arch` (or the (model, processor) that `model_init()` returns) on `objective` (CTC default).

    `stop_at_step` ends this process early with a checkpoint (the schedule still belongs to cfg.steps), so a
    long run can be split across sessions and continued with resume=True.
    """
    dev = plan(cfg.device, cfg.bf16)
    rank, world = _dist_info(dev.backend)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_file = out / "last.pt"
    if ckpt_file.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run (last.pt); pass --resume to continue it or choose "
                              "another --out (nothing is deleted)")
    use_bf16 = dev.amp_dtype is not None

    # ---- data: train metadata only (audio is decoded per batch); dev is small and stays in RAM
    train_path = resolve_split(cfg.data, "train")
    train_idx = scan_split(train_path, cfg.lengths)
    dev_path = cfg.dev_data or resolve_split(cfg.data, "dev")
    dev_ds = load_dataset(dev_path, limit=cfg.dev_limit, name="dev", progress=progress and rank == 0)
    dev_noisy = _noisy_dev(dev_ds.audio, cfg.seed)
    items = epoch_items(train_idx.ids, str(train_path), cfg.oversample)  # position -> utterance
    lengths = [train_idx.lengths[i] for i in items]
    babble = babble_pool(train_idx.paths)

    # ---- model
    torch.manual_seed(cfg.seed)  # whatever is drawn below (a mask embedding, the loader's worker seeds) repeats
    if model_init is not None:
        model, processor = model_init()
    elif cfg.arch in PRESETS:
        model, processor = new_model(cfg.arch, seed=cfg.seed)
    else:
        model, processor = load_pretrained(cfg.arch)
    if cfg.init_from:
        src, _ = load_pretrained(cfg.init_from, dtype=torch.float32)
        model.load_state_dict(src.state_dict())
    model.config.mask_time_prob = cfg.mask_time_prob
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    if cfg.freeze_feature_encoder:
        model.freeze_feature_encoder()
    if cfg.mask_time_prob > 0 and not hasattr(model.wav2vec2, "masked_spec_embed"):
        # HF only creates the mask embedding when the config asked for masking at construction time
        model.wav2vec2.masked_spec_embed = torch.nn.Parameter(torch.rand(model.config.hidden_size))
    pos_conv_in_fp32(model.float())  # bf16 autocast would break the student's grouped conv (see its docstring)
    labels_all = PackedLabels(processor.tokenizer(normalize(t)).input_ids for t in train_idx.texts)

    trainee = _Trainee(model, objective or CTCObjective()).to(dev.device)
    trainee.objective.prepare(dev)
    extra = [{"weight_decay": 0.0, **g} for g in trainee.objective.optimizer_groups()]
    own = {id(p) for g in extra for p in g["params"]}
    named = [(n, p) for n, p in trainee.named_parameters() if p.requires_grad and id(p) not in own]
    decay = [p for n, p in named if p.ndim >= 2 and "masked_spec_embed" not in n]
    no_decay = [p for n, p in named if p.ndim < 2 or "masked_spec_embed" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}, *extra], lr=cfg.lr, betas=cfg.betas)
    scaler = torch.amp.GradScaler(dev.type) if dev.grad_scaler else None
    state = {"step": 0, "epoch": 0, "batch": 0, "best": math.inf, "elapsed": 0.0, "history": []}
    if resume and ckpt_file.exists():
        ck = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        sd = ck["model"]
        if not any(k.startswith("model.") for k in sd):  # checkpoints written before the objective existed
            sd = {"model." + k: v for k, v in sd.items()}
        trainee.load_state_dict(sd)
        opt.load_state_dict(ck["optim"])  # moves the moments to the parameters' device
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        state.update(json.loads(ck["state"]))
        if rank == 0:  # the log is the checkpoint's history: a row written after the checkpoint runs again
            (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in state["history"]))
    # find_unused_parameters: SpecAugment may mask nothing in a batch, leaving masked_spec_embed without grad
    ddp_model = (torch.nn.parallel.DistributedDataParallel(
        trainee, device_ids=[dev.device.index] if dev.type == "cuda" else None, find_unused_parameters=True)
        if world > 1 else trainee)

    def checkpoint():
        state["elapsed"] = time.time() - t0  # wall time so far travels with the checkpoint
        if rank != 0:
            return
        tmp = ckpt_file.with_suffix(".tmp")
        torch.save({"model": to_cpu(trainee.state_dict()), "optim": to_cpu(opt.state_dict()),
                    "state": json.dumps(state), "config": json.dumps(cfg.to_dict()),
                    **({"scaler": scaler.state_dict()} if scaler is not None else {})}, tmp)
        os.replace(tmp, ckpt_file)

    def evaluate() -> dict:
        model.eval()
        tr = (TorchTranscriber(model, processor, autocast_bf16=use_bf16) if dev.type == "cpu"
              else _DeviceTranscriber(model, processor, dev))
        res = {}
        for name, audio in (("dev_wer", dev_ds.audio), ("dev_wer_10db", dev_noisy)):
            hyps = tr.transcribe(audio)
            res[name] = word_error_rate(dev_ds.ids, dev_ds.texts, hyps).wer
        model.train()
        return res

    def summary(**extra) -> dict:
        return {"steps": state["step"], "best_dev_score": state["best"], "minutes": state["elapsed"] / 60,
                "history": state["history"], "best_dir": str(out / "best"), "world": world, **extra}

    def my_batches(epoch: int) -> list[list[tuple]]:
        """This rank's batches of an epoch as (position, utterance) pairs, or (position, utterance, partner
        utterance, gap) where the epoch pairs it: an oversampled copy is its own position, so it draws its own
        augmentation (and partner)."""
        partner, gap = pair_plan(len(items), cfg.seed, epoch, cfg.pair_share, cfg.pair_gap_seconds)
        ep_lengths = [n if partner[q] < 0 else n + int(gap[q]) + lengths[partner[q]] for q, n in enumerate(lengths)]
        batches = epoch_batches(ep_lengths, cfg, epoch)
        mine = batches[rank::world][: len(batches) // world]
        return [[(q, items[q]) if partner[q] < 0 else (q, items[q], items[partner[q]], int(gap[q])) for q in b]
                for b in mine]

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    if rank == 0:
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"train {cfg.arch}", disable=not progress or rank != 0,
               unit="step", dynamic_ncols=True)
    last_ckpt = time.time()
    t0 = time.time() - state["elapsed"]
    loss_ema = None
    model.train()
    loader = None
    try:
        if state["step"] < cfg.steps:
            data = BatchDataset(train_idx.paths, labels_all, cfg.seed, cfg.augment, babble,
                                delimiter=processor.tokenizer.word_delimiter_token_id)
            loader = iter(stream(data, PlanSampler(my_batches, state["epoch"], state["batch"]), cfg.num_workers,
                                 pin_memory=dev.type == "cuda"))
        while state["step"] < cfg.steps:
            b = next(loader)
            state["epoch"], state["batch"] = b["epoch"], b["batch"]
            step = state["step"]
            values, mask, labels = (b[k].to(dev.device, non_blocking=True) for k in ("values", "mask", "labels"))
            torch.manual_seed(cfg.seed * 1_000_003 + step * world + rank)
            np.random.seed((cfg.seed * 1_000_003 + step * world + rank) % 2**32)  # SpecAugment masks
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg) * g.get("lr_scale", 1.0)
            with dev.autocast():
                loss, parts = ddp_model(values, mask, labels)
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:  # fp16: scale the loss so small gradients survive, unscale before clipping
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.grad_clip)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
            state["step"] += 1
            state["batch"] += 1
            lv = loss.detach().item()
            loss_ema = lv if loss_ema is None else 0.95 * loss_ema + 0.05 * lv
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.3f}", lr=f"{lr_at(step, cfg):.1e}", gn=f"{float(gnorm):.2f}",
                            dev=f"{state['history'][-1]['dev_wer']:.3f}" if state["history"] else "-")
            if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
                if rank == 0:
                    res = evaluate()
                    state["elapsed"] = time.time() - t0
                    row = {"step": state["step"], "epoch": state["epoch"], "loss": round(loss_ema, 4),
                           "lr": lr_at(step, cfg), "minutes": round(state["elapsed"] / 60, 2), **res}
                    state["history"].append(row)
                    with open(out / "log.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                    score = (res["dev_wer"] + res["dev_wer_10db"]) / 2
                    if score < state["best"]:
                        state["best"] = score
                        save_model_dir(model, processor, out / "best", step_name, cfg.to_dict(),
                                       cfg.init_from, report=row)
                    bar.write(json.dumps(row))
                    checkpoint()
                    last_ckpt = time.time()
                if world > 1:
                    dist.barrier()
            if time.time() - last_ckpt > cfg.ckpt_minutes * 60:
                checkpoint()
                last_ckpt = time.time()
            if stop["flag"]:
                raise _Stop
            if stop_at_step is not None and state["step"] >= stop_at_step:
                checkpoint()
                bar.close()
                return summary(stopped_early=True)
    except _Stop:
        checkpoint()
        bar.close()
        raise KeyboardInterrupt(f"interrupted at step {state['step']}; checkpoint saved, continue with --resume") from None
    finally:
        del loader  # stops the workers
        for s, h in old_handlers.items():
            signal.signal(s, h)
    bar.close()
    checkpoint()
    if not (out / "best").exists() and rank == 0:
        save_model_dir(model, processor, out / "best", step_name, cfg.to_dict(), cfg.init_from)
    return summary()
