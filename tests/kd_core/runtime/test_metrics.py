"""kd_core.runtime.metrics: the append-only metrics.jsonl, exact resume by byte offset, TensorBoard, readers."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from kd_core.runtime.metrics import METRICS_FILE, MetricsLogger, metric_curves, read_metrics


def test_rows_are_appended_one_json_object_per_line(tmp_path):
    with MetricsLogger(tmp_path) as metrics:
        metrics.log(1, {"d_loss": 1.5, "g_loss": torch.tensor(0.25)})
        metrics.log(2, {"g_loss": np.float32(0.5), "d_loss": 1.0})
        metrics.log(3, {"d_loss": 0.75, "fid": 40.0})  # a new name: nothing earlier is rewritten
    assert read_metrics(tmp_path) == [{"step": 1, "d_loss": 1.5, "g_loss": 0.25},
                                      {"step": 2, "g_loss": 0.5, "d_loss": 1.0},
                                      {"step": 3, "d_loss": 0.75, "fid": 40.0}]
    assert metric_curves(tmp_path) == {"d_loss": [(1, 1.5), (2, 1.0), (3, 0.75)], "g_loss": [(1, 0.25), (2, 0.5)],
                                       "fid": [(3, 40.0)]}
    value = 0.1 + 0.2
    with MetricsLogger(tmp_path / "exact") as metrics:
        metrics.log(0, {"x": value})
    assert read_metrics(tmp_path / "exact")[0]["x"] == value  # floats round-trip exactly


def test_the_file_only_grows_while_a_run_logs(tmp_path):
    sizes, inodes = [], set()
    with MetricsLogger(tmp_path) as metrics:
        for step in range(1, 6):
            metrics.log(step, {"a": 1.0} if step < 3 else {"a": 1.0, f"new_{step}": 2.0})
            sizes.append(metrics.offset())
            inodes.add((tmp_path / METRICS_FILE).stat().st_ino)
    assert sizes == sorted(sizes) and len(set(sizes)) == 5 and len(inodes) == 1


def test_resume_cuts_back_to_the_checkpoint_offset(tmp_path):
    with MetricsLogger(tmp_path) as metrics:
        for step in (100, 200):
            metrics.log(step, {"loss": step / 100})
        offset = metrics.offset()  # what last.pt records at step 200
        metrics.log(200, {"eval/fd": 9.0})  # logged after the checkpoint: redone on resume
        metrics.log(300, {"loss": 3.0})
        with open(tmp_path / METRICS_FILE, "a") as stream:
            stream.write('{"step": 400, "lo')  # the crash cut a line short
    with MetricsLogger(tmp_path) as metrics:
        metrics.resume(200, offset)
        metrics.log(300, {"loss": 30.0})
    assert read_metrics(tmp_path) == [{"step": 100, "loss": 1.0}, {"step": 200, "loss": 2.0},
                                      {"step": 300, "loss": 30.0}]


def test_resume_without_an_offset_drops_rows_past_the_step(tmp_path):
    with MetricsLogger(tmp_path) as metrics:
        for step in (1, 2, 3):
            metrics.log(step, {"loss": float(step)})
    with MetricsLogger(tmp_path) as metrics:
        metrics.resume(1)
        metrics.log(2, {"loss": 20.0})
    assert [(row["step"], row["loss"]) for row in read_metrics(tmp_path)] == [(1, 1.0), (2, 20.0)]


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_events_hold_the_scalars_and_hide_those_past_a_resume(tmp_path):
    with MetricsLogger(tmp_path) as metrics:
        metrics.log(1, {"d_loss": 1.5, "g_loss": 0.25})
        metrics.log(2, {"d_loss": 1.0})
        offset = metrics.offset()
        metrics.log(3, {"d_loss": 3.0})
    assert _scalars(tmp_path) == {"d_loss": [(1, 1.5), (2, 1.0), (3, 3.0)], "g_loss": [(1, 0.25)]}
    with MetricsLogger(tmp_path) as metrics:
        metrics.resume(2, offset)
        metrics.log(3, {"d_loss": 30.0})
    assert _scalars(tmp_path)["d_loss"] == [(1, 1.5), (2, 1.0), (3, 30.0)]


def test_legacy_csv_runs_are_read_too(tmp_path):
    with open(tmp_path / "metrics.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([["step", "loss", "fid"], ["1", "0.5", ""], ["2", "0.25", "9.0"]])
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25, "fid": 9.0}]


def test_disabled_logger_creates_nothing(tmp_path):
    run_dir = tmp_path / "run"
    metrics = MetricsLogger(run_dir, enabled=False)
    metrics.log(1, {"loss": 1.0})
    metrics.resume(0, 0)
    assert metrics.offset() == 0
    metrics.flush()
    metrics.close()
    assert not run_dir.exists()
