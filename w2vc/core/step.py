"""Steps: `(artifact, config, out_dir, context) -> Artifact`, registered by their config type.

Each compress module registers its step here with the artifact kinds it accepts (the step function itself
refuses any other kind with one line, whoever calls it: runner, CLI or a script); the runner looks steps up
by YAML `kind:` (a closed set: no dotted imports from YAML) and fills the data a config declares it needs
(`ConfigBase.data_fields`) from the run's corpus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2vc.core.artifact import Artifact, Kind


@dataclass(frozen=True)
class StepContext:
    """What a step may need beyond its input: the chain's root (recovery teacher) and progress display."""

    root: Artifact | None = None
    progress: bool = True


@dataclass(frozen=True)
class StepSpec:
    kind: str
    config: type
    run: Callable[[Artifact, Any, Path, StepContext], Artifact]
    accepts: frozenset[Kind]
    about: str
    resumable: bool = False  # continues from a checkpoint in its work dir: the runner keeps that dir
    keeps_shape: bool = False  # trains weights only: cost-only tools (whatif) skip it

    def make_config(self, params: dict, data: str | None = None):
        """The typed config of YAML `params`; declared data fields the params leave out take `data`."""
        d = dict(params)
        if data is not None:
            for name in self.config.data_fields(d):
                d.setdefault(name, data)
        return self.config.from_dict(d)

    def __call__(self, artifact: Artifact, cfg, out_dir: str | Path, ctx: StepContext | None = None) -> Artifact:
        if not isinstance(cfg, self.config):
            raise TypeError(f"step {self.kind} takes a {self.config.__name__}, got {type(cfg).__name__}")
        return self.run(artifact, cfg, Path(out_dir), ctx or StepContext(root=artifact))


STEPS: dict[str, StepSpec] = {}
BY_CONFIG: dict[type, StepSpec] = {}


def register(kind: str, config: type, accepts: frozenset[Kind], about: str, resumable: bool = False,
             keeps_shape: bool = False):
    """Decorator of a step function; one kind per config type."""

    def deco(fn):
        spec = StepSpec(kind, config, fn, frozenset(accepts), about, resumable, keeps_shape)
        if config in BY_CONFIG and BY_CONFIG[config].kind != kind:
            raise ValueError(f"{config.__name__} is already the config of step {BY_CONFIG[config].kind}")
        STEPS[kind] = BY_CONFIG[config] = spec
        return fn

    return deco
