"""Stopping a run cleanly on SIGTERM / SIGINT: finish the step, save a checkpoint, exit with 128 + signal.

:class:`StopSignals` turns the signals into a request the training loop polls at step boundaries (collective
under torchrun); the loop then saves and raises :class:`RunInterrupted`, whose message
(:func:`interrupted_message`) says how to resume and whose :attr:`~RunInterrupted.exit_code` the CLIs exit with.
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any


class RunInterrupted(Exception):
    """A run stopped at SIGTERM / SIGINT after saving its checkpoint; the process should exit with :attr:`exit_code`."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT


class StopSignals:
    """SIGTERM and SIGINT become a request to stop at the next step boundary, instead of killing the run.

    ``with StopSignals() as stops: ... if stops.should_stop(device): save, then raise RunInterrupted``. The
    first signal sets the request and puts the default handler back, so a second Ctrl-C (or SIGTERM) stops the
    process at once. :meth:`should_stop` is collective under torchrun: every rank learns that one of them got
    a signal, so all stop after the same step. Handlers can only be installed from the main thread; elsewhere
    (e.g. a trainer called from a worker thread) this does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        print(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def should_stop(self, device: Any = "cpu") -> int | None:
        """The signal number if this rank or any other got one, else None (the same answer on every rank)."""
        import torch
        import torch.distributed as dist

        received = self.received or 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            value = torch.tensor([received], dtype=torch.int64, device=device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            received = int(value.item())
        return received or None


def interrupted_message(signum: int, where: str, checkpoint: Path) -> str:
    return (f"stopped by {signal.Signals(signum).name} {where}; checkpoint saved to {checkpoint}; "
            f"run the same command again to resume")
