"""`w2vc transcribe` on a minute of speech from a synthesizer no model was trained on (Flite), by the committed
student: text, JSON chunk timings and SRT; PyTorch and its ONNX export agree; the model card's pipeline
snippet runs as printed. Nothing is mocked; one thread throughout.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from w2vc import cli
from w2vc import transcribe as T
from w2vc.compress.export import ExportConfig, export_onnx
from w2vc.core.artifact import CASCADE_FILE, Artifact
from w2vc.core.card import pipeline_snippet
from w2vc.core.chunking import transcribe_long
from w2vc.core.wer import word_error_rate
from w2vc.data.audio import load_audio
from w2vc.data.synth import build_speakers, plan, synthesize_chunk

STUDENT = Path(__file__).resolve().parents[2] / "models" / "student-base-s"
SEED = 23  # the corpus seed is 0: these sentences and this recording exist nowhere else
MIN_SECONDS = 62.0
CFG = T.TranscribeConfig(threads=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """> 60 s of Flite speech (held-out voices kal16/awb), utterances joined by 0.3-1.5 s pauses; its reference."""
    root = tmp_path_factory.mktemp("flite")
    speakers = [s for s in build_speakers(SEED)["test_unseen_synth"] if s.voice in ("kal16", "awb")]
    rng = np.random.default_rng(SEED)
    parts, refs, i = [], [], 0
    while sum(len(p) for p in parts) < MIN_SECONDS * 16000:
        item = plan("test_unseen_synth", i, speakers, SEED, 0.0)
        synthesize_chunk([item], str(root))
        parts += [load_audio(root / item.relpath()), np.zeros(int(rng.uniform(0.3, 1.5) * 16000), np.float32)]
        refs.append(item.text)
        i += 1
    path = root / "talk" / "minute.wav"
    path.parent.mkdir()
    sf.write(str(path), np.concatenate(parts), 16000, subtype="PCM_16")
    return path, " ".join(refs)


@pytest.fixture(scope="module")
def torch_result(recording):
    model = T.open_model(STUDENT, threads=1)
    [res] = T.transcribe_files(model, T.find_audio([recording[0]]), CFG, progress=False)
    return model, res


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    """The project's export step on the committed student (parity-checked on random clips)."""
    out = tmp_path_factory.mktemp("export") / "student-onnx"
    return export_onnx(Artifact.open(STUDENT), ExportConfig(parity_random=2), out).path


def _srt_seconds(stamp: str) -> float:
    h, m, s = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def parse_srt(doc: str) -> list[tuple[int, float, float, str]]:
    cues = []
    for block in doc.strip().split("\n\n"):
        index, times, *text = block.split("\n")
        m = re.fullmatch(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)", times)
        assert m, times
        cues.append((int(index), _srt_seconds(m[1]), _srt_seconds(m[2]), " ".join(text)))
    return cues


def test_config_validation_round_trip():
    cfg = T.TranscribeConfig(chunk_s=8, stride_s=1.0, threads=2)
    assert T.TranscribeConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="must exceed left \\+ right stride"):
        T.TranscribeConfig(chunk_s=2, stride_s=1)
    with pytest.raises(ValueError, match="threads"):
        T.TranscribeConfig(threads=0)
    with pytest.raises(ValueError, match="unknown transcribe option"):
        T.TranscribeConfig.from_dict({"chunk": 5})


def test_minute_of_unseen_speech_text_json_srt(recording, torch_result):
    path, reference = recording
    model, res = torch_result
    duration = sf.info(str(path)).frames / 16000
    assert res.duration_s == pytest.approx(duration) and duration >= 60
    # the text is the chunked greedy CTC transcript (HF-pipeline chunking), and a real one
    assert res.text.split() == transcribe_long(model, load_audio(path), 10.0).text.split()
    # measured 0.678 (CER 0.317) at 10 s windows; the same utterances one by one give 0.23, the whole minute
    # in one pass 0.80: the committed student, trained on single short utterances, is weak on long-form
    assert word_error_rate(["minute"], [reference], [res.text]).wer < 0.78

    doc = json.loads(T.render([res], "json", str(STUDENT), model.runtime, CFG))
    assert doc["runtime"] == "torch" and doc["chunk_s"] == 10.0
    [f] = doc["files"]
    assert f["text"] == res.text and f["duration_s"] == pytest.approx(duration)
    chunks = f["chunks"]
    assert len(chunks) >= 7 and chunks[0]["start_s"] == 0 and chunks[-1]["end_s"] == pytest.approx(duration)
    for a, b in zip(chunks, chunks[1:]):  # kept spans (window minus strides) tile the recording
        assert a["end_s"] - a["stride_right_s"] == pytest.approx(b["start_s"] + b["stride_left_s"])
    for c in chunks:
        assert c["compute_ms"] > 0 and c["rtf"] == pytest.approx(c["compute_ms"] / 1000 / (c["end_s"] - c["start_s"]))
    assert f["rtf"] == pytest.approx(f["compute_s"] / duration)
    assert " ".join(w["text"] for w in f["words"]) == res.text

    cues = parse_srt(T.render([res], "srt", str(STUDENT), model.runtime, CFG))
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1)) and len(cues) >= 8
    assert " ".join(c[3] for c in cues) == res.text
    prev_end = 0.0
    for _, start, end, text in cues:
        assert prev_end <= start <= end <= duration + 1e-3
        assert len(text) <= 42 or " " not in text
        assert end - start <= 7.0 or " " not in text
        prev_end = end
    assert cues[-1][2] > duration - 3  # cues run to the end of the speech (the last pause is <= 1.5 s)


