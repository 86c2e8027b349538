"""The life of a training run that both trainers share: its directory, its lock, its provenance and text log.

* The run directory is the unit of reproducibility: ``config.json`` records every option (plus the package
  version and git commit) when the run starts, and resuming with different options is refused
  (:func:`validate_run_dir`, :func:`prepare_run_dir`), because a curve that silently changes learning rate
  half-way is worse than an error. Only rank 0 writes; the helpers take ``is_main`` so other ranks can call
  them unconditionally.
* :class:`RunLock` is an exclusive POSIX record lock (``lockf``) on ``<run>/.lock``, taken before the run's
  options are checked against the directory and held until the process ends. The kernel drops the lock when
  the process dies, however it dies (SIGKILL, OOM), so a stale ``.lock`` file never blocks a resume; a second
  live process is refused with :class:`RunLocked` (one line naming the holder). A record lock, unlike
  ``flock``, is not inherited by forked children: data-loader workers orphaned by a SIGKILL'd trainer (they
  notice within seconds) must not keep the directory locked against the resume. Record locks belong to the
  process, so a second acquire inside the same process is refused from a table of held paths, before it
  opens (and by closing, would release) the lock file. Under torchrun only rank 0 takes the lock
  and every rank learns the outcome, so all of them stop together. If taking the lock created the directory
  and the run then stops before writing anything else (bad input), releasing the lock removes the directory
  again: a refused command leaves no half-made run behind.
* :func:`get_logger` (the text log ``log.txt``) and :func:`hardware_summary` (the machine a number was
  measured on).
* :class:`Run` strings these together into the life of one run (lock, option check, ``last.pt``, signals,
  ``metrics.jsonl`` resume, ``best.pt``, ``result.json``); ``gan_kd.train.Trainer`` and
  ``classifier_kd.train.fit`` both use it and keep only their steps and what their checkpoints hold.

Metrics files are :mod:`kd_core.runtime.metrics`; console progress is :mod:`kd_core.runtime.progress`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from kd_core.runtime.io import write_json

DISTRIBUTION = "vkd-distill"
CONFIG_FILE = "config.json"
LOG_FILE = "log.txt"
# Written next to the options; describe the code, not the run, so never compared on resume.
METADATA_KEYS = ("package_version", "git_commit", "git_dirty", "created")
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


# --------------------------------------------------------------------------- run directory


class RunConfigMismatch(ValueError):
    """Resuming a run directory with options that differ from those it was created with."""


# --------------------------------------------------------------------------- run directory


def validate_run_dir(
    out: str | os.PathLike, config: Mapping[str, Any], ignore_keys: Iterable[str] = (),
    added_keys: Mapping[str, Any] | None = None,
) -> bool:
    """Check ``config`` against ``out/config.json`` without writing anything.

    Returns True if ``out`` holds a run to resume (its options match), False if there is no
    ``config.json`` yet, or if the options differ but the directory holds no checkpoint and no
    result (a run that failed before saving anything: a corrected command may take it over, and
    :func:`prepare_run_dir` rewrites its ``config.json``). Otherwise raises
    :class:`RunConfigMismatch` naming every differing option with its old and new value; options
    in ``ignore_keys`` (e.g. ``device``, ``iterations``) may change on resume. ``added_keys`` maps options
    introduced after runs were recorded to the value those runs had implicitly: an old ``config.json`` that
    lacks such a key matches when the new value is that one. CLIs call this
    before creating anything.
    """
    out = Path(out)
    config_path = out / CONFIG_FILE
    new = _normalise(config)
    _reject_reserved_keys(new)
    if not config_path.is_file():
        return False
    try:
        old = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {config_path}: {err}") from err
    if not isinstance(old, dict):
        raise ValueError(f"{config_path} does not hold a JSON object")
    skip = set(METADATA_KEYS) | set(ignore_keys)
    missing = object()
    old = {**{key: value for key, value in _normalise(added_keys or {}).items() if key not in old}, **old}
    differences = []
    for key in [*old, *(k for k in new if k not in old)]:
        if key in skip:
            continue
        old_value, new_value = old.get(key, missing), new.get(key, missing)
        if old_value != new_value:
            differences.append(f"{key}: {_show(old_value, missing)} -> {_show(new_value, missing)}")
    if differences and not _holds_progress(out):
        return False  # nothing trained yet: a corrected command may take the directory over
    if differences:
        raise RunConfigMismatch(
            f"run directory {out} was created with different options ({'; '.join(differences)}); "
            "resume with the original options or choose a new output directory"
        )
    return True


PROGRESS_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "result.json", "training.json")


def _holds_progress(out: Path) -> bool:
    """Whether a run directory holds anything a different configuration would contradict."""
    return any((out / name).exists() for name in PROGRESS_FILES)


def prepare_run_dir(
    out: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    ignore_keys: Iterable[str] = (),
    is_main: bool = True,
    added_keys: Mapping[str, Any] | None = None,
) -> Path:
    """Create (or, on resume, validate) a run directory and return its path.

    New run: the main rank creates ``out`` and writes ``config.json`` = the options plus
    ``package_version``, ``git_commit``, ``git_dirty`` and ``created``. Existing run: the options
    are compared as in :func:`validate_run_dir` and ``config.json`` is left as it was, so it keeps
    describing how the run started. Nothing is created when a mismatch is raised, and non-main
    ranks never create anything.
    """
    out = Path(out)
    if validate_run_dir(out, config, ignore_keys, added_keys) or not is_main:
        return out
    record = {**_normalise(config), **run_metadata()}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_FILE, record)
    return out


def run_metadata() -> dict[str, Any]:
    """What code produced a run: package version, git commit (None outside a checkout), time."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = None
    commit, dirty = _git_state()
    return {
        "package_version": version,
        "git_commit": commit,
        "git_dirty": dirty,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _git_state(source_root: Path | None = None) -> tuple[str | None, bool | None]:
    """HEAD commit and whether tracked files differ from it, for the checkout this code lives in.

    Only a checkout whose top level is ``source_root`` (default: the directory holding
    ``kd_core``) counts: an installed copy inside some unrelated repository must not report that
    repository's commit.
    """
    source_root = (source_root or Path(__file__).parents[2]).resolve()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(source_root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != source_root:
        return None, None
    commit = git("rev-parse", "HEAD")
    if commit is None:  # a repository without commits yet
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else status != "")


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options as they will read back from JSON (tuples -> lists, paths -> str), so a
    resumed run compares equal to the file it wrote."""
    return json.loads(json.dumps(dict(config), default=str))


def _reject_reserved_keys(config: Mapping[str, Any]) -> None:
    clash = [key for key in METADATA_KEYS if key in config]
    if clash:
        raise ValueError(f"option names reserved for run metadata: {', '.join(clash)}")


def _show(value: Any, missing: object) -> str:
    return "<absent>" if value is missing else json.dumps(value)


# --------------------------------------------------------------------------- text log

_HANDLER_MARK = "_kd_core_handler"


def get_logger(name: str, run_dir: str | os.PathLike | None = None, is_main: bool = True) -> logging.Logger:
    """A ``logging`` logger writing to stderr and, on the main rank, to ``run_dir/log.txt``.

    Non-main ranks log only warnings and errors, so a 8-GPU run prints each info line once.
    Calling it again for the same name replaces the handlers it added (no duplicated lines),
    e.g. when a CLI reconfigures after the run directory is known.
    """
    logger = logging.getLogger(name)
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False  # the root logger may have its own stderr handler
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None and is_main:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(run_dir) / LOG_FILE, mode="a", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    return logger


# --------------------------------------------------------------------------- provenance


def hardware_summary(device: Any = None) -> str:
    """One line naming the machine a number was measured on: CPU model and cores, GPU if used, torch version."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    parts = [f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"]
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(torch.device(device)))
    parts.append(f"torch {torch.__version__}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- signals


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


# --------------------------------------------------------------------------- the run


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

    :meth:`open` raises only ``ValueError`` subclasses (:class:`RunLocked`, :class:`RunConfigMismatch`,
    ``OutputNotWritable``, ``CheckpointError``) and releases the lock when it does, so a refused command
    leaves nothing behind. Only rank 0 writes; every method may be called on every rank.
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
