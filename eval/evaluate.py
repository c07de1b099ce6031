"""`w2vc eval`: greedy-CTC WER/CER of one model on a clean set and its noisy copies, logged to MLflow.

Which sets are scored:
- a w2vc corpus root (it has `manifests/`): `<split>` is "clean"; with `noisy`, every `<split>_snr<N>` is
  "snr<N>" (highest SNR first) and `<split>_unseen_synth`, when present, is "unseen_synth";
- any other data path (LibriSpeech-layout folder, .jsonl/.csv manifest, folder + transcript file) is
  "clean"; with `noisy`, siblings named `<name>_snr<N>` (same suffix) next to it are used — there is no
  guessing beyond that, so a path without such siblings is an error, not a silent clean-only run.

Metrics (flat, for MLflow and Pareto): wer_<set>, cer_<set>, n_utterances (clean set),
n_utterances_<set> (other sets), skipped_files (unreadable files over all sets; each one is also listed).
With `long` (LongOptions), also the long-form figures of `<split>_long` (w2vc.eval.longform: wer_long_10s,
rtf_long_10s, ..., wer_parts).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from w2vc.core.load import load
from w2vc.core.runnable import Transcriber
from w2vc.data.datasets import Dataset, DatasetError, load_dataset
from w2vc.eval.longform import LongOptions, LongResult, evaluate_long, find_long_sets
from w2vc.eval.stats import wer_interval
from w2vc.eval.tracking import DEFAULT_EXPERIMENT, LoggedRun, log_run
from w2vc.eval.wer import UtteranceError, word_error_rate

_SNR = re.compile(r"_snr(\d+)$")


@dataclass(frozen=True)
class EvalSet:
    """One scored set: `name` is the metric suffix (clean, snr20, ..., unseen_synth)."""

    name: str
    path: Path


def find_eval_sets(data: str | os.PathLike, split: str = "test", noisy: bool = False) -> list[EvalSet]:
    """Resolve `data` (+ split, noisy) to the sets to score; raise DatasetError naming what is missing."""
    p = Path(data)
    if not p.exists():
        raise DatasetError(f"data path does not exist: {p}")
    if (p / "manifests").is_dir():  # a w2vc corpus root
        man = p / "manifests"
        clean = man / f"{split}.jsonl"
        if not clean.exists():
            known = ", ".join(sorted(f.stem for f in man.glob("*.jsonl"))) or "none"
            raise DatasetError(f"{p}: no split {split!r} (manifests: {known})")
        sets = [EvalSet("clean", clean)]
        if noisy:
            sets += _noisy_siblings(clean, where=f"{p} (split {split})")
        return sets
    sets = [EvalSet("clean", p)]
    if noisy:
        sets += _noisy_siblings(p, where=str(p))
    return sets


def _noisy_siblings(clean: Path, where: str) -> list[EvalSet]:
    stem, suffix = (clean.stem, clean.suffix) if clean.is_file() else (clean.name, "")
    found = []
    for f in clean.parent.glob(f"{stem}_snr*{suffix}"):
        m = _SNR.search(f.stem if suffix else f.name)
        if m and f.is_file() == clean.is_file():
            found.append((int(m.group(1)), f))
    if not found:
        raise DatasetError(f"--noisy: no noisy copies of {where} (looked for {clean.parent / (stem + '_snr<N>' + suffix)})")
    sets = [EvalSet(f"snr{snr}", f) for snr, f in sorted(found, key=lambda t: -t[0])]
    unseen = clean.parent / f"{stem}_unseen_synth{suffix}"
    if unseen.exists():
        sets.append(EvalSet("unseen_synth", unseen))
    return sets


@dataclass
class EvalData:
    """Decoded eval sets, loaded once and reusable across many models (the sweep runner's case)."""

    source: str
    split: str
    limit: int | None
    sets: list[tuple[EvalSet, Dataset]]


def load_eval_data(data: str | os.PathLike, split: str = "test", noisy: bool = False, limit: int | None = None,
                   progress: bool = False) -> EvalData:
    sets = find_eval_sets(data, split, noisy)
    return EvalData(str(data), split, limit,
                    [(s, load_dataset(s.path, limit=limit, name=s.name, progress=progress)) for s in sets])


@dataclass
class SetResult:
    name: str
    path: str
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    n_utterances: int
    audio_seconds: float
    transcribe_seconds: float
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"} per unreadable file
    utterances: list[UtteranceError] = field(default_factory=list)

    def transcripts_tsv(self) -> str:
        rows = ["id\tref\thyp\terrors\tref_words"]
        rows += [f"{u.id}\t{u.ref}\t{u.hyp}\t{u.errors}\t{u.ref_words}" for u in self.utterances]
        return "\n".join(rows) + "\n"

    def wer_by(self, group_of: Mapping[str, str]) -> dict[str, dict]:
        """WER per group (`group_of`: utterance id → e.g. its synthesizer, from `manifest_column`): where the
        errors are. Groups sorted by WER, worst first."""
        acc: dict[str, list[int]] = {}
        for u in self.utterances:
            a = acc.setdefault(group_of[u.id], [0, 0, 0])
            a[0], a[1], a[2] = a[0] + u.errors, a[1] + u.ref_words, a[2] + 1
        rows = {g: {"wer": e / max(w, 1), "errors": e, "ref_words": w, "n_utterances": n}
                for g, (e, w, n) in acc.items()}
        return dict(sorted(rows.items(), key=lambda kv: -kv[1]["wer"]))

    def to_dict(self, with_utterances: bool = False) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "utterances"}
        if with_utterances:
            d["utterances"] = [u.__dict__ for u in self.utterances]
        return d


