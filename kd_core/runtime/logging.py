"""Run directory layout, metrics files, console progress and the text log.

A run directory is the unit of reproducibility: ``config.json`` records every option (plus the
package version and git commit) when the run starts, and resuming with different options is
refused, because a curve that silently changes learning rate half-way is worse than an error.
Only rank 0 writes; the helpers take ``is_main`` / ``enabled`` so other ranks can call them
unconditionally.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from kd_core.runtime.io import write_json

DISTRIBUTION = "vkd-distill"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
LOG_FILE = "log.txt"
# Written next to the options; describe the code, not the run, so never compared on resume.
METADATA_KEYS = ("package_version", "git_commit", "git_dirty", "created")


class RunConfigMismatch(ValueError):
    """Resuming a run directory with options that differ from those it was created with."""


# --------------------------------------------------------------------------- run directory


def validate_run_dir(
    out: str | os.PathLike, config: Mapping[str, Any], ignore_keys: Iterable[str] = ()
) -> bool:
    """Check ``config`` against ``out/config.json`` without writing anything.

    Returns True if ``out`` holds a run to resume (its options match), False if there is no
    ``config.json`` yet, or if the options differ but the directory holds no checkpoint and no
    result (a run that failed before saving anything: a corrected command may take it over, and
    :func:`prepare_run_dir` rewrites its ``config.json``). Otherwise raises
    :class:`RunConfigMismatch` naming every differing option with its old and new value; options
    in ``ignore_keys`` (e.g. ``device``, ``iterations``) may change on resume. CLIs call this
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
) -> Path:
    """Create (or, on resume, validate) a run directory and return its path.

    New run: the main rank creates ``out`` and writes ``config.json`` = the options plus
    ``package_version``, ``git_commit``, ``git_dirty`` and ``created``. Existing run: the options
    are compared as in :func:`validate_run_dir` and ``config.json`` is left as it was, so it keeps
    describing how the run started. Nothing is created when a mismatch is raised, and non-main
    ranks never create anything.
    """
    out = Path(out)
    if validate_run_dir(out, config, ignore_keys) or not is_main:
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


# --------------------------------------------------------------------------- metrics files


class MetricsLogger:
    """Scalars per step to ``metrics.csv`` (for scripts and tables) and TensorBoard (for eyes).

    The CSV header is ``step`` followed by every metric name in order of first appearance; when a
    new name appears (e.g. FID, first computed at the first evaluation) the file is rewritten with
    the wider header and empty cells in old rows. An existing file is appended to, so a resumed
    run continues one file; call :meth:`truncate_after` with the resume step first so the steps
    between the checkpoint and the crash are not logged twice. With ``enabled=False`` (non-main
    ranks) every method is a no-op and nothing is created.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.csv_path = self.run_dir / METRICS_FILE
        self._columns: list[str] = ["step"]
        self._file: TextIO | None = None
        self._writer: Any = None  # SummaryWriter, created on first use
        self._purge_step: int | None = None
        if enabled and self.csv_path.is_file():
            header, _ = self._read_csv()
            if header:
                self._columns = header

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Record ``scalars`` (floats, ints, 0-d tensors or NumPy scalars) at ``step``."""
        if not self.enabled:
            return
        values = {name: float(value) for name, value in scalars.items()}
        new_names = [name for name in values if name not in self._columns]
        if new_names:
            self._widen(new_names)
        file = self._csv_file()
        row = [str(int(step))] + [_format_cell(values.get(name)) for name in self._columns[1:]]
        csv.writer(file).writerow(row)
        file.flush()  # a crash must not lose logged rows
        writer = self._summary_writer()
        for name, value in values.items():
            writer.add_scalar(name, value, int(step))

    def truncate_after(self, step: int) -> None:
        """Drop every CSV row with a step greater than ``step`` and hide those TensorBoard events.

        TensorBoard event files are append-only; the writer is reopened with ``purge_step`` so
        TensorBoard discards the older events past ``step``.
        """
        if not self.enabled:
            return
        self._close_csv()
        if self.csv_path.is_file():
            header, rows = self._read_csv()
            kept = [row for row in rows if row and int(float(row[0])) <= step]
            if len(kept) != len(rows):
                self._rewrite(header or self._columns, kept)
        self._purge_step = int(step) + 1
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        self._close_csv()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _csv_file(self) -> TextIO:
        if self._file is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fresh = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
            self._file = open(self.csv_path, "a", encoding="utf-8", newline="")
            if fresh:
                csv.writer(self._file).writerow(self._columns)
        return self._file

    def _summary_writer(self) -> Any:
        if self._writer is None:
            # Imported here: TensorBoard is slow to import and only rank 0 needs it.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=self._purge_step)
            self._purge_step = None
        return self._writer

    def _read_csv(self) -> tuple[list[str], list[list[str]]]:
        with open(self.csv_path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        return (rows[0], rows[1:]) if rows else ([], [])

    def _widen(self, new_names: list[str]) -> None:
        self._close_csv()
        self._columns = self._columns + new_names
        if self.csv_path.is_file():
            _, rows = self._read_csv()
            self._rewrite(self._columns, rows)

    def _rewrite(self, header: list[str], rows: list[list[str]]) -> None:
        width = len(header)
        lines = [header] + [row + [""] * (width - len(row)) for row in rows]
        tmp = self.csv_path.with_name(f".{METRICS_FILE}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                csv.writer(f).writerows(lines)
            os.replace(tmp, self.csv_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _close_csv(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _format_cell(value: float | None) -> str:
    return "" if value is None else repr(value)


# --------------------------------------------------------------------------- console progress


class Progress:
    """One status line every ``every`` steps: ``it 1200/5000 | d_loss 1.234 | 3.41 it/s | ETA 0:12:34``.

    The rate is measured over the steps since the previous line, not since the start, so it
    reflects the current speed (evaluation pauses and warm-up do not distort it for long), and
    the ETA is the remaining steps at that rate. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        every: int = 100,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.total = total
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self._last_step = start
        self._last_time = clock()

    def update(self, step: int, **scalars: Any) -> str | None:
        """Print (and return) a status line if ``every`` steps passed since the last one."""
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
