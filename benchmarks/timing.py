"""How the benchmark times: interleaved, warmed-up repetitions (:func:`measure`), the seconds of named parts of a
call (:class:`PartTimer`, :func:`patched`), and FLOPs (:func:`count_flops`)."""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Timing:
    """Seconds of each timed repetition (``times``) and of named parts of it (``parts``)."""

    times: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)

    @property
    def reps(self) -> int:
        return len(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def ms(self) -> float:
        return 1e3 * self.median

    def part_ms(self, name: str) -> float:
        return 1e3 * statistics.median(self.parts[name])


def timed_call(fn: Callable[[], dict | None]) -> tuple[float, dict]:
    start = time.perf_counter()
    parts = fn()
    return time.perf_counter() - start, parts if isinstance(parts, dict) else {}


def measure(fns: dict[str, Callable[[], dict | None]], reps, warmup: int,
            prepare: dict[str, Callable[[], None]] | None = None,
            warm: dict[str, Callable[[], object]] | None = None) -> dict[str, Timing]:
    """Warm each function up, then time them with interleaved repetitions.

    ``reps``: an int, ``{name: int}``, or ``rule(name, seconds of the last warm-up call) -> int``. A function may
    return ``{part: seconds}`` to report parts of its own time. ``prepare[name]`` runs untimed before every call of
    ``name`` (e.g. an optimiser step that moves the parameters); ``warm[name]`` replaces ``name``'s warm-up call
    (e.g. the same network on fewer images).
    """
    prepare, warm = prepare or {}, warm or {}
    warm_seconds = {}
    for name, fn in fns.items():
        warm_seconds[name] = 0.0
        for _ in range(warmup):
            prepare.get(name, lambda: None)()
            warm_seconds[name], _ = timed_call(warm.get(name, fn))
    if callable(reps):
        counts = {name: reps(name, warm_seconds[name]) for name in fns}
    else:
        counts = reps if isinstance(reps, dict) else {name: reps for name in fns}
    timings = {name: Timing() for name in fns}
    for rep in range(max(counts.values(), default=0)):
        for name, fn in fns.items():
            if rep >= counts[name]:
                continue
            prepare.get(name, lambda: None)()
            seconds, parts = timed_call(fn)
            timings[name].times.append(seconds)
            for part, value in parts.items():
                timings[name].parts.setdefault(part, []).append(value)
    return timings


_MISSING = object()


@contextlib.contextmanager
def patched(*replacements: tuple[object, str, object]):
    """Set ``owner.name = value`` for each ``(owner, name, value)`` (a module or a class) for the block's duration;
    restore afterwards (an attribute a class only inherited is deleted again)."""
    saved = []
    try:
        for owner, name, value in replacements:
            saved.append((owner, name, vars(owner).get(name, _MISSING)))
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


class PartTimer:
    """Adds up the seconds spent in wrapped functions, by part name. Only the outermost of nested wrapped calls
    counts, so that a timed function called by another timed one is not counted twice."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._depth = 0

    def wrap(self, fn: Callable, part: str | Callable[..., str]) -> Callable:
        """``fn`` timed into ``part`` (or into ``part(*args, **kwargs)``, decided when it is called)."""
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            name = part(*args, **kwargs) if callable(part) else part
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed

    def take(self) -> dict[str, float]:
        """The parts' seconds since the last ``take``, and a fresh start."""
        seconds, self.seconds = self.seconds, {}
        return seconds


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())

