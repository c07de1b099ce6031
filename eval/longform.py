"""Long-form evaluation: WER, real-time factor and per-window latency of chunked inference on long
recordings, beside the per-utterance WER of the very same speech.

Why: a model is scored on short utterances, but deployed on minutes of audio cut into windows
(`w2vc.core.chunking`, the HF pipeline's recipe). The ratio long / per-utterance WER says what chunking
costs; RTF and the window latency say whether the device keeps up. A corpus has splits `<split>_long`
(manifest rows {id, path, text, parts}) whose `parts` are utterance ids of `<split>`.

Metrics (flat, for MLflow): per chunk length C (label `10s`, or `full` for the unchunked pass)
wer_long_<C>, cer_long_<C>, rtf_long_<C>, chunk_p50_ms_long_<C>, chunk_p90_ms_long_<C>,
wer_long_ratio_<C> (over wer_parts, when it is > 0); wer_parts, n_long_recordings, long_audio_seconds.
Timings are wall clock after one untimed warm-up window per chunk length.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from w2vc.core.chunking import SAMPLING_RATE, plan_chunks, transcribe_long
from w2vc.core.runnable import Transcriber, inputs_to_logits_ratio, pad_batch
from w2vc.core.wer import UtteranceError, word_error_rate
from w2vc.data.audio import load_audio
from w2vc.data.datasets import Dataset, DatasetError, iter_utterances, load_dataset

DEFAULT_CHUNKS: tuple[float, ...] = (5.0, 10.0, 20.0)


@dataclass(frozen=True)
class LongOptions:
    """What `w2vc eval --long` scores: chunk lengths (s), stride each side (None: chunk / 6), whether the
    whole recording is also run in one pass, how many equal-length windows may share a batch, and how many
    recordings are scored (None: as many as the eval's limit)."""

    chunk_seconds: tuple[float, ...] = DEFAULT_CHUNKS
    stride_seconds: float | None = None
    unchunked: bool = False
    batch_size: int = 1
    recordings: int | None = None

    def __post_init__(self):
        if not self.chunk_seconds and not self.unchunked:
            raise ValueError("give at least one chunk length (or unchunked)")
        for c in self.chunk_seconds:
            plan_chunks(c, self.stride_seconds)  # fail on a bad chunk/stride before any model runs
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {self.batch_size})")


def label(chunk_s: float | None) -> str:
    return "full" if chunk_s is None else f"{chunk_s:g}s"


def find_long_sets(data: str | os.PathLike, split: str = "test") -> tuple[Path, Path]:
    """(long manifest, manifest of the utterances its `parts` name): a corpus root's `<split>_long.jsonl`
    and `<split>.jsonl`, or a `*_long.jsonl` manifest and its sibling without `_long`."""
    p = Path(data)
    if (p / "manifests").is_dir():
        man = p / "manifests"
        long, parts = man / f"{split}_long.jsonl", man / f"{split}.jsonl"
    elif p.suffix == ".jsonl" and p.stem.endswith("_long"):
        long, parts = p, p.with_name(p.stem.removesuffix("_long") + ".jsonl")
    else:
        raise DatasetError(f"--long needs a corpus root (manifests/{split}_long.jsonl) or a *_long.jsonl "
                           f"manifest; got {p}")
    for f in (long, parts):
        if not f.exists():
            known = ", ".join(sorted(m.stem for m in f.parent.glob("*.jsonl"))) or "none"
            raise DatasetError(f"no manifest {f} (manifests: {known})")
    return long, parts


def read_parts(manifest: str | os.PathLike) -> dict[str, list[str]]:
    """Recording id → ids of the utterances it is made of (`parts`: a list, or a comma/space string)."""
    out = {}
    for n, line in enumerate(Path(manifest).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "parts" not in row:
            raise DatasetError(f"{manifest}: row {n} has no 'parts' column (has {', '.join(sorted(row))})")
        parts = row["parts"]
        parts = parts.replace(",", " ").split() if isinstance(parts, str) else [str(x) for x in parts]
        out[str(row.get("id") or Path(row.get("path", "")).stem)] = parts
    return out


@dataclass
class LongScore:
    """Corpus figures of one chunk length (`chunk_s` None: each recording in one pass)."""

    chunk_s: float | None
    stride_s: tuple[float, float] | None  # as applied, aligned to frames
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    n_recordings: int
    n_chunks: int
    audio_seconds: float
    infer_seconds: float
    chunk_ms_p50: float
    chunk_ms_p90: float
    utterances: list[UtteranceError] = field(default_factory=list)

    @property
    def label(self) -> str:
        return label(self.chunk_s)

    @property
    def rtf(self) -> float:
        return self.infer_seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")

    def to_dict(self, with_utterances: bool = False) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "utterances"}
        d.update(label=self.label, rtf=self.rtf)
        if with_utterances:
            d["utterances"] = [u.__dict__ for u in self.utterances]
        return d


