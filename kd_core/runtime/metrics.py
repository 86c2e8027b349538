"""Scalars per step: an append-only ``metrics.jsonl`` (for scripts and tables) and TensorBoard events (for eyes).

Each :meth:`MetricsLogger.log` call appends one line, ``{"step": 50, "d_loss": 1.23, ...}``, and flushes it, so
a crash loses at most the line being written; nothing is ever rewritten. A checkpoint records
:meth:`MetricsLogger.offset` (the file's length when it was saved) and a resumed run cuts the file back to
that length (:meth:`MetricsLogger.resume`), so the lines logged between the checkpoint and the crash are
dropped and logged again, once. TensorBoard's event files are append-only too; the writer is reopened with
``purge_step`` so TensorBoard hides the events past the checkpoint.

Read a run's rows with :func:`read_metrics` (``pandas.read_json(path, lines=True)`` works as well), or its
curves with :func:`metric_curves`. Runs made before this file existed have ``metrics.csv``; both readers read
it too.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from kd_core.runtime.io import write_text

METRICS_FILE = "metrics.jsonl"
LEGACY_METRICS_FILE = "metrics.csv"


class MetricsLogger:
    """Append scalars to ``run_dir/metrics.jsonl`` and TensorBoard; a no-op with ``enabled=False`` (other ranks)."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / METRICS_FILE
        self._file: TextIO | None = None
        self._writer: Any = None  # SummaryWriter, created on first use
        self._purge_step: int | None = None

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Record ``scalars`` (floats, ints, 0-d tensors or NumPy scalars) at ``step``."""
        if not self.enabled:
            return
        values = {name: float(value) for name, value in scalars.items()}
        file = self._open()
        file.write(json.dumps({"step": int(step), **values}) + "\n")
        file.flush()  # a crash must not lose logged rows
        writer = self._summary_writer()
        for name, value in values.items():
            writer.add_scalar(name, value, int(step))

    def offset(self) -> int:
        """The file's length in bytes: what a checkpoint records so that a resume can cut back to it."""
        if not self.enabled:
            return 0
        if self._file is not None:
            self._file.flush()
        return self.path.stat().st_size if self.path.is_file() else 0

    def resume(self, step: int, offset: int | None = None) -> None:
        """Continue a run from its checkpoint at ``step``: drop what was logged after it.

        ``offset`` (from the checkpoint) cuts the file back to exactly what it held then. Without one (a
        checkpoint written before offsets were recorded) the lines with a step greater than ``step`` are
        dropped instead. TensorBoard events past ``step`` are hidden with ``purge_step``.
        """
        if not self.enabled:
            return
        self._close_file()
        if self.path.is_file():
            if offset is not None:
                if offset < self.path.stat().st_size:
                    os.truncate(self.path, offset)
            else:
                kept = [line for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
                        if (row := _parse(line)) is not None and row["step"] <= step]
                write_text(self.path, "".join(kept))
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
        self._close_file()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> TextIO:
        if self._file is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        return self._file

    def _summary_writer(self) -> Any:
        if self._writer is None:
            # Imported here: TensorBoard is slow to import and only rank 0 needs it.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=self._purge_step)
            self._purge_step = None
        return self._writer

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _parse(line: str) -> dict | None:
    """One line of metrics.jsonl, or None for a line a crash cut short."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "step" in row else None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, float]]:
    """The rows a run logged, in order: ``[{"step": 50, "d_loss": 1.23, ...}, ...]`` (metrics.jsonl or metrics.csv)."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if path.is_file():
        rows = [_parse(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return [row for row in rows if row is not None]
    legacy = run_dir / LEGACY_METRICS_FILE
    if legacy.is_file():
        with open(legacy, newline="", encoding="utf-8") as stream:
            return [{"step": int(float(record["step"])),
                     **{name: float(value) for name, value in record.items() if name != "step" and value not in ("", None)}}
                    for record in csv.DictReader(stream)]
    raise FileNotFoundError(f"no {METRICS_FILE} (or {LEGACY_METRICS_FILE}) in {run_dir}")


def metric_curves(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` over every logged row that has ``name``."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in read_metrics(run_dir):
        for name, value in row.items():
            if name != "step" and value is not None:
                curves.setdefault(name, []).append((int(row["step"]), float(value)))
    return curves
