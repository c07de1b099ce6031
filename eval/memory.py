"""Memory of a measurement: resident set (now and peak) and the would-be size of in-memory weights.
`w2vc.eval.isolation` runs a measurement in a fresh process so the peak is the model's own."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's resident high-water mark in MiB. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork+exec, so a child started by a big parent would report the parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def state_dict_mb(model) -> float:
    """Would-be safetensors size of an in-memory model: bytes of its state-dict tensors, in MiB."""
    import torch

    seen, total = set(), 0
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor) and not t.is_quantized and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total / 2**20
