"""Offline speech corpus: the command grammar spoken by espeak-ng and Festival voices, plus noisy copies.

Speakers are (synthesizer, voice, prosody). Held-out voices are chosen per synthesizer so every test
speaker is unseen in training; Flite, a synthesizer used in no training split, gives an extra
"unseen synthesizer" test split. Everything depends only on the seed: a planned utterance i of a split
is drawn from Random((seed, split, i)), files are written atomically and existing ones are kept, so an
interrupted run resumes and two runs with one seed give identical audio.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from w2vc.data.audio import SAMPLE_RATE, write_flac
from w2vc.data.grammar import sample_sentence
from w2vc.data.noise import NOISE_TYPES, make_noise, mix_at_snr

CORPUS_VERSION = 2  # 2: ked is trained too (at its train warps), dev has all three Festival voices
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-029", "en-us-nyc"]
# espeak-ng variants that still sound like speech (whisper/croak-style ones are dropped).
ESPEAK_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "klatt4", "klatt6", "Alex", "Andy", "Annie", "Denis",
                   "Gene", "Jacky", "Lee", "Mario", "Michael", "Mike", "Storm", "Tweaky", "adam", "anika",
                   "announcer", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed",
                   "edward", "iven", "iven2", "iven3", "john", "linda", "max", "michel", "norbert", "paul",
                   "pedro", "quincy", "rob", "robert", "shelby", "steph", "steph2", "travis", "victor"]
FESTIVAL_VOICES = {"kal": "voice_kal_diphone", "ked": "voice_ked_diphone", "slt": "voice_cmu_us_slt_arctic_hts"}
# A Festival speaker is a base voice with a vocal-tract warp; held-out warps are never trained. Debian ships
# only three English Festival voices, and a model trained on two of them did not generalise to the third
# (ked 36.5 % WER vs 9 % for kal/slt at held-out warps), so all three are trained, as espeak-ng's accents and
# variants are; wholly unseen speakers (Flite awb, rms) and an unseen synthesizer are measured on the Flite split.
FESTIVAL_TRAIN_WARPS = (0.86, 0.90, 0.94, 0.98, 1.02, 1.06, 1.10, 1.14)
FESTIVAL_DEV_WARPS = (0.92, 1.08)
FESTIVAL_TEST_WARPS = (0.88, 0.96, 1.0, 1.04, 1.12)
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
SNRS_DB = (20, 10, 5)


@dataclass(frozen=True)
class Speaker:
    id: int
    synth: str  # espeak | festival | flite
    voice: str
    rate: float  # espeak words/min; festival/flite duration stretch
    pitch: int  # espeak pitch 0..99; unused elsewhere
    warp: float  # resampling factor (vocal-tract length / pitch), 1.0 = none


@dataclass(frozen=True)
class SynthConfig:
    """Args:
        hours: total clean hours over train+dev+test (noisy copies come on top).
        seed: everything is a function of it.
        festival_share: fraction of utterances spoken by Festival speakers (rest espeak-ng).
        dev_fraction / test_fraction: of the hours, capped by dev_max_hours / test_max_hours.
        unseen_synth_utterances: size of the Flite-only split (0 disables it).
    """

    hours: float = 8.0
    seed: int = 0
    festival_share: float = 0.3
    dev_fraction: float = 0.05
    test_fraction: float = 0.1
    dev_max_hours: float = 0.15
    test_max_hours: float = 0.3
    unseen_synth_utterances: int = 150
    snrs_db: tuple[int, ...] = SNRS_DB
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))

    def __post_init__(self):
        if not self.hours > 0:
            raise ValueError(f"hours must be > 0, got {self.hours}")
        if not 0 <= self.festival_share <= 1:
            raise ValueError(f"festival_share must be in [0, 1], got {self.festival_share}")

    def key(self) -> dict:
        d = asdict(self)
        d.pop("workers")
        d["snrs_db"] = list(self.snrs_db)
        d["version"] = CORPUS_VERSION
        return d


def check_tools(festival: bool = True, flite: bool = True) -> None:
    missing = [t for t, need in (("espeak-ng", True), ("festival", festival), ("flite", flite))
               if need and shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"missing text-to-speech programs: {', '.join(missing)} "
                           "(install: apt-get install espeak-ng festival festvox-kallpc16k festvox-kdlpc16k "
                           "festvox-us-slt-hts flite)")


def _rng(*parts) -> random.Random:
    h = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


def build_speakers(seed: int) -> dict[str, list[Speaker]]:
    """Speakers per split; voices (espeak accent+variant, Festival voice+warp) never cross splits."""
    r = _rng(seed, "speakers")
    voices = [(a, v) for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    r.shuffle(voices)
    n_dev, n_test = int(0.07 * len(voices)), int(0.12 * len(voices))
    espeak_split = {"dev": voices[:n_dev], "test": voices[n_dev:n_dev + n_test],
                    "train": voices[n_dev + n_test:]}
    out: dict[str, list[Speaker]] = {"train": [], "dev": [], "test": [], "test_unseen_synth": []}
    next_id = {"train": 1000, "dev": 5000, "test": 7000, "test_unseen_synth": 9000}

    def add(split: str, **kw):
        out[split].append(Speaker(id=next_id[split], **kw))
        next_id[split] += 1

    for split in ("train", "dev", "test"):
        for accent, variant in espeak_split[split]:
            add(split, synth="espeak", voice=accent + (f"+{variant}" if variant else ""),
                rate=float(r.randint(135, 210)), pitch=r.randint(20, 80), warp=1.0)
    for voice in FESTIVAL_VOICES:
        for w in FESTIVAL_TRAIN_WARPS:
            for _ in range(2):
                add("train", synth="festival", voice=voice, rate=round(r.uniform(0.85, 1.25), 2), pitch=0, warp=w)
    for voice in FESTIVAL_VOICES:
        for w in FESTIVAL_DEV_WARPS:
            add("dev", synth="festival", voice=voice, rate=round(r.uniform(0.85, 1.25), 2), pitch=0, warp=w)
    for voice in FESTIVAL_VOICES:
        for w in FESTIVAL_TEST_WARPS:
            add("test", synth="festival", voice=voice, rate=round(r.uniform(0.85, 1.25), 2), pitch=0, warp=w)
    for voice in FLITE_VOICES:
        for w in (0.94, 1.0, 1.06):
            add("test_unseen_synth", synth="flite", voice=voice, rate=round(r.uniform(0.9, 1.2), 2), pitch=0, warp=w)
    return out


@dataclass(frozen=True)
class Planned:
    split: str
    index: int
    speaker: Speaker
    text: str  # lower case

    @property
    def utt_id(self) -> str:
        return f"{self.speaker.id}-1-{self.index:05d}"

    def relpath(self, split_dir: str | None = None) -> str:
        return f"{split_dir or self.split}/{self.speaker.id}/1/{self.utt_id}.flac"


def plan(split: str, index: int, speakers: list[Speaker], seed: int, festival_share: float) -> Planned:
    r = _rng(seed, split, index)
    if split == "test_unseen_synth":
        pool = speakers
    else:
        want = "festival" if r.random() < festival_share else "espeak"
        pool = [s for s in speakers if s.synth == want] or speakers
    return Planned(split, index, r.choice(pool), sample_sentence(r))


def _read_wav(path_or_bytes) -> np.ndarray:
    import io
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    x, sr = sf.read(src, dtype="float32", always_2d=False)
    if x.ndim == 2:
        x = x.mean(axis=1)
    return x, sr


def _finish(x: np.ndarray, sr: int, p: Planned) -> np.ndarray:
    """Warp, resample to 16 kHz, trim long silences, random lead/tail pad and level."""
    r = _rng("post", p.split, p.index, p.speaker.id)
    # Treating the audio as if sampled at sr*warp shifts pitch and formants (a different vocal tract).
    x = soxr.resample(x, sr * p.speaker.warp, SAMPLE_RATE, quality="HQ").astype(np.float32)
    env = np.abs(x)
    thr = env.max() * 0.01
    idx = np.nonzero(env > thr)[0]
    if idx.size:
        x = x[max(0, idx[0] - 800): idx[-1] + 800]
    lead, tail = (np.zeros(int(r.uniform(0.05, 0.35) * SAMPLE_RATE), np.float32) for _ in range(2))
    x = np.concatenate([lead, x, tail])
    return (x / (np.abs(x).max() + 1e-9) * r.uniform(0.3, 0.9)).astype(np.float32)


def _synth_espeak(p: Planned) -> np.ndarray:
    s = p.speaker
    r = _rng("prosody", p.split, p.index)
    cmd = ["espeak-ng", "-v", s.voice, "-s", str(int(s.rate + r.uniform(-10, 10))),
           "-p", str(int(np.clip(s.pitch + r.uniform(-5, 5), 0, 99))), "--stdout", p.text]
    wav = subprocess.run(cmd, check=True, capture_output=True).stdout
    return _read_wav(wav)


def _synth_festival_batch(items: list[Planned], tmp: Path) -> list[tuple[np.ndarray, int]]:
    lines = []
    for k, p in enumerate(items):
        text = p.text.replace('"', "")
        lines.append(f"({FESTIVAL_VOICES[p.speaker.voice]})")
        lines.append(f"(Parameter.set 'Duration_Stretch {p.speaker.rate})")
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{tmp}/{k}.wav" \'riff)')
    script = tmp / "batch.scm"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(["festival", "-b", str(script)], check=True, capture_output=True)
    return [_read_wav(str(tmp / f"{k}.wav")) for k in range(len(items))]


def _synth_flite(p: Planned, tmp: Path) -> np.ndarray:
    out = tmp / f"flite_{p.index}.wav"
    subprocess.run(["flite", "-voice", p.speaker.voice, "--setf", f"duration_stretch={p.speaker.rate}",
                    "-t", p.text, "-o", str(out)], check=True, capture_output=True)
    return _read_wav(str(out))


def synthesize_chunk(items: list[Planned], root: str) -> list[float]:
    """Synthesize and write each planned utterance (skipping files already there); return durations."""
    rootp = Path(root)
    durations: dict[int, float] = {}
    todo = []
    for p in items:
        f = rootp / p.relpath()
        if f.exists():
            durations[p.index] = sf.info(str(f)).frames / SAMPLE_RATE
        else:
            todo.append(p)
    with tempfile.TemporaryDirectory(prefix="w2vc-synth-") as td:
        tmp = Path(td)
        fest = [p for p in todo if p.speaker.synth == "festival"]
        fest_audio = dict(zip([p.index for p in fest], _synth_festival_batch(fest, tmp) if fest else []))
        for p in todo:
            if p.speaker.synth == "espeak":
                x, sr = _synth_espeak(p)
            elif p.speaker.synth == "festival":
                x, sr = fest_audio[p.index]
            else:
                x, sr = _synth_flite(p, tmp)
            y = _finish(x, sr, p)
            write_flac(rootp / p.relpath(), y)
            durations[p.index] = len(y) / SAMPLE_RATE
    return [durations[p.index] for p in items]


def _chunks(seq: list, n: int) -> Iterable[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _synth_split(split: str, target_s: float | None, count: int | None, speakers, cfg: SynthConfig,
                 root: Path, pool: ProcessPoolExecutor) -> list[tuple[Planned, float]]:
    """Plan utterances until the target duration (or count) is reached; keep exactly that prefix."""
    kept: list[tuple[Planned, float]] = []
    total, start = 0.0, 0
    bar = tqdm(total=round(target_s / 3600, 3) if target_s else count, desc=f"synth {split}",
               unit="h" if target_s else "utt", leave=False,
               bar_format="{l_bar}{bar}| {n:.2f}/{total} {unit} [{elapsed}<{remaining}]")
    while True:
        batch = target_s and max(64, int((target_s - total) / 2.5 * 1.1)) or (count - start)
        planned = [plan(split, i, speakers, cfg.seed, cfg.festival_share) for i in range(start, start + batch)]
        start += batch
        futures = [pool.submit(synthesize_chunk, c, str(root)) for c in _chunks(planned, 40)]
        done = False
        for c, fut in zip(_chunks(planned, 40), futures):
            for p, d in zip(c, fut.result()):
                if done:
                    (root / p.relpath()).unlink(missing_ok=True)  # overshoot of this round
                    continue
                kept.append((p, d))
                total += d
                bar.update(d / 3600 if target_s else 1)
                if (target_s and total >= target_s) or (count and len(kept) >= count):
                    done = True
        if done:
            bar.close()
            return kept


def _write_split(root: Path, split_dir: str, rows: list[dict]) -> None:
    by_chapter: dict[Path, list[str]] = {}
    for row in rows:
        chapter_dir = root / Path(row["path"]).parent
        by_chapter.setdefault(chapter_dir, []).append(f"{row['id']} {row['text']}")
    for chapter_dir, lines in by_chapter.items():
        spk, chap = chapter_dir.parent.name, chapter_dir.name
        (chapter_dir / f"{spk}-{chap}.trans.txt").write_text("\n".join(sorted(lines)) + "\n")
    (root / "manifests").mkdir(exist_ok=True)
    with open(root / "manifests" / f"{split_dir}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _noisy_copies(root: Path, test_rows: list[dict], cfg: SynthConfig) -> dict[str, list[dict]]:
    audio = {row["id"]: sf.read(str(root / row["path"]), dtype="float32")[0] for row in test_rows}
    ids = sorted(audio)
    out = {}
    for snr in cfg.snrs_db:
        split_dir = f"test_snr{snr}"
        rows = []
        for k, row in enumerate(tqdm(test_rows, desc=f"noise {snr} dB", leave=False)):
            rng = np.random.default_rng([cfg.seed, snr, k])
            kind = NOISE_TYPES[k % len(NOISE_TYPES)]
            others = [audio[i] for i in rng.choice(ids, size=min(8, len(ids)), replace=False) if i != row["id"]]
            x = audio[row["id"]]
            y = mix_at_snr(x, make_noise(kind, len(x), rng, others), snr)
            rel = row["path"].replace("test/", f"{split_dir}/", 1)
            write_flac(root / rel, y)
            rows.append({**row, "path": rel, "snr_db": snr, "noise": kind})
        _write_split(root, split_dir, rows)
        out[split_dir] = rows
    return out


def synthesize_corpus(out: str | os.PathLike, cfg: SynthConfig, progress: bool = True) -> dict:
    """Build (or find cached) the corpus under `out`; return its summary (also written to corpus.json)."""
    root = Path(out)
    meta_file = root / "corpus.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("config") == cfg.key():
            meta["cached"] = True
            return meta
        raise FileExistsError(f"{root} holds a corpus made with other settings; choose another --out "
                              "(nothing is deleted)")
    check_tools(festival=cfg.festival_share > 0, flite=cfg.unseen_synth_utterances > 0)
    root.mkdir(parents=True, exist_ok=True)
    speakers = build_speakers(cfg.seed)
    dev_s = min(cfg.hours * cfg.dev_fraction, cfg.dev_max_hours) * 3600
    test_s = min(cfg.hours * cfg.test_fraction, cfg.test_max_hours) * 3600
    train_s = cfg.hours * 3600 - dev_s - test_s
    rows: dict[str, list[dict]] = {}
    with ProcessPoolExecutor(cfg.workers) as pool:
        for split, secs, count in (("test", test_s, None), ("dev", dev_s, None), ("train", train_s, None),
                                   ("test_unseen_synth", None, cfg.unseen_synth_utterances)):
            if not (secs or count):
                continue
            kept = _synth_split(split, secs, count, speakers[split], cfg, root, pool)
            rows[split] = [{"id": p.utt_id, "path": p.relpath(), "text": p.text.upper(), "speaker": p.speaker.id,
                            "synth": p.speaker.synth, "voice": p.speaker.voice, "duration": round(d, 4)}
                           for p, d in kept]
            _write_split(root, split, rows[split])
    rows.update(_noisy_copies(root, rows["test"], cfg))
    speakers_json = {s.id: asdict(s) for ss in speakers.values() for s in ss}
    (root / "speakers.json").write_text(json.dumps(speakers_json, indent=1))
    summary = {}
    for split, rs in rows.items():
        summary[split] = {"hours": round(sum(r["duration"] for r in rs) / 3600, 4), "utterances": len(rs),
                          "speakers": len({r["speaker"] for r in rs}),
                          "voices": len({(r["synth"], r["voice"]) for r in rs}),
                          "synths": sorted({r["synth"] for r in rs})}
    train_voices = {(r["synth"], r["voice"], r["speaker"]) for r in rows["train"]}
    test_speakers = {r["speaker"] for r in rows["test"]}
    assert not test_speakers & {s for _, _, s in train_voices}, "test speakers leaked into train"
    meta = {"config": cfg.key(), "splits": summary, "cached": False}
    tmp = meta_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_file)  # written last: its presence means the corpus is complete
    return meta
