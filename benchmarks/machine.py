"""What this CPU is: its model, the SIMD flags that decide conv speed, its clock and the theoretical fp32 FMA peak
of one core derived from them."""
from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD flags that decide conv speed: avx512* and amx* (whatever is there), plus avx2 / fma."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split(":", 1)[-1].split()
    except OSError:
        return []
    return sorted({flag for flag in flags if flag.startswith(("avx512", "amx")) or flag in ("avx2", "fma")})


def cpu_kernel_note() -> str:
    """The SIMD level oneDNN's kernels get on this CPU, for the targets' "what bounds it" text."""
    flags = cpu_flags()
    wide = [flag for flag in flags if flag.startswith(("avx512", "amx"))]
    return "SIMD " + ", ".join(flags or ["unknown"]) + ("" if wide else "; no AVX-512 or AMX")



# fp32 FLOPs per cycle of one core with two FMA units of the flag's vector width: 2 units x lanes x 2 (multiply + add)
FMA_FLOPS_PER_CYCLE = (("avx512f", 64, "AVX-512F: 2 FMA units × 16 fp32 lanes × 2"),
                       ("fma", 32, "AVX2 + FMA: 2 FMA units × 8 fp32 lanes × 2"))


def fma_flops_per_cycle(flags) -> tuple[int, str] | None:
    """(fp32 FLOPs per cycle, how) of one core from its /proc/cpuinfo flags; None without AVX2 + FMA."""
    for flag, per_cycle, how in FMA_FLOPS_PER_CYCLE:
        if flag in flags and (flag != "fma" or "avx2" in flags):
            return per_cycle, how
    return None


def cpu_clock_mhz() -> tuple[float | None, str]:
    """(MHz, where it was read): ``lscpu``'s "CPU max MHz", else /proc/cpuinfo's "cpu MHz" of the first core."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                                 env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    match = re.search(r"^CPU max MHz:\s*([0-9.]+)", listing, flags=re.MULTILINE)
    if match and float(match.group(1)) > 0:
        return float(match.group(1)), "`lscpu`'s \"CPU max MHz\" (a turbo clock may still exceed it)"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            line = next((line for line in f if line.startswith("cpu MHz")), "")
    except OSError:
        line = ""
    with contextlib.suppress(ValueError):
        mhz = float(line.split(":", 1)[1])
        if mhz > 0:
            return mhz, ("/proc/cpuinfo's \"cpu MHz\" of the first core when read (`lscpu` reports no \"CPU max "
                         "MHz\" here, as in many VMs): not the maximum, a turbo clock may exceed it")
    return None, "no clock found (neither `lscpu`'s \"CPU max MHz\" nor /proc/cpuinfo's \"cpu MHz\")"


def fma_peak() -> tuple[float | None, str]:
    """The theoretical fp32 FMA peak of one core in GFLOP/s (None where it cannot be derived) and how it was
    derived: FLOPs per cycle from the SIMD flags times the clock."""
    per_cycle = fma_flops_per_cycle(cpu_flags())
    if per_cycle is None:
        return None, "the CPU flags name neither AVX-512F nor AVX2 + FMA"
    mhz, source = cpu_clock_mhz()
    if mhz is None:
        return None, source
    return per_cycle[0] * mhz / 1e3, (f"{per_cycle[0]} fp32 FLOPs/cycle ({per_cycle[1]}; a core with one such "
                                      f"unit, or one that splits 512-bit operations into two 256-bit halves as AMD "
                                      f"Zen 4 does, peaks at half this) × {mhz:.0f} MHz, from {source}")
