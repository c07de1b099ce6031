"""Transcribe your own audio: files or folders in any common format, any length, with any artifact.

What `w2vc transcribe` runs. Decoding is soundfile's (wav, flac, ogg, mp3, ...) with ffmpeg for what it
cannot read (m4a, aac, webm, ...) when ffmpeg is installed; everything becomes 16 kHz mono. Long audio runs
in overlapping windows exactly as transformers' ASR pipeline chunks it (`w2vc.core.chunking`), one window at
a time, so each window's compute time is what a streaming edge device would see. Any artifact loads through
the one loader (`w2vc.core.load.load`: PyTorch, PyTorch + runtime transform, ONNX, hub id).

Subtitles come from the greedy CTC path itself: the tokenizer's word offsets (`output_word_offsets`) are
frame indices into the kept logit frames, and each kept frame knows the window and position it came from,
so a word's time is where the model emitted it (accurate to a frame, 20 ms, but CTC spikes may lead or lag
the sound by a frame or two). Words are grouped into cues of at most `max_cue_s` seconds and
`max_cue_chars` characters (42 is the common subtitle line limit), split at pauses of `cue_gap_s`.

This module sits above core and data (it decodes audio) and imports neither compress nor eval.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from w2vc.core.artifact import CASCADE_FILE
from w2vc.core.chunking import SAMPLING_RATE, Window, chunk_windows, chunked_logits, kept_frames, plan_chunks
from w2vc.core.config import ConfigBase, ConfigError
from w2vc.core.load import load
from w2vc.core.runnable import Transcriber, inputs_to_logits_ratio
from w2vc.data.audio import AudioError, load_audio
from w2vc.data.datasets import AUDIO_EXTS

# scanned in folders besides AUDIO_EXTS: mostly containers libsndfile cannot read (ffmpeg decodes them)
FFMPEG_EXTS = {".m4a", ".aac", ".mp4", ".webm", ".mka", ".wma", ".amr", ".3gp", ".caf", ".oga", ".spx"}
FORMATS = ("text", "json", "srt")


class TranscribeError(ValueError):
    """A missing input, an empty folder, a model that cannot be loaded: one line for the user."""


@dataclass(frozen=True, kw_only=True)
class TranscribeConfig(ConfigBase):
    """Args:
    chunk_s: window length in seconds; 0 runs each file in one pass (memory grows with length squared).
    stride_s: seconds dropped on each side of a window's logits (None: chunk_s / 6, as the HF pipeline).
    threads: intra-op threads (torch or ONNX Runtime); None leaves the runtime's default.
    max_cue_s / max_cue_chars / cue_gap_s: SRT cue limits (a single longer word still gets its own cue).
    min_cue_s: a short cue is held on screen this long, unless the next cue or the end of audio comes first.
    """

    chunk_s: float = 10.0
    stride_s: float | None = None
    threads: int | None = None
    max_cue_s: float = 7.0
    max_cue_chars: int = 42
    cue_gap_s: float = 1.0
    min_cue_s: float = 1.0

    WHAT = "transcribe"

    def __post_init__(self):
        if self.chunk_s < 0:
            raise ConfigError(f"chunk_s must be >= 0 (0 = one pass), got {self.chunk_s}")
        if self.stride_s is not None and self.stride_s < 0:
            raise ConfigError(f"stride_s must be >= 0, got {self.stride_s}")
        if self.chunk_s:
            try:
                plan_chunks(self.chunk_s, self.stride_s)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.max_cue_s <= 0 or self.max_cue_chars < 1 or self.cue_gap_s <= 0 or self.min_cue_s < 0:
            raise ConfigError("max_cue_s and cue_gap_s must be > 0, max_cue_chars >= 1, min_cue_s >= 0")


# --- inputs -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioInput:
    """A file to transcribe and its name in outputs (its path below the folder it was found in)."""

    path: Path
    name: str


def find_audio(inputs: Sequence[str | os.PathLike]) -> list[AudioInput]:
    """Files as given (any suffix), folders searched recursively for audio suffixes, in sorted order."""
    if not inputs:
        raise TranscribeError("no input given (files or folders of audio)")
    exts = AUDIO_EXTS | FFMPEG_EXTS
    out: list[AudioInput] = []
    for given in inputs:
        p = Path(given)
        if p.is_file():
            out.append(AudioInput(p, p.name))
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts
                           and not f.name.startswith("."))
            if not found:
                raise TranscribeError(f"no audio files in folder {p} (looked for {', '.join(sorted(exts))})")
            out += [AudioInput(f, f.relative_to(p).as_posix()) for f in found]
        else:
            raise TranscribeError(f"no such file or folder: {p}")
    return out


def _soundfile_reads(suffix: str) -> bool:
    """Whether this libsndfile build reads the suffix's format (MP3 only from libsndfile 1.1)."""
    import soundfile as sf

    key = suffix.lstrip(".").upper()
    return {"AIF": "AIFF", "OGA": "OGG", "OPUS": "OGG"}.get(key, key) in sf.available_formats()


