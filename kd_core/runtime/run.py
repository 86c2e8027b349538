"""The life of one training run that both trainers share: :class:`Run`, and :func:`load_run` to read a finished one.

:class:`Run` strings the run directory's parts together into the life of one run: its lock
(:mod:`kd_core.runtime.lock`), the option check and ``config.json`` with provenance
(:mod:`kd_core.runtime.rundir`, :mod:`kd_core.runtime.provenance`), ``last.pt`` (:mod:`kd_core.runtime.checkpoint`),
signals (:mod:`kd_core.runtime.signals`), the text log (:mod:`kd_core.runtime.logs`), ``metrics.jsonl`` resume,
``best.pt`` and ``result.json``; ``gan_kd.train.Trainer`` and ``classifier_kd.train.fit`` both use it and keep
only their steps and what their checkpoints hold.

Metrics files are :mod:`kd_core.runtime.metrics`; console progress is :mod:`kd_core.runtime.progress`.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kd_core.runtime.io import write_json
from kd_core.runtime.lock import RunLock, lock_run_dir
from kd_core.runtime.logs import get_logger
from kd_core.runtime.rundir import CONFIG_FILE, prepare_run_dir, validate_run_dir
from kd_core.runtime.signals import StopSignals

RESULT_FILE = "result.json"
CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"


class Run:
    """One training run's directory, from the lock to ``result.json``: the lifecycle both trainers share.

    The trainers keep only their steps and what their checkpoints hold; the order of a run is::

        run = Run(out, config.to_dict(), ignore_keys=RESUMABLE_KEYS, ctx=ctx, logger_name="...")
        run.open(required_keys=(...))   # lock, options vs config.json, last.pt read and verified; writes nothing
        ...build models; if run.last is not None: load it...
        with run:                       # SIGTERM / SIGINT -> run.stops; the lock is released however it ends
            log = run.start(step)       # directory, config.json + provenance, log.txt, metrics.jsonl cut to step
            ...loop: run.save_last(state), run.save_best(obj), run.stops.should_stop(device)...
            run.finish(result)          # result.json

    :meth:`open` raises only ``ValueError`` subclasses (:class:`~kd_core.runtime.lock.RunLocked`,
    :class:`~kd_core.runtime.rundir.RunConfigMismatch`, ``OutputNotWritable``, ``CheckpointError``) and releases
    the lock when it does, so a refused command leaves nothing behind. Only rank 0 writes; every method may be
    called on every rank.
    """

    def __init__(self, out: str | os.PathLike, config: Mapping[str, Any], *, ignore_keys: Iterable[str] = (),
                 added_keys: Mapping[str, Any] | None = None, ctx: Any = None, logger_name: str = "kd_core.run"):
        self.out = Path(out)
        self.config = dict(config)
        self.ignore_keys = tuple(ignore_keys)
        self.added_keys = dict(added_keys or {})  # see validate_run_dir
        self.is_main = ctx.is_main if ctx is not None else True
        self.device = ctx.device if ctx is not None else "cpu"
        self.logger_name = logger_name
        self.lock: RunLock | None = None
        self.resuming = False
        self.last: dict | None = None  # the verified content of last.pt, when resuming
        self.stops: StopSignals | None = None
        self.metrics = None
        self.log: logging.Logger | None = None

    @property
    def last_path(self) -> Path:
        return self.out / CHECKPOINT_DIR / LAST

    @property
    def best_path(self) -> Path:
        return self.out / CHECKPOINT_DIR / BEST

    @property
    def result_path(self) -> Path:
        return self.out / RESULT_FILE

    def open(self, *, required_keys: tuple = (), map_location: Any = None) -> Run:
        """Claim and check the directory before anything is written (see the class docstring)."""
        from kd_core.runtime.checkpoint import load_checkpoint
        from kd_core.runtime.io import check_writable_dir

        check_writable_dir(self.out, "run directory --out")
        self.lock = lock_run_dir(self.out, self.is_main, self.device)
        try:
            self.resuming = validate_run_dir(self.out, self.config, self.ignore_keys, self.added_keys)
            if self.resuming and self.last_path.is_file():
                self.last = load_checkpoint(self.last_path, map_location=map_location, required_keys=required_keys)
            elif self.resuming and self.result_path.is_file():
                raise ValueError(f"{self.out} holds a finished run but no {CHECKPOINT_DIR}/{LAST} to "
                                        f"continue from; choose a new --out")
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Run:
        self.stops = StopSignals().__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.stops is not None:
            self.stops.__exit__(*exc_info)
        self.close()

    def start(self, step: int) -> logging.Logger:
        """Create the directory (config.json with provenance) or check it again, open ``log.txt``, and open
        ``metrics.jsonl`` cut back to what it held when last.pt (at ``step``) was written."""
        from kd_core.runtime.distributed import barrier
        from kd_core.runtime.metrics import MetricsLogger

        prepare_run_dir(self.out, self.config, ignore_keys=self.ignore_keys, is_main=self.is_main,
                        added_keys=self.added_keys)
        barrier()  # the other ranks wait for rank 0's directory
        self.log = get_logger(self.logger_name, self.out if self.is_main else None, is_main=self.is_main)
        self.metrics = MetricsLogger(self.out, enabled=self.is_main)
        self.metrics.resume(step, self.last.get("metrics_offset") if self.last is not None else None)
        return self.log

    def save_last(self, state: dict) -> None:
        """Rank 0 writes ``last.pt`` (the previous one kept beside it) with how far metrics.jsonl had got."""
        from kd_core.runtime.checkpoint_save import atomic_save

        if self.is_main:
            state["metrics_offset"] = self.metrics.offset() if self.metrics is not None else None
            atomic_save(state, self.last_path, keep_previous=True)

    def save_best(self, state: dict) -> None:
        from kd_core.runtime.checkpoint_save import atomic_save

        if self.is_main:
            atomic_save(state, self.best_path)

    def finish(self, result: Mapping[str, Any]) -> None:
        """Rank 0 writes ``result.json``: the one file that says a run has finished."""
        if self.is_main:
            write_json(self.result_path, dict(result))

    def close(self) -> None:
        """Close the metrics file and release the directory; safe to call twice."""
        if self.metrics is not None:
            self.metrics.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def load_run(run_dir: str | os.PathLike, command: str = "the training command", *, result_file: str = RESULT_FILE,
             finished: bool = True) -> dict[str, Any]:
    """``{"dir", "config", "result"}`` of a finished run (both trainers' layout: config.json + result.json).

    FileNotFoundError, naming ``command`` (what finishes it), when the run has no ``result.json``; ValueError
    when a file is not readable JSON. ``config`` falls back to the copy a result may hold. ``result_file``: another
    name for the result (older layouts); ``finished=False`` accepts a run without one (``result`` is then ``{}``).
    """
    run_dir = Path(run_dir)
    result_path, config_path = run_dir / result_file, run_dir / CONFIG_FILE
    if not result_path.is_file() and finished:
        raise FileNotFoundError(f"{result_path} not found: the run has not finished; run (or re-run, which "
                                f"resumes) {command} first")
    try:
        result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else {}
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    except (OSError, ValueError) as error:
        raise ValueError(f"{run_dir} is not a readable run: {' '.join(str(error).split())}") from error
    if config is None:
        config = result.get("config", {}) if isinstance(result, dict) else {}
    return {"dir": str(run_dir), "config": config, "result": result}
