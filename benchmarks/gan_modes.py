"""Section 1's modes tables (issue 26): the study's iteration in every mode (eager / ``--compile`` x contiguous /
channels_last x fp32 / bf16) side by side, its compile seconds, and which mode is fastest."""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from benchmarks.context import Context
from benchmarks.gan_trainer import GAN_PRESETS, build_gan_trainer, gan_iteration, variant_parts
from benchmarks.peak import of_peak
from benchmarks.report import fmt, table
from benchmarks.timing import count_flops, measure

# Section 1's modes tables (issue 26): eager and `gan-kd train --compile`, with and without channels_last and bf16.
MODES = ("fp32", "channels_last", "compile", "compile+channels_last", "bf16", "bf16+channels_last", "compile+bf16",
         "compile+bf16+channels_last")
MODES_TARGET = 0.70         # issue 26: the study's iteration in its chosen mode <= 0.70x eager fp32
# The modes the study may run in (gan_kd.study.modes.MODES, in this module's names): fp32 only. Issue 26, item 4
# admits bf16 only if a run resumed on a CPU without native bf16 stays within 2x the time, and bf16 runs there on
# fallback kernels (the report's bf16 rows on such a CPU: "bf16 ... ratio to fp32" far above 2).
STUDY_MODES = ("fp32", "channels_last", "compile", "compile+channels_last")
COMPILE_WARMUP_MAX = 4      # warm-up calls of a compiled mode at most (its first iteration compiles every graph)


def mode_skip(ctx: Context, mode: str) -> str | None:
    """Why ``mode`` is not timed here, or None."""
    from kd_core.runtime.compiling import missing_compiler

    precision_name, _, compiled = variant_parts(mode)
    if precision_name == "bf16" and not ctx.native_bf16:
        return "no native bf16 on this CPU"
    if compiled and not ctx.sizes.modes_compile:
        return "--quick does not compile (inductor's cold compile takes minutes)"
    if compiled and missing_compiler():
        return missing_compiler()
    return None


def modes_not_timed(ctx: Context) -> str:
    """Why some modes are not timed here ("" when every mode is)."""
    reasons = sorted({mode_skip(ctx, mode) for mode in MODES} - {None})
    return f"not timed: {'; '.join(reasons)}" if reasons else ""


def mode_label(mode: str) -> str:
    return mode if "compile" in mode else f"eager {mode}"


def warm_compiled(step: Callable[[], object], max_calls: int = COMPILE_WARMUP_MAX) -> tuple[float, int, bool]:
    """Warm a compiled iteration up: call it until one call compiles nothing (every graph of the D step, the G step
    and the EMA update compiled), at most ``max_calls`` times. Returns (seconds spent compiling, calls, quiet)."""
    from kd_core.runtime.compiling import CompileClock

    clock = CompileClock()
    total = 0.0
    for calls in range(1, max_calls + 1):
        step()
        spent = clock.lap()
        total += spent
        if calls == 1 and spent == 0:
            raise RuntimeError("a compiled mode compiled nothing on its first call: torch.compile did not take effect")
        if calls > 1 and spent == 0:
            return total, calls, True
    return total, max_calls, False


def modes_measure(ctx: Context, preset: str, width: int, batch: int, reps: int) -> None:
    """Every timed mode of :data:`MODES` side by side: a trainer iteration (4 D + 1 G + EMA) of (preset, width,
    batch), compiled modes warmed up by :func:`warm_compiled` first, then the repetitions of all modes interleaved."""
    from kd_core.runtime.compiling import CompileClock

    timed = [mode for mode in MODES if mode_skip(ctx, mode) is None]
    ctx.log(f"gan modes {preset} width {width} batch {batch}: {', '.join(timed)}")
    steps = {mode: gan_iteration(build_gan_trainer(ctx, preset, width, mode, batch), d_steps=4, ema=True)
             for mode in timed}
    ctx.mode_flops[(preset, width, batch)] = count_flops(steps["fp32"])  # an extra warm-up of eager fp32
    compiled = [mode for mode in timed if variant_parts(mode)[2]]
    for mode in compiled:
        ctx.log(f"gan modes {preset} width {width} batch {batch}: compiling {mode}")
        ctx.mode_compile[(preset, width, batch, mode)] = warm_compiled(steps[mode])
    clock = CompileClock()
    timings = measure(steps, reps, ctx.sizes.warmup, warm={mode: (lambda: None) for mode in compiled})
    ctx.mode_recompile[(preset, width, batch)] = clock.lap()
    ctx.modes.update({(preset, width, batch, mode): timing for mode, timing in timings.items()})


