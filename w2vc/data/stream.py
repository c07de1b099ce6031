"""Training data streamed from disk: utterances are decoded and augmented per batch in DataLoader workers.

Why: decoding the whole train split into RAM (as the trainer once did, in every process) makes memory grow
with the corpus; at real scale (hundreds of hours, several processes per node) it does not fit. Here only
metadata stays resident (ids, paths, lengths, packed labels) plus a bounded babble pool; audio lives for
one batch. The batch plan needs lengths only, read from file headers (exact, no decoding) or from the
manifest's `duration` column (no file opened, but rounded to 0.1 ms, which moves a few utterances across
batch boundaries). Each augmentation keeps its own Generator seeded by (seed, epoch, position), so which
worker builds a batch, or how many workers there are, changes nothing: results are those of the in-RAM
trainer for one seed.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from w2vc.core.runnable import pad_batch
from w2vc.data.audio import SAMPLE_RATE, load_audio
from w2vc.data.augment import AugmentConfig, augment, post_normalize_gain
from w2vc.data.datasets import DatasetError, iter_utterances, manifest_column

log = logging.getLogger(__name__)
LENGTH_SOURCES = ("header", "manifest")
BABBLE_TARGET = 500  # every (N // 500)-th utterance: at most 999, whatever the corpus size


@dataclass
class TrainIndex:
    """A split's utterances without their audio; `lengths` in 16 kHz samples, as decoding would give."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def header_length(path: str) -> int:
    """Samples after decoding to 16 kHz, from the header alone (soxr rounds half up: checked against it)."""
    with sf.SoundFile(path) as f:
        frames, sr = f.frames, f.samplerate
    return (frames * 2 * SAMPLE_RATE + sr) // (2 * sr)


def _try_length(path: str) -> int | str:
    try:
        n = header_length(path)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
        return f"not decodable audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return n if n > 0 else "empty audio"


def scan_split(path: str | Path, lengths: str = "header", threads: int = 8) -> TrainIndex:
    """List a split and size every utterance without decoding it. `lengths="header"` opens each file's header
    (threaded; unreadable or empty files are skipped and counted, as decoding would); "manifest" reads the
    .jsonl `duration` column and opens nothing (a bad file then fails when its batch is built), falling back
    to headers for a manifest without durations."""
    if lengths not in LENGTH_SOURCES:
        raise ValueError(f"lengths must be one of {', '.join(LENGTH_SOURCES)}, got {lengths!r}")
    utts = list(iter_utterances(path))
    idx = TrainIndex()
    durations = None
    if lengths == "manifest":
        try:
            durations = manifest_column(path, "duration")
        except DatasetError as e:  # not a .jsonl, or a row without duration: headers it is
            log.info("%s; batch-plan lengths come from the file headers", e)
    if durations is not None:
        sizes: list[int | str] = [round(float(durations[u.id]) * SAMPLE_RATE) for u in utts]
    else:
        with ThreadPoolExecutor(threads) as pool:  # soundfile releases the GIL: header reads overlap
            sizes = list(pool.map(_try_length, [u.path for u in utts], chunksize=64))
    for u, n in zip(utts, sizes):
        if isinstance(n, str):
            idx.skipped.append((u.path, n))
            continue
        idx.ids.append(u.id)
        idx.paths.append(u.path)
        idx.texts.append(u.text)
        idx.lengths.append(n)
    if idx.skipped:
        log.warning("%s: skipped %d unreadable/empty/non-audio file(s), e.g. %s", path, len(idx.skipped),
                    idx.skipped[0][0])
    if not idx.ids:
        raise DatasetError(f"no usable utterances in {path} ({len(idx.skipped)} skipped)")
    return idx


def int16_grid(x: np.ndarray) -> np.ndarray:
    """Round to 16-bit PCM steps, as the in-RAM trainer stored audio (a no-op for PCM_16 FLAC/WAV; kept so
    resampled or float sources give the numbers they always gave)."""
    q = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    return q.astype(np.float32) / 32768


def decode(path: str) -> np.ndarray:
    try:
        return int16_grid(load_audio(path))
    except (ValueError, OSError) as e:
        raise DatasetError(f"train utterance {path} cannot be decoded: {e}") from e


def babble_pool(paths: Sequence[str], threads: int = 8) -> list[np.ndarray]:
    """Talkers for babble noise: every (N // 500)-th train utterance (at most 999, decoded once at start)."""
    picked = list(paths[:: max(1, len(paths) // BABBLE_TARGET)])
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(decode, picked))


class PackedLabels:
    """Token ids of every utterance in one int16 array + offsets (a list of lists costs ~8 bytes a token)."""

    def __init__(self, seqs: Iterable[Sequence[int]]):
        flat, offsets = [], [0]
        for s in seqs:
            flat.extend(s)
            offsets.append(len(flat))
        self.flat = np.asarray(flat, dtype=np.int16)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]: self.offsets[i + 1]]


