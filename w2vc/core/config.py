"""One base for every typed config: `from_dict` with unknown-key errors that name the known keys, lists from
YAML/JSON coerced to the declared tuples, nested configs built from mappings; `to_dict` is `asdict` less the later fields that are switched off
(`LATER_FIELDS`).
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import asdict, fields, is_dataclass


class ConfigError(ValueError):
    """A config that cannot be right: one line naming the bad key and what is allowed."""


def check_keys(d, allowed, where: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    bad = sorted(set(d) - set(allowed))
    if bad:
        raise ConfigError(f"unknown {where} option(s) {', '.join(bad)}; known: {', '.join(allowed)}")


def _coerce(tp, v):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None:
            return None
        for arg in typing.get_args(tp):
            if arg is not type(None):
                try:
                    return _coerce(arg, v)
                except (TypeError, ValueError):
                    continue
        return v
    if isinstance(tp, type) and is_dataclass(tp) and issubclass(tp, ConfigBase) and isinstance(v, dict):
        return tp.from_dict(v)
    if origin is tuple and isinstance(v, list | tuple):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], x) for x in v)
        if args and len(args) == len(v):
            return tuple(_coerce(a, x) for a, x in zip(args, v))
        return tuple(v)
    return v


class ConfigBase:
    """Mixin for frozen dataclass configs. `WHAT` names the config in errors (e.g. "prune")."""

    WHAT: typing.ClassVar[str] = ""
    # Fields added after results were cached under this config's step keys (w2vc.core.artifact.step_key):
    # field -> the field that switches it on. While the switch is 0/False/empty, to_dict leaves the field out,
    # so a config with the newer option off keeps the key, and the cached outputs, it had before.
    LATER_FIELDS: typing.ClassVar[dict[str, str]] = {}

    @classmethod
    def what(cls) -> str:
        return cls.WHAT or cls.__name__

    @classmethod
    def from_dict(cls, d: dict):
        known = [f.name for f in fields(cls)]
        check_keys(d, known, cls.what())
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(hints.get(k), v) for k, v in d.items()})

    @classmethod
    def data_fields(cls, params: dict) -> tuple[str, ...]:
        """Fields that take the run's corpus when `params` leave them out (training data, calibration)."""
        return ()

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            switch = self.LATER_FIELDS.get(f.name)
            if switch and not getattr(self, switch):
                continue
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, ConfigBase) else asdict(v) if is_dataclass(v) else copy.deepcopy(v)
        return out
