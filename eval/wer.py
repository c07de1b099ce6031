"""`w2vc wer`: score two Kaldi-style transcript files (the metric itself is w2vc.core.wer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from w2vc.core.wer import UtteranceError, WerResult, normalize, word_error_rate

__all__ = ["FileComparison", "UtteranceError", "WerResult", "compare_files", "normalize", "read_kaldi_text",
           "word_error_rate"]


def read_kaldi_text(path) -> dict[str, str]:
    """A Kaldi `text` file (`utt-id words...` per line) → {id: text}; an id alone means an empty text."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"transcript file not found: {p}")
    out: dict[str, str] = {}
    for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        uid, _, text = line.strip().partition(" ")
        if uid in out:
            raise ValueError(f"{p}: line {n}: duplicate utterance id {uid!r}")
        out[uid] = text.strip()
    return out


@dataclass
class FileComparison:
    """`w2vc wer` result: scores over the ids both files share, plus the ids found in only one file."""

    ref: str
    hyp: str
    result: WerResult
    only_in_ref: list[str]
    only_in_hyp: list[str]

    def to_dict(self, with_utterances: bool = False) -> dict:
        return {"ref": self.ref, "hyp": self.hyp, **self.result.to_dict(with_utterances),
                "only_in_ref": self.only_in_ref, "only_in_hyp": self.only_in_hyp}


def compare_files(ref_path, hyp_path) -> FileComparison:
    """Score two Kaldi-style files on their common ids (in reference order)."""
    ref, hyp = read_kaldi_text(ref_path), read_kaldi_text(hyp_path)
    common = [u for u in ref if u in hyp]
    if not common:
        raise ValueError(f"{ref_path} and {hyp_path} share no utterance id "
                         f"({len(ref)} vs {len(hyp)} ids)")
    res = word_error_rate(common, [ref[u] for u in common], [hyp[u] for u in common])
    return FileComparison(str(ref_path), str(hyp_path), res, [u for u in ref if u not in hyp],
                          [u for u in hyp if u not in ref])
