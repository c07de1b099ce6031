"""The MLflow model of an exported pick: audio in, text out, with ONNX Runtime alone.

Logged by `w2vc.experiments.exports` as a pyfunc `loader_module` carried in the model's own `code/` folder,
with the ONNX bundle (graph + processor files) as its data: loading it needs neither w2vc nor anything
pickled, so this file imports only numpy, onnxruntime, soundfile (and soxr, to resample audio that is not
16 kHz). It repeats on purpose what w2vc's ONNX transcriber does for one utterance (w2vc.core.runnable:
zero-mean/unit-variance input, greedy CTC, Wav2Vec2CTCTokenizer's decode, soxr HQ resampling as in
w2vc.data.audio); tests/experiments/test_mlflow_models.py checks that both give the same text.

    model = mlflow.pyfunc.load_model("models:/<name>/<version>")       # model_config={"threads": 2}
    model.predict(["a.wav", "b.flac"])          # or a DataFrame with a "path"/"audio" column,
                                                 # or 16 kHz mono float arrays -> ["TEXT A", "TEXT B"]

One utterance is one ONNX run, whole: long recordings want `w2vc transcribe` (chunked with strides). An
exported cascade bundle (two ONNX bundles and a routing rule) loads the same way (`CascadeAsr`).
"""

from __future__ import annotations

import io
import json
import os
from itertools import groupby
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
CASCADE_FILE = "w2vc_cascade.json"  # w2vc.core.artifact.CASCADE_FILE (this module imports no w2vc)
REQUIREMENTS = ("numpy", "onnxruntime", "soundfile", "soxr")  # what a loaded model imports
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # transformers' clean_up_tokenization


def _token(v) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


class CtcVocab:
    """Greedy-CTC decoding from the bundle's vocab.json + tokenizer_config.json, as Wav2Vec2CTCTokenizer
    decodes (group repeats, drop the blank/pad token, word delimiter -> space)."""

    def __init__(self, bundle: Path):
        cfg = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if (bundle / name).exists():
                cfg.update(json.loads((bundle / name).read_text()))
        vocab = json.loads((bundle / "vocab.json").read_text())
        if vocab and all(isinstance(v, dict) for v in vocab.values()):  # multilingual: one vocab per language
            vocab = vocab[cfg["target_lang"]]
        self.tokens = {int(i): t for t, i in vocab.items()}
        for i, t in cfg.get("added_tokens_decoder", {}).items():
            self.tokens[int(i)] = t["content"]
        self.pad = _token(cfg.get("pad_token", "<pad>"))
        self.unk = _token(cfg.get("unk_token", "<unk>"))
        self.delimiter = _token(cfg.get("word_delimiter_token", "|"))
        self.space = cfg.get("replace_word_delimiter_char", " ")
        self.lower = bool(cfg.get("do_lower_case", False))
        self.cleanup = bool(cfg.get("clean_up_tokenization_spaces", False))

    def decode(self, ids) -> str:
        chars = [t for t, _ in groupby(self.tokens.get(int(i), self.unk) for i in ids)]
        text = "".join(self.space if c == self.delimiter else c for c in chars if c != self.pad).strip()
        if self.lower:
            text = text.lower()
        if self.cleanup:
            for a, b in _CLEANUPS:
                text = text.replace(a, b)
        return text


def read_audio(src) -> np.ndarray:
    """A file path or WAV/FLAC bytes -> 16 kHz mono float32 (channels averaged, soxr HQ resampling)."""
    import soundfile as sf

    x, sr = sf.read(io.BytesIO(src) if isinstance(src, bytes) else str(src), dtype="float32", always_2d=False)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        import soxr

        x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)
    if x.size == 0:
        raise ValueError(f"empty audio: {src if not isinstance(src, bytes) else '<bytes>'}")
    return x


def audio_items(model_input) -> list:
    """The utterances of any accepted input: a DataFrame (its "path" or "audio" column, else the first), a
    Series, a dict {"audio"|"path": ...}, one path / bytes / 1-D array, or a list of them; 2-D arrays are
    one utterance per row."""
    if hasattr(model_input, "columns"):  # pandas DataFrame, without importing pandas
        cols = list(model_input.columns)
        col = next((c for c in ("path", "audio") if c in cols), cols[0] if cols else None)
        if col is None:
            raise ValueError("an empty DataFrame holds no audio")
        return audio_items(model_input[col].tolist())
    if isinstance(model_input, dict):
        key = next((k for k in ("audio", "path") if k in model_input), None)
        if key is None:
            raise ValueError(f"a dict input needs an 'audio' or 'path' key, got {sorted(model_input)}")
        return audio_items(model_input[key])
    if hasattr(model_input, "tolist") and not isinstance(model_input, np.ndarray):  # pandas Series
        return audio_items(model_input.tolist())
    if isinstance(model_input, (str, bytes, os.PathLike)):
        return [model_input]
    if isinstance(model_input, np.ndarray) and model_input.dtype != object:
        return [model_input] if model_input.ndim == 1 else list(model_input)
    items = list(model_input)
    if items and all(isinstance(v, (int, float, np.floating)) for v in items):  # one utterance as a list
        return [np.asarray(items, dtype=np.float32)]
    return items


