"""Where training runs and in which precision: small pure decisions, unit-testable on a CPU-only machine.

Every choice takes the machine's capabilities as arguments (`cuda_available`, `cuda_bf16_supported`), so the
CUDA branches are tested without a GPU; `plan()` is the one place that asks torch for them. The CPU choices
reproduce the trainer as it always ran (bf16 autocast only where the CPU has bf16 instructions, gloo), so
CPU runs keep their numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

DEVICES = ("auto", "cpu", "cuda")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where it cannot be read)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """AVX512_BF16 / AMX: where bf16 autocast is faster than fp32 on CPU (elsewhere it is emulated, slower)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_device(requested: str, cuda_available: bool) -> str:
    """"auto" → "cuda" when a GPU is visible, else "cpu"; an explicit "cuda" without one is refused, not
    silently run on CPU (a cluster job that lost its GPU should fail, not take 50x longer)."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested == "cuda" and not cuda_available:
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU (torch.cuda.is_available() is "
                         "False); use --device cpu or auto")
    return requested


def autocast_dtype(device: str, bf16: bool | None, cuda_bf16_supported: bool,
                   cpu_bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype, None for fp32. `bf16`: None = the fast mixed precision of the device, True = bf16,
    False = fp32. CPU: bf16 only where the CPU has it (`cpu_bf16`, probed when None). CUDA: bf16 where the GPU
    supports it (Ampere and later), else fp16 (which then needs a gradient scaler)."""
    if device == "cpu":
        use = (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16) if bf16 is None else bf16
        return torch.bfloat16 if use else None
    if bf16 is False:
        return None
    if bf16 and not cuda_bf16_supported:
        raise ValueError("bf16 asked for, but this GPU has no bf16 support; use --bf16 auto (fp16 with gradient "
                         "scaling) or off (fp32)")
    return torch.bfloat16 if cuda_bf16_supported else torch.float16


def needs_grad_scaler(device: str, dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
    return device == "cuda" and dtype == torch.float16


def dist_backend(device: str) -> str:
    """NCCL between GPUs (gloo would copy every gradient through host memory), gloo between CPU processes."""
    return "nccl" if device == "cuda" else "gloo"


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    amp_dtype: torch.dtype | None
    grad_scaler: bool
    backend: str

    @property
    def type(self) -> str:
        return self.device.type

    def autocast(self):
        """The forward's autocast context (disabled for fp32, as the CPU trainer always wrote it)."""
        return torch.autocast(self.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None)


def plan(requested: str = "auto", bf16: bool | None = None) -> DevicePlan:
    """The decisions above for this machine and process: under torchrun, GPU = LOCAL_RANK (one per process)."""
    kind = resolve_device(requested, torch.cuda.is_available())
    if kind == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
        bf16_ok = torch.cuda.is_bf16_supported(including_emulation=False)  # emulated bf16 is slow
    else:
        dev, bf16_ok = torch.device("cpu"), False
    dtype = autocast_dtype(kind, bf16, bf16_ok)
    return DevicePlan(dev, dtype, needs_grad_scaler(kind, dtype), dist_backend(kind))


def to_cpu(obj):
    """A (nested) state dict with every tensor on the CPU, so a checkpoint written on a GPU loads anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
