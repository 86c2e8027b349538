"""Numeric precision of a training step: ``--precision {auto,fp32,bf16,fp16}`` for both trainers.

* ``fp32``: no autocast.
* ``bf16``: ``torch.autocast(dtype=bfloat16)`` on CUDA or CPU; no gradient scaler (bf16 has fp32's range).
  On CPUs with native bf16 (AVX-512-BF16 / AMX) convolutions and matmuls run about twice as fast.
* ``fp16``: float16 autocast with a gradient scaler; CUDA only.
* ``auto``: on CUDA, bf16 where the GPU supports it, else fp16 (the former ``--amp``); on the CPU, fp32. CPU bf16
  is opt-in until ``results/benchmarks.md`` shows it trains as well as fp32.

What stays in fp32 inside autocast is decided where it is computed (spectral-norm power iterations, the
projector's orthogonal map, whitening, the losses): those places disable autocast locally.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """The resolved choice: ``name`` (fp32 / bf16 / fp16), the autocast dtype (None: off) and the scaler."""

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def grad_scaling(self) -> bool:
        return self.name == "fp16"

    def autocast(self) -> torch.autocast:
        """The context a forward pass runs in (a disabled autocast for fp32)."""
        dtype = self.dtype
        return torch.autocast(device_type=self.device_type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.grad_scaling)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-BF16 or AMX-BF16 in /proc/cpuinfo) and oneDNN may use it.

    oneDNN's own answer (``torch.ops.mkldnn._is_mkldnn_bf16_supported``, what PyTorch asks before sending a bf16
    convolution to oneDNN) is required too: it honours ``ONEDNN_MAX_CPU_ISA``, so with ``ONEDNN_MAX_CPU_ISA=AVX2``
    this machine behaves as a CPU without native bf16 would (bf16 convolutions on fallback kernels; fp32 chosen).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    if not any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16")):
        return False
    onednn = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    return bool(onednn()) if onednn is not None else True


def resolve_precision(name: str, device: torch.device | str) -> Precision:
    """The :class:`Precision` for ``--precision name`` on ``device``; a one-line ValueError for bad input."""
    device = torch.device(device)
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; allowed: {', '.join(PRECISIONS)}")
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA device (gradient scaling), got {device}; use bf16 or fp32")
    return Precision(name, device.type)


def slow_precision_warning(precision: Precision) -> str | None:
    """A warning when the choice is legal but slow here: bf16 on a CPU without native bf16 instructions."""
    if precision.name == "bf16" and precision.device_type == "cpu" and not cpu_has_native_bf16():
        return ("this CPU has no native bf16 (no AVX-512-BF16 or AMX in /proc/cpuinfo): bf16 autocast falls back to "
                "slow kernels and runs many times slower than fp32; use --precision fp32 here")
    return None


def fp32(device_type: str) -> torch.autocast:
    """A context that turns autocast off, for code that must stay in float32 inside an autocast region."""
    return torch.autocast(device_type=device_type, enabled=False)
