"""The machine's load during the run: a load-average monitor and the progress lines that report it on stderr."""
from __future__ import annotations

import os
import sys
import threading
import time

LOAD_LIMIT = 1.2            # 1-minute load above this: another process competed with the benchmark


class LoadMonitor:
    """Samples ``os.getloadavg()`` every second in a daemon thread; keeps the before/after and the maxima."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.before = os.getloadavg()
        self.max_1min = self.before[0]
        self.after: tuple[float, float, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.max_1min = max(self.max_1min, os.getloadavg()[0])

    def now(self) -> float:
        load = os.getloadavg()[0]
        self.max_1min = max(self.max_1min, load)
        return load

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.after = os.getloadavg()
        self.max_1min = max(self.max_1min, self.after[0])


class Progress:
    def __init__(self, monitor: LoadMonitor):
        self.start = time.monotonic()
        self.monitor = monitor

    def __call__(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.start:6.1f} s, load {self.monitor.now():.2f}] {message}",
              file=sys.stderr, flush=True)

