"""Section 1, the GAN iteration: 1 D + 1 G step of each preset, width and variant (fp32 / channels_last / bf16),
the CPU study configuration's iteration, then the modes tables and the peak."""
from __future__ import annotations

from benchmarks.context import Context
from benchmarks.gan_modes import measure_modes, modes_report
from benchmarks.gan_trainer import GAN_PRESETS, build_gan_trainer, gan_iteration
from benchmarks.machine import fma_peak
from benchmarks.peak import d_conv_speed, of_peak, peak_candidates, peak_denominator, peak_lines, peak_sweep
from benchmarks.report import fmt, table
from benchmarks.timing import count_flops, measure

VARIANTS = ("fp32", "channels_last", "bf16", "bf16+channels_last")
NO_BF16 = "not measured: no native bf16 on this CPU"


def gan_measure(ctx: Context, preset: str, width: int, batch: int, variants: tuple[str, ...]) -> None:
    """Time ``variants`` of (preset, width, batch) side by side; FLOPs counted on the first one's first call."""
    todo = [v for v in variants if (preset, width, batch, v) not in ctx.gan]
    if not todo:
        return
    ctx.log(f"gan {preset} width {width} batch {batch}: {', '.join(todo)}")
    steps = {v: gan_iteration(build_gan_trainer(ctx, preset, width, v, batch)) for v in todo}
    if (preset, width, batch) not in ctx.gan_flops:
        ctx.gan_flops[(preset, width, batch)] = count_flops(steps[todo[0]])  # an extra warm-up of that variant
    rules = {v: ctx.reps_rule("bf16" in v and ctx.slow_bf16()) for v in todo}
    timings = measure(steps, lambda name, seconds: rules[name](name, seconds), ctx.sizes.warmup)
    ctx.gan.update({(preset, width, batch, v): t for v, t in timings.items()})


def gan_groups(ctx: Context) -> list[tuple[int, int, tuple[str, ...]]]:
    """(width, batch, measured variants) of section 1's tables."""
    sizes = ctx.sizes
    small, large = sizes.widths
    fp32_variants = ("fp32", "channels_last")
    if ctx.native_bf16:
        return [(small, sizes.gan_batch, VARIANTS), (large, sizes.gan_batch_large, VARIANTS)]
    return [(small, sizes.gan_batch, fp32_variants), (small, sizes.gan_batch_bf16, VARIANTS),
            (large, sizes.gan_batch_large, fp32_variants)]