def modes_groups(ctx: Context) -> list[tuple[int, int, int]]:
    """(width, batch, repetitions) of the modes tables: the study's size, then width 64 at section 1's batch."""
    sizes = ctx.sizes
    return [(sizes.widths[0], sizes.study_batch, sizes.modes_reps),
            (sizes.widths[1], sizes.gan_batch_large, sizes.reps)]


def fastest_mode(ctx: Context, preset: str, width: int, batch: int,
                 among: tuple[str, ...] = MODES) -> tuple[str, float]:
    """(mode, its median / eager fp32's) of the fastest timed mode ``among`` those given."""
    timed = {mode: ctx.modes[(preset, width, batch, mode)].median for mode in among
             if (preset, width, batch, mode) in ctx.modes}
    best = min(timed, key=timed.get)
    return best, timed[best] / timed["fp32"]


def modes_lines(ctx: Context, width: int, batch: int, at_study_size: bool) -> list[str]:
    """One modes table, then the sentence naming each preset's fastest mode, its ratio and (at the study's size)
    whether it meets the issue-26 target."""
    rows = []
    for preset in GAN_PRESETS:
        base = ctx.modes[(preset, width, batch, "fp32")]
        flops = ctx.mode_flops[(preset, width, batch)]
        for mode in MODES:
            key = (preset, width, batch, mode)
            timing = ctx.modes.get(key)
            if timing is None:
                rows.append([preset, mode_label(mode), "—", f"not timed: {mode_skip(ctx, mode)}", "", "", "", "", ""])
                continue
            compile_cell = "—"
            if key in ctx.mode_compile:
                seconds, calls, quiet = ctx.mode_compile[key]
                compile_cell = f"{seconds:.1f} ({calls} warm-up calls{'' if quiet else ', still compiling'})"
            gflops = flops / timing.median / 1e9
            rows.append([preset, mode_label(mode), str(timing.reps), fmt(timing.ms), fmt(timing.part_ms("d")),
                         fmt(timing.part_ms("g")), f"{timing.median / base.median:.2f}×",
                         f"{fmt(gflops)} → {of_peak(gflops, ctx.peak)}", compile_cell])
    lines = table(["preset", "mode", "reps", "ms / iteration (4 D + 1 G + EMA)", "D step ms (each)", "G step + EMA ms",
                   "ratio to eager fp32", "GFLOP/s → fraction", "compile s (warm-up)"], rows)
    parts = []
    for preset in GAN_PRESETS:
        mode, ratio = fastest_mode(ctx, preset, width, batch)
        text = f"{preset} `{mode_label(mode)}` at {ratio:.2f}× eager fp32"
        if at_study_size:
            fp32_mode, fp32_ratio = fastest_mode(ctx, preset, width, batch, STUDY_MODES)
            text += (f"; in fp32, the study's modes, `{mode_label(fp32_mode)}` at {fp32_ratio:.2f}× "
                     f"({'meets' if fp32_ratio <= MODES_TARGET else 'misses'} ≤ {MODES_TARGET:.2f}×)")
        parts.append(text)
    where = "the study's size" if at_study_size else f"width {width}"
    sentence = f"**Fastest mode at {where}: " + "; ".join(parts) + ".**"
    if modes_not_timed(ctx):
        sentence += f" Modes {modes_not_timed(ctx)}."
    recompiled = max(ctx.mode_recompile[(preset, width, batch)] for preset in GAN_PRESETS)
    if recompiled > 0:
        sentence += (f" Warning: {recompiled:.1f} s of compilation fell into the timed repetitions (a graph compiled "
                     f"after the warm-up); the compiled rows' times include it.")
    return lines + [sentence, ""]



