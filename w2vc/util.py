"""Small shared helpers (config validation, JSON output) so every module says it the same way."""

from __future__ import annotations

import contextlib
import json
from dataclasses import fields
from pathlib import Path


def reject_unknown(cls, d: dict, what: str) -> None:
    """One-line error naming unknown config keys and the known ones (typos in YAML fail loudly)."""
    known = [f.name for f in fields(cls)]
    bad = sorted(set(d) - set(known))
    if bad:
        raise ValueError(f"unknown {what} option(s) {', '.join(bad)}; known: {', '.join(known)}")


def write_json(path: str | None, obj) -> None:
    """`--json PATH` output of every figure-producing command."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1, default=str))
        print(f"wrote {path}")


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock (flock) on `path`, shared by every process on this machine that takes it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
