"""Knowledge distillation teacher → student: CTC on labels + KL on temperature-softened frame posteriors
+ optional hidden-state loss through learned projections (DistilHuBERT: L1 − log σ(cos)).

Why this mix: the KL term passes the teacher's whole frame distribution (which blanks, which near-miss
characters), far richer than the label alone; hidden-state matching gives every student layer a target,
which helps most when the student starts from the teacher's own layers. Teacher and student share the
conv strides (frame rate) and the vocabulary, so frames and classes line up one to one.

Runs the training loop of w2vc.train (checkpoints, exact resume, mixed precision, CPU or CUDA, streamed data,
torchrun/accelerate data parallel across processes and machines); the teacher runs on the student's device.
Also used as the recovery step after structured pruning (student = the pruned model, teacher = its parent).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from w2vc.core.artifact import ANY_TORCH, Artifact, Kind, finalize
from w2vc.core.config import ConfigBase
from w2vc.core.device import DEVICES, DevicePlan, cpu_has_bf16
from w2vc.core.load import load_torch
from w2vc.core.models import PRESETS, new_model
from w2vc.core.runtime import pos_conv_in_fp32
from w2vc.core.shapes import SHAPES_KEY, record_shapes
from w2vc.core.step import StepContext, register
from w2vc.data.augment import AugmentConfig
from w2vc.train import CTCObjective, TrainConfig, _dist_info, train

STUDENT_INITS = ("scratch", "checkpoint", "teacher_layers")


@dataclass(frozen=True, kw_only=True)
class DistillConfig(ConfigBase):
    """Args:
        student: preset name (init "scratch"), a model directory (init "checkpoint"), or ignored for
            init "teacher_layers" (the student is the teacher with only `teacher_layers` kept).
        init: one of scratch | checkpoint | teacher_layers.
        teacher_layers: teacher transformer layer indices copied into the student (teacher_layers init).
        data: corpus root or train data path (same as `w2vc train --data`).
        steps / lr / warmup_steps / batch_seconds: the training schedule (see TrainConfig).
        alpha_ctc / alpha_kd / alpha_hidden: loss weights; temperature: softening of the KL term.
        hidden_layer_map: (student layer, teacher layer) pairs of hidden_states indices (0 = CNN output
            after projection); empty disables the hidden loss.
        bf16 / device: mixed precision and device, as TrainConfig's (teacher and student share both).
        hidden_direct: compare hidden states as they are, without the learned projections (equal hidden sizes
            only). Why: a cut copy recovered with its later layers frozen (`train_only`) needs the states those
            layers read back exactly, not up to a linear map.
        train_only: module-path prefixes of the student whose parameters train (e.g. ("wav2vec2.feature_extractor",
            "wav2vec2.feature_projection")); the rest stays frozen (the hidden-loss projections always train).
            Empty trains everything. Why: after a CNN-only cut the transformer is unchanged, so fitting only the
            cheaper CNN to the parent may be the smaller problem; compress/README.md ("the CNN lever") measures it.
    """

    student: str = "base-s"
    init: str = "scratch"
    teacher_layers: tuple[int, ...] = ()
    data: str = "data/corpus"
    steps: int = 2000
    lr: float = 1e-3
    warmup_steps: int = 200
    batch_seconds: float = 30.0
    eval_every: int = 250
    alpha_ctc: float = 0.5
    alpha_kd: float = 0.5
    alpha_hidden: float = 0.0
    temperature: float = 2.0
    hidden_layer_map: tuple[tuple[int, int], ...] = ()
    seed: int = 0
    bf16: bool | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    train_only: tuple[str, ...] = ()
    hidden_direct: bool = False

    LATER_FIELDS = {"train_only": "train_only", "hidden_direct": "hidden_direct"}

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.init not in STUDENT_INITS:
            raise ValueError(f"init must be one of {', '.join(STUDENT_INITS)}, got {self.init!r}")
        if self.init == "scratch" and self.student not in PRESETS:
            raise ValueError(f"init 'scratch' needs a preset student ({', '.join(PRESETS)}), got {self.student!r}")
        if self.init == "teacher_layers" and not self.teacher_layers:
            raise ValueError("init 'teacher_layers' needs teacher_layers, e.g. (0, 2, 4, 6)")
        if self.temperature <= 0 or min(self.alpha_ctc, self.alpha_kd, self.alpha_hidden) < 0:
            raise ValueError("temperature must be > 0 and loss weights >= 0")
        if self.alpha_ctc + self.alpha_kd + self.alpha_hidden == 0:
            raise ValueError("at least one loss weight must be > 0")
        if self.alpha_hidden > 0 and not self.hidden_layer_map and self.WHAT != "recover":
            raise ValueError("alpha_hidden > 0 needs hidden_layer_map, e.g. ((2, 4), (4, 8))")

    WHAT = "distill"

    @classmethod
    def data_fields(cls, params: dict) -> tuple[str, ...]:
        return ("data",)


@dataclass(frozen=True, kw_only=True)
class RecoverConfig(DistillConfig):
    """Distillation-based recovery of the chain's current model (the student) from the chain's root (the
    teacher); `init` is always "checkpoint" and `student` the current model, so YAML sets neither. With
    alpha_hidden > 0 and no hidden_layer_map, the map is the one the current model's learned cut recorded
    (its layers renumbered after the dropped ones), so a recipe need not restate which layers survived."""

    WHAT = "recover"
    init: str = "checkpoint"
    student: str = "."

    @classmethod
    def from_dict(cls, d: dict):
        if {"init", "student"} & set(d):
            raise ValueError("recover fine-tunes the chain's current model: it takes no 'init' or 'student'")
        return super().from_dict(d)


class DistillObjective(CTCObjective):
    def __init__(self, teacher, cfg: DistillConfig, student_hidden: int, use_bf16: bool):
        super().__init__()
        # not a submodule: frozen, not checkpointed; its positional conv in fp32 under bf16 autocast
        object.__setattr__(self, "teacher", pos_conv_in_fp32(teacher.eval()))
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.cfg = cfg
        self.use_bf16 = use_bf16
        self.dev: DevicePlan | None = None
        t_hidden = teacher.config.hidden_size
        with torch.random.fork_rng(devices=[]):  # seeded: a run and its interrupted-and-resumed twin start alike
            torch.manual_seed(cfg.seed)
            if cfg.hidden_direct and student_hidden != t_hidden:
                raise ValueError(f"hidden_direct needs equal hidden sizes, got student {student_hidden}, "
                                 f"teacher {t_hidden}")
            layer = torch.nn.Identity if cfg.hidden_direct else lambda: torch.nn.Linear(student_hidden, t_hidden)
            self.proj = torch.nn.ModuleList(layer() for _ in cfg.hidden_layer_map)

    def prepare(self, dev: DevicePlan) -> None:
        """The frozen teacher is no submodule (not trained, not checkpointed): move it with the student."""
        object.__setattr__(self, "teacher", self.teacher.to(dev.device))
        self.dev = dev

    def _teacher_autocast(self):
        if self.dev is None:  # used outside the trainer: the CPU autocast it always had
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.use_bf16)
        return self.dev.autocast()

    def forward(self, model, values, mask, labels):
        c = self.cfg
        want_hidden = c.alpha_hidden > 0
        with torch.no_grad(), self._teacher_autocast():
            t_out = self.teacher(values, attention_mask=mask, output_hidden_states=want_hidden)
        s_out = model(values, attention_mask=mask, labels=labels, output_hidden_states=want_hidden)
        frames = model._get_feat_extract_output_lengths(mask.sum(-1))
        T = s_out.logits.shape[1]
        valid = (torch.arange(T, device=frames.device)[None, :] < frames[:, None]).float()  # [B, T]
        n_valid = valid.sum().clamp(min=1)
        parts, loss = {}, torch.zeros((), dtype=torch.float32, device=s_out.logits.device)
        if c.alpha_ctc:
            parts["ctc"] = s_out.loss.float()
            loss = loss + c.alpha_ctc * parts["ctc"]
        if c.alpha_kd:
            t_logp = F.log_softmax(t_out.logits.float() / c.temperature, -1)
            s_logp = F.log_softmax(s_out.logits.float() / c.temperature, -1)
            kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # [B, T]
            parts["kd"] = (kl * valid).sum() / n_valid * c.temperature ** 2
            loss = loss + c.alpha_kd * parts["kd"]
        if want_hidden:
            hid = torch.zeros((), dtype=torch.float32, device=loss.device)
            for proj, (si, ti) in zip(self.proj, c.hidden_layer_map):
                s_h = proj(s_out.hidden_states[si].float())
                t_h = t_out.hidden_states[ti].float()
                l1 = (s_h - t_h).abs().mean(-1)
                cos = F.cosine_similarity(s_h, t_h, dim=-1)
                hid = hid + (((l1 - F.logsigmoid(cos)) * valid).sum() / n_valid)
            parts["hidden"] = hid / len(c.hidden_layer_map)
            loss = loss + c.alpha_hidden * parts["hidden"]
        return loss, {k: v.detach().item() for k, v in parts.items()}


def freeze_except(model, prefixes: tuple[str, ...]) -> None:
    """Freeze every parameter whose name is not under one of `prefixes` (module paths). A prefix that names
    no parameter is a typo: one line naming the known tops."""
    def under(name: str, pre: str) -> bool:
        return name == pre or name.startswith(pre + ".")

    named = list(model.named_parameters())
    for pre in prefixes:
        if not any(under(n, pre) for n, _ in named):
            tops = sorted({".".join(n.split(".")[:2]) for n, _ in named})
            raise ValueError(f"train_only {pre!r} names no parameter of the student; modules: {', '.join(tops)}")
    for n, p in named:
        p.requires_grad_(any(under(n, pre) for pre in prefixes))


def student_from_teacher_layers(teacher, processor, layers: tuple[int, ...]):
    """DistilHuBERT-style init: the teacher itself (CNN, projection, positional conv) with fewer layers."""
    n = len(teacher.wav2vec2.encoder.layers)
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ValueError(f"teacher_layers {bad} out of range: the teacher has {n} layers")
    student = copy.deepcopy(teacher)
    student.wav2vec2.encoder.layers = torch.nn.ModuleList(copy.deepcopy(teacher.wav2vec2.encoder.layers[i])
                                                          for i in layers)
    student.config.num_hidden_layers = len(layers)
    if getattr(student.config, SHAPES_KEY, None):  # a pruned teacher: its per-layer shapes must follow
        record_shapes(student)
    return student, processor


STUDENT_KINDS = frozenset({Kind.TORCH})


@register("distill", DistillConfig, ANY_TORCH, "teacher (the chain's model) → a student trained against it",
          resumable=True, keeps_shape=True)
def distill(teacher: Artifact, cfg: DistillConfig, out_dir: str | Path, ctx: StepContext | None = None,
            resume: bool = True, parent: Artifact | None = None, step: str = "distill") -> Artifact | None:
    """Train a student against `teacher`; the output artifact is the best-by-dev student.

    The teacher may be any PyTorch kind (it only runs, under no_grad, upcast to fp32); a checkpoint student
    must be a plain PyTorch artifact, since training a bf16 or int8 artifact's stored weights would save a
    plain fp32 model. Data-parallel under torchrun/accelerate (one batch shard per process); there only rank
    0 returns the artifact, the other ranks return None. `parent`/`step`: the output's provenance parent
    and step name (recover: the pruned model it fine-tunes, not the teacher)."""
    teacher.require(ANY_TORCH, "distill (teacher)")
    if cfg.init == "checkpoint":
        student = Artifact.open(cfg.student)
        student.require(STUDENT_KINDS, "distill (student)", "distil its fp32 parent, then quantize the student")
        if student.hash == teacher.hash:  # e.g. a sweep candidate `from: student` with `student: "@student"`
            raise ValueError(f"distill: the teacher and the student are the same model ({teacher.path}); the "
                             "step's input is the teacher (start the candidate from the teacher)")
    progress = ctx.progress if ctx else True
    out = Path(out_dir)
    t_model, t_proc = load_torch(teacher)
    t_model.float().eval()

    def model_init():
        if cfg.init == "scratch":
            model, proc = new_model(cfg.student, seed=cfg.seed)
        elif cfg.init == "checkpoint":
            model, proc = load_torch(cfg.student)
        else:
            model, proc = student_from_teacher_layers(copy.deepcopy(t_model), t_proc, cfg.teacher_layers)
        if proc.tokenizer.get_vocab() != t_proc.tokenizer.get_vocab():
            raise ValueError("student and teacher vocabularies differ; distillation needs the same characters")
        if tuple(model.config.conv_stride) != tuple(t_model.config.conv_stride):
            raise ValueError("student and teacher frame rates differ (conv_stride); frames would not align")
        if cfg.train_only:
            freeze_except(model, cfg.train_only)
        return model, proc

    tcfg = TrainConfig(arch=cfg.student if cfg.init != "teacher_layers" else str(teacher.path), data=cfg.data,
                       out=str(out / "run"), steps=cfg.steps, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                       batch_seconds=cfg.batch_seconds, eval_every=cfg.eval_every, seed=cfg.seed, bf16=cfg.bf16,
                       augment=cfg.augment, device=cfg.device)
    use_bf16 = cpu_has_bf16() if cfg.bf16 is None else cfg.bf16  # replaced by the trainer's plan (prepare)
    probe, _ = model_init()
    objective = DistillObjective(t_model, cfg, probe.config.hidden_size, use_bf16)
    del probe
    res = train(tcfg, resume=resume and (out / "run" / "last.pt").exists(), progress=progress,
                objective=objective, model_init=model_init, step_name="distill")
    rank, world = _dist_info()
    if world > 1:  # under torchrun/accelerate: rank 0 alone turns the run into the artifact
        torch.distributed.barrier()
        if rank != 0:
            return None
    best = out / "run" / "best"
    final = out / "model"
    if final.exists():
        import shutil

        shutil.rmtree(final)
    best.rename(final) if best.exists() else None
    history = res["history"]
    report = {"steps": res["steps"], "minutes": round(res["minutes"], 2),
              "best_dev_wer": min((h["dev_wer"] for h in history), default=None),
              "best_dev_wer_10db": min((h["dev_wer_10db"] for h in history), default=None)}
    (final / "distill_history.json").write_text(json.dumps(history))
    params = cfg.to_dict() if parent is None else {**cfg.to_dict(), "teacher": str(teacher.path),
                                                   "teacher_hash": teacher.hash}
    return finalize(final, step, params, parent or teacher, report)


@register("recover", RecoverConfig, frozenset({Kind.TORCH}), "fine-tune the current model by distillation from the root",
          resumable=True, keeps_shape=True)
def recover(artifact: Artifact, cfg: RecoverConfig, out_dir: str | Path, ctx: StepContext | None = None) -> Artifact:
    """Distillation-based recovery: `artifact` (e.g. a pruned model) is the student, the chain's root the teacher."""
    from dataclasses import replace

    artifact.require(STUDENT_KINDS, "recover", "recover its fp32 parent, then quantize")
    root = ctx.root if ctx and ctx.root is not None else artifact
    if cfg.alpha_hidden > 0 and not cfg.hidden_layer_map:
        cut = artifact.provenance.get("report", {}).get("gated", {}).get("hidden_layer_map_after")
        if not cut:
            raise ValueError(f"recover with alpha_hidden > 0 needs hidden_layer_map: {artifact.path} is no learned "
                             "cut that recorded one")
        cfg = replace(cfg, hidden_layer_map=tuple(map(tuple, cut)))
    return distill(root, replace(cfg, student=str(artifact.path)), out_dir, ctx, parent=artifact, step="recover")
