"""Confidence cascade: a fast model transcribes every utterance; a strong one re-transcribes those whose
utterance-level CTC confidence is below a threshold (the seed's Base-first, Large-on-difficult-audio
pattern).

Confidence follows Laptev & Ginsburg 2022 ("Fast entropy-based methods of word-level confidence estimation
for end-to-end ASR"): a per-frame confidence from the fast model's softmax — `max_prob` (the top
probability), `entropy` (1 − H/log V, Shannon entropy normalised by its maximum) or `tsallis` (1 − H_α/H_α,max,
the Tsallis entropy of order `alpha`, their best family at α ≈ 1/3) — aggregated (`mean` or `min`) over the
frames whose greedy token is not blank: blank frames are confidently blank almost everywhere, so they would
only dilute the words. An utterance with no non-blank frame has confidence 0: the fast model heard nothing,
and an empty transcript of speech costs every word, so the strong model decides.

A cascade artifact is a directory holding only `w2vc_cascade.json` (w2vc.core.artifact.CASCADE_FILE): the two
members' paths and hashes and the rule. `w2vc.core.load.load` returns a `CascadeTranscriber` for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from w2vc.core.artifact import CASCADE_FILE, Artifact
from w2vc.core.runnable import Transcriber, batches_by_length, pad_batch

MEASURES = ("max_prob", "entropy", "tsallis")
AGGREGATIONS = ("mean", "min")


def check_rule(measure: str, aggregation: str, threshold: float, alpha: float) -> None:
    """One line naming what is wrong with a routing rule (shared by the step config and the artifact)."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold < 0:
        raise ValueError(f"threshold must be a number >= 0 (0: never fall back, above 1: always), got {threshold!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha (Tsallis order) must be in (0, 1), got {alpha}")


