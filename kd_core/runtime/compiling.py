"""``--compile`` for both trainers: ``torch.compile`` (inductor) of the modules a step calls, and its cost.

Modules are compiled in place (``nn.Module.compile``), so their ``state_dict`` keys stay those of the plain
modules: a compiled run's checkpoints load anywhere, eager or compiled. ``dynamic=False``: each input shape gets
its own graph, so a call at another batch size (an evaluation, the overfitting probe) compiles a graph of its own
and never replaces the one the training steps use; a compiled run therefore computes the same kernels whether it
ran straight through or was resumed, and resumes bitwise in the same mode.

Compilation happens on the first call of each shape (inductor needs a C++ compiler on the CPU, e.g. ``g++``);
:class:`CompileClock` measures the seconds it took from torch's own timers, so a trainer can report them apart
from the iteration time.
"""
from __future__ import annotations

import shutil

from torch import nn

# torch._dynamo's timers: the whole forward compilation (tracing, AOT autograd, inductor, the C++ build) and the
# backward graph's compilation, which runs lazily on the first backward pass.
COMPILE_TIMERS = ("_compile.compile_inner", "backward._backward_impl")


RECOMPILE_LIMIT = 64  # graphs per code object: every compiled module shares nn.Module._call_impl's


def compile_modules(*modules: nn.Module | None) -> None:
    """Compile each module in place (skipping None).

    All modules compiled this way run through the code of ``nn.Module._call_impl``, whose graphs (one per module
    class, grad mode and input shape) count against one recompile limit; past torch's default (8) dynamo would
    silently run the rest eagerly, so the limit is raised to :data:`RECOMPILE_LIMIT`.
    """
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for module in modules:
        if module is not None:
            module.compile(dynamic=False)


def missing_compiler() -> str | None:
    """Why ``--compile`` cannot work on the CPU here (no C++ compiler on PATH), or None."""
    if shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"):
        return None
    return "--compile needs a C++ compiler on the CPU (inductor builds its kernels with it); install g++ or drop --compile"


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far (torch._dynamo's timers; 0 if they are unavailable)."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:  # pragma: no cover - the timers are private; their absence only hides the report
        return 0.0
    return float(sum(sum(compilation_time_metrics.get(name, ())) for name in COMPILE_TIMERS))


class CompileClock:
    """``clock.lap()`` -> seconds spent compiling since the previous lap (or since the clock was made)."""

    def __init__(self) -> None:
        self._seen = compile_seconds()

    def lap(self) -> float:
        now = compile_seconds()
        spent, self._seen = now - self._seen, now
        return spent
