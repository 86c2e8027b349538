"""Precision resolution (kd_core/runtime/precision.py)."""
from __future__ import annotations

import pytest
import torch

from kd_core.runtime.precision import PRECISIONS, fp32, resolve_precision


def test_auto_is_fp32_on_the_cpu_and_explicit_choices_are_kept():
    assert resolve_precision("auto", "cpu").name == "fp32"
    assert resolve_precision("fp32", "cpu").dtype is None
    bf16 = resolve_precision("bf16", "cpu")
    assert bf16.dtype == torch.bfloat16 and not bf16.grad_scaling and not bf16.grad_scaler().is_enabled()


def test_auto_on_cuda_prefers_bf16_then_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda").name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    fp16 = resolve_precision("auto", "cuda")
    assert fp16.name == "fp16" and fp16.grad_scaling


@pytest.mark.parametrize("name,device,fragment", [("fp16", "cpu", "needs a CUDA device"), ("fp8", "cpu", "allowed")])
def test_bad_choices_are_one_line_errors(name, device, fragment):
    with pytest.raises(ValueError) as error:
        resolve_precision(name, device)
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert set(PRECISIONS) == {"auto", "fp32", "bf16", "fp16"}


def test_autocast_contexts():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with resolve_precision("bf16", "cpu").autocast():
        assert (a @ b).dtype == torch.bfloat16
        with fp32("cpu"):
            assert (a @ b).dtype == torch.float32
    with resolve_precision("fp32", "cpu").autocast():
        assert torch.equal(a @ b, a @ b) and (a @ b).dtype == torch.float32


def _native_bf16_in_subprocess(env: dict) -> str:
    import os
    import subprocess
    import sys

    code = "from kd_core.runtime.precision import cpu_has_native_bf16; print(cpu_has_native_bf16())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_native_bf16_follows_the_cpu_flags_and_honours_onednns_isa_cap():
    # ONEDNN_MAX_CPU_ISA=AVX2 makes PyTorch send bf16 convolutions to fallback kernels: no native bf16 then,
    # whatever the flags say (how an AVX2-only CPU is emulated on an AVX-512-BF16 one)
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = next((line for line in f if line.startswith("flags")), "").split()
    has_flag = "avx512_bf16" in flags or "amx_bf16" in flags
    assert _native_bf16_in_subprocess({"ONEDNN_MAX_CPU_ISA": "ALL"}) == str(has_flag)
    assert _native_bf16_in_subprocess({"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "False"