@dataclass
class EvalResult:
    model: str
    data: str
    split: str
    runtime: str
    threads: int | None
    limit: int | None
    sets: list[SetResult]
    wall_seconds: float
    run_id: str | None = None
    local_json: str | None = None
    long: LongResult | None = None

    def __getitem__(self, name: str) -> SetResult:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(f"no eval set {name!r} (have {', '.join(s.name for s in self.sets)})")

    @property
    def skipped_files(self) -> int:
        return sum(len(s.skipped) for s in self.sets)

    @property
    def metrics(self) -> dict[str, float]:
        m: dict[str, float] = {}
        for s in self.sets:
            m[f"wer_{s.name}"] = s.wer
            if s.utterances:  # 95 % bootstrap interval over utterances (eval/stats.py)
                ci = wer_interval([u.errors for u in s.utterances], [u.ref_words for u in s.utterances])
                m[f"wer_{s.name}_lo"], m[f"wer_{s.name}_hi"] = ci.low, ci.high
            m[f"cer_{s.name}"] = s.cer
            m["n_utterances" if s.name == "clean" else f"n_utterances_{s.name}"] = s.n_utterances
        m["skipped_files"] = self.skipped_files
        if self.long is not None:
            m.update(self.long.metrics)
        return m

    @property
    def params(self) -> dict:
        return {"model": self.model, "data": self.data, "split": self.split, "runtime": self.runtime,
                "threads": self.threads if self.threads else "default", "limit": self.limit,
                "sets": ",".join(s.name for s in self.sets), **(self.long.params if self.long else {})}

    def text_artifacts(self) -> dict[str, str]:
        """Per-utterance transcripts (id, ref, hyp, errors) per set, plus the skipped files if any."""
        out = {f"transcripts_{s.name}.tsv": s.transcripts_tsv() for s in self.sets}
        skipped = [f"{s.name}\t{k['path']}\t{k['reason']}" for s in self.sets for k in s.skipped]
        if skipped:
            out["skipped_files.tsv"] = "set\tpath\treason\n" + "\n".join(skipped) + "\n"
        if self.long is not None:
            out.update(self.long.text_artifacts())
        return out

    def to_dict(self, with_utterances: bool = False) -> dict:
        return {**self.params, "threads": self.threads, "metrics": self.metrics,
                "wall_seconds": round(self.wall_seconds, 3), "run_id": self.run_id, "local_json": self.local_json,
                "sets": [s.to_dict(with_utterances) for s in self.sets],
                **({"long": self.long.to_dict(with_utterances)} if self.long else {})}

    def table(self) -> str:
        lines = [f"{'set':<14}{'utts':>6}{'WER %':>8}{'95 % CI':>14}{'CER %':>8}{'sub/del/ins':>16}{'skipped':>9}"
                 f"{'audio min':>11}{'x RT':>7}"]
        m = self.metrics
        for s in self.sets:
            sdi = f"{s.substitutions}/{s.deletions}/{s.insertions}"
            rt = s.audio_seconds / s.transcribe_seconds if s.transcribe_seconds > 0 else float("nan")
            lo, hi = m.get(f"wer_{s.name}_lo", float("nan")), m.get(f"wer_{s.name}_hi", float("nan"))
            ci = f"{100 * lo:.2f}-{100 * hi:.2f}"
            lines.append(f"{s.name:<14}{s.n_utterances:>6}{100 * s.wer:>8.2f}{ci:>14}{100 * s.cer:>8.2f}{sdi:>16}"
                         f"{len(s.skipped):>9}{s.audio_seconds / 60:>11.2f}{rt:>7.1f}")
        return "\n".join(lines)


