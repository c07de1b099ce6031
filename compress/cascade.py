"""Cascade step: the input artifact becomes the fast first pass of a cascade whose strong model re-transcribes
the utterances the fast one is unsure of (utterance-level CTC confidence below a threshold; the rule and the
runtime are in w2vc.core.cascade).

The step trains and converts nothing: it writes a directory holding `w2vc_cascade.json` (both members'
absolute paths and content hashes, measure, aggregation, threshold) and the provenance, so a sweep caches,
measures and ranks a cascade like any other candidate. What it costs depends on the input (how often the
strong model runs), so eval times it on the test audio itself (w2vc.eval.cascade_cost), not on synthetic
clips. Both members must share the character vocabulary: the routing reads the fast model's logits and
either model's text is returned.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from w2vc.core.artifact import CASCADE_FILE, Artifact, Kind, finalize
from w2vc.core.cascade import CascadeSpec, check_rule
from w2vc.core.config import ConfigBase
from w2vc.core.step import StepContext, register

STEP = "cascade"
MEMBER_KINDS = frozenset({Kind.TORCH, Kind.TORCH_RUNTIME, Kind.ONNX})


@dataclass(frozen=True, kw_only=True)
class CascadeConfig(ConfigBase):
    """Args:
    strong: the fallback model's directory (in a sweep, `"@teacher"` or `"@<candidate>"` names a model of
        the sweep); any single-model kind.
    measure: frame confidence: max_prob, entropy (1 - H/log V) or tsallis (order `alpha`).
    aggregation: mean or min of the frame confidences over the non-blank frames.
    threshold: an utterance whose confidence is below it goes to the strong model (0: never, above 1: always).
    alpha: the Tsallis entropy's order (Laptev & Ginsburg 2022's best is about 1/3); other measures ignore it.
    """

    WHAT = "cascade"

    strong: str = ""
    measure: str = "max_prob"
    aggregation: str = "mean"
    threshold: float = 0.9
    alpha: float = 1 / 3
    version: int = 1

    def __post_init__(self):
        if not self.strong:
            raise ValueError('cascade needs strong: the fallback model (a directory, or "@teacher" in a sweep)')
        check_rule(self.measure, self.aggregation, self.threshold, self.alpha)


def _vocab(path: Path) -> dict | None:
    f = path / "vocab.json"
    return json.loads(f.read_text()) if f.is_file() else None


@register(STEP, CascadeConfig, MEMBER_KINDS, "fast model first; the strong one where its confidence is low")
def cascade(artifact: Artifact, cfg: CascadeConfig, out_dir: str | os.PathLike,
            ctx: StepContext | None = None) -> Artifact:
    """`artifact` (fast) + `cfg.strong` → a cascade directory at `out_dir` (nothing copied: it names both)."""
    artifact.require(MEMBER_KINDS, STEP, "a cascade's fast model is one model")
    strong_dir = Path(cfg.strong)
    if not strong_dir.is_dir():
        raise FileNotFoundError(f"cascade: strong model not found: {strong_dir}")
    strong = Artifact.open(strong_dir)
    strong.require(MEMBER_KINDS, f"{STEP} (strong)", "a cascade's strong model is one model")
    if strong.path.resolve() == artifact.path.resolve():
        raise ValueError(f"cascade: fast and strong are the same model ({strong.path})")
    if _vocab(artifact.path) != _vocab(strong.path):
        raise ValueError(f"cascade: {artifact.path} and {strong.path} have different vocabularies (vocab.json)")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory is not empty: {out}")
    out.mkdir(parents=True, exist_ok=True)
    spec = CascadeSpec(fast=str(artifact.path.resolve()), strong=str(strong.path.resolve()), measure=cfg.measure,
                       aggregation=cfg.aggregation, threshold=float(cfg.threshold), alpha=cfg.alpha,
                       fast_hash=artifact.hash, strong_hash=strong.hash)
    spec.write(out)
    report = {"fast": spec.fast, "strong": spec.strong, "fast_kind": artifact.describe,
              "strong_kind": strong.describe, "file": CASCADE_FILE,
              "size_mb": artifact.size_mb + strong.size_mb}
    return finalize(out, STEP, cfg.to_dict(), artifact, report)
