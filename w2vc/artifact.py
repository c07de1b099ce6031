"""Artifacts: a model directory plus `w2vc.json` provenance; content-hashed so sweeps can skip done work.

A PyTorch artifact is a Hugging Face `save_pretrained` directory (loads with Wav2Vec2ForCTC /
Wav2Vec2Processor.from_pretrained); an ONNX artifact is what optimum writes (model.onnx + the same
processor files) and loads with ORTModelForCTC.from_pretrained. Steps never modify their input.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

PROVENANCE = "w2vc.json"
PROCESSOR_FILES = ("preprocessor_config.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx", "neural-compressor",
                "torch-pruning", "jiwer", "mlflow", "w2vc"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def dir_hash(path: str | os.PathLike) -> str:
    """sha256 over file names and bytes (w2vc.json and the README model card excluded: not content)."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (PROVENANCE, "README.md")):
        h.update(str(f.relative_to(root)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def step_key(parent_hash: str, step: str, params: dict) -> str:
    """Cache key of a step's output: (parent content, step kind, params)."""
    blob = json.dumps({"parent": parent_hash, "step": step, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Artifact:
    """A model directory. `format` is 'torch' (save_pretrained) or 'onnx' (optimum ORT directory)."""

    path: Path
    format: str = "torch"
    provenance: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Artifact:
        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(f"artifact directory not found: {p}")
        fmt = "onnx" if any(p.glob("*.onnx")) else "torch"
        prov = json.loads((p / PROVENANCE).read_text()) if (p / PROVENANCE).exists() else {}
        return cls(p, fmt, prov)

    @property
    def hash(self) -> str:
        return self.provenance.get("hash") or dir_hash(self.path)

    @property
    def size_mb(self) -> float:
        """Bytes of the model weights/graph only (processor and provenance files excluded), in MiB."""
        exts = (".safetensors", ".bin", ".onnx", ".onnx_data", ".data", ".pt")
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file() and f.name.endswith(exts)) / 2**20

    def load_torch(self, **kw):
        from w2vc.models import load_pretrained

        if self.format != "torch":
            raise ValueError(f"{self.path} is an ONNX artifact; this step needs a PyTorch one")
        return load_pretrained(self.path, **kw)


def finalize(out_dir: str | os.PathLike, step: str, params: dict, parent: Artifact | None,
             report: dict | None = None) -> Artifact:
    """Write provenance into a finished step output and return it as an Artifact."""
    out = Path(out_dir)
    prov = {"step": step, "params": params, "parent": str(parent.path) if parent else None,
            "parent_hash": parent.hash if parent else None, "report": report or {},
            "versions": package_versions(), "lineage": (parent.provenance.get("lineage", []) if parent else [])
            + [step]}
    prov["hash"] = dir_hash(out)
    (out / PROVENANCE).write_text(json.dumps(prov, indent=1, default=str))
    return Artifact(out, "onnx" if any(out.glob("*.onnx")) else "torch", prov)


def copy_processor_files(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """The processor travels with every artifact (optimum's exporter does not copy it)."""
    for name in PROCESSOR_FILES:
        f = Path(src) / name
        if f.exists():
            shutil.copy2(f, Path(dst) / name)