def test_cli_folder_to_files_and_stdout(recording, torch_result, tmp_path, capsys):
    path, _ = recording
    _, res = torch_result
    out = tmp_path / "subs"
    out.mkdir()
    assert cli.main(["transcribe", "--model", str(STUDENT), "--threads", "1", "--format", "srt",
                     "--out", str(out), "--no-progress", str(path.parent)]) == 0
    srt = (out / "minute.srt").read_text()
    assert " ".join(c[3] for c in parse_srt(srt)) == res.text
    capsys.readouterr()
    assert cli.main(["transcribe", "--model", str(STUDENT), "--threads", "1", "--no-progress", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == res.text + "\n" and "RTF" in captured.err


def test_onnx_export_gives_the_same_text(recording, torch_result, onnx_export):
    _, res = torch_result
    onnx = T.open_model(onnx_export, threads=1)
    assert onnx.runtime == "onnx"
    [o] = T.transcribe_files(onnx, T.find_audio([recording[0]]), CFG, progress=False)
    assert o.text == res.text
    assert [w.text for w in o.words] == [w.text for w in res.words]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _run_in(folder: Path, code: str):
    """Run card code as a user would (cwd holding audio.wav); its stdout and optimum's ORT-model log records."""
    log = logging.getLogger("optimum.onnxruntime.modeling")
    filters, records, out = list(log.filters), _Records(), io.StringIO()
    log.addHandler(records)
    cwd = Path.cwd()
    try:
        os.chdir(folder)
        with contextlib.redirect_stdout(out):
            exec(compile(code, "model-card", "exec"), {})
        yield out.getvalue(), records.messages
    finally:
        os.chdir(cwd)
        log.removeHandler(records)
        log.filters[:] = filters  # the snippet's filter stays out of other tests


def test_model_card_pipeline_snippet_runs_as_printed(recording, onnx_export, tmp_path):
    card = (onnx_export / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S)[1]
    assert code == pipeline_snippet(onnx_export)
    long_dir, short_dir = tmp_path / "long", tmp_path / "short"
    long_dir.mkdir(), short_dir.mkdir()
    shutil.copy(recording[0], long_dir / "audio.wav")
    with _run_in(long_dir, code) as (out, logged):
        onnx = T.open_model(onnx_export, threads=1)
        expected = transcribe_long(onnx, load_audio(long_dir / "audio.wav"), 10.0).text
        assert out == expected + "\n"  # the same windows and the same greedy text as w2vc
        assert not [m for m in logged if "attention_mask" in m]
    # why each fix is there, on 3 s of the recording: without the filter optimum warns about the mask...
    sf.write(str(short_dir / "audio.wav"), load_audio(recording[0])[: 3 * 16000], 16000)
    unfiltered = "\n".join(line for line in code.splitlines() if "addFilter" not in line)
    with _run_in(short_dir, unfiltered) as (out, logged):
        assert out.strip() and any("attention_mask" in m for m in logged)
    # ...and without main_input_name the standard pipeline call fails
    broken = code.replace('model.main_input_name = "input_values"', "")
    with pytest.raises(AttributeError, match="main_input_name"), _run_in(short_dir, broken):
        pass


@pytest.mark.parametrize("case", ["missing", "empty_folder", "not_audio", "no_decoder", "bad_model", "no_config",
                                  "cascade"])
def test_one_line_errors(case, recording, tmp_path, capsys):
    inputs, model = [str(recording[0])], str(STUDENT)
    if case == "missing":
        inputs, want = [str(tmp_path / "nope.wav")], "no such file or folder"
    elif case == "empty_folder":
        (tmp_path / "notes.txt").write_text("no audio here")
        inputs, want = [str(tmp_path)], "no audio files in folder"
    elif case == "not_audio":
        (tmp_path / "fake.wav").write_text("not a wave file")
        inputs, want = [str(tmp_path / "fake.wav")], "unreadable audio"
    elif case == "no_decoder":
        (tmp_path / "voice.m4a").write_bytes(b"\0\0\0\x20ftypM4A " + bytes(64))
        inputs = [str(tmp_path / "voice.m4a")]
        want = "unreadable audio" if shutil.which("ffmpeg") else "cannot decode .m4a audio without ffmpeg"
    elif case == "bad_model":
        model, want = str(tmp_path / "no-such-model"), "model not found"
    elif case == "no_config":
        model, want = str(tmp_path), "not a model directory (no config.json)"
    else:
        (tmp_path / CASCADE_FILE).write_text("{}")
        model, want = str(tmp_path), "is a cascade"
    assert cli.main(["transcribe", "--model", model, "--no-progress", *inputs]) == 1
    err = capsys.readouterr().err.strip()
    assert want in err and "\n" not in err and err.startswith("w2vc transcribe: error:")


def test_any_rate_and_channels_become_16k_mono(recording, tmp_path):
    x = load_audio(recording[0])[: 3 * 16000]
    stereo = np.stack([x, 0.5 * x], axis=1)
    import soxr

    sf.write(str(tmp_path / "clip.ogg"), soxr.resample(stereo, 16000, 44100), 44100, format="OGG")
    y = T.read_audio(tmp_path / "clip.ogg")
    assert y.ndim == 1 and abs(len(y) - len(x)) <= 16
    assert np.corrcoef(y[100:-100], x[100:-100])[0, 1] > 0.95
