"""ONNX export of in-memory models, for cost measurement only: ONNX Runtime latency of a model (or of a
random preset's true shapes) without a compress step. The same fold-and-trace as compress.export, minus
its parity check; eval must not import compress, so it is repeated here.
"""

from __future__ import annotations

import os
from pathlib import Path


def export_model_onnx(model, out_dir: str | os.PathLike, processor=None) -> Path:
    """An in-memory Wav2Vec2ForCTC → an ONNX directory via optimum. Folds weight_norm IN PLACE, as
    compress.export does (outputs unchanged): folding a deepcopy instead would break the original, whose
    parametrized class the copy shares."""
    from optimum.exporters.onnx import onnx_export_from_model

    from w2vc.core.shapes import fold_weight_norm

    model = model.float().eval()
    fold_weight_norm(model)
    out = Path(out_dir)
    onnx_export_from_model(model, out, task="automatic-speech-recognition", do_validation=False)
    if processor is not None:
        processor.save_pretrained(out)
    return out


def export_preset_onnx(arch: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A random-weight preset as an ONNX directory, so ONNX Runtime cost of the true shapes can be measured."""
    from w2vc.core.models import new_model

    model, processor = new_model(arch, seed=seed)
    return export_model_onnx(model, out_dir, processor)