def _iter_sets(data, split, noisy, limit, progress) -> Iterator[tuple[EvalSet, Dataset]]:
    if isinstance(data, EvalData):
        yield from data.sets
        return
    for s in find_eval_sets(data, split, noisy):  # resolved up front: a missing noisy set fails fast
        yield s, load_dataset(s.path, limit=limit, name=s.name, progress=progress)


def score_set(transcriber: Transcriber, eval_set: EvalSet, ds: Dataset, batch_seconds: float = 60.0,
              max_batch: int = 16, progress: bool = False) -> SetResult:
    t0 = time.perf_counter()
    hyps = transcriber.transcribe(ds.audio, batch_seconds=batch_seconds, max_batch=max_batch, progress=progress,
                                  desc=f"transcribe {eval_set.name}")
    secs = time.perf_counter() - t0
    r = word_error_rate(ds.ids, ds.texts, hyps)
    return SetResult(eval_set.name, str(eval_set.path), r.wer, r.cer, r.substitutions, r.deletions, r.insertions,
                     r.ref_words, r.utterances, sum(len(a) for a in ds.audio) / 16000, secs,
                     [{"path": p, "reason": why} for p, why in ds.skipped], r.per_utterance)


def evaluate_model(model: str | os.PathLike | Transcriber, data: str | os.PathLike | EvalData, *,
                   noisy: bool = False, split: str = "test", limit: int | None = None, threads: int | None = None,
                   batch_seconds: float = 60.0, max_batch: int = 16, progress: bool = False,
                   model_name: str | None = None, bf16: bool = False, long: LongOptions | None = None) -> EvalResult:
    """Score a model directory / hub id, or an already-built Transcriber (in-memory models), on `data`.

    Nothing is logged here; call `log_eval(result)` for MLflow. With a preloaded `EvalData`, `noisy`,
    `split` and `limit` come from it. `long` also scores `<split>_long` in windows (w2vc.eval.longform);
    its per-utterance comparison reuses the clean set's transcripts where that set is the parts' split.
    """
    if limit is not None and limit < 1 or threads is not None and threads < 1:
        raise ValueError(f"--limit and --threads must be >= 1 (got limit={limit}, threads={threads})")
    t0 = time.perf_counter()
    if isinstance(data, EvalData):
        split, limit = data.split, data.limit
    else:
        find_eval_sets(data, split, noisy)  # fail on bad data before paying for the model load
    root = data.source if isinstance(data, EvalData) else data
    if long is not None:
        _, parts_manifest = find_long_sets(root, split)
    if isinstance(model, Transcriber):
        transcriber = model
        name = model_name or getattr(model, "source", None) or type(model).__name__
        if threads:
            _set_threads(transcriber, threads)
    else:
        src = str(model)
        if not Path(src).exists() and (Path(src).is_absolute() or src.startswith(".") or src.count("/") != 1):
            raise FileNotFoundError(f"model not found: {src} (give a model directory or a hub id namespace/name)")
        if bf16 and Path(model).is_dir() and any(Path(model).glob("*.onnx")):
            raise ValueError(f"--bf16 applies to PyTorch models; {model} is an ONNX artifact")
        kw = {"autocast_bf16": True} if bf16 else {}
        try:
            transcriber = load(model, threads=threads, **kw)
        except OSError as e:  # hub/IO errors span several lines; the CLI prints one
            msg = f"cannot load model {model}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"
            try:
                err = type(e)(msg)
            except Exception:
                err = OSError(msg)
            raise err from e
        name = model_name or str(model)
    sets = [score_set(transcriber, s, ds, batch_seconds, max_batch, progress)
            for s, ds in _iter_sets(data, split, noisy, limit, progress)]
    long_result = None
    if long is not None:
        known = {u.id: u for s in sets if s.name == "clean" and Path(s.path).resolve() == parts_manifest.resolve()
                 for u in s.utterances}
        long_result = evaluate_long(transcriber, root, split, long, limit=limit, known=known, progress=progress)
    return EvalResult(model=name, data=str(data.source if isinstance(data, EvalData) else data), split=split,
                      runtime=transcriber.runtime + ("-bf16" if getattr(transcriber, "autocast_bf16", False) else ""),
                      threads=threads or _current_threads(transcriber), limit=limit, sets=sets,
                      wall_seconds=time.perf_counter() - t0, long=long_result)


