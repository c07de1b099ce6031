"""The step registry as the runner sees it: YAML `kind:` → StepSpec (config type, step function, accepted
artifact kinds), filled by the compress modules themselves (w2vc.core.step.register). No method code here.

Typed and closed: a recipe can only name a registered kind (no dotted imports from YAML), and an unknown
kind or option is a one-line error listing what is known.
"""

from __future__ import annotations

from typing import Any

import w2vc.compress.cascade
import w2vc.compress.distill
import w2vc.compress.export
import w2vc.compress.learned_prune
import w2vc.compress.prune
import w2vc.compress.quantize  # noqa: F401  (each compress module registers its step)
from w2vc.core.step import STEPS, StepContext, StepSpec

__all__ = ["REGISTRY", "StepContext", "StepSpec", "get_step", "parse_chain"]
REGISTRY = STEPS


def get_step(kind: str) -> StepSpec:
    try:
        return STEPS[kind]
    except KeyError:
        raise ValueError(f"unknown step kind {kind!r}; known: {', '.join(STEPS)}") from None


def parse_chain(text: str) -> list[dict]:
    """'prune(heads=.5,ffn=.5)->quantize(int8)' → [{'kind': 'prune', 'heads': 0.5, ...}, ...] (whatif syntax).

    A bare positional argument is the step's main option: quantize(x) → method x."""
    import ast
    import re

    steps = []
    for part in [p.strip() for p in text.split("->") if p.strip()]:
        m = re.fullmatch(r"(\w+)\s*(?:\((.*)\))?", part)
        if not m:
            raise ValueError(f"bad recipe step {part!r}: expected name(key=value,...)")
        d: dict[str, Any] = {"kind": m.group(1)}
        for arg in [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]:
            if "=" in arg:
                k, v = (s.strip() for s in arg.split("=", 1))
            else:
                k, v = "method", arg
            try:
                d[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                d[k] = v
        steps.append(d)
    if not steps:
        raise ValueError("empty recipe")
    return steps