def _samples(item) -> np.ndarray:
    if isinstance(item, (str, bytes, os.PathLike)):
        return read_audio(item)
    x = np.asarray(item, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"an array input is one utterance of 16 kHz mono samples, got shape {x.shape}")
    return x


class OnnxAsr:
    """The pyfunc implementation: one ONNX Runtime session over the bundle's graph."""

    def __init__(self, bundle: str | os.PathLike, threads: int | None = None, spinning: bool = True):
        import onnxruntime as ort

        self.bundle = Path(bundle)
        graphs = sorted(self.bundle.glob("*.onnx"))  # w2vc's rule: model.onnx, else the first by name
        if not graphs:
            raise FileNotFoundError(f"no .onnx file in {self.bundle}")
        graph = next((g for g in graphs if g.name == "model.onnx"), graphs[0])
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
        if not spinning:  # a cascade's two sessions share the cores: no spinning between runs (w2vc.core.ort)
            so.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
        self.has_mask_input = "attention_mask" in {i.name for i in self.session.get_inputs()}
        pre = self.bundle / "preprocessor_config.json"
        self.normalize = json.loads(pre.read_text()).get("do_normalize", True) if pre.exists() else True
        self.vocab = CtcVocab(self.bundle)

    def logits(self, audio: np.ndarray) -> np.ndarray:
        """[T, V] logits of one utterance."""
        x = np.asarray(audio, dtype=np.float32)
        if self.normalize:  # as Wav2Vec2FeatureExtractor(do_normalize=True), per utterance
            x = ((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)
        feeds = {"input_values": x[None]}
        if self.has_mask_input:
            feeds["attention_mask"] = np.ones_like(feeds["input_values"], dtype=np.int64)
        return self.session.run(["logits"], feeds)[0][0]

    def transcribe(self, audio: np.ndarray) -> str:
        return self.vocab.decode(self.logits(audio).argmax(-1))

    def predict(self, model_input, params: dict | None = None) -> list[str]:
        """One transcript per utterance of `model_input` (see `audio_items`), in order."""
        return [self.transcribe(_samples(item)) for item in audio_items(model_input)]


def utterance_confidence(logits: np.ndarray, blank_id: int, measure: str, aggregation: str, alpha: float) -> float:
    """The cascade's confidence of one utterance, as w2vc.core.cascade computes it (tests check they agree):
    per-frame max_prob / normalised entropy / Tsallis entropy over the non-blank frames, mean or min; 0.0
    when every frame is blank."""
    z = np.asarray(logits, dtype=np.float64)
    z = z[z.argmax(-1) != blank_id]
    if not len(z):
        return 0.0
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    p, v = np.exp(logp), z.shape[-1]
    if measure == "max_prob":
        c = p.max(-1)
    elif measure == "entropy":
        c = 1.0 + (p * logp).sum(-1) / np.log(v)
    elif measure == "tsallis":
        c = 1.0 - ((1.0 - (p**alpha).sum(-1)) / (alpha - 1.0)) / ((v ** (1.0 - alpha) - 1.0) / (1.0 - alpha))
    else:
        raise ValueError(f"unknown confidence measure {measure!r}")
    c = np.clip(c, 0.0, 1.0)
    return float(c.min() if aggregation == "min" else c.mean())


class CascadeAsr:
    """An exported cascade bundle (`w2vc_cascade.json` + the members in their folders): the fast member on
    every utterance, the strong one where the fast one's confidence is below the threshold."""

    def __init__(self, bundle: str | os.PathLike, threads: int | None = None):
        self.bundle = Path(bundle)
        self.rule = json.loads((self.bundle / CASCADE_FILE).read_text())
        self.fast = OnnxAsr(self.bundle / self.rule["fast"], threads, spinning=False)
        self.strong = OnnxAsr(self.bundle / self.rule["strong"], threads, spinning=False)
        self.blank_id = next(i for i, t in self.fast.vocab.tokens.items() if t == self.fast.vocab.pad)

    def transcribe(self, audio: np.ndarray) -> str:
        logits = self.fast.logits(audio)
        r = self.rule
        conf = utterance_confidence(logits, self.blank_id, r.get("measure", "max_prob"), r.get("aggregation", "mean"),
                                    r.get("alpha", 1 / 3))
        if conf < r.get("threshold", 0.9):
            return self.strong.transcribe(audio)
        return self.fast.vocab.decode(logits.argmax(-1))

    predict = OnnxAsr.predict


def load_bundle(bundle: str | os.PathLike, threads: int | None = None) -> OnnxAsr | CascadeAsr:
    """One ONNX bundle, or a cascade bundle of two."""
    return (CascadeAsr if (Path(bundle) / CASCADE_FILE).is_file() else OnnxAsr)(bundle, threads)


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> OnnxAsr | CascadeAsr:
    """MLflow's loader_module entry point; `model_config={"threads": N}` pins ONNX Runtime's threads."""
    return load_bundle(data_path, (model_config or {}).get("threads"))
