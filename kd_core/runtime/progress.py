"""Console progress of long work: iteration, losses, it/s and ETA.

On a terminal, a tqdm bar that redraws in place; in a log file or a pipe (``nohup``, torchrun, CI), one
plain line every ``every`` steps, formatted the same way: ``it 1200/5000 | d_loss 1.234 | 3.41 it/s | ETA
0:12:34``. The rate is measured over the steps since the previous update, not since the start, so it
reflects the current speed (evaluation pauses and warm-up do not distort it for long), and the ETA is the
remaining steps at that rate.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


class Progress:
    """Progress of ``total`` steps: a tqdm bar on a terminal, else a line every ``every`` steps (module docstring).

    ``bar``: force the bar on (True) or off (False); by default it is on when ``stream`` is a terminal.
    ``clock`` is injectable for tests. Call :meth:`close` at the end (a no-op for plain lines).
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        every: int = 100,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.total = total
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self._last_step = start
        self._last_time = clock()
        self.excluded: dict[str, float] = {}
        self.bar = None
        if bar if bar is not None else _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, file=self.stream, dynamic_ncols=True, unit="it",
                            smoothing=0.1, mininterval=0.5)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def exclude(self, seconds: float, label: str) -> None:
        """Leave ``seconds`` spent on something else than steps (e.g. ``torch.compile``) out of the rate; every
        later line shows the total under ``label``."""
        self._last_time += seconds
        self.excluded[label] = self.excluded.get(label, 0.0) + seconds

    def update(self, step: int, **scalars: Any) -> str | None:
        """Advance the bar to ``step``; or print (and return) a status line if ``every`` steps passed."""
        if self.bar is not None:
            if scalars:
                self.bar.set_postfix({**{name: f"{float(value):.4g}" for name, value in scalars.items()},
                                      **{name: f"{total:.0f} s" for name, total in self.excluded.items()}}, refresh=False)
            self.bar.update(step - self.bar.n)
            return None
        if step - self._last_step < self.every:
            return None
        now = self.clock()
        elapsed = now - self._last_time
        rate = (step - self._last_step) / elapsed if elapsed > 0 else math.inf
        self._last_step, self._last_time = step, now
        parts = [f"it {step}/{self.total}"]
        if scalars:
            parts.append(" ".join(f"{name} {float(value):.4g}" for name, value in scalars.items()))
        parts.append(f"{_format_rate(rate)} it/s")
        parts += [f"{name} {total:.1f} s" for name, total in self.excluded.items()]
        remaining = max(self.total - step, 0)
        parts.append(f"ETA {format_duration(remaining / rate) if math.isfinite(rate) and rate > 0 else '--'}")
        line = " | ".join(parts)
        print(line, file=self.stream, flush=True)
        return line


def _format_rate(rate: float) -> str:
    if not math.isfinite(rate):
        return "--"
    return f"{rate:.2f}" if rate >= 1 else f"{rate:.3g}"


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` with hours unbounded (``27:03:00`` rather than ``1 day, 3:03:00``)."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