def read_audio(path: str | os.PathLike) -> np.ndarray:
    """16 kHz mono float32 of any common format: soundfile first, then ffmpeg when it is installed."""
    p = Path(path)
    try:
        return load_audio(p)
    except AudioError as e:
        if e.__cause__ is None:  # decoded, but holds no samples
            raise
        soundfile_says = (str(e.__cause__).strip().splitlines() or ["?"])[0]
    if shutil.which("ffmpeg") is None:
        if _soundfile_reads(p.suffix):
            raise AudioError(f"unreadable audio: {p} ({soundfile_says})") from None
        raise AudioError(f"cannot decode {p.suffix or 'suffix-less'} audio without ffmpeg: {p} (soundfile does "
                         "not read it; install ffmpeg or convert to wav/flac)") from None
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(p), "-f", "f32le", "-ac", "1",
                        "-ar", str(SAMPLING_RATE), "-"], capture_output=True)
    if r.returncode != 0:
        why = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise AudioError(f"unreadable audio: {p} (ffmpeg: {why})")
    x = np.frombuffer(r.stdout, dtype=np.float32).copy()
    if x.size == 0:
        raise AudioError(f"empty audio: {p}")
    return x


def open_model(source: str | os.PathLike, threads: int | None = None) -> Transcriber:
    """Any artifact directory, ONNX file or hub id → a Transcriber, with a one-line error when it is none."""
    s = str(source)
    p = Path(s).expanduser()
    if not p.exists():
        if s.startswith((".", "/", "~")) or s.count("/") > 1 or "\\" in s:  # not a hub id (org/name)
            raise TranscribeError(f"model not found: {s}")
    elif p.is_dir() and (p / CASCADE_FILE).is_file():  # its logits may come from two models: no chunking
        raise TranscribeError(f"{s} is a cascade (it routes whole utterances between two models); w2vc "
                              f"transcribe runs one model over windows of long audio: give one of its members")
    elif p.is_dir() and not (p / "config.json").is_file():
        raise TranscribeError(f"not a model directory (no config.json): {s}")
    try:
        return load(p if p.exists() else s, threads=threads)
    except Exception as e:
        why = (str(e).strip().splitlines() or [""])[0][:300]
        where = "" if p.exists() else " (no such directory; tried as a hub id)"
        raise TranscribeError(f"cannot load model {s}{where}: {type(e).__name__}: {why}") from None


# --- one file -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChunkTiming:
    """One window in seconds of the recording; its logits outside the strides are dropped."""

    start_s: float
    end_s: float
    stride_left_s: float
    stride_right_s: float
    compute_ms: float

    @property
    def rtf(self) -> float:
        return self.compute_ms / 1000 / (self.end_s - self.start_s)


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    end_s: float