def _set_threads(transcriber: Transcriber, threads: int) -> None:
    if transcriber.runtime == "torch":
        import torch

        torch.set_num_threads(threads)
    # an ORT session's thread count is fixed at creation: build it with w2vc.core.load.load(path, threads=N)


def _current_threads(transcriber: Transcriber) -> int | None:
    if transcriber.runtime == "torch":
        import torch

        return torch.get_num_threads()
    return None  # ORT default: one per physical core


def log_eval(result: EvalResult, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
             extra_params: dict | None = None, extra_metrics: dict | None = None, tags: dict | None = None,
             parent_run_id: str | None = None) -> LoggedRun:
    """One MLflow run with params, metrics, tags and per-utterance transcripts; fills result.run_id."""
    name = run_name or f"eval-{Path(result.model).name or result.model}"
    logged = log_run(name, {**result.params, **(extra_params or {})}, {**result.metrics, **(extra_metrics or {})},
                     tags={"w2vc.kind": "eval", **(tags or {})}, text_artifacts=result.text_artifacts(),
                     experiment=experiment, parent_run_id=parent_run_id)
    result.run_id, result.local_json = logged.run_id, str(logged.local_json)
    return logged


def by_table(key: str, by: Mapping[str, Mapping[str, dict]], top: int = 12) -> str:
    """One line per set (`by`: set name → `SetResult.wer_by` groups), worst `top` groups first."""
    lines = []
    for name, groups in by.items():
        shown = [f"{g} {100 * r['wer']:.2f} % ({r['n_utterances']})" for g, r in list(groups.items())[:top]]
        more = f" · +{len(groups) - top} more" if len(groups) > top else ""
        lines.append(f"{name} WER by {key}: " + " · ".join(shown) + more)
    return "\n".join(lines)


def sets_summary(sets: Sequence[SetResult]) -> str:
    """One line per set that skipped files, naming the first few (skips are never silent)."""
    out = []
    for s in sets:
        if s.skipped:
            names = ", ".join(f"{Path(k['path']).name} ({k['reason']})" for k in s.skipped[:3])
            more = f" and {len(s.skipped) - 3} more" if len(s.skipped) > 3 else ""
            out.append(f"{s.name}: skipped {len(s.skipped)} unreadable file(s): {names}{more}")
    return "\n".join(out)
