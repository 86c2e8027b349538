"""The run directory's lock: one live training process per run directory.

:class:`RunLock` is an exclusive POSIX record lock (``lockf``) on ``<run>/.lock``, taken before the run's
options are checked against the directory and held until the process ends. The kernel drops the lock when
the process dies, however it dies (SIGKILL, OOM), so a stale ``.lock`` file never blocks a resume; a second
live process is refused with :class:`RunLocked` (one line naming the holder). A record lock, unlike
``flock``, is not inherited by forked children: data-loader workers orphaned by a SIGKILL'd trainer (they
notice within seconds) must not keep the directory locked against the resume. Record locks belong to the
process, so a second acquire inside the same process is refused from a table of held paths, before it
opens (and by closing, would release) the lock file. Under torchrun only rank 0 takes the lock
and every rank learns the outcome (:func:`lock_run_dir`), so all of them stop together. If taking the lock
created the directory and the run then stops before writing anything else (bad input), releasing the lock
removes the directory again: a refused command leaves no half-made run behind.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

LOCK_FILE = ".lock"


class RunLocked(ValueError):
    """Another live process is training into the same run directory."""


_HELD: dict[Path, str] = {}  # resolved lock path -> holder record, for the locks this process holds


class RunLock:
    """``with RunLock(run_dir): ...`` or ``acquire()`` / ``release()``; see the module docstring."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._file: IO[str] | None = None
        self._created_dir = False

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        if self._file is not None:
            return self
        key = self.path.resolve()
        if key in _HELD:
            self._refuse(_HELD[key])
        self._created_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stream = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.lockf(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                stream.close()
                raise
            locked = False
        if not locked:
            stream.seek(0)
            record = stream.read()
            stream.close()  # the directory is the holder's now: leave it, even if this call created it
            self._refuse(record)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        stream.seek(0)
        stream.truncate()
        stream.write(record + "\n")
        stream.flush()
        self._file = stream
        _HELD[key] = record
        return self

    def _refuse(self, record: str) -> None:
        raise RunLocked(f"run directory {self.run_dir} is in use by another training process "
                        f"({_describe(record)}); wait for it to finish or stop it, or choose another --out")

    def release(self) -> None:
        if self._file is not None:
            key = self.path.resolve()
            self._remove_if_unused()  # while still holding the lock
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
            _HELD.pop(key, None)

    def _remove_if_unused(self) -> None:
        """Undo the directory this lock created if nothing but the lock file was put in it."""
        if self._created_dir and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
            self.path.unlink(missing_ok=True)
            self.run_dir.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        record = json.loads(text)
        return f"pid {record['pid']} on {record['host']}, since {record['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def lock_run_dir(run_dir: str | os.PathLike, is_main: bool = True, device="cpu") -> RunLock | None:
    """Rank 0 takes the run directory's lock; every rank raises :class:`RunLocked` if it could not.

    Returns the held lock on rank 0 (release it when the run ends, or let the process exit) and ``None``
    on the other ranks.
    """
    from kd_core.runtime.finite import all_ranks_true

    lock, error = None, None
    if is_main:
        try:
            lock = RunLock(run_dir).acquire()
        except RunLocked as err:
            error = err
    if not all_ranks_true(error is None, device):
        raise error if error is not None else RunLocked(f"run directory {run_dir} is in use by another training "
                                                        f"process (rank 0 could not lock it)")
    return lock