def inductor_cache_dir() -> str:
    """Where inductor caches its compiled kernels (``TORCHINDUCTOR_CACHE_DIR`` or its default)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # pragma: no cover - a private module; only the text names the folder
        return os.environ.get("TORCHINDUCTOR_CACHE_DIR", "inductor's cache folder")
    return cache_dir()


def measure_modes(ctx: Context) -> tuple[float, float]:
    """Time both modes tables (:func:`modes_groups`), every preset; returns (seconds they took, seconds compiling)."""
    from kd_core.runtime.compiling import compile_seconds

    modes_start, compiled_before = time.monotonic(), compile_seconds()
    for width, batch, reps in modes_groups(ctx):
        for preset in GAN_PRESETS:
            modes_measure(ctx, preset, width, batch, reps)
    modes_seconds, compiled = time.monotonic() - modes_start, compile_seconds() - compiled_before
    return modes_seconds, compiled


def modes_report(ctx: Context, modes_seconds: float, compiled: float) -> list[str]:
    """Both modes tables with their introductions, and the compilation paragraph (:func:`measure_modes`'s seconds)."""
    small, large = ctx.sizes.widths
    (_, study_batch, study_reps), (_, large_batch, large_reps) = modes_groups(ctx)
    count = sum(1 for key in ctx.mode_compile)
    cache = inductor_cache_dir()
    lines = [f"### Modes at the study's size (width {small}, batch {study_batch})", "",
             f"One iteration = **4 D steps + 1 G step + EMA update**, as `Trainer.run` iterates `gan-kd train --g-ch "
             f"{small} --d-ch {small} --batch-size {study_batch}` (the study's size), presets da and vkd-whiten (the "
             f"resnet20 teacher above), in every mode side by side: eager fp32 (the reference of \"ratio\"), "
             f"eager channels_last, `--compile` (`torch.compile`, inductor, `dynamic=False`: "
             f"`Trainer.build_training_state` compiles G, the critic, D and the teacher in place; the EMA update "
             f"stays eager), compile + channels_last, and the same four in bf16 where the CPU has native bf16 "
             f"(AVX-512-BF16 or AMX-BF16; {'it does here' if ctx.native_bf16 else 'it does not here: no bf16 rows timed'}"
             f"). Repetitions of all modes of one preset are interleaved, {study_reps} each (the median given). A "
             f"compiled mode is warmed up by calling its iteration until one whole call compiles nothing (every graph "
             f"of the D step, the G step and the EMA update built), at most {COMPILE_WARMUP_MAX} calls; the seconds "
             f"spent compiling (torch._dynamo's timers, `kd_core.runtime.compiling.CompileClock`) are in the last "
             f"column, not in the iteration time. GFLOP/s: the eager fp32 iteration's FLOPs over each mode's time.",
             ""]
    lines += modes_lines(ctx, small, study_batch, at_study_size=True)
    lines += [f"### Modes at width {large} (batch {large_batch})", "",
              f"The same at width {large} (`--g-ch {large} --d-ch {large}`), at batch {large_batch} instead of "
              f"{study_batch} and {large_reps} repetitions each, for the time budget of this benchmark (section 1's "
              f"width-{large} batch).", ""]
    lines += modes_lines(ctx, large, large_batch, at_study_size=False)
    lines += [f"Compilation: {compiled:.0f} s over the {count} compiled (preset, size, mode) cells of the two tables "
              f"above, of the {modes_seconds:.0f} s they took in all. Inductor keeps what it builds in an on-disk cache "
              f"(`{cache}` here): on a cold cache (the first run on a machine, or after a torch upgrade) a mode "
              f"compiles for minutes, on a warm one (a second run) for seconds.", ""]
    return lines
