"""The long-form check of the models-v2 issue through plain transformers, with no w2vc import: the model's
WER on a corpus's long recordings with `pipeline(..., chunk_length_s=C)` against its per-utterance WER on the
very same speech (the recordings' `parts`), scored with jiwer.

    python experiments/scale/hf_long_check.py --model models/teacher-large-s --data data/corpus3 --chunk 10

Reads `<data>/manifests/<split>_long.jsonl` (rows: id, path, text, parts) and `<split>.jsonl`; paths are
relative to the corpus root. Prints one JSON line per figure and a summary line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import jiwer
import soundfile as sf
from tqdm import tqdm
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor, pipeline


def normalize(text: str) -> str:
    """Upper case, only letters, digits and apostrophes, single spaces (what w2vc's WER scores)."""
    return re.sub(r"\s+", " ", re.sub(r"[^A-Z0-9'\s]", " ", text.upper())).strip()


def rows(manifest: Path) -> list[dict]:
    return [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]


def read(root: Path, path: str):
    x, sr = sf.read(str(root / path), dtype="float32")
    if sr != 16000:
        sys.exit(f"{path}: {sr} Hz; this check expects the corpus's 16 kHz audio")
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="model directory (transformers format)")
    ap.add_argument("--data", required=True, help="corpus root with manifests/<split>_long.jsonl")
    ap.add_argument("--split", default="test")
    ap.add_argument("--chunk", type=float, default=10.0, help="chunk_length_s (stride: the pipeline's default)")
    a = ap.parse_args()
    root = Path(a.data)
    long_rows = rows(root / "manifests" / f"{a.split}_long.jsonl")
    by_id = {r["id"]: r for r in rows(root / "manifests" / f"{a.split}.jsonl")}
    model = Wav2Vec2ForCTC.from_pretrained(a.model).eval()
    proc = Wav2Vec2Processor.from_pretrained(a.model)
    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=proc.tokenizer,
                   feature_extractor=proc.feature_extractor, device="cpu")

    t0 = time.perf_counter()
    refs, hyps = [], []
    for r in tqdm(long_rows, desc=f"long, {a.chunk:g} s chunks"):
        refs.append(r["text"])
        hyps.append(asr(read(root, r["path"]), chunk_length_s=a.chunk)["text"])
    long_s = time.perf_counter() - t0
    part_refs, part_hyps = [], []
    for r in tqdm([by_id[p] for lr in long_rows for p in lr["parts"]], desc="per utterance"):
        part_refs.append(r["text"])
        part_hyps.append(asr(read(root, r["path"]))["text"])
    wer_long = jiwer.wer([normalize(t) for t in refs], [normalize(t) for t in hyps])
    wer_parts = jiwer.wer([normalize(t) for t in part_refs], [normalize(t) for t in part_hyps])
    out = {"model": a.model, "data": a.data, "split": f"{a.split}_long", "recordings": len(long_rows),
           "chunk_length_s": a.chunk, "wer_long": round(wer_long, 5), "wer_parts": round(wer_parts, 5),
           "utterances": len(part_refs), "ratio": round(wer_long / wer_parts, 4) if wer_parts else None,
           "long_seconds": round(long_s, 1), "w2vc_imported": "w2vc" in sys.modules}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
