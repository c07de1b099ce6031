"""Dataset readers: LibriSpeech layout, JSONL/CSV manifests, a folder of audio files + a transcript file.

Every reader yields `Utterance(id, path, text)`; `load_dataset` decodes them to 16 kHz mono and counts
(never hides) files that are unreadable, empty or not audio. A missing path or a dataset with no usable
utterance raises `DatasetError` with one line that says what is wrong.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from w2vc.data.audio import AudioError, load_audio

log = logging.getLogger(__name__)
AUDIO_EXTS = {".flac", ".wav", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au"}
TRANSCRIPT_NAMES = ("transcripts.txt", "text", "trans.txt", "transcript.txt")


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Utterance:
    id: str
    path: str
    text: str


@dataclass
class Dataset:
    name: str
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def hours(self) -> float:
        return sum(len(a) for a in self.audio) / 16000 / 3600


def _librispeech(root: Path) -> Iterator[Utterance]:
    for trans in sorted(root.rglob("*.trans.txt")):
        for line in trans.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            uid, _, text = line.strip().partition(" ")
            matches = [trans.parent / f"{uid}{ext}" for ext in (".flac", ".wav")]
            path = next((m for m in matches if m.exists()), matches[0])
            yield Utterance(uid, str(path), text)


def _jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _row_id(row: dict) -> str:
    """A manifest row's utterance id: its `id`, else its audio file's stem."""
    return str(row.get("id") or Path(row.get("path", "")).stem)


def manifest_column(manifest: str | Path, key: str) -> dict[str, str]:
    """Utterance id → one column of a .jsonl manifest (a w2vc corpus has synth, voice, speaker)."""
    path = Path(manifest)
    if path.suffix != ".jsonl":
        raise DatasetError(f"column {key!r} needs a .jsonl manifest; {path} is not one")
    out = {}
    for row in _jsonl_rows(path):
        if key not in row:
            raise DatasetError(f"{path}: no column {key!r} (columns: {', '.join(sorted(row))})")
        out[_row_id(row)] = str(row[key])
    return out


def _manifest(path: Path) -> Iterator[Utterance]:
    base = path.parent
    if base.name == "manifests":  # w2vc corpora keep paths relative to the corpus root
        base = base.parent
    if path.suffix == ".jsonl":
        rows = _jsonl_rows(path)
    else:
        rows = csv.DictReader(path.read_text().splitlines())
    for i, row in enumerate(rows):
        if "path" not in row or "text" not in row:
            raise DatasetError(f"{path}: row {i + 1} lacks 'path' or 'text' (has {', '.join(row)})")
        p = Path(row["path"])
        p = p if p.is_absolute() else base / p
        yield Utterance(_row_id(row), str(p), row["text"])


def _folder_with_transcripts(root: Path) -> Iterator[Utterance]:
    trans = next((root / n for n in TRANSCRIPT_NAMES if (root / n).exists()), None)
    if trans is None:
        raise DatasetError(f"{root}: no *.trans.txt, manifest or transcript file ({', '.join(TRANSCRIPT_NAMES)})")
    by_stem = {p.stem: p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in AUDIO_EXTS}
    for line in trans.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        uid, _, text = line.strip().partition(" ")
        yield Utterance(uid, str(by_stem.get(uid, root / f"{uid}.flac")), text)


def iter_utterances(path: str | Path) -> Iterator[Utterance]:
    """Find the layout of `path` and list its utterances (no decoding)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"data path does not exist: {p}")
    if p.is_file():
        if p.suffix in (".jsonl", ".csv"):
            return _manifest(p)
        raise DatasetError(f"{p}: expected a directory, a .jsonl or a .csv manifest")
    if any(p.rglob("*.trans.txt")):
        return _librispeech(p)
    return _folder_with_transcripts(p)


def resolve_split(data: str | Path, split: str) -> Path:
    """A w2vc corpus root + split name → that split's manifest; any other path is returned as is."""
    p = Path(data)
    m = p / "manifests" / f"{split}.jsonl"
    return m if m.exists() else p / split


def load_dataset(path: str | Path, limit: int | None = None, name: str | None = None,
                 progress: bool = False) -> Dataset:
    utts = list(iter_utterances(path))
    if limit:
        utts = utts[:limit]
    ds = Dataset(name or Path(path).name)
    it = utts
    if progress:
        from tqdm import tqdm
        it = tqdm(utts, desc=f"load {ds.name}", unit="utt", leave=False)
    for u in it:
        try:
            x = load_audio(u.path)
        except (AudioError, FileNotFoundError, OSError) as e:
            ds.skipped.append((u.path, str(e).split(" (")[0]))
            continue
        ds.ids.append(u.id)
        ds.texts.append(u.text)
        ds.audio.append(x)
    if ds.skipped:
        log.warning("%s: skipped %d unreadable/empty/non-audio file(s), e.g. %s", ds.name, len(ds.skipped),
                    ds.skipped[0][0])
    if not ds.ids:
        raise DatasetError(f"no usable utterances in {path} ({len(ds.skipped)} skipped)")
    return ds


def load_audio_set(data: str | os.PathLike | None, split: str, count: int) -> list[np.ndarray]:
    """The first `count` utterances of a corpus split, a manifest or a dataset directory (16 kHz mono)."""
    if not data or count == 0:
        return []
    p = Path(data)
    return load_dataset(p if p.is_file() else resolve_split(p, split), limit=count).audio


def random_audio(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(rng.integers(16000, 48000)))).astype(np.float32) for _ in range(n)]
