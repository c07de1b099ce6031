"""WER/CER against an independent Levenshtein, on random Kaldi-style files the code never saw; `w2vc wer`."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from w2vc.eval.wer import compare_files, read_kaldi_text, word_error_rate


def levenshtein(a: list, b: list) -> int:
    """Plain dynamic programme, written here so the test does not trust jiwer."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def canon(text: str) -> str:
    """The documented normalizer, re-stated: upper case, non [A-Z0-9'] → space, spaces folded."""
    return " ".join(re.sub(r"[^A-Z0-9']", " ", text.upper()).split())


def _random_pair(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    ref = [rng.choice(vocab) for _ in range(rng.randint(0, 12))]
    hyp = []
    for w in ref:  # random substitutions, deletions and insertions
        r = rng.random()
        if r < 0.1:
            continue
        hyp.append(rng.choice(vocab) if r < 0.25 else w)
        if rng.random() < 0.08:
            hyp.append(rng.choice(vocab))
    if rng.random() < 0.1:
        hyp = [rng.choice(vocab) for _ in range(rng.randint(0, 5))]
    # cosmetic noise the normalizer must remove: lower case and punctuation
    text = " ".join(w.lower() if rng.random() < 0.3 else w for w in hyp)
    if text and rng.random() < 0.3:
        text += rng.choice([".", "?", " ,", "!"])
    return " ".join(ref), text


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_wer_matches_independent_levenshtein(tmp_path, seed):
    rng = random.Random(seed)
    vocab = ["".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWY'") for _ in range(rng.randint(1, 7)))
             for _ in range(rng.randint(3, 40))]
    ids = [f"spk{seed}-{i:04d}" for i in range(rng.randint(5, 60))]
    pairs = {u: _random_pair(rng, vocab) for u in ids}
    only_ref, only_hyp = [f"r-only-{i}" for i in range(rng.randint(0, 3))], [f"h-only-{i}" for i in range(2)]
    ref_lines = [f"{u} {pairs[u][0]}".rstrip() for u in ids] + [f"{u} A B" for u in only_ref]
    hyp_lines = [f"{u} {pairs[u][1]}".rstrip() for u in ids] + [f"{u} C" for u in only_hyp]
    rng.shuffle(hyp_lines)  # order must not matter
    (tmp_path / "ref").write_text("\n".join(ref_lines) + "\n")
    (tmp_path / "hyp").write_text("\n".join(hyp_lines) + "\n\n")

    c = compare_files(tmp_path / "ref", tmp_path / "hyp")

    refs = [canon(pairs[u][0]) for u in ids]
    hyps = [canon(pairs[u][1]) for u in ids]
    word_errs = [levenshtein(r.split(), h.split()) for r, h in zip(refs, hyps)]
    n_words = sum(len(r.split()) for r in refs)
    char_errs = sum(levenshtein(list(r), list(h)) for r, h in zip(refs, hyps))
    n_chars = sum(len(r) for r in refs)
    res = c.result
    assert res.utterances == len(ids)
    assert res.ref_words == n_words
    assert res.wer == pytest.approx(sum(word_errs) / max(n_words, 1), abs=1e-12)
    assert res.cer == pytest.approx(char_errs / max(n_chars, 1), abs=1e-12)
    assert res.substitutions + res.deletions + res.insertions == sum(word_errs)
    assert res.hits + res.substitutions + res.deletions == n_words
    assert [u.errors for u in res.per_utterance] == word_errs
    assert [u.id for u in res.per_utterance] == ids
    assert sorted(c.only_in_ref) == sorted(only_ref) and sorted(c.only_in_hyp) == sorted(only_hyp)


def test_empty_reference_counts_insertions():
    r = word_error_rate(["a", "b"], ["ONE TWO", ""], ["ONE TWO", "X Y Z"])
    assert (r.insertions, r.ref_words, r.wer) == (3, 2, 1.5)


def test_read_kaldi_text_rejects_duplicates_and_keeps_empty(tmp_path):
    f = tmp_path / "t"
    f.write_text("u1 HELLO  WORLD \nu2\n")
    assert read_kaldi_text(f) == {"u1": "HELLO  WORLD", "u2": ""}
    f.write_text("u1 A\nu1 B\n")
    with pytest.raises(ValueError, match="line 2: duplicate utterance id 'u1'"):
        read_kaldi_text(f)


def _w2vc(*args, cwd):
    return subprocess.run([sys.executable, "-m", "w2vc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_wer_cli(tmp_path):
    (tmp_path / "ref").write_text("a THE CAT SAT\nb TURN ON THE LIGHTS\nc ONLY REF\n")
    (tmp_path / "hyp").write_text("a the cat sat.\nb TURN OFF LIGHTS\nz ONLY HYP\n")
    p = _w2vc("wer", "--ref", "ref", "--hyp", "hyp", "--json", "out.json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    # b: ON→OFF substitution + THE deleted = 2 errors over 7 reference words
    assert "WER 28.57 %" in p.stdout
    assert "1 sub, 1 del, 0 ins" in p.stdout
    assert "utterances compared: 2" in p.stdout
    assert "only in ref (1, not scored): c" in p.stdout and "only in hyp (1, not scored): z" in p.stdout
    d = json.loads((tmp_path / "out.json").read_text())
    assert d["wer"] == pytest.approx(2 / 7) and d["only_in_ref"] == ["c"] and d["only_in_hyp"] == ["z"]
    assert [u["errors"] for u in d["per_utterance"]] == [0, 2]


def test_wer_cli_missing_file_is_one_line(tmp_path):
    (tmp_path / "ref").write_text("a X\n")
    p = _w2vc("wer", "--ref", "ref", "--hyp", "nope", cwd=tmp_path)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == ["w2vc wer: error: FileNotFoundError: transcript file not found: nope"]