def _warm_up(transcriber: Transcriber, audio: np.ndarray, chunk_s: float | None) -> None:
    """One untimed forward of a window as long as the first, so first-call costs stay out of the figures."""
    n = len(audio) if chunk_s is None else min(len(audio), plan_chunks(chunk_s, None,
                                                                        inputs_to_logits_ratio(transcriber)).chunk)
    values, mask = pad_batch([audio[:n]])
    transcriber.logits(values, mask if transcriber.uses_attention_mask else None)


def score_long(transcriber: Transcriber, ds: Dataset, chunk_s: float | None, stride_s: float | None = None,
               batch_size: int = 1, progress: bool = False) -> LongScore:
    """WER / RTF / window latency of `ds`'s recordings transcribed in windows of `chunk_s` seconds."""
    _warm_up(transcriber, ds.audio[0], chunk_s)
    it = ds.audio
    if progress:
        from tqdm import tqdm
        it = tqdm(ds.audio, desc=f"long {label(chunk_s)}", unit="rec", leave=False)
    outs = [transcribe_long(transcriber, a, chunk_s, stride_s, batch_size) for a in it]
    r = word_error_rate(ds.ids, ds.texts, [o.text for o in outs])
    ms = [m for o in outs for m in o.chunk_ms]
    applied = None
    if chunk_s is not None:
        _, left, right = plan_chunks(chunk_s, stride_s, inputs_to_logits_ratio(transcriber)).seconds
        applied = (left, right)
    return LongScore(chunk_s, applied, r.wer, r.cer, r.substitutions, r.deletions, r.insertions, r.ref_words,
                     len(outs), len(ms), sum(len(a) for a in ds.audio) / SAMPLING_RATE,
                     sum(o.wall_seconds for o in outs), float(np.percentile(ms, 50)), float(np.percentile(ms, 90)),
                     r.per_utterance)


@dataclass
class PartsScore:
    """Per-utterance WER of the utterances the long recordings are made of (the same speech, cut short)."""

    wer: float
    errors: int
    ref_words: int
    n_utterances: int
    reused: int  # distinct utterances whose errors came from an earlier scoring (not re-run)


def score_parts(transcriber: Transcriber, manifest: str | os.PathLike, ids: Sequence[str],
                known: Mapping[str, UtteranceError] | None = None, progress: bool = False) -> PartsScore:
    """Corpus WER of utterances `ids` of `manifest`, each transcribed alone (as `w2vc eval` does);
    `known` per-utterance errors (e.g. the clean set's) are reused instead of transcribed again."""
    by_id = dict(known or {})
    want = [i for i in dict.fromkeys(ids) if i not in by_id]
    found = {u.id: u for u in iter_utterances(manifest) if u.id in set(want)}
    missing = [i for i in want if i not in found]
    if missing:
        raise DatasetError(f"{manifest}: {len(missing)} part id(s) not in the split, e.g. {missing[0]!r}")
    if want:
        utts = [found[i] for i in want]
        audio = [load_audio(u.path) for u in utts]  # an unreadable part breaks the comparison: raise
        hyps = transcriber.transcribe(audio, progress=progress, desc="transcribe parts")
        by_id.update({u.id: u for u in word_error_rate([u.id for u in utts], [u.text for u in utts],
                                                       hyps).per_utterance})
    errs = [by_id[i] for i in ids]  # an utterance used twice in the recordings counts twice
    e, w = sum(u.errors for u in errs), sum(u.ref_words for u in errs)
    return PartsScore(e / max(w, 1), e, w, len(errs), len(set(ids)) - len(want))