def pair_plan(positions: int, seed: int, epoch: int, share: float,
              gap_seconds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Which epoch positions get another position's utterance in front of them, and the pause between.

    Why: a model trained on single utterances learns that speech starts at the start of its input; with
    another utterance 0.4 s before, the v2-1 teacher's WER on the pair was 16.6 % against 5.5 % alone (the
    second one's first words lose letters), which is what every chunk of a long recording looks like.
    Returns (partner position or -1, gap in samples) per position, drawn from (seed, epoch) only."""
    partner = np.full(positions, -1, np.int64)
    gap = np.zeros(positions, np.int64)
    if share <= 0 or positions < 2:  # one utterance has no partner
        return partner, gap
    rng = np.random.default_rng([seed, epoch, 29])
    chosen = rng.random(positions) < share
    others = rng.integers(0, positions - 1, positions)
    partner[chosen] = (others + (others >= np.arange(positions)))[chosen]  # never itself
    gap[chosen] = np.round(rng.uniform(*gap_seconds, positions) * SAMPLE_RATE).astype(np.int64)[chosen]
    return partner, gap


class BatchDataset(torch.utils.data.Dataset):
    """dataset[(epoch, k, [(position, utterance), ...])] → batch k of `epoch`, padded and augmented.
    A member (position, utterance, partner, gap) is the partner utterance, `gap` samples of silence and the
    utterance as one input (the partner at another level), augmented and labelled as a whole.

    Runs in DataLoader workers; the draw for an utterance depends on (seed, epoch, position) only."""

    def __init__(self, paths: Sequence[str], labels: PackedLabels, seed: int, aug: AugmentConfig,
                 pool: Sequence[np.ndarray], delimiter: int | None = None):
        self.paths, self.labels, self.seed, self.aug, self.pool = list(paths), labels, seed, aug, pool
        self.delimiter = delimiter  # the word delimiter's token id, between a pair's transcripts

    def _audio(self, epoch: int, member: tuple) -> np.ndarray:
        q, i = member[:2]
        x = decode(self.paths[i])
        if len(member) > 2:
            rng = np.random.default_rng([self.seed, epoch, q, 2])
            first = decode(self.paths[member[2]]) * np.float32(10 ** (rng.uniform(-6, 6) / 20))
            x = np.concatenate([first, np.zeros(member[3], np.float32), x])
        return augment(x, np.random.default_rng([self.seed, epoch, q]), self.aug, self.pool)

    def _label(self, member: tuple) -> np.ndarray:
        if len(member) == 2:
            return self.labels[member[1]]
        if self.delimiter is None:
            raise ValueError("paired members need the tokenizer's word delimiter id")
        return np.concatenate([self.labels[member[2]], np.asarray([self.delimiter], np.int16),
                               self.labels[member[1]]])

    def __getitem__(self, spec) -> dict:
        epoch, k, members = spec
        audio = [self._audio(epoch, m) for m in members]
        values, mask = pad_batch(audio)
        post_normalize_gain(values, [len(a) for a in audio],
                            [[self.seed, epoch, m[0], 1] for m in members], self.aug)
        lab = [self._label(m) for m in members]
        labels = torch.full((len(lab), max(map(len, lab))), -100, dtype=torch.long)
        for r, seq in enumerate(lab):
            labels[r, : len(seq)] = torch.from_numpy(seq.astype(np.int64))
        return {"epoch": epoch, "batch": k, "values": torch.from_numpy(values), "mask": torch.from_numpy(mask),
                "labels": labels}


class PlanSampler(torch.utils.data.Sampler):
    """Plan entries from (epoch, batch) on, epoch after epoch, without end: `plan(epoch)` → this process's
    batches as lists of (position, utterance). One sampler spans epochs, so workers start once per run."""

    def __init__(self, plan: Callable[[int], list[list[tuple[int, int]]]], epoch: int, batch: int):
        super().__init__()
        self.plan, self.epoch, self.batch = plan, epoch, batch

    def __iter__(self) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
        epoch, start = self.epoch, self.batch
        while True:
            mine = self.plan(epoch)
            if not mine:
                raise DatasetError(f"epoch {epoch} has no batch for this process: the train split is too small "
                                   "for the number of processes")
            for k in range(start, len(mine)):
                yield epoch, k, mine[k]
            epoch, start = epoch + 1, 0


def _worker_ignores_signals(_: int) -> None:
    """Ctrl-C / SIGTERM are the trainer's to handle (checkpoint, then stop the workers); a worker that died
    of them first would fail the step instead. Orphaned workers still exit: DataLoader watches the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stream(dataset: BatchDataset, sampler: PlanSampler, num_workers: int, pin_memory: bool = False):
    """The batches in plan order, `num_workers` building ahead (0: built in this process, on demand)."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers,
                                       pin_memory=pin_memory, prefetch_factor=2 if num_workers else None,
                                       worker_init_fn=_worker_ignores_signals if num_workers else None,
                                       generator=torch.Generator().manual_seed(0))  # leave the global RNG alone
