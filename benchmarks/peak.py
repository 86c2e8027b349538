"""The peak every "of peak" fraction is of: the measured fp32 conv and matmul peaks (a sweep of sizes), D's conv at
the iteration's own shapes, and the denominator taken over them, the theoretical peak and every GFLOP/s reported."""
from __future__ import annotations

import torch
from torch import nn

from benchmarks.context import Context
from benchmarks.gan_trainer import variant_parts
from benchmarks.report import fmt, pct, table
from benchmarks.timing import count_flops, measure


def conv_gflops(channels: int, batch: int, precision_name: str, channels_last: bool, reps, warmup: int
                ) -> tuple[float, int]:
    """(GFLOP/s, repetitions) of a 3x3 convolution C -> C at 32x32 (padding 1), forward + backward, in the given
    precision and memory format; ``reps`` as :func:`measure` takes it."""
    from kd_core.runtime.precision import resolve_precision

    precision = resolve_precision(precision_name, "cpu")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, channels, 3, padding=1).to(memory_format=memory_format)
    x = torch.randn(batch, channels, 32, 32).contiguous(memory_format=memory_format).requires_grad_(True)
    with precision.autocast():
        probe = conv(x)
    grad = torch.ones_like(probe)

    def step() -> None:
        x.grad = None
        conv.zero_grad(set_to_none=True)
        with precision.autocast():
            out = conv(x)
        out.backward(grad)

    flops = count_flops(step)
    timing = measure({"conv": step}, reps, warmup)["conv"]
    return flops / timing.median / 1e9, timing.reps


