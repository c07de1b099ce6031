"""Learned structured pruning with joint distillation (DPHuBERT, Peng et al., Interspeech 2023).

Hard-concrete (L0) gates (Louizos et al. 2018) sit on CNN conv channels, attention heads, FFN intermediate
units and whole transformer layers of a copy of the teacher. The copy is trained against the unpruned
teacher (logit KL, hidden-state L1 − log σ(cos) through projections, CTC: compress.distill's objective)
while the *expected* cost, a differentiable function of the gates' open probabilities
(w2vc.core.flops_model), is held on a target by the Lagrangian λ1·(E[c] − t) + λ2·(E[c] − t)², whose
multipliers follow gradient *ascent* (the target t ramps from 1 to the final ratio first). Then every
gate is made deterministic, the closed structures are cut out by compress.prune's surgery, and
distillation alone continues on the smaller model (compress.distill).

Why gates rather than one-shot importance: the model learns which units it can do without while the
teacher tells it what to keep computing, instead of losing them at once and asking recovery to return it.
The cut is exact: a gate multiplies its unit's output, and the norms whose statistics span gated channels
(the layer-norm CNN's and the feature projection's LayerNorms) use gate-weighted mean and variance, so with
0/1 gates the gated model computes what the cut one does (`surgery_max_logit_diff` in the report).

Both phases run on w2vc.train's loop (streamed data, checkpoints, exact resume, torchrun data parallel). The
gates and multipliers are AdamW groups of their own (the objective's `optimizer_groups`: lr_gates, lr_lambda,
the schedule's shape); the ascent comes from a gradient-reversing identity on the multipliers.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from w2vc.compress.distill import DistillConfig, DistillObjective, distill
from w2vc.compress.hard_concrete import Gates, attach_gates
from w2vc.compress.prune import PruneConfig, prune_model, remove_units
from w2vc.core.artifact import PROVENANCE, Artifact, Kind, copy_processor_files, finalize
from w2vc.core.config import ConfigBase
from w2vc.core.device import DEVICES, cpu_has_bf16
from w2vc.core.flops_model import SAMPLE_RATE, forward_flops, varying_params, widths_of
from w2vc.core.load import load_torch
from w2vc.core.shapes import n_params, record_shapes
from w2vc.core.step import StepContext, register
from w2vc.data.augment import AugmentConfig
from w2vc.train import TrainConfig, _dist_info, train

STRUCTURES = ("cnn", "heads", "ffn", "layers")
GATE_BETAS = (0.5, 0.9)  # gates and multipliers: short memory; β1 0.9 overshot the target (0.50 -> 0.17, tiny test)


@dataclass(frozen=True, kw_only=True)
class LearnedPruneConfig(ConfigBase):
    """Args:
        target_gflops_ratio / target_params_ratio: the cost to reach, as a fraction of the input's counted
            GFLOPs (at `flops_seconds` of audio) or of its parameters; give exactly one.
        structures: what gets gates: cnn (conv out channels), heads, ffn (intermediate units), layers.
        gate_steps: steps of the gated phase (joint distillation); target_warmup_steps: the target ramps
            linearly from 1 to its final ratio over these first steps (None = gate_steps // 4).
        lr / warmup_steps: weights of the gated phase; lr_gates: the gates' log α; lr_lambda: the Lagrange
            multipliers (DPHuBERT: 2e-4, 0.02, 0.02), AdamW groups of their own (betas GATE_BETAS). All follow
            the loop's warm-up + linear decay.
        distill_steps / distill_lr / distill_warmup_steps: the distillation-only phase after the cut (0 = none).
        gate_beta / gate_l / gate_r: hard-concrete temperature and stretch interval (2/3, -0.1, 1.1).
        gate_init_drop: initial drop rate d of every gate, log α = log((1 - d) / d) (DPHuBERT's init).
        alpha_ctc / alpha_kd / alpha_hidden / temperature: loss weights and KL temperature, as distill's.
        hidden_layers: teacher hidden_states indices matched by the hidden loss (None = 4 evenly spaced,
            the last included); after layers are cut they map to the student layer that now produces them.
        data, batch_seconds, eval_every (also the checkpoint interval), seed, bf16, augment, device: as distill's.
    """

    target_gflops_ratio: float | None = None
    target_params_ratio: float | None = None
    flops_seconds: float = 3.0
    structures: tuple[str, ...] = STRUCTURES
    data: str = "data/corpus"
    gate_steps: int = 2000
    target_warmup_steps: int | None = None
    lr: float = 2e-4
    warmup_steps: int = 200
    lr_gates: float = 0.02
    lr_lambda: float = 0.02
    distill_steps: int = 2000
    distill_lr: float = 1e-4
    distill_warmup_steps: int = 200
    gate_beta: float = 2 / 3
    gate_l: float = -0.1
    gate_r: float = 1.1
    gate_init_drop: float = 0.01
    alpha_ctc: float = 0.5
    alpha_kd: float = 0.5
    alpha_hidden: float = 1.0
    temperature: float = 2.0
    hidden_layers: tuple[int, ...] | None = None
    batch_seconds: float = 30.0
    eval_every: int = 250
    seed: int = 0
    bf16: bool | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    version: int = 1

    def __post_init__(self):
        targets = [t for t in (self.target_gflops_ratio, self.target_params_ratio) if t is not None]
        if len(targets) != 1 or not 0.0 < targets[0] < 1.0:
            raise ValueError("give exactly one of target_gflops_ratio / target_params_ratio, in (0, 1)")
        bad = sorted(set(self.structures) - set(STRUCTURES))
        if bad or not self.structures or len(set(self.structures)) != len(self.structures):
            raise ValueError(f"structures must be distinct names from {', '.join(STRUCTURES)}, got {self.structures}")
        if self.gate_steps < 1 or self.distill_steps < 0 or (self.target_warmup_steps or 0) < 0:
            raise ValueError("gate_steps must be >= 1, distill_steps and target_warmup_steps >= 0")
        if min(self.lr, self.lr_gates, self.lr_lambda, self.distill_lr, self.flops_seconds) <= 0:
            raise ValueError("lr, lr_gates, lr_lambda, distill_lr and flops_seconds must be > 0")
        if not (self.gate_beta > 0 and self.gate_l < 0 and self.gate_r > 1 and 0 < self.gate_init_drop < 1):
            raise ValueError("hard concrete needs gate_beta > 0, gate_l < 0 < 1 < gate_r, gate_init_drop in (0, 1)")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.hidden_layers is not None and any(i < 0 for i in self.hidden_layers):
            raise ValueError(f"hidden_layers must be hidden_states indices >= 0, got {self.hidden_layers}")
        self.distill_config(student=".", steps=1, lr=self.lr, warmup_steps=0, hidden_layer_map=((1, 1),))

    @property
    def target(self) -> tuple[str, float]:
        return ("gflops", self.target_gflops_ratio) if self.target_gflops_ratio is not None \
            else ("params", self.target_params_ratio)

    def distill_config(self, *, student: str, steps: int, lr: float, warmup_steps: int,
                       hidden_layer_map: tuple[tuple[int, int], ...]) -> DistillConfig:
        return DistillConfig(student=student, init="checkpoint", data=self.data, steps=steps, lr=lr,
                             warmup_steps=warmup_steps, batch_seconds=self.batch_seconds, eval_every=self.eval_every,
                             alpha_ctc=self.alpha_ctc, alpha_kd=self.alpha_kd, alpha_hidden=self.alpha_hidden,
                             temperature=self.temperature,
                             hidden_layer_map=hidden_layer_map if self.alpha_hidden else (),
                             seed=self.seed, bf16=self.bf16, augment=self.augment, device=self.device)

    WHAT = "learned_prune"

    @classmethod
    def data_fields(cls, params: dict) -> tuple[str, ...]:
        return ("data",)


# -------------------------------------------------------------------------------------- objective


class _Ascent(torch.autograd.Function):
    """Identity forward, negated gradient: the optimiser's descent step on it is an ascent step."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -g


class GatedDistillObjective(DistillObjective):
    """Distillation loss of the gated student + the Lagrangian that holds its expected cost on the target."""

    def __init__(self, teacher, cfg: LearnedPruneConfig, dcfg: DistillConfig, log_file: Path | None, progress: bool):
        super().__init__(teacher, dcfg, teacher.config.hidden_size, cpu_has_bf16() if cfg.bf16 is None else cfg.bf16)
        self.pcfg = cfg
        self.gates = Gates(teacher, cfg)
        self.lambda_theta = nn.Parameter(torch.zeros(2))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))  # training steps: the target ramp
        self.base = widths_of(teacher)
        self.n_samples = int(round(cfg.flops_seconds * SAMPLE_RATE))
        self.full_gflops = float(forward_flops(teacher.config, self.base, self.n_samples)) / 1e9
        self.fixed_params = n_params(teacher) - float(varying_params(teacher.config, self.base))
        self.full_params = n_params(teacher)
        self.log_file, self.progress, self.bar = log_file, progress, None

    def optimizer_groups(self) -> list[dict]:
        """Gates and multipliers in their own groups at lr_gates / lr_lambda, out of the weights' clipping, with
        a short second-moment memory: as λ grows, the gates' gradients grow with it, and Adam's default β2
        would keep their steps scaled by the small gradients of the first steps."""
        return [{"params": list(self.gates.parameters()), "lr_scale": self.pcfg.lr_gates / self.pcfg.lr,
                 "betas": GATE_BETAS},
                {"params": [self.lambda_theta], "lr_scale": self.pcfg.lr_lambda / self.pcfg.lr, "betas": GATE_BETAS}]

    def expected(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[GFLOPs], E[params]) under the gates' open probabilities."""
        w, cfg = self.gates.expected_widths(self.base), self.teacher.config
        return (forward_flops(cfg, w, self.n_samples) / 1e9, self.fixed_params + varying_params(cfg, w))

    def target_now(self) -> float:
        final, warm = self.pcfg.target[1], self.pcfg.target_warmup_steps
        warm = self.pcfg.gate_steps // 4 if warm is None else warm
        return 1.0 - (1.0 - final) * min(1.0, float(self.seen) / warm) if warm else final

    def forward(self, model, values, mask, labels):
        if model.training:
            self.gates.project()
            self.gates.resample()
        loss, parts = super().forward(model, values, mask, labels)
        gflops, params = self.expected()
        ratio = gflops / self.full_gflops if self.pcfg.target[0] == "gflops" else params / self.full_params
        t = self.target_now()
        gap = ratio - t
        lam = _Ascent.apply(self.lambda_theta)
        reg = lam[0] * gap + lam[1] * gap * gap
        parts.update(expected_gflops=float(gflops.detach()), expected_params_m=float(params.detach()) / 1e6, target_ratio=t,
                     expected_ratio=float(ratio.detach()), lambda1=float(lam[0].detach()), lambda2=float(lam[1].detach()),
                     lagrangian=float(reg.detach()))
        if model.training:
            self.seen += 1
            if _dist_info()[0] == 0:
                self._show(parts)
        return loss + reg, parts

    def _show(self, parts: dict) -> None:
        """The gates' own progress bar (expected GFLOPs, target, multipliers) and gates.jsonl, rank 0 only."""
        step = int(self.seen)
        if self.progress and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.pcfg.gate_steps, initial=step - 1, desc="gates", unit="step", position=1,
                            dynamic_ncols=True)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(gflops=f"{parts['expected_gflops']:.3f}",
                                 target=f"{parts['target_ratio'] * self.full_gflops:.3f}"
                                 if self.pcfg.target[0] == "gflops" else f"{parts['target_ratio']:.3f}x params",
                                 lam=f"{parts['lambda1']:.2f}/{parts['lambda2']:.2f}")
        if self.log_file is not None and (step % 10 == 0 or step == self.pcfg.gate_steps):
            with open(self.log_file, "a") as f:
                f.write(json.dumps({"step": step, **{k: round(v, 5) for k, v in parts.items()}}) + "\n")

    def close(self) -> None:
        self.bar = self.bar.close() if self.bar is not None else None