def frame_confidence(logits: np.ndarray, measure: str = "max_prob", alpha: float = 1 / 3) -> np.ndarray:
    """[T, V] logits → [T] confidences in [0, 1]: 1 when all probability is on one token, 0 when uniform
    (max_prob's floor is 1/V)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = np.exp(logp)
    v = z.shape[-1]
    if measure == "max_prob":
        c = p.max(-1)
    elif measure == "entropy":
        c = 1.0 + (p * logp).sum(-1) / np.log(v)
    elif measure == "tsallis":
        h = (1.0 - (p**alpha).sum(-1)) / (alpha - 1.0)
        c = 1.0 - h / ((v ** (1.0 - alpha) - 1.0) / (1.0 - alpha))
    else:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    return np.clip(c, 0.0, 1.0)


def utterance_confidence(logits: np.ndarray, blank_id: int, measure: str = "max_prob", aggregation: str = "mean",
                         alpha: float = 1 / 3) -> float:
    """One utterance's [T, V] logits (valid frames only) → its confidence: the frame confidences of the
    non-blank frames, aggregated; 0.0 when every frame is blank."""
    keep = np.asarray(logits).argmax(-1) != blank_id
    if not keep.any():
        return 0.0
    c = frame_confidence(np.asarray(logits)[keep], measure, alpha)
    return float(c.min() if aggregation == "min" else c.mean())


@dataclass(frozen=True)
class CascadeSpec:
    """What a cascade directory holds: the members (absolute paths, so the cache can move the directory; an
    exported bundle's are relative to it, its members inside) with their content hashes at build time, and
    the routing rule."""

    fast: str
    strong: str
    measure: str = "max_prob"
    aggregation: str = "mean"
    threshold: float = 0.9
    alpha: float = 1 / 3
    fast_hash: str = ""
    strong_hash: str = ""

    def __post_init__(self):
        check_rule(self.measure, self.aggregation, self.threshold, self.alpha)

    @classmethod
    def read(cls, path: str | os.PathLike) -> CascadeSpec:
        f = Path(path) / CASCADE_FILE
        d = json.loads(f.read_text())
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"{f}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        return cls(**d)

    def member(self, cascade_dir: str | os.PathLike, role: str) -> Path:
        """The `fast` or `strong` member's directory: absolute (a sweep's cache) or relative to the cascade
        (an exported bundle, its members inside)."""
        return Path(cascade_dir) / getattr(self, role)

    def write(self, out_dir: str | os.PathLike) -> Path:
        f = Path(out_dir) / CASCADE_FILE
        f.write_text(json.dumps(asdict(self), indent=1))
        return f


@dataclass(frozen=True)
class Routed:
    """One utterance through the cascade: the text it returns, the fast model's confidence and text, and
    whether the strong model was run (then `text` is the strong model's)."""

    text: str
    confidence: float
    fell_back: bool
    fast_text: str


class CascadeTranscriber(Transcriber):
    """The fast model on every utterance, the strong one on those below the threshold; `transcribe` returns
    texts like any Transcriber and keeps the routes of its latest call in `last_routes` (fallback rate).
    `logits` is not defined: the texts may come from two models."""

    runtime = "cascade"

    def __init__(self, fast: Transcriber, strong: Transcriber, spec: CascadeSpec):
        super().__init__(fast.processor, fast.uses_attention_mask)
        self.fast, self.strong, self.spec = fast, strong, spec
        self.blank_id = int(fast.processor.tokenizer.pad_token_id)
        self.last_routes: list[Routed] = []

    def first_pass(self, audio: Sequence[np.ndarray], batch_seconds: float = 60.0, max_batch: int = 16,
                   progress: bool = False, desc: str = "cascade") -> list[tuple[str, float]]:
        """(fast text, confidence) per utterance, batched as the fast model's own `transcribe` batches."""
        groups = batches_by_length([len(a) for a in audio], int(batch_seconds * 16000),
                                   max_batch if self.fast.uses_attention_mask else 1)
        if progress:
            from tqdm import tqdm
            groups = tqdm(groups, desc=desc, unit="batch", leave=False)
        out: list[tuple[str, float] | None] = [None] * len(audio)
        s = self.spec
        for g in groups:
            values, mask = pad_batch([audio[i] for i in g])
            lg = self.fast.logits(values, mask if self.fast.uses_attention_mask else None)
            frames = self.fast.frame_lengths(mask)
            for j, (i, text) in enumerate(zip(g, self.fast.decode(lg, frames))):
                conf = utterance_confidence(lg[j, : frames[j]], self.blank_id, s.measure, s.aggregation, s.alpha)
                out[i] = (text, conf)
        return out  # type: ignore[return-value]

    def route(self, audio: Sequence[np.ndarray], batch_seconds: float = 60.0, max_batch: int = 16,
              progress: bool = False, desc: str = "cascade") -> list[Routed]:
        first = self.first_pass(audio, batch_seconds, max_batch, progress, desc)
        back = [i for i, (_, conf) in enumerate(first) if conf < self.spec.threshold]
        strong = dict(zip(back, self.strong.transcribe([audio[i] for i in back], batch_seconds, max_batch)))
        return [Routed(strong.get(i, text), conf, i in strong, text) for i, (text, conf) in enumerate(first)]

    def transcribe(self, audio: Sequence[np.ndarray], batch_seconds: float = 60.0, max_batch: int = 16,
                   progress: bool = False, desc: str = "transcribe") -> list[str]:
        self.last_routes = self.route(audio, batch_seconds, max_batch, progress, desc)
        return [r.text for r in self.last_routes]

    @property
    def last_fallback_rate(self) -> float:
        """Fraction of the latest `transcribe` call's utterances that the strong model re-transcribed."""
        return sum(r.fell_back for r in self.last_routes) / max(len(self.last_routes), 1)


def load_cascade(path: str | os.PathLike, threads: int | None = None, **kw) -> CascadeTranscriber:
    """Both members through the one loader (any kind but a cascade), the same `threads` for each. A member
    whose content changed since the cascade was built is refused: the rule was chosen for the old one."""
    from w2vc.core.load import load  # load() dispatches here: imported late to keep the import graph a tree

    spec = CascadeSpec.read(path)
    where = Path(path) / CASCADE_FILE
    members = []
    for role in ("fast", "strong"):
        p = spec.member(path, role)
        if not p.is_dir():
            raise FileNotFoundError(f"{where}: {role} model not found: {p}")
        if (p / CASCADE_FILE).is_file():
            raise ValueError(f"{where}: {role} model {p} is itself a cascade")
        built = getattr(spec, f"{role}_hash")
        if built and Artifact.open(p).hash != built:
            raise ValueError(f"{where}: {role} model {p} changed since the cascade was built (hash "
                             f"{built}); build the cascade again")
        members.append(load(p, threads=threads, **{"spinning": False, **kw}))  # two sessions, one set of cores
    return CascadeTranscriber(*members, spec)