def conv_batch(channels: int, flops_per_rep: float) -> int:
    """The batch (1-100) that keeps one forward + backward of :func:`conv_gflops` near ``flops_per_rep``."""
    per_sample = 3 * 2 * 32 * 32 * channels * channels * 9
    return max(1, min(100, int(flops_per_rep // per_sample)))


def d_conv_speed(ctx: Context, width: int, variant: str) -> tuple[float, int, int]:
    """(GFLOP/s, batch, reps) of the 3x3 conv of D's first block (C -> C at 32x32, C = 4 d_ch), forward + backward,
    in the variant's precision and memory format: the speed at the iteration's own shapes, not a peak."""
    key = (width, variant)
    if key not in ctx.d_conv:
        precision_name, channels_last, _ = variant_parts(variant)
        slow = precision_name == "bf16" and ctx.slow_bf16()
        batch = conv_batch(4 * width, ctx.sizes.conv_flops_slow if slow else ctx.sizes.conv_flops)
        gflops, reps = conv_gflops(4 * width, batch, precision_name, channels_last, ctx.reps_rule(slow),
                                   ctx.sizes.warmup)
        ctx.d_conv[key] = (gflops, batch, reps)
    return ctx.d_conv[key]


def matmul_gflops(n: int, reps, warmup: int) -> tuple[float, int]:
    """(GFLOP/s, repetitions) of an fp32 n x n @ n x n matrix product (2 n^3 FLOPs)."""
    torch.manual_seed(0)
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    timing = measure({"mm": lambda: torch.mm(a, b, out=out)}, reps, warmup)["mm"]
    return 2 * n ** 3 / timing.median / 1e9, timing.reps


def peak_sweep(ctx: Context) -> None:
    """Measured fp32 peaks: the 3x3 conv at every sweep width in both memory formats, the matmul at every sweep
    size (the report takes the largest)."""
    sizes = ctx.sizes
    for channels in sizes.sweep_channels:
        batch = conv_batch(channels, sizes.sweep_flops)
        for layout in ("contiguous", "channels_last"):
            gflops, reps = conv_gflops(channels, batch, "fp32", layout == "channels_last", ctx.reps_rule(),
                                       sizes.warmup)
            ctx.sweep[("conv", channels, layout)] = (gflops, batch, reps)
    for n in sizes.sweep_matmuls:
        gflops, reps = matmul_gflops(n, ctx.reps_rule(), sizes.warmup)
        ctx.sweep[("matmul", n, "")] = (gflops, 1, reps)



def peak_denominator(candidates: dict[str, float]) -> tuple[str, float]:
    """(what, GFLOP/s): the largest of ``candidates`` (the theoretical FMA peak, every measured peak and every
    GFLOP/s achieved in the report), the denominator of every "of peak" fraction, so that none exceeds 100%."""
    if not candidates:
        raise ValueError("no GFLOP/s to take a peak from")
    name = max(candidates, key=candidates.get)
    return name, candidates[name]


def of_peak(gflops: float, peak: tuple[str, float]) -> str:
    """``gflops`` as a percentage of the report's peak (see :func:`peak_denominator`)."""
    fraction = gflops / peak[1]
    if fraction > 1 + 1e-9:
        raise ValueError(f"{gflops} GFLOP/s exceed the peak {peak}: it was not the largest GFLOP/s of the report")
    return f"{pct(fraction)} of peak"


def peak_candidates(ctx: Context) -> dict[str, float]:
    """Every GFLOP/s section 1 reports (what -> GFLOP/s): the theoretical FMA peak, the measured peaks, D's conv at
    each width and variant, and each iteration's achieved GFLOP/s."""
    candidates = {}
    if ctx.fma[0] is not None:
        candidates["the theoretical fp32 FMA peak"] = ctx.fma[0]
    for (kind, size, layout), (gflops, _, _) in ctx.sweep.items():
        shape = f"3×3 conv C={size} {layout}" if kind == "conv" else f"matmul n={size}"
        candidates[f"the measured fp32 {shape}"] = gflops
    for (width, variant), (gflops, _, _) in ctx.d_conv.items():
        candidates[f"D's conv at width {width} in {variant}"] = gflops
    for (preset, width, batch, variant), timing in ctx.gan.items():
        candidates[f"the {preset} iteration (1 D + 1 G) at width {width}, batch {batch}, {variant}"] = (
            ctx.gan_flops[(preset, width, batch)] / timing.median / 1e9)
    for variant, timing in ctx.study.items():
        candidates[f"the CPU study config's iteration in {variant}"] = ctx.study_flops / timing.median / 1e9
    for (preset, width, batch, mode), timing in ctx.modes.items():
        candidates[f"the {preset} iteration (4 D + 1 G + EMA) at width {width}, batch {batch}, {mode}"] = (
            ctx.mode_flops[(preset, width, batch)] / timing.median / 1e9)
    return candidates


def peak_lines(ctx: Context) -> list[str]:
    """The peak paragraph and table: what every "of peak" fraction of the report is a fraction of."""
    what, value = ctx.peak
    theory, how = ctx.fma
    lines = [f"**Peak** (the denominator of every \"→ x% of peak\" in this file): **{fmt(value)} GFLOP/s, {what}**, "
             f"the largest of the theoretical fp32 FMA peak of one core, the peaks measured below (the maximum over a "
             f"sweep of sizes: fp32 3×3 convolutions C→C at 32×32, forward + backward, in both memory formats; "
             f"fp32 n×n matrix products) and every GFLOP/s this file reports (D's conv, every iteration), so that "
             f"no fraction exceeds 100%. Theoretical peak: "
             + (f"none ({how})." if theory is None else f"{fmt(theory)} GFLOP/s = {how}. "
                + ("It lies above everything measured." if what == "the theoretical fp32 FMA peak" else
                   "A measurement exceeds it (a turbo clock above the one read, or bf16 kernels), so the "
                   "measurement is the denominator.")), ""]
    rows = []
    for (kind, size, layout), (gflops, batch, reps) in ctx.sweep.items():
        shape = (f"3×3 conv {size}→{size} at 32×32, fwd + bwd, {layout}, batch {batch}" if kind == "conv"
                 else f"matmul {size}×{size} @ {size}×{size}")
        rows.append([shape, str(reps), fmt(gflops), of_peak(gflops, ctx.peak)])
    return lines + table(["fp32 peak sweep", "reps", "GFLOP/s", "fraction"], rows)