@dataclass
class LongResult:
    split: str
    path: str
    parts_path: str
    options: LongOptions
    scores: list[LongScore]
    parts: PartsScore

    def ratio(self, s: LongScore) -> float:
        return s.wer / self.parts.wer if self.parts.wer > 0 else float("nan")

    @property
    def metrics(self) -> dict[str, float]:
        m: dict[str, float] = {}
        for s in self.scores:
            k = s.label
            m.update({f"wer_long_{k}": s.wer, f"cer_long_{k}": s.cer, f"rtf_long_{k}": s.rtf,
                      f"chunk_p50_ms_long_{k}": s.chunk_ms_p50, f"chunk_p90_ms_long_{k}": s.chunk_ms_p90})
            if self.parts.wer > 0:
                m[f"wer_long_ratio_{k}"] = self.ratio(s)
        m["wer_parts"] = self.parts.wer
        if self.scores:
            m["n_long_recordings"] = self.scores[0].n_recordings
            m["long_audio_seconds"] = self.scores[0].audio_seconds
        return m

    @property
    def params(self) -> dict:
        o = self.options
        return {"long_split": self.split, "long_chunk_seconds": ",".join(f"{c:g}" for c in o.chunk_seconds),
                "long_stride_seconds": "chunk/6" if o.stride_seconds is None else o.stride_seconds,
                "long_unchunked": o.unchunked, "long_batch_size": o.batch_size}

    def text_artifacts(self) -> dict[str, str]:
        out = {}
        for s in self.scores:
            rows = ["id\tref\thyp\terrors\tref_words"]
            rows += [f"{u.id}\t{u.ref}\t{u.hyp}\t{u.errors}\t{u.ref_words}" for u in s.utterances]
            out[f"transcripts_long_{s.label}.tsv"] = "\n".join(rows) + "\n"
        return out

    def to_dict(self, with_utterances: bool = False) -> dict:
        return {"split": self.split, "path": self.path, "parts_path": self.parts_path,
                "options": {**self.options.__dict__, "chunk_seconds": list(self.options.chunk_seconds)},
                "parts": self.parts.__dict__, "scores": [s.to_dict(with_utterances) for s in self.scores]}

    def table(self) -> str:
        s0 = self.scores[0] if self.scores else None
        head = (f"long-form {self.split} ({s0.n_recordings} recordings, {s0.audio_seconds / 60:.2f} min)"
                if s0 else f"long-form {self.split}")
        lines = [head, f"{'chunk s':>8}{'stride s':>10}{'WER %':>8}{'RTF':>8}{'chunk p50 ms':>14}"
                       f"{'p90 ms':>9}{'chunks':>8}{'/ per-utt':>11}"]
        for s in self.scores:
            stride = "-" if s.stride_s is None else f"{s.stride_s[0]:g}"
            chunk = "full" if s.chunk_s is None else f"{s.chunk_s:g}"
            lines.append(f"{chunk:>8}{stride:>10}{100 * s.wer:>8.2f}{s.rtf:>8.3f}{s.chunk_ms_p50:>14.1f}"
                         f"{s.chunk_ms_p90:>9.1f}{s.n_chunks:>8}{self.ratio(s):>10.2f}x")
        lines.append(f"per-utterance WER of the same speech ({self.parts.n_utterances} utterances of "
                     f"{Path(self.parts_path).stem}): {100 * self.parts.wer:.2f} %")
        return "\n".join(lines)


def evaluate_long(transcriber: Transcriber, data: str | os.PathLike, split: str = "test",
                  options: LongOptions | None = None, limit: int | None = None,
                  known: Mapping[str, UtteranceError] | None = None, progress: bool = False) -> LongResult:
    """Score `<split>_long` at every chunk length of `options`, and its parts per utterance.

    `limit` keeps the first N recordings (and only their parts); `known`: see `score_parts`."""
    options = options or LongOptions()
    long, parts_manifest = find_long_sets(data, split)
    parts = read_parts(long)
    ds = load_dataset(long, limit=options.recordings or limit, name=f"{split}_long", progress=progress)
    if ds.skipped:
        raise DatasetError(f"{long}: {len(ds.skipped)} unreadable recording(s), e.g. {ds.skipped[0][0]}")
    lengths = list(options.chunk_seconds) + ([None] if options.unchunked else [])
    scores = [score_long(transcriber, ds, c, options.stride_seconds, options.batch_size, progress) for c in lengths]
    part_ids = [p for rid in ds.ids for p in parts[rid]]
    return LongResult(f"{split}_long", str(long), str(parts_manifest), options, scores,
                      score_parts(transcriber, parts_manifest, part_ids, known, progress))
