"""Small shared helpers (JSON output, file locks) so every module says it the same way."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def write_json(path: str | None, obj) -> None:
    """`--json PATH` output of every figure-producing command."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1, default=str))
        print(f"wrote {path}")


def write_json_atomic(path: Path, obj) -> None:
    """Readers never see half a file: a run killed mid-write leaves the previous version."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


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
