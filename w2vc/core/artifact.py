"""Artifacts: a model directory that knows what it is, plus `w2vc.json` provenance; content-hashed so sweeps
can skip done work.

Three kinds, read once from the directory (never guessed again elsewhere):
- `torch`: a Hugging Face `save_pretrained` directory (Wav2Vec2ForCTC / Wav2Vec2Processor.from_pretrained);
- `torch+runtime`: the same, plus `w2vc_runtime.json`, a transform applied on load (bf16 weights, torch
  dynamic int8, INC int4 fake-quant): what runs is not the plain fp32 model;
- `onnx`: what optimum writes (model.onnx + the same processor files; ORTModelForCTC.from_pretrained);
- `cascade`: `w2vc_cascade.json` only, naming a fast and a strong artifact and the confidence rule that
  routes an utterance from one to the other (w2vc.core.cascade); no weights of its own.
Steps never modify their input; each declares the kinds it accepts (`Artifact.require`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

PROVENANCE = "w2vc.json"
RUNTIME_FILE = "w2vc_runtime.json"
CASCADE_FILE = "w2vc_cascade.json"
PROCESSOR_FILES = ("preprocessor_config.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
WEIGHT_EXTS = (".safetensors", ".bin", ".onnx", ".onnx_data", ".data", ".pt")


class Kind(str, Enum):
    TORCH = "torch"
    TORCH_RUNTIME = "torch+runtime"
    ONNX = "onnx"
    CASCADE = "cascade"


ANY_TORCH = frozenset({Kind.TORCH, Kind.TORCH_RUNTIME})
ALL_KINDS = frozenset(Kind)


def onnx_file(path: str | os.PathLike) -> Path:
    """The graph a directory's runners score: model.onnx, else the first *.onnx by name (one rule for all)."""
    p = Path(path)
    if p.is_file():
        return p
    files = sorted(p.glob("*.onnx"))
    if not files:
        raise FileNotFoundError(f"no .onnx file in {p}")
    return next((f for f in files if f.name == "model.onnx"), files[0])


def kind_of(path: str | os.PathLike) -> Kind:
    p = Path(path)
    if (p / CASCADE_FILE).is_file():
        return Kind.CASCADE
    if p.is_file() and p.suffix == ".onnx" or p.is_dir() and any(p.glob("*.onnx")):
        return Kind.ONNX
    return Kind.TORCH_RUNTIME if (p / RUNTIME_FILE).is_file() else Kind.TORCH


def read_runtime(path: str | os.PathLike) -> dict:
    f = Path(path) / RUNTIME_FILE
    return json.loads(f.read_text()) if f.is_file() else {}


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
    """A model directory of one `kind`; `runtime` is its w2vc_runtime.json record ({} unless torch+runtime)."""

    path: Path
    kind: Kind = Kind.TORCH
    provenance: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Artifact:
        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(f"artifact directory not found: {p}")
        prov = json.loads((p / PROVENANCE).read_text()) if (p / PROVENANCE).exists() else {}
        return cls(p, kind_of(p), prov, read_runtime(p))

    @property
    def format(self) -> str:
        """'onnx', 'cascade' (two models) or 'torch' (either torch kind): which runtime executes it."""
        return {Kind.ONNX: "onnx", Kind.CASCADE: "cascade"}.get(self.kind, "torch")

    @property
    def transform(self) -> str | None:
        """The runtime transform of a torch+runtime artifact: bf16, torch_dynamic_int8 or fake_quant."""
        return self.runtime.get("transform")

    @property
    def model_file(self) -> Path:
        if self.kind is Kind.CASCADE:
            raise ValueError(f"{self.path} is a cascade: its models are the artifacts {CASCADE_FILE} names")
        if self.kind is Kind.ONNX:
            return onnx_file(self.path)
        for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
            if (self.path / name).exists():
                return self.path / name
        raise FileNotFoundError(f"{self.path}: no model.safetensors(.index.json) or pytorch_model.bin")

    @property
    def describe(self) -> str:
        return f"{self.kind.value}" + (f" ({self.transform})" if self.transform else "")

    def require(self, accepts: frozenset[Kind], step: str, hint: str = "") -> None:
        """One clear line when a step is given a kind it does not handle (never a silently wrong result)."""
        if self.kind not in accepts:
            names = ", ".join(sorted(k.value for k in accepts))
            raise ValueError(f"{step} takes {names} artifacts; {self.path} is {self.describe}"
                             + (f": {hint}" if hint else ""))

    @property
    def hash(self) -> str:
        return self.provenance.get("hash") or dir_hash(self.path)

    @property
    def size_mb(self) -> float:
        """Bytes of the model weights/graph only (processor and provenance files excluded), in MiB; a
        cascade's are both of its models' (a device holds both)."""
        if self.kind is Kind.CASCADE:
            members = json.loads((self.path / CASCADE_FILE).read_text())
            return sum(Artifact.open(self.path / members[m]).size_mb for m in ("fast", "strong"))
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_EXTS)) / 2**20


def write_provenance(out_dir: str | os.PathLike, step: str, params: dict, parent: Artifact | None = None,
                     report: dict | None = None, **extra) -> dict:
    """The one provenance writer (steps, training, packing): what made the directory, from what, its hash."""
    out = Path(out_dir)
    lineage = (parent.provenance.get("lineage", []) if parent else []) + [step]
    prov = {"step": step, "params": params, "parent": str(parent.path) if parent else None,
            "parent_hash": parent.hash if parent else None, "report": report or {},
            "versions": package_versions(), "lineage": lineage, **extra}
    prov["hash"] = dir_hash(out)
    (out / PROVENANCE).write_text(json.dumps(prov, indent=1, default=str))
    return prov


def finalize(out_dir: str | os.PathLike, step: str, params: dict, parent: Artifact | None,
             report: dict | None = None) -> Artifact:
    """Write provenance into a finished step output and return it as an Artifact."""
    prov = write_provenance(out_dir, step, params, parent, report)
    art = Artifact.open(out_dir)
    art.provenance = prov  # the caller's own values (tuples stay tuples), as written
    return art


def copy_processor_files(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """The processor travels with every artifact (optimum's exporter does not copy it)."""
    for name in PROCESSOR_FILES:
        f = Path(src) / name
        if f.exists():
            shutil.copy2(f, Path(dst) / name)


def copy_runtime_record(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    f = Path(src) / RUNTIME_FILE
    if f.is_file():
        shutil.copy2(f, Path(dst) / RUNTIME_FILE)
