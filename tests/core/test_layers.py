"""The layer contract, checked on every import statement of the package (module and function level).

    cli  >  experiments  >  compress | eval  >  train  >  data  >  core

A layer may import itself and the layers below it; compress and eval never import each other. The
packages are mapped from top-level folders (w2vc.compress -> compress/), which import-linter's graph
builder does not follow, so the contract is read from the sources here with `ast`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"w2vc/core": "core", "w2vc/data": "data", "compress": "compress", "eval": "eval",
           "experiments": "experiments"}
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "train": {"core", "data", "train"},
    "compress": {"core", "data", "train", "compress"},
    "eval": {"core", "data", "eval"},
    "experiments": {"core", "data", "train", "compress", "eval", "experiments"},
    "cli": {"core", "data", "train", "compress", "eval", "experiments", "cli"},
}
MAX_LINES = 500


def _layer_of_file(f: Path) -> str:
    rel = f.relative_to(ROOT).as_posix()
    for folder, layer in FOLDERS.items():
        if rel.startswith(folder + "/"):
            return layer
    return {"w2vc/train.py": "train", "w2vc/cli.py": "cli", "w2vc/__init__.py": "core"}.get(rel, "cli")


def _layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "w2vc" or len(parts) < 2:
        return None
    return {"core": "core", "data": "data", "train": "train", "compress": "compress", "eval": "eval",
            "experiments": "experiments", "cli": "cli"}.get(parts[1], "cli")


def _package_of(f: Path) -> list[str]:
    rel = f.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] != "w2vc":
        parts = ["w2vc", *parts]
    return parts[:-1]


def package_sources() -> list[Path]:
    out = sorted((ROOT / "w2vc").rglob("*.py"))
    for top in ("compress", "eval", "experiments"):
        out += sorted((ROOT / top).rglob("*.py"))
    return out


def imports_of(f: Path) -> list[tuple[int, str]]:
    """Absolute module names of every import in the file (relative imports resolved)."""
    out = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(f)[: len(_package_of(f)) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            if mod == "w2vc":  # from w2vc import compress
                out += [(node.lineno, f"w2vc.{a.name}") for a in node.names]
    return out


def violations() -> list[str]:
    bad = []
    for f in package_sources():
        me = _layer_of_file(f)
        for line, mod in imports_of(f):
            other = _layer_of_module(mod)
            if other is not None and other not in ALLOWED[me]:
                bad.append(f"{f.relative_to(ROOT)}:{line} ({me}) imports {mod} ({other})")
    return bad


def test_layers_import_only_downwards_and_compress_eval_stay_apart():
    assert violations() == []


def test_the_checker_sees_a_violation():
    """The contract can fail: a compress module that imports eval inside a function is caught."""
    fake = ROOT / "compress" / "_layer_probe.py"
    fake.write_text("def f():\n    from w2vc.eval.cost import measure_cost\n")
    try:
        found = violations()
    finally:
        fake.unlink()
    assert any("_layer_probe.py:2 (compress) imports w2vc.eval.cost (eval)" in v for v in found)


@pytest.mark.parametrize("f", package_sources(), ids=lambda f: str(f.relative_to(ROOT)))
def test_no_source_file_over_500_lines(f):
    assert len(f.read_text().splitlines()) <= MAX_LINES