def section_gan(ctx: Context) -> list[str]:
    from gan_kd.config import TrainConfig

    sizes = ctx.sizes
    small, large = sizes.widths
    groups = gan_groups(ctx)
    for preset in GAN_PRESETS:
        for width, batch, variants in groups:
            gan_measure(ctx, preset, width, batch, variants)
    ctx.log("gan: D's conv at each width and variant")
    for width, _, variants in groups:
        for variant in variants:
            d_conv_speed(ctx, width, variant)
    ctx.log("gan: trainer iteration of the CPU study config")
    study = {variant: gan_iteration(build_gan_trainer(ctx, "vkd-whiten", small, variant, sizes.gan_batch), d_steps=4,
                                    ema=True)
             for variant in ("fp32", "channels_last")}
    ctx.study_flops = count_flops(study["fp32"])
    ctx.study = measure(study, ctx.reps_rule(), sizes.warmup)
    modes_seconds, compiled = measure_modes(ctx)
    ctx.log("gan: peaks (conv and matmul sweeps)")
    peak_sweep(ctx)
    ctx.fma = fma_peak()
    ctx.peak = peak_denominator(peak_candidates(ctx))

    lines = [f"One iteration = **1 D step + 1 G step** as `gan_kd.train.Trainer.discriminator_step` / `generator_step` "
             f"run them (the D step: G's fakes + the real batch, DiffAugment `translation,cutout`, D on both halves "
             f"at once, the distillation term, Adam; the G step: G, DiffAugment, D, Adam); CIFAR-10-sized models "
             f"(10 classes), random in-memory real images. vkd-whiten: a random-weight `resnet20` teacher (64-d) "
             f"written with `save_classifier` and loaded through `build_teacher(\"ckpt:PATH\")`, the orthogonal "
             f"projector with the GAN's default map (`{TrainConfig().orthogonal_map}`), whitening, MSE. FLOPs: "
             f"`torch.utils.flop_counter.FlopCounterMode` over one iteration (matmuls and convolutions). D's conv: "
             f"the 3×3 convolution of D's first block (C→C at 32×32, C = 4·width) forward + backward in the row's "
             f"precision and memory format, timed here (its batch and repetitions in brackets): the speed at the "
             f"iteration's own shapes, not a peak. \"ratio\" is to fp32 at the same width and batch; repetitions "
             f"of the rows of one (preset, width, batch) are interleaved."]
    notes = []
    if sizes.gan_batch_large != sizes.gan_batch:
        scale = sizes.gan_batch / sizes.gan_batch_large
        slowest = max(ctx.gan[(p, large, sizes.gan_batch_large, "fp32")].median for p in GAN_PRESETS)
        notes.append(f"width {large} is timed at batch {sizes.gan_batch_large}, not the Trainer's {sizes.gan_batch}: "
                     f"scaled by {scale:g}, its fp32 iterations here would take about {slowest * scale:.0f} s each, "
                     f"too long for the time budget of this benchmark")
    if ctx.slow_bf16():
        scale = sizes.gan_batch / sizes.gan_batch_bf16
        slowest = max(ctx.gan[(p, small, sizes.gan_batch_bf16, "bf16")].median for p in GAN_PRESETS)
        notes.append(f"without native bf16, bf16 is timed at width {small} only, at batch {sizes.gan_batch_bf16} "
                     f"(with its own fp32 / channels_last reference at that batch) and {sizes.reps_bf16} repetitions: "
                     f"scaled by {scale:g}, a bf16 iteration at batch {sizes.gan_batch} would take about "
                     f"{slowest * scale:.0f} s on its fallback kernels")
    if notes:
        lines += ["", "Budget: " + "; ".join(notes) + "."]
    lines.append("")
    lines += peak_lines(ctx)
    rows = []
    for preset in GAN_PRESETS:
        for width, batch, variants in groups:
            base = ctx.gan[(preset, width, batch, "fp32")]
            flops = ctx.gan_flops[(preset, width, batch)]
            shown = VARIANTS if (width == large or "bf16" in variants) else variants
            for variant in shown:
                timing = ctx.gan.get((preset, width, batch, variant))
                if timing is None:
                    rows.append([preset, str(width), str(batch), variant, "—", NO_BF16, "", "", "", "", "", ""])
                    continue
                achieved = flops / timing.median / 1e9
                conv, conv_batch_size, conv_reps = ctx.d_conv[(width, variant)]
                rows.append([preset, str(width), str(batch), variant, str(timing.reps), fmt(timing.ms),
                             fmt(timing.part_ms("d")), fmt(timing.part_ms("g")), f"{timing.median / base.median:.2f}×",
                             fmt(flops / 1e9), f"{fmt(achieved)} → {of_peak(achieved, ctx.peak)}",
                             f"{fmt(conv)} (b{conv_batch_size}, {conv_reps} reps)"])
    lines += table(["preset", "width", "batch", "variant", "reps", "ms / iteration (1 D + 1 G)", "D step ms",
                    "G step ms", "ratio to fp32", "GFLOP / iteration", "GFLOP/s → fraction", "D's conv GFLOP/s"], rows)
    parts = [f"{variant}: {fmt(t.ms)} ms ({t.reps} reps; D step {fmt(t.part_ms('d'))} ms each, G step + EMA "
             f"{fmt(t.part_ms('g'))} ms)" for variant, t in ctx.study.items()]
    lines += [f"The CPU study's configuration (`--preset vkd-whiten --g-ch {small} --d-ch {small}`, batch "
              f"{sizes.gan_batch}, resnet20 teacher) as `Trainer.run` iterates: **4 D steps + 1 G step + EMA "
              f"update** per iteration, {fmt(ctx.study_flops / 1e9)} GFLOP: " + "; ".join(parts) + ".", ""]

    lines += modes_report(ctx, modes_seconds, compiled)
    return lines
