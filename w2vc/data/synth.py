"""Offline speech corpus (v3): the command grammar spoken by espeak-ng, Festival and Piper (neural) voices,
noisy test copies, and long-form material (train streams and crops, dev_long/test_long recordings).

Speakers are (synthesizer, voice, prosody). Held-out voices are chosen per synthesizer so every dev/test
speaker is unseen in training; Flite, a synthesizer used in no training split, gives an extra
"unseen synthesizer" test split. Piper has one bundled voice: its speakers differ by a resampling warp
(pitch and formants, tempo compensated), a formant-only warp and VITS length/noise scales, and the warps
of dev/test are never trained. Everything depends only on the seed: a planned utterance i of a split is
drawn from Random((seed, split, i)), files are written atomically and existing ones are kept, so an
interrupted run resumes and two runs with one seed give identical audio.

`hours` counts distinct synthesized speech (single utterances of train+dev+test). Long-form items
(w2vc.data.longform) re-arrange that audio and come on top, like the noisy copies: train streams and
crops add train_stream_share + train_crop_share of the train hours to train.jsonl (rows with kind
"stream"/"crop"; single utterances have kind "utt"), dev_long/test_long re-use the dev/test audio.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from w2vc.core.util import write_json_atomic
from w2vc.data import longform, neural_tts
from w2vc.data.audio import SAMPLE_RATE, write_flac
from w2vc.data.augment import formant_warp
from w2vc.data.grammar import sample_sentence
from w2vc.data.noise import NOISE_TYPES, make_noise, mix_at_snr

# 2: ked is trained too (at its train warps), dev has all three Festival voices
# 3: Piper speakers; speech regions; train streams/crops; dev_long/test_long
CORPUS_VERSION = 3
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
# Piper speakers: (warp, formant) of the one bundled voice. No dev/test warp is a train warp.
PIPER_TRAIN_WARPS = (0.84, 0.92, 1.0, 1.08, 1.16)
PIPER_TRAIN_FORMANTS = (0.9, 0.96, 1.04, 1.1)
PIPER_DEV_VOICES = ((0.88, 1.0), (1.04, 0.93), (1.12, 1.07))
PIPER_TEST_VOICES = ((0.88, 1.07), (0.96, 0.93), (0.96, 1.0), (1.04, 1.07), (1.12, 0.96))


@dataclass(frozen=True)
class Speaker:
    id: int
    synth: str  # espeak | festival | flite
    voice: str
    rate: float  # espeak words/min; festival/flite duration stretch; piper length scale
    pitch: int  # espeak pitch 0..99; unused elsewhere
    warp: float  # resampling factor (vocal-tract length / pitch), 1.0 = none
    formant: float = 1.0  # formant-only warp after the resampling (piper), 1.0 = none
    noise_scale: float = 0.0  # piper VITS noise scales (prosody / duration variation)
    noise_w: float = 0.0


@dataclass(frozen=True)
class SynthConfig:
    """Args:
        hours: total clean hours of distinct utterances over train+dev+test (noisy copies and long-form
            items are re-arrangements of that audio and come on top).
        seed: everything is a function of it.
        festival_share / piper_share: fractions of utterances spoken by Festival / Piper speakers (rest
            espeak-ng); the Flite split is separate.
        dev_fraction / test_fraction: of the hours, capped by dev_max_hours / test_max_hours.
        unseen_synth_utterances: size of the Flite-only split (0 disables it).
        train_stream_share / train_crop_share: duration of train streams / crops as a fraction of the train
            utterance hours, made from that same audio (on top of `hours`). At 0.15 each, train.jsonl holds
            1.3× the train utterance hours, 23 % of it long-form: enough to learn boundaries and cut-off
            words, little enough that single utterances keep most of the gradient (a stream-only
            fine-tune doubled single-utterance WER here).
        stream_seconds / crop_seconds: length ranges of one stream / crop.
        long_min_s / long_max_s: length range of a dev_long/test_long recording; a split too small for one
            recording of long_min_s gets none (recorded in corpus.json).
        dev_long_recordings / test_long_recordings: how many recordings, at most (each utterance once).
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
    piper_share: float = 0.2
    train_stream_share: float = 0.15
    train_crop_share: float = 0.15
    stream_seconds: tuple[float, float] = (4.0, 16.0)
    crop_seconds: tuple[float, float] = (2.0, 10.0)
    long_min_s: float = 60.0
    long_max_s: float = 150.0
    dev_long_recordings: int = 4
    test_long_recordings: int = 10
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))

    def __post_init__(self):
        if not self.hours > 0:
            raise ValueError(f"hours must be > 0, got {self.hours}")
        for name in ("festival_share", "piper_share", "train_stream_share", "train_crop_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.festival_share + self.piper_share > 1:
            raise ValueError(f"festival_share + piper_share must be <= 1, got {self.festival_share} + "
                             f"{self.piper_share}")
        for name in ("stream_seconds", "crop_seconds"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if not 0 < self.long_min_s <= self.long_max_s:
            raise ValueError(f"need 0 < long_min_s <= long_max_s, got {self.long_min_s}, {self.long_max_s}")

    def key(self) -> dict:
        d = asdict(self)
        d.pop("workers")
        d.update({k: list(v) for k, v in d.items() if isinstance(v, tuple)})  # as corpus.json reads back
        d["version"] = CORPUS_VERSION
        return d


def check_tools(festival: bool = True, flite: bool = True, piper: bool = False) -> None:
    missing = [t for t, need in (("espeak-ng", True), ("festival", festival), ("flite", flite))
               if need and shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"missing text-to-speech programs: {', '.join(missing)} "
                           "(install: apt-get install espeak-ng festival festvox-kallpc16k festvox-kdlpc16k "
                           "festvox-us-slt-hts flite)")
    if piper and not neural_tts.piper_available():
        raise RuntimeError(f"missing Piper text-to-speech ({neural_tts.PIPER_INSTALL}, or ./setup.sh; "
                           "piper_share=0 builds without it)")


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
    piper_voices = {"train": [(w, f) for w in PIPER_TRAIN_WARPS for f in PIPER_TRAIN_FORMANTS for _ in range(2)],
                    "dev": list(PIPER_DEV_VOICES), "test": list(PIPER_TEST_VOICES)}
    for split, voices in piper_voices.items():  # drawn after the others: their speakers stay as in v2
        for w, f in voices:
            add(split, synth="piper", voice=f"joe+w{w:.2f}+f{f:.2f}", rate=round(r.uniform(0.85, 1.2), 3), pitch=0,
                warp=w, formant=f, noise_scale=round(r.uniform(0.4, 0.9), 3), noise_w=round(r.uniform(0.4, 1.0), 3))
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


def plan(split: str, index: int, speakers: list[Speaker], seed: int, festival_share: float,
         piper_share: float = 0.0) -> Planned:
    r = _rng(seed, split, index)
    if split == "test_unseen_synth":
        pool = speakers
    else:
        u = r.random()  # one draw, as in v2: with piper_share 0 the plan is v2's
        want = "festival" if u < festival_share else "piper" if u < festival_share + piper_share else "espeak"
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
    if p.speaker.formant != 1.0:
        x = formant_warp(x, p.speaker.formant)
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


def _synth_piper(p: Planned) -> tuple[np.ndarray, int]:
    """The speaker's length scale (× warp, which the resampling in _finish undoes: tempo is kept) ±5 %."""
    s = p.speaker
    r = _rng("prosody", p.split, p.index)
    return neural_tts.synthesize(p.text, seed=r.getrandbits(31), length_scale=s.rate * s.warp * r.uniform(0.95, 1.05),
                                 noise_scale=s.noise_scale, noise_w=s.noise_w)


def _measured(y: np.ndarray) -> tuple[float, tuple[float, float]]:
    s0, s1 = longform.speech_region(y)
    return len(y) / SAMPLE_RATE, (round(s0 / SAMPLE_RATE, 4), round(s1 / SAMPLE_RATE, 4))


def synthesize_chunk(items: list[Planned], root: str) -> list[tuple[float, tuple[float, float]]]:
    """Synthesize and write each planned utterance (skipping files already there); return (duration,
    speech region in seconds) of each."""
    rootp = Path(root)
    durations: dict[int, tuple] = {}
    todo = []
    for p in items:
        f = rootp / p.relpath()
        if f.exists():
            durations[p.index] = _measured(sf.read(str(f), dtype="float32")[0])
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
            elif p.speaker.synth == "piper":
                x, sr = _synth_piper(p)
            else:
                x, sr = _synth_flite(p, tmp)
            y = _finish(x, sr, p)
            write_flac(rootp / p.relpath(), y)
            # measured on what the file holds (16 bit), as a resumed run measures it
            durations[p.index] = _measured(sf.read(str(rootp / p.relpath()), dtype="float32")[0])
    return [durations[p.index] for p in items]


def _synth_split(split: str, target_s: float | None, count: int | None, speakers, cfg: SynthConfig,
                 root: Path, pool: ProcessPoolExecutor) -> list[tuple[Planned, tuple]]:
    """Plan utterances until the target duration (or count) is reached; keep exactly that prefix.

    The prefix does not depend on how the plan is cut into rounds and chunks (each utterance is a function
    of (seed, split, index)), so rounds are sized to overshoot the target only a little."""
    kept: list[tuple[Planned, tuple]] = []
    total, start = 0.0, 0
    bar = tqdm(total=round(target_s / 3600, 3) if target_s else count, desc=f"synth {split}",
               unit="h" if target_s else "utt", leave=False,
               bar_format="{l_bar}{bar}| {n:.2f}/{total} {unit} [{elapsed}<{remaining}]")
    while True:
        batch = target_s and max(4, int((target_s - total) / 2.5 * 1.1)) or (count - start)
        planned = [plan(split, i, speakers, cfg.seed, cfg.festival_share, cfg.piper_share)
                   for i in range(start, start + batch)]
        start += batch
        # chunks dealt round-robin from the plan sorted by synthesizer: each gets its share of the slow
        # (Piper, Festival) utterances, so no worker is left with most of them
        n_chunks = min(batch, max(cfg.workers, -(-batch // 40)))
        by_synth = sorted(planned, key=lambda p: (p.speaker.synth, p.index))
        chunks = [by_synth[k::n_chunks] for k in range(n_chunks)]
        futures = {pool.submit(synthesize_chunk, c, str(root)): c for c in chunks}
        results = {}
        for fut in as_completed(futures):  # the bar moves per finished chunk, not per round
            chunk_results = fut.result()
            results.update((p.index, d) for p, d in zip(futures[fut], chunk_results))
            step = sum(d[0] for d in chunk_results) / 3600 if target_s else len(chunk_results)
            bar.update(min(step, bar.total - bar.n))
        done = False
        for p in planned:
            d = results[p.index]
            if done:
                (root / p.relpath()).unlink(missing_ok=True)  # overshoot of this round
                continue
            kept.append((p, d))
            total += d[0]
            if (target_s and total >= target_s) or (count and len(kept) >= count):
                done = True
        bar.n = min(total / 3600 if target_s else len(kept), bar.total)  # what was kept (rounds overshoot)
        bar.refresh()
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


def _check_held_out(rows: dict[str, list[dict]], speakers: dict[str, list[Speaker]]) -> None:
    """No dev/test voice is a train voice; long recordings use only their own split's utterances."""
    by_id = {s.id: s for ss in speakers.values() for s in ss}

    def voice(spk):
        s = by_id[spk]
        return s.synth, s.voice, s.warp, s.formant

    train = {voice(s) for r in rows["train"] for s in r.get("speakers", [r["speaker"]])}
    for split in ("dev", "test", "test_unseen_synth"):
        held = {voice(r["speaker"]) for r in rows.get(split, [])}
        assert not held & train, f"{split} voices leaked into train: {sorted(held & train)[:3]}"
    for split in ("dev_long", "test_long"):
        src = rows.get(split.removesuffix("_long"), [])
        ids, spks = {r["id"] for r in src}, {r["speaker"] for r in src}
        for r in rows.get(split, []):
            assert set(r["parts"]) <= ids and set(r["speakers"]) <= spks, f"{r['id']}: parts from outside {split}"
    for r in rows["train"]:
        assert set(r.get("speakers", [r["speaker"]])) <= {s.id for s in speakers["train"]}, r["id"]


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
    check_tools(festival=cfg.festival_share > 0, flite=cfg.unseen_synth_utterances > 0, piper=cfg.piper_share > 0)
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
                            "synth": p.speaker.synth, "voice": p.speaker.voice, "duration": round(d, 4),
                            "kind": "utt", "speech": list(region)}
                           for p, (d, region) in kept]
            _write_split(root, split, rows[split])
        rows.update(_noisy_copies(root, rows["test"], cfg))
        notes = longform.build(root, rows, cfg, pool)
    for split in ("train", "dev_long", "test_long"):
        if split in rows:
            _write_split(root, split, rows[split])
    _check_held_out(rows, speakers)
    speakers_json = {s.id: asdict(s) for ss in speakers.values() for s in ss}
    (root / "speakers.json").write_text(json.dumps(speakers_json, indent=1))
    summary = {}
    for split, rs in rows.items():
        talkers = {s for r in rs for s in r.get("speakers", [r["speaker"]])}  # a long item counts its parts'
        summary[split] = {"hours": round(sum(r["duration"] for r in rs) / 3600, 4), "utterances": len(rs),
                          "speakers": len(talkers),
                          "voices": len({(speakers_json[s]["synth"], speakers_json[s]["voice"]) for s in talkers}),
                          "synths": sorted({x for r in rs for x in r.get("synths", [r["synth"]])})}
        kinds = {}
        for r in rs:
            kinds[r.get("kind", "utt")] = kinds.get(r.get("kind", "utt"), 0.0) + r["duration"] / 3600
        if len(kinds) > 1 or "utt" not in kinds:
            summary[split]["kinds"] = {k: round(v, 4) for k, v in kinds.items()}
        if split.endswith("_long"):
            summary[split]["seconds"] = [round(min(r["duration"] for r in rs), 1), round(max(r["duration"] for r in rs), 1)]
    train_h = summary["train"]["hours"]
    long_h = sum(v for k, v in summary["train"].get("kinds", {}).items() if k != "utt")
    meta = {"config": cfg.key(), "splits": summary,
            "long_form": {"train_share": round(long_h / train_h, 4) if train_h else 0.0, **notes}, "cached": False}
    write_json_atomic(meta_file, meta)  # written last: its presence means the corpus is complete
    return meta
