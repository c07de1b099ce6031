"""ONNX Runtime sessions, one set of options for everyone who runs a graph (eval, export parity, cost).

Imports no torch or transformers: a cost measurement of an ONNX model in a fresh process then holds the
graph's own memory, not ~430 MB of PyTorch libraries no device would load.
"""

from __future__ import annotations

import os
from pathlib import Path

from w2vc.core.artifact import onnx_file


def onnx_session(path: str | os.PathLike, threads: int | None = None, file_name: str | None = None,
                 spinning: bool = True):
    """A CPU session with all graph optimizations; `threads` pins intra-op threads (inter-op 1).

    `spinning=False` for sessions that share a process and its cores (a cascade's two members): ORT's idle
    intra-op threads otherwise spin after each run and take the cores from the other session (measured:
    the student's int8 graph 13.7 ms alone, 29 ms beside a spinning teacher session on 2 cores). Its threads
    still spin inside a run and stop at its end (`session.force_spinning_stop`), which costs less than never
    spinning (`allow_spinning 0`): cnn50 int8 fast member + teacher every 3rd utterance, 60 test utterances,
    2 threads, AVX-512 Xeon, 2026-12-07: 27.3-29.6 ms against 31.7-34.0 ms per utterance with an int8 strong
    member, 36.2-37.2 against 38.3-45.9 with the fp32 PyTorch teacher; the fast graph alone 17.2-18.7 against
    20.2-21.2 ms (16.0-17.2 with ORT's default spinning)."""
    import onnxruntime as ort

    p = Path(path)
    f = p / file_name if file_name else onnx_file(p)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