# ------------------------------------------------------------------------------------------- step


ACCEPTS = frozenset({Kind.TORCH})


def default_hidden_layers(num_layers: int) -> tuple[int, ...]:
    return tuple(sorted({max(1, round(num_layers * k / 4)) for k in range(1, 5)}))


@register("learned_prune", LearnedPruneConfig, ACCEPTS,
          "learned L0 gates (CNN, heads, FFN, layers) to a GFLOPs/params target with distillation, cut, distil",
          resumable=True)
def learned_prune(artifact: Artifact, cfg: LearnedPruneConfig, out_dir: str | Path, ctx: StepContext | None = None,
                  stop_at_step: int | None = None) -> Artifact | None:
    """Gated phase → cut → distillation phase, into `out_dir` (the input is only read). Each phase resumes
    from its checkpoint in `out_dir` when run again. `stop_at_step` ends the gated phase early with a
    checkpoint and returns None. Under torchrun only rank 0 returns the artifact (the others None)."""
    artifact.require(ACCEPTS, "learned_prune", "prune its fp32 parent, then quantize the pruned model")
    out = Path(out_dir)
    if out.resolve() == Path(artifact.path).resolve():
        raise ValueError(f"out_dir must differ from the input artifact {artifact.path}: steps never modify it")
    progress = ctx.progress if ctx else True
    final, pruned = out / "model", out / "pruned"
    if (final / PROVENANCE).exists() and json.loads((final / PROVENANCE).read_text()).get("step") == "learned_prune":
        return Artifact.open(final)
    rank, world = _dist_info()
    if not (pruned / PROVENANCE).exists() and not _gated_phase(artifact, cfg, out, progress, stop_at_step, rank, world):
        return None  # stopped early: the checkpoint is in out_dir/gated
    cut = json.loads((pruned / PROVENANCE).read_text())["report"]
    report = {"gated": cut}
    if cfg.distill_steps:
        dcfg = cfg.distill_config(student=str(pruned), steps=cfg.distill_steps, lr=cfg.distill_lr,
                                  warmup_steps=cfg.distill_warmup_steps,
                                  hidden_layer_map=tuple(map(tuple, cut["hidden_layer_map_after"])))
        done = out / "distill" / "model"
        if not (done / PROVENANCE).exists() and distill(artifact, dcfg, out / "distill",
                                                          StepContext(root=artifact, progress=progress)) is None:
            return None  # a non-zero rank of a data-parallel run
        report["distill"] = json.loads((done / PROVENANCE).read_text())["report"]
        src = done
    else:
        src = pruned
    if rank != 0:
        return None
    tmp = out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)  # a copy: an interruption before finalize leaves both phases' outputs intact
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return finalize(final, "learned_prune", cfg.to_dict(), artifact, report)


