"""WER / CER with jiwer over one documented normalizer: the one definition the trainer (checkpoint
selection) and eval (reports) share.

Normalizer (LibriSpeech style): upper case; every character that is not a letter, digit, apostrophe or
whitespace becomes a space; whitespace folded to single spaces; stripped. References and hypotheses go
through the same function, so a model that emits "what's" and a reference "WHAT'S" agree.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import jiwer

_NON_WORD = re.compile(r"[^A-Z0-9'\s]")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text.upper())).strip()


@dataclass
class UtteranceError:
    id: str
    ref: str
    hyp: str
    errors: int
    ref_words: int


@dataclass
class WerResult:
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_words: int
    utterances: int
    per_utterance: list[UtteranceError] = field(default_factory=list)

    def to_dict(self, with_utterances: bool = False) -> dict:
        d = asdict(self)
        if not with_utterances:
            d.pop("per_utterance")
        return d


def word_error_rate(ids: list[str], refs: list[str], hyps: list[str]) -> WerResult:
    """Corpus-level WER/CER (errors summed over utterances, not averaged per utterance)."""
    if not (len(ids) == len(refs) == len(hyps)):
        raise ValueError("ids, refs and hyps must have equal length")
    if not refs:
        raise ValueError("no utterances to score")
    r = [normalize(t) for t in refs]
    h = [normalize(t) for t in hyps]
    # jiwer refuses empty references; score such utterances by hand (every hyp word is an insertion).
    keep = [i for i, t in enumerate(r) if t]
    extra_ins = sum(len(h[i].split()) for i in range(len(r)) if not r[i])
    extra_char_ins = sum(len(h[i]) for i in range(len(r)) if not r[i])
    if keep:
        out = jiwer.process_words([r[i] for i in keep], [h[i] for i in keep])
        s, d, ins, hits = out.substitutions, out.deletions, out.insertions, out.hits
        cout = jiwer.process_characters([r[i] for i in keep], [h[i] for i in keep])
        c_err = cout.substitutions + cout.deletions + cout.insertions
        c_ref = cout.substitutions + cout.deletions + cout.hits
        per_utt_err = {keep[j]: sum(1 for a in al if a.type != "equal" for _ in range(
            max(a.ref_end_idx - a.ref_start_idx, a.hyp_end_idx - a.hyp_start_idx)))
            for j, al in enumerate(out.alignments)}
    else:
        s = d = ins = hits = c_err = c_ref = 0
        per_utt_err = {}
    ins += extra_ins
    c_err += extra_char_ins
    n_ref = s + d + hits
    per = []
    for i, uid in enumerate(ids):
        errs = per_utt_err.get(i, len(h[i].split()))
        per.append(UtteranceError(uid, r[i], h[i], errs, len(r[i].split())))
    return WerResult(wer=(s + d + ins) / max(n_ref, 1), cer=c_err / max(c_ref, 1), substitutions=s,
                     deletions=d, insertions=ins, hits=hits, ref_words=n_ref, utterances=len(ids),
                     per_utterance=per)
