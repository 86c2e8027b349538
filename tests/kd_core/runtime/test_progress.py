"""kd_core.runtime.progress: plain progress lines (logs, pipes) and the tqdm bar (terminals)."""
from __future__ import annotations

import io

import pytest

from kd_core.runtime.progress import Progress, format_duration


# --------------------------------------------------------------------------- progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_line_format_rate_and_eta():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(5000, start=1000, every=100, stream=stream, clock=clock)
    clock.now = 20.0  # 200 steps in 20 s since construction: 10 it/s
    line = progress.update(1200, d_loss=1.2344, g_loss=0.5671)
    # 3800 remaining steps at 10 it/s = 380 s
    assert line == "it 1200/5000 | d_loss 1.234 g_loss 0.5671 | 10.00 it/s | ETA 0:06:20"
    assert stream.getvalue() == line + "\n"


def test_progress_rate_is_measured_since_the_last_line():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(10000, every=100, stream=stream, clock=clock)
    clock.now = 10.0
    progress.update(100)  # 10 it/s
    clock.now = 10.0 + 1000.0 / 3.41
    line = progress.update(1100)  # 1000 steps at 3.41 it/s; 8900 remaining -> 2610 s
    assert line == "it 1100/10000 | 3.41 it/s | ETA 0:43:30"


def test_time_excluded_from_the_rate_is_shown_apart():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(1000, every=100, stream=stream, clock=clock)
    clock.now = 70.0
    progress.exclude(60.0, "compile")  # 60 of the 70 s were compilation: 100 steps in 10 s
    line = progress.update(100)
    assert line == "it 100/1000 | 10.00 it/s | compile 60.0 s | ETA 0:01:30"
    clock.now = 80.0
    progress.exclude(1.5, "compile")
    assert progress.update(200) == "it 200/1000 | 11.76 it/s | compile 61.5 s | ETA 0:01:08"


def test_progress_prints_at_most_every_n_steps():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(1000, every=50, stream=stream, clock=clock)
    printed = []
    for step in range(1, 301):
        clock.now = step * 0.5
        if progress.update(step, loss=1.0) is not None:
            printed.append(step)
    assert printed == [50, 100, 150, 200, 250, 300]
    assert len(stream.getvalue().splitlines()) == 6
    assert stream.getvalue().splitlines()[-1].endswith("| 2.00 it/s | ETA 0:05:50")


def test_progress_slow_rates_and_long_etas():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(100000, every=1, stream=stream, clock=clock)
    clock.now = 250.0
    # 99999 remaining steps x 250 s = 24999750 s
    assert progress.update(1) == "it 1/100000 | 0.004 it/s | ETA 6944:22:30"
    assert progress.update(2) == "it 2/100000 | -- it/s | ETA --"  # no time passed


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00:00"), (59.6, "0:01:00"), (754, "0:12:34"), (90061, "25:01:01")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_tqdm_bar_and_a_pipe_gets_lines():
    terminal = FakeTerminal()
    progress = Progress(400, every=100, stream=terminal)
    assert progress.bar is not None
    assert progress.update(100, loss=1.5) is None  # the bar redraws in place, no line
    progress.update(400, loss=0.5)
    progress.close()
    text = terminal.getvalue()
    assert "400/400" in text and "loss=0.5" in text and "\r" in text
    pipe = io.StringIO()
    progress = Progress(400, every=100, stream=pipe)
    assert progress.bar is None and progress.update(100, loss=1.5).startswith("it 100/400 | loss 1.5")
    assert Progress(400, stream=FakeTerminal(), bar=False).bar is None  # other ranks: never a bar