def _gated_phase(artifact: Artifact, cfg: LearnedPruneConfig, out: Path, progress: bool, stop_at_step: int | None,
                 rank: int, world: int) -> bool:
    """Train the gated copy; then (rank 0) cut it into out/pruned. False when stopped early."""
    teacher, processor = load_torch(artifact)
    teacher.float().eval()
    n_layers = len(teacher.wav2vec2.encoder.layers)
    hidden = cfg.hidden_layers if cfg.hidden_layers is not None else default_hidden_layers(n_layers)
    bad = [i for i in hidden if i > n_layers]
    if bad:
        raise ValueError(f"hidden_layers {bad} out of range: the teacher has hidden_states 0..{n_layers}")
    student = copy.deepcopy(teacher)  # before the objective freezes the teacher's parameters
    dcfg = cfg.distill_config(student=str(artifact.path), steps=cfg.gate_steps, lr=cfg.lr,
                              warmup_steps=cfg.warmup_steps, hidden_layer_map=tuple((i, i) for i in hidden))
    run = out / "gated"
    run.mkdir(parents=True, exist_ok=True)
    objective = GatedDistillObjective(teacher, cfg, dcfg, run / "gates.jsonl" if rank == 0 else None, progress)
    handles = []

    def model_init():
        student.config.layerdrop = 0.0  # layer gates replace LayerDrop
        student.requires_grad_(True)
        handles.extend(attach_gates(student, objective.gates))
        return student, processor

    tcfg = TrainConfig(arch=str(artifact.path), data=cfg.data, out=str(run), steps=cfg.gate_steps, lr=cfg.lr,
                       warmup_steps=cfg.warmup_steps, batch_seconds=cfg.batch_seconds, eval_every=cfg.eval_every,
                       seed=cfg.seed, bf16=cfg.bf16, augment=cfg.augment, device=cfg.device)
    try:
        res = train(tcfg, resume=(run / "last.pt").exists(), progress=progress, objective=objective,
                    model_init=model_init, step_name="learned_prune.gated", stop_at_step=stop_at_step)
    finally:
        objective.close()
    if res.get("stopped_early"):
        return False
    if rank == 0:
        gflops, params = objective.expected()
        summary = {"steps": res["steps"], "minutes": round(res["minutes"], 2), "full_gflops": objective.full_gflops,
                   "expected_gflops": float(gflops.detach()), "expected_params": float(params.detach()),
                   "target": {"on": cfg.target[0], "ratio": cfg.target[1]},
                   "lambda": [float(v) for v in objective.lambda_theta.detach().cpu()],
                   "dev_history": res["history"]}
        cut_model(student.cpu(), processor, objective.gates.cpu(), handles, teacher.config, hidden, artifact,
                  out / "pruned", cfg, summary)
    if world > 1:
        torch.distributed.barrier()
    return True


