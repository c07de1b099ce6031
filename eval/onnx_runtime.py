"""ONNX Runtime side of the `Transcriber` interface: an optimum/ORT model directory → greedy CTC text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from w2vc.eval.transcribe import Transcriber


def conv_output_lengths(lengths: np.ndarray, kernels, strides) -> np.ndarray:
    out = np.asarray(lengths, dtype=np.int64)
    for k, s in zip(kernels, strides):
        out = (out - k) // s + 1
    return out


class OnnxTranscriber(Transcriber):
    runtime = "onnx"

    def __init__(self, session, processor, config: dict):
        names = {i.name for i in session.get_inputs()}
        super().__init__(processor, "attention_mask" in names and config.get("feat_extract_norm") == "layer")
        self.session = session
        self.has_mask_input = "attention_mask" in names
        self.config = config

    @classmethod
    def from_dir(cls, path: str | Path, threads: int | None = None, file_name: str | None = None, **_):
        import onnxruntime as ort
        from transformers import Wav2Vec2Processor

        p = Path(path)
        onnx_files = sorted(p.glob("*.onnx"))
        f = p / file_name if file_name else next((x for x in onnx_files if x.name == "model.onnx"), onnx_files[0])
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        session = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
        config = json.loads((p / "config.json").read_text())
        return cls(session, Wav2Vec2Processor.from_pretrained(str(p)), config)

    def logits(self, values, mask):
        feeds = {"input_values": values}
        if self.has_mask_input:
            feeds["attention_mask"] = mask if mask is not None else np.ones_like(values, dtype=np.int64)
        return self.session.run(["logits"], feeds)[0]

    def frame_lengths(self, mask):
        return conv_output_lengths(mask.sum(-1), self.config["conv_kernel"], self.config["conv_stride"]).tolist()
