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
    the student's int8 graph 13.7 ms alone, 29 ms beside a spinning teacher session on 2 cores)."""
    import onnxruntime as ort

    p = Path(path)
    f = p / file_name if file_name else onnx_file(p)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