def cut_model(model, processor, gates: Gates, handles: list, teacher_config, hidden: tuple[int, ...],
              parent: Artifact, dst: Path, cfg: LearnedPruneConfig, summary: dict) -> None:
    """Make the gates deterministic, remove the closed structures (compress.prune's surgery) and save."""
    model.eval()
    x = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gated_logits = model(x).logits  # hooks on, eval mode: the deterministic gates
    for h in handles:
        h.remove()
    keep = {k: gates.keep(k).bool() for k in gates.theta}
    n_layers = len(model.wav2vec2.encoder.layers)
    kept_layers = [i for i in range(n_layers) if "layers" not in keep or keep["layers"][i]]
    gone: dict[str, list[list[int]]] = {}
    if "cnn_0" in keep:
        gone["cnn"] = [(~keep[f"cnn_{i}"]).nonzero().flatten().tolist() for i in range(len(model.config.conv_dim))]
    for part in ("heads", "ffn"):
        if f"{part}_0" in keep:
            gone[part] = [(~keep[f"{part}_{i}"]).nonzero().flatten().tolist() for i in kept_layers]
    if len(kept_layers) < n_layers:
        prune_model(model, processor, PruneConfig(drop_layers=tuple(i for i in range(n_layers) if i not in kept_layers)))
    remove_units(model, gone)
    record_shapes(model)
    model.config.layerdrop = teacher_config.layerdrop  # (mask_time_prob stays the trainer's, as distill's output)
    with torch.no_grad():
        diff = float((model(x).logits - gated_logits).abs().max())
    after = widths_of(model)
    n = int(round(cfg.flops_seconds * SAMPLE_RATE))
    summary.update(kept_layers=kept_layers, conv_dim=after.conv_dim, num_heads=after.num_heads,
                   intermediate_size=after.intermediate_size, params=n_params(model),
                   gflops=float(forward_flops(model.config, after, n)) / 1e9, surgery_max_logit_diff=diff,
                   hidden_layer_map_after=[(sum(k < i for k in kept_layers), i) for i in hidden])
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    copy_processor_files(parent.path, tmp)
    finalize(tmp, "learned_prune.cut", cfg.to_dict(), parent, summary)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)

