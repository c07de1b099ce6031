"""Why chunked long-form inference fails where single utterances pass: WER of the same utterances under
each input change a window of a long recording makes, one at a time.

A window is normalised as a whole (HF pipeline, `w2vc.core.chunking`), so the speech in it leaves unit
variance — pauses raise it, a quieter neighbour lowers it — and the window holds silence besides speech.
Training normalises each utterance (0.1 s margins), so neither happens there. Conditions:
  alone         normalised utterance (= `w2vc eval`)
  gain_<G>dB    normalised, then scaled by G dB (the level a window gives the speech)
  pad_whole     `pad_seconds` of silence each side, normalised as a whole (what the pipeline hands the model)
  pad_unit      the same silence, the speech kept at unit variance (the silence alone)
  lead_<S>s     S seconds of silence before the speech only (unit variance): speech not at the input's start
  after_other   another test utterance, `gap_seconds` of silence, then this one (each at unit variance),
                scored on both transcripts: what every window of a long recording holds
Measured 2026-12-03, 60 test utterances: the layer-norm teacher v2-1 alone 5.45 %, x0.1 99.8 %, pad_whole 17.8 %,
pad_unit 10.5 %, lead_1s 10.71 % (1 s after the end instead: 6.67 %), after_other 16.57 %; the group-norm
student alone 7.07 %, x0.1 7.07 % (its CNN is level-invariant), pad 62.6 %.

    python -m w2vc.eval.robustness --model models/teacher-large-s-v2 --data data/corpus --limit 60
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from w2vc.core.runnable import Transcriber, normalize_audio
from w2vc.core.wer import word_error_rate
from w2vc.data.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Condition:
    name: str
    gain_db: float = 0.0
    pad_seconds: float = 0.0
    normalize_whole: bool = True  # with padding: normalise speech + silence together (else the speech alone)
    lead_seconds: float = 0.0  # silence before the (unit-variance) speech only
    after_other: bool = False  # `other` (unit variance), gap_seconds of silence, then the speech
    gap_seconds: float = 0.4

    def apply(self, x: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
        pad = np.zeros(int(round(self.pad_seconds * SAMPLE_RATE)), np.float32)
        if self.after_other:
            if other is None:
                raise ValueError(f"condition {self.name} needs the other utterance")
            gap = np.zeros(int(round(self.gap_seconds * SAMPLE_RATE)), np.float32)
            y = np.concatenate([normalize_audio(other), gap, normalize_audio(x)])
        elif self.lead_seconds:
            y = np.concatenate([np.zeros(int(round(self.lead_seconds * SAMPLE_RATE)), np.float32), normalize_audio(x)])
        elif self.normalize_whole:
            y = normalize_audio(np.concatenate([pad, x, pad]))
        else:
            y = np.concatenate([pad, normalize_audio(x), pad])
        return (y * np.float32(10 ** (self.gain_db / 20))).astype(np.float32)


def conditions(gains_db: Sequence[float] = (-20.0, -6.0, 6.0), pad_seconds: float = 3.5,
               lead_seconds: float = 1.0) -> list[Condition]:
    out = [Condition("alone")]
    out += [Condition(f"gain_{g:+g}dB", gain_db=g) for g in gains_db]
    out += [Condition("pad_whole", pad_seconds=pad_seconds),
            Condition("pad_unit", pad_seconds=pad_seconds, normalize_whole=False),
            Condition(f"lead_{lead_seconds:g}s", lead_seconds=lead_seconds),
            Condition("after_other", after_other=True)]
    return out


def prepared_logits(transcriber: Transcriber, x: np.ndarray) -> np.ndarray:
    """Logits [T, V] of one input used as given: no normalisation (the condition made the input)."""
    mask = np.ones((1, len(x)), np.int64)
    return transcriber.logits(x[None], mask if transcriber.uses_attention_mask else None)[0]


def transcribe_prepared(transcriber: Transcriber, x: np.ndarray) -> str:
    lg = prepared_logits(transcriber, x)
    return transcriber.decode(lg[None], [len(lg)])[0]


def probe(transcriber: Transcriber, ids: list[str], refs: list[str], audio: Sequence[np.ndarray],
          conds: Sequence[Condition] | None = None, progress: bool = False) -> dict[str, float]:
    """Condition name → corpus WER of the utterances under it (after_other: utterance k follows k+1, both
    transcripts scored)."""
    conds = list(conds or conditions())
    out = {}
    it = conds
    if progress:
        from tqdm import tqdm
        it = tqdm(conds, desc="conditions", unit="cond", leave=False)
    for c in it:
        nxt = [(k + 1) % len(audio) for k in range(len(audio))]
        hyps = [transcribe_prepared(transcriber, c.apply(x, audio[j])) for x, j in zip(audio, nxt)]
        want = [f"{refs[j]} {r}" for r, j in zip(refs, nxt)] if c.after_other else list(refs)
        out[c.name] = word_error_rate(ids, want, hyps).wer
    return out


def main(argv: list[str] | None = None) -> int:
    from w2vc.core.load import load
    from w2vc.data.datasets import DatasetError, load_dataset, resolve_split

    p = argparse.ArgumentParser(prog="python -m w2vc.eval.robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="corpus root or manifest")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pad-seconds", type=float, default=3.5)
    a = p.parse_args(argv)
    try:
        ds = load_dataset(resolve_split(a.data, a.split), limit=a.limit, progress=True)
        t = load(a.model, threads=a.threads)
    except (DatasetError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    wers = probe(t, ds.ids, ds.texts, ds.audio, conditions(pad_seconds=a.pad_seconds), progress=True)
    print(f"model {a.model}  data {a.data} ({a.split}, {len(ds)} utterances)")
    for name, w in wers.items():
        print(f"{name:14s} WER {100 * w:6.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