@dataclass
class FileResult:
    name: str
    path: str
    text: str
    duration_s: float
    chunks: list[ChunkTiming]
    words: list[Word]
    decode_ms: float

    @property
    def compute_s(self) -> float:
        return (sum(c.compute_ms for c in self.chunks) + self.decode_ms) / 1000

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time / audio duration (< 1 is faster than real time)."""
        return self.compute_s / self.duration_s

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "text": self.text, "duration_s": self.duration_s,
                "compute_s": self.compute_s, "rtf": self.rtf, "decode_ms": self.decode_ms,
                "chunks": [asdict(c) | {"rtf": c.rtf} for c in self.chunks],
                "words": [asdict(w) for w in self.words]}


def frame_times(transcriber: Transcriber, windows: Sequence[Window]) -> np.ndarray:
    """Start time in seconds of each kept logit frame, in the order `chunked_logits` concatenates them."""
    ratio = inputs_to_logits_ratio(transcriber)
    out = []
    for w in windows:
        lo, hi = kept_frames(w, ratio)
        frames = transcriber.frame_lengths(np.ones((1, w.length), dtype=np.int64))[0]
        out.append((w.start + ratio * np.arange(lo, min(hi, frames))) / SAMPLING_RATE)
    return np.concatenate(out) if out else np.zeros(0)


def ctc_words(transcriber: Transcriber, logits: np.ndarray, times: np.ndarray) -> tuple[str, list[Word]]:
    """Greedy text and its words timed by the frames where CTC emitted their first and last characters.

    The text's whitespace is collapsed: two word delimiters with a blank between them leave a double space in
    the tokenizer's (and the HF pipeline's) text, never a word; so the text is its words joined.
    """
    if not len(logits):
        return "", []
    if len(times) != len(logits):
        raise RuntimeError(f"{len(times)} frame times for {len(logits)} kept logit frames")
    frame_s = inputs_to_logits_ratio(transcriber) / SAMPLING_RATE
    out = transcriber.processor.tokenizer.decode(logits.argmax(-1), output_word_offsets=True)
    words = [Word(o["word"], float(times[o["start_offset"]]), float(times[o["end_offset"] - 1] + frame_s))
             for o in out.word_offsets]
    return " ".join(out.text.split()), words


class _CountingWindows:
    """The transcriber, advancing a progress bar by each batch of windows it runs (chunked_logits has no hook)."""

    def __init__(self, inner: Transcriber, advance: Callable[[int], object]):
        self._inner, self._advance = inner, advance

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def logits(self, values, mask):
        out = self._inner.logits(values, mask)
        self._advance(len(values))
        return out


def transcribe_audio(transcriber: Transcriber, audio: np.ndarray, cfg: TranscribeConfig, name: str = "",
                     path: str = "", advance: Callable[[int], object] | None = None) -> FileResult:
    """Chunked greedy CTC over one recording, with per-window timings and word times."""
    runner = _CountingWindows(transcriber, advance) if advance else transcriber
    logits, windows, ms = chunked_logits(runner, audio, cfg.chunk_s or None, cfg.stride_s)
    t0 = time.perf_counter()
    text, words = ctc_words(transcriber, logits, frame_times(transcriber, windows))
    decode_ms = (time.perf_counter() - t0) * 1000
    sr = SAMPLING_RATE
    chunks = [ChunkTiming(w.start / sr, w.end / sr, w.left / sr, w.right / sr, t) for w, t in zip(windows, ms)]
    return FileResult(name, path, text, len(audio) / sr, chunks, words, decode_ms)


def count_windows(n_samples: int, transcriber: Transcriber, cfg: TranscribeConfig) -> int:
    if not cfg.chunk_s:
        return 1
    return len(chunk_windows(n_samples, plan_chunks(cfg.chunk_s, cfg.stride_s, inputs_to_logits_ratio(transcriber))))


def transcribe_files(transcriber: Transcriber, inputs: Sequence[AudioInput], cfg: TranscribeConfig,
                     progress: bool = True) -> list[FileResult]:
    """Each input in turn (decoded when its turn comes), one progress bar over files and windows."""
    from tqdm import tqdm

    results = []
    with tqdm(total=0, unit="chunk", disable=not progress, leave=False) as bar:
        for i, item in enumerate(inputs):
            audio = read_audio(item.path)
            bar.total += count_windows(len(audio), transcriber, cfg)
            bar.set_description(f"file {i + 1}/{len(inputs)} {item.name}")
            bar.refresh()
            results.append(transcribe_audio(transcriber, audio, cfg, item.name, str(item.path), bar.update))
    return results


# --- outputs ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def srt_cues(words: Sequence[Word], duration_s: float, cfg: TranscribeConfig | None = None) -> list[Cue]:
    """Consecutive words in cues of <= max_cue_s and <= max_cue_chars, split at pauses of cue_gap_s."""
    cfg = cfg or TranscribeConfig()
    groups: list[list[Word]] = []
    for w in words:
        cur = groups[-1] if groups else None
        if (cur is None or w.start_s - cur[-1].end_s > cfg.cue_gap_s or w.end_s - cur[0].start_s > cfg.max_cue_s
                or len(" ".join(x.text for x in cur)) + 1 + len(w.text) > cfg.max_cue_chars):
            groups.append([w])
        else:
            cur.append(w)
    cues = []
    for i, g in enumerate(groups):
        limit = min(groups[i + 1][0].start_s if i + 1 < len(groups) else duration_s, duration_s)
        start = min(g[0].start_s, limit)
        end = min(max(g[-1].end_s, start + cfg.min_cue_s), limit)
        cues.append(Cue(start, max(end, start), " ".join(w.text for w in g)))
    return cues


def _srt_time(s: float) -> str:
    ms = int(round(s * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def render_srt(result: FileResult, cfg: TranscribeConfig | None = None) -> str:
    cues = srt_cues(result.words, result.duration_s, cfg)
    return "".join(f"{i}\n{_srt_time(c.start_s)} --> {_srt_time(c.end_s)}\n{c.text}\n\n"
                   for i, c in enumerate(cues, 1))


def render_text(results: Sequence[FileResult]) -> str:
    """The transcript alone for one file; `name<TAB>text` lines for several (Kaldi-style, as `w2vc wer` reads)."""
    if len(results) == 1:
        return results[0].text + "\n"
    return "".join(f"{r.name}\t{r.text}\n" for r in results)


def render_json(results: Sequence[FileResult], model: str, runtime: str, cfg: TranscribeConfig) -> str:
    meta = {"model": model, "runtime": runtime, "chunk_s": cfg.chunk_s or None,
            "stride_s": cfg.stride_s if cfg.stride_s is not None else (cfg.chunk_s / 6 if cfg.chunk_s else None)}
    return json.dumps(meta | {"files": [r.to_dict() for r in results]}, indent=1) + "\n"


def render(results: Sequence[FileResult], fmt: str, model: str, runtime: str, cfg: TranscribeConfig) -> str:
    """All results in one document (an SRT document holds one file)."""
    if fmt == "srt":
        if len(results) != 1:
            raise TranscribeError(f"{len(results)} inputs give {len(results)} SRT files: give --out FOLDER")
        return render_srt(results[0], cfg)
    if fmt == "json":
        return render_json(results, model, runtime, cfg)
    if fmt == "text":
        return render_text(results)
    raise TranscribeError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def out_is_folder(out: str | os.PathLike, n_inputs: int, fmt: str) -> bool:
    """An existing folder, a path ending in a separator, or (several inputs in SRT) any path: a folder."""
    p = Path(out)
    return p.is_dir() or str(out).endswith(("/", os.sep)) or (fmt == "srt" and n_inputs > 1)


def write_outputs(results: Sequence[FileResult], fmt: str, out: str | os.PathLike, model: str, runtime: str,
                  cfg: TranscribeConfig) -> list[Path]:
    """One document at `out`, or, when `out` is a folder, one `<name>.<txt|json|srt>` per input below it."""
    ext = {"text": ".txt", "json": ".json", "srt": ".srt"}[fmt]
    if not out_is_folder(out, len(results), fmt):
        p = Path(out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render(results, fmt, model, runtime, cfg))
        return [p]
    root = Path(out)
    paths = [root / Path(r.name).with_suffix(ext) for r in results]
    seen: dict[Path, str] = {}
    for p, r in zip(paths, results):
        if p in seen:
            raise TranscribeError(f"{seen[p]} and {r.name} would both be written to {p}")
        seen[p] = r.name
    for p, r in zip(paths, results):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render([r], fmt, model, runtime, cfg))
    return paths
