"""Bodies of `w2vc wer` and `w2vc eval` (w2vc/cli.py holds only their argument parsers)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from w2vc.core.util import write_json as _write_json


def run_wer(a) -> int:
    from w2vc.eval.wer import compare_files

    c = compare_files(a.ref, a.hyp)
    r = c.result
    print(f"WER {100 * r.wer:.2f} %  CER {100 * r.cer:.2f} %  "
          f"({r.substitutions} sub, {r.deletions} del, {r.insertions} ins over {r.ref_words} reference words)")
    print(f"utterances compared: {r.utterances}")
    for label, ids in (("only in ref", c.only_in_ref), ("only in hyp", c.only_in_hyp)):
        if ids:
            shown = " ".join(ids[:10]) + (f" ... (+{len(ids) - 10} more)" if len(ids) > 10 else "")
            print(f"{label} ({len(ids)}, not scored): {shown}")
    _write_json(a.json, c.to_dict(with_utterances=True))
    return 0


def run_eval(a) -> int:
    from w2vc.data.datasets import manifest_column
    from w2vc.eval.evaluate import by_table, evaluate_model, find_eval_sets, log_eval, sets_summary
    from w2vc.eval.tracking import DEFAULT_URI

    # read before the model loads, so a missing column fails fast; used once the sets are scored
    columns = {str(s.path): manifest_column(s.path, a.by) for s in find_eval_sets(a.data, a.split, a.noisy)} \
        if a.by else {}
    progress = sys.stderr.isatty()
    res = evaluate_model(a.model, a.data, noisy=a.noisy, split=a.split, limit=a.limit, threads=a.threads,
                         progress=progress, bf16=a.bf16, long=_long_options(a))
    threads = f"threads {res.threads}" if res.threads else "default threads"
    print(f"model {res.model} ({res.runtime}, {threads})  data {res.data} (split {res.split}"
          f"{f', limit {res.limit}' if res.limit else ''})  {res.wall_seconds:.1f} s")
    print(res.table())
    by = {s.name: s.wer_by(columns[s.path]) for s in res.sets} if a.by else {}
    if by:
        print(by_table(a.by, by))
    if res.long is not None:
        print(res.long.table())
    note = sets_summary(res.sets)
    if note:
        print(note)
    if not a.no_mlflow:
        logged = log_eval(res, experiment=a.experiment)
        if logged.run_id:
            uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)
            print(f"MLflow run {logged.run_id} (experiment {a.experiment}, {uri}); figures also in "
                  f"{logged.local_json}")
    if a.transcripts:
        out = Path(a.transcripts)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in res.text_artifacts().items():
            (out / name).write_text(text)
        print(f"wrote transcripts to {out}/")
    _write_json(a.json, {**res.to_dict(), **({"by": {a.by: by}} if by else {})})
    return 0


def _long_options(a):
    """`--long` flags → LongOptions (None without --long); a bad chunk/stride fails before the model loads."""
    if not getattr(a, "long", False):
        if getattr(a, "long_unchunked", False) or getattr(a, "stride_seconds", None) is not None:
            raise ValueError("--stride-seconds / --long-unchunked apply with --long")
        return None
    from w2vc.eval.longform import LongOptions

    try:
        chunks = tuple(float(c) for c in a.chunk_seconds.split(",") if c.strip())
    except ValueError:
        raise ValueError(f"--chunk-seconds wants numbers separated by commas, got {a.chunk_seconds!r}") from None
    return LongOptions(chunk_seconds=chunks, stride_seconds=a.stride_seconds, unchunked=a.long_unchunked)
