"""Long-form material made from synthesized utterances: train streams and crops, dev/test long recordings.

Models trained on single utterances fail on long audio (80 % WER on a 2-minute file, DESIGN.md): they never
heard utterance boundaries, pauses, level changes or speech cut off by a chunk edge. Every item here is a
re-arrangement of utterance audio the corpus already holds, so it adds no new speech:

- a *stream* joins 2..8 utterances (preferably one talker, else one voice or synthesizer) with varied
  pauses (short, normal, long), faint breath-like noise bursts in some pauses and a level change per part;
- a *crop* is a random window of such a stream that cuts utterances (and words) at arbitrary points, as
  chunked inference does;
- a *long recording* (dev_long, test_long) joins utterances of one held-out split in speaker turns to
  long_min_s..long_max_s seconds, so per-utterance WER on the same speech is the split's own WER.

Word timing for crops is an estimate, stated plainly: each utterance's speech region is where its frame
energy is within 40 dB of its loudest frame, and its words share that region in proportion to their
characters (a space counts as one). A crop is labelled with the words whose estimated span lies mostly
(≥ 50 %) inside it, so a word cut near its middle may be labelled or not: label noise of a fraction of a
word at each crop edge. Streams and long recordings carry their parts' full transcripts.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from w2vc.data.audio import SAMPLE_RATE, write_flac
from w2vc.data.augment import bandlimit
from w2vc.data.noise import pink_noise

MARGIN = int(0.1 * SAMPLE_RATE)  # kept around each part's speech region
MAX_PARTS = 8


def _rng(*parts) -> random.Random:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def speech_region(x: np.ndarray, frame: int = 320, floor_db: float = -40.0) -> tuple[int, int]:
    """[start, end) samples of the frames within floor_db of the loudest 20 ms frame."""
    n = len(x) // frame
    if n == 0:
        return 0, len(x)
    p = (np.asarray(x[: n * frame], np.float64).reshape(n, frame) ** 2).mean(axis=1)
    active = np.nonzero(p > p.max() * 10 ** (floor_db / 10))[0]
    if active.size == 0:
        return 0, len(x)
    return int(active[0] * frame), int(min(len(x), (active[-1] + 1) * frame))


def word_spans(text: str, start: float, end: float) -> list[tuple[str, float, float]]:
    """Words of `text` spread over [start, end] in proportion to their characters (the estimate above)."""
    words = text.split()
    units = sum(len(w) for w in words) + max(0, len(words) - 1)
    scale = (end - start) / max(units, 1)
    out, pos = [], 0
    for w in words:
        out.append((w, start + pos * scale, start + (pos + len(w)) * scale))
        pos += len(w) + 1
    return out


def _pause(r: random.Random) -> float:
    u = r.random()
    if u < 0.3:
        return r.uniform(0.05, 0.3)  # quick succession
    if u < 0.8:
        return r.uniform(0.3, 1.2)
    return r.uniform(1.2, 3.0)  # a long pause


class _Layout:
    """Places parts one after another on a timeline (all draws from one Random, in order)."""

    def __init__(self, r: random.Random):
        self.r = r
        self.parts: list[dict] = []
        self.breaths: list[dict] = []
        self.length = int(r.uniform(0.05, 0.4) * SAMPLE_RATE)

    @staticmethod
    def window(row: dict) -> tuple[int, int]:
        s0, s1 = (round(t * SAMPLE_RATE) for t in row["speech"])
        return max(0, s0 - MARGIN), min(round(row["duration"] * SAMPLE_RATE), s1 + MARGIN)

    def add(self, row: dict) -> None:
        if self.parts:
            pause = int(_pause(self.r) * SAMPLE_RATE)
            if pause > 0.35 * SAMPLE_RATE and self.r.random() < 0.5:
                n = int(self.r.uniform(0.12, min(0.35, pause / SAMPLE_RATE - 0.15)) * SAMPLE_RATE)
                at = self.length + int(self.r.uniform(0.05 * SAMPLE_RATE, pause - n - 0.05 * SAMPLE_RATE))
                self.breaths.append({"at": at, "n": n, "level_db": round(self.r.uniform(-32, -18), 2)})
            self.length += pause
        a, b = self.window(row)
        s0, s1 = (round(t * SAMPLE_RATE) for t in row["speech"])
        self.parts.append({"id": row["id"], "path": row["path"], "text": row["text"], "speaker": row["speaker"],
                           "synth": row["synth"], "voice": row["voice"], "a": a, "b": b, "at": self.length,
                           "gain": round(10 ** (self.r.uniform(-10, 2) / 20), 4),
                           "speech": (self.length + s0 - a, self.length + s1 - a)})
        self.length += b - a

    def finish(self) -> None:
        self.length += int(self.r.uniform(0.1, 0.5) * SAMPLE_RATE)


def _common(parts: list[dict], key: str) -> str:
    values = {p[key] for p in parts}
    return values.pop() if len(values) == 1 else "mixed"


def _row(spec: dict, parts: list[dict], text: str, speaker: int, kind: str) -> dict:
    return {"id": spec["id"], "path": spec["path"], "text": text, "speaker": speaker,
            "synth": _common(parts, "synth"), "voice": _common(parts, "voice"), "duration": None, "kind": kind,
            "parts": [p["id"] for p in parts], "speakers": sorted({p["speaker"] for p in parts}),
            "synths": sorted({p["synth"] for p in parts}),
            # seconds to 5 decimals: round(t * 16000) gives back the sample
            "offsets": [[round((p["at"] - spec["c0"]) / SAMPLE_RATE, 5),
                         round((p["at"] + p["b"] - p["a"] - spec["c0"]) / SAMPLE_RATE, 5)] for p in parts]}


def _pick(rows: list[dict], r: random.Random, target_s: float, index: dict) -> list[dict]:
    """An anchor utterance and more until ~target_s, from its talker first, then its voice, synth, anyone."""
    anchor = r.randrange(len(rows))
    a = rows[anchor]
    pools = [index["speaker"][a["speaker"]], index["voice"][(a["synth"], a["voice"])], index["synth"][a["synth"]],
             index["all"]]
    picks, total = [anchor], a["speech"][1] - a["speech"][0] + 0.2
    while (total < target_s or len(picks) < 2) and len(picks) < MAX_PARTS:
        choice = None
        for pool in pools:
            for _ in range(6):
                i = pool[r.randrange(len(pool))]
                if i not in picks:
                    choice = i
                    break
            if choice is not None:
                break
        if choice is None:
            break
        picks.append(choice)
        total += rows[choice]["speech"][1] - rows[choice]["speech"][0] + 0.9
    return [rows[i] for i in picks]


def _index(rows: list[dict]) -> dict:
    index: dict = {"speaker": {}, "voice": {}, "synth": {}, "all": list(range(len(rows)))}
    for i, row in enumerate(rows):
        index["speaker"].setdefault(row["speaker"], []).append(i)
        index["voice"].setdefault((row["synth"], row["voice"]), []).append(i)
        index["synth"].setdefault(row["synth"], []).append(i)
    return index


def plan_train_long(rows: list[dict], cfg) -> list[tuple[dict, dict]]:
    """(render spec, manifest row) of the train streams and crops, train_*_share of the utterance hours each."""
    utt_s = sum(row["duration"] for row in rows)
    index = _index(rows)
    out: list[tuple[dict, dict]] = []
    for kind, share, chapter in (("stream", cfg.train_stream_share, 2), ("crop", cfg.train_crop_share, 3)):
        r = _rng(cfg.seed, "train", kind)
        made, k, tries = 0.0, 0, 0
        while made < share * utt_s and tries < 100_000:
            tries += 1
            if kind == "stream":
                lay = _Layout(r)
                for row in _pick(rows, r, r.uniform(*cfg.stream_seconds), index):
                    lay.add(row)
                lay.finish()
                parts, c0, c1 = lay.parts, 0, lay.length
                text = " ".join(p["text"] for p in parts)
            else:
                crop = int(r.uniform(*cfg.crop_seconds) * SAMPLE_RATE)
                lay = _Layout(r)
                for row in _pick(rows, r, crop / SAMPLE_RATE + r.uniform(1.0, 4.0), index):
                    lay.add(row)
                lay.finish()
                if lay.length <= crop:
                    continue
                c0 = r.randrange(lay.length - crop)
                c1 = c0 + crop
                words = [w for p in lay.parts for w, s, e in word_spans(p["text"], *p["speech"])
                         if min(e, c1) - max(s, c0) >= 0.5 * (e - s)]
                if not words:
                    continue
                parts = [p for p in lay.parts if p["at"] < c1 and p["at"] + p["b"] - p["a"] > c0]
                text = " ".join(words)
            spk = parts[0]["speaker"]
            uid = f"{spk}-{chapter}-{k:05d}"
            spec = {"id": uid, "path": f"train/{spk}/{chapter}/{uid}.flac", "parts": parts,
                    "breaths": lay.breaths, "length": lay.length, "c0": c0, "c1": c1,
                    "noise_seed": [cfg.seed, chapter, k]}
            out.append((spec, _row(spec, parts, text, spk, kind)))
            made += (c1 - c0) / SAMPLE_RATE
            k += 1
    return out


def plan_long_recordings(split: str, rows: list[dict], cfg, count: int, first_speaker: int) -> list[tuple[dict, dict]]:
    """Up to `count` recordings of long_min_s..long_max_s from the split's utterances, each used at most once,
    in speaker turns (a talker's utterances stay together); as many as the split's audio allows. A recording
    passes long_max_s only where one part is longer than long_max_s - long_min_s (tiny test settings)."""
    r = _rng(cfg.seed, split, "long")
    by_spk: dict = {}
    for row in rows:
        by_spk.setdefault(row["speaker"], []).append(row)
    speakers = sorted(by_spk)
    r.shuffle(speakers)
    order = []
    for spk in speakers:
        turn = list(by_spk[spk])
        r.shuffle(turn)
        order += turn
    trimmed = [(lambda w: (w[1] - w[0]) / SAMPLE_RATE)(_Layout.window(row)) for row in order]
    available = sum(trimmed) + 0.8 * max(0, len(order) - 1)
    n = min(count, math.floor(available / cfg.long_min_s))
    targets = [r.uniform(cfg.long_min_s, cfg.long_max_s) for _ in range(n)]
    extra, room = sum(targets) - n * cfg.long_min_s, 0.95 * available - n * cfg.long_min_s
    if n and extra > room:  # the split cannot fill every drawn length: shrink them toward the minimum
        targets = [cfg.long_min_s + (t - cfg.long_min_s) * max(room, 0) / extra for t in targets]
    out, pos = [], 0
    for k, target in enumerate(targets):
        lay = _Layout(r)
        while pos < len(order) and lay.length < target * SAMPLE_RATE:
            # + a pause and the closing pad (<= 0.5 s)
            if lay.parts and lay.length + (trimmed[pos] + 1.5) * SAMPLE_RATE > cfg.long_max_s * SAMPLE_RATE \
                    and lay.length >= cfg.long_min_s * SAMPLE_RATE:
                break
            lay.add(order[pos])
            pos += 1
        lay.finish()
        if lay.length < cfg.long_min_s * SAMPLE_RATE:
            break  # the split is used up
        spk = first_speaker + k
        uid = f"{spk}-1-{k:05d}"
        spec = {"id": uid, "path": f"{split}/{spk}/1/{uid}.flac", "parts": lay.parts, "breaths": lay.breaths,
                "length": lay.length, "c0": 0, "c1": lay.length, "noise_seed": [cfg.seed, first_speaker, k]}
        out.append((spec, _row(spec, lay.parts, " ".join(p["text"] for p in lay.parts), spk, "long")))
    return out


def render(spec: dict, root: str) -> float:
    """Write one planned item (kept if already there: a resumed build); return its duration in seconds."""
    rootp = Path(root)
    f = rootp / spec["path"]
    if f.exists():
        return sf.info(str(f)).frames / SAMPLE_RATE
    out = np.zeros(spec["length"], np.float32)
    rms = []
    for p in spec["parts"]:
        x, _ = sf.read(str(rootp / p["path"]), dtype="float32", start=p["a"], stop=p["b"])
        x = x[: p["b"] - p["a"]] * np.float32(p["gain"])
        out[p["at"]:p["at"] + len(x)] += x
        s0, s1 = p["speech"]
        rms.append((p["at"], float(np.sqrt(np.mean(out[s0:s1] ** 2) + 1e-12))))
    rng = np.random.default_rng(spec["noise_seed"])
    for b in spec["breaths"]:  # breath-like: band-passed pink noise under a Hann envelope, below the speech
        level = next((v for at, v in reversed(rms) if at <= b["at"]), rms[0][1]) * 10 ** (b["level_db"] / 20)
        noise = bandlimit(pink_noise(b["n"], rng), 150, rng.uniform(1500, 4000)) * np.hanning(b["n"])
        noise *= level / (np.sqrt(np.mean(noise ** 2)) + 1e-12)
        out[b["at"]:b["at"] + b["n"]] += noise.astype(np.float32)[: len(out) - b["at"]]
    out = out[spec["c0"]:spec["c1"]]
    peak = float(np.abs(out).max())
    if peak > 0.99:
        out *= 0.99 / peak
    write_flac(f, out)
    return len(out) / SAMPLE_RATE


def render_chunk(specs: list[dict], root: str) -> list[float]:
    return [render(s, root) for s in specs]


def build(root: Path, rows: dict[str, list[dict]], cfg, pool) -> dict:
    """Plan (in this process: deterministic) and render (in the pool's workers) the train streams and crops
    (appended to rows["train"]) and dev_long/test_long (new entries of rows); return notes on skipped splits."""
    planned = {"train": plan_train_long(rows["train"], cfg)}
    notes = {}
    for split, count, first in (("dev_long", cfg.dev_long_recordings, 6000),
                                ("test_long", cfg.test_long_recordings, 8000)):
        src = rows.get(split.removesuffix("_long"), [])
        planned[split] = plan_long_recordings(split, src, cfg, count, first) if count else []
        if count and not planned[split]:
            notes[split] = (f"skipped: {split.removesuffix('_long')} has "
                            f"{sum(r['duration'] for r in src):.0f} s of audio, less than long_min_s "
                            f"{cfg.long_min_s:g} s")
    for split, items in planned.items():
        specs = [spec for spec, _ in items]
        futures = [pool.submit(render_chunk, specs[i:i + 16], str(root)) for i in range(0, len(specs), 16)]
        durations = [d for fut in tqdm(futures, desc=f"long-form {split}", leave=False) for d in fut.result()]
        for (_, row), d in zip(items, durations):
            row["duration"] = round(d, 4)
        if split == "train":
            rows["train"] = rows["train"] + [row for _, row in items]
        elif items:
            rows[split] = [row for _, row in items]
    return notes
