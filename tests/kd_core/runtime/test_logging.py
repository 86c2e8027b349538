"""Run directories, metrics files, progress lines and the text log (kd_core/runtime/logging.py)."""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_core.runtime import logging as runlog
from kd_core.runtime.logging import (
    MetricsLogger,
    Progress,
    RunConfigMismatch,
    format_duration,
    get_logger,
    prepare_run_dir,
    validate_run_dir,
)

CONFIG = {
    "dataset": "cifar10",
    "data_fraction": 0.1,
    "lr": 2e-4,
    "betas": (0.0, 0.999),
    "data_root": Path("/data"),
    "device": "cuda",
    "iterations": 5000,
    "loss": {"name": "vkd", "weight": 1.0},
}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --------------------------------------------------------------------------- run directory


def test_new_run_writes_options_and_metadata(tmp_path):
    out = tmp_path / "runs" / "a"
    assert prepare_run_dir(out, CONFIG) == out
    written = json.loads((out / "config.json").read_text())
    assert written["betas"] == [0.0, 0.999] and written["data_root"] == "/data"
    assert written["loss"] == {"name": "vkd", "weight": 1.0}
    assert {"package_version", "git_commit", "created"} <= set(written)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", written["created"])
    assert _tree(tmp_path / "runs") == ["a", "a/config.json"]


def test_package_version_comes_from_the_distribution(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog.metadata, "version", lambda name: {"vkd-distill": "9.9.9"}[name])
    prepare_run_dir(tmp_path / "run", CONFIG)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["package_version"] == "9.9.9"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_state_of_the_checkout_holding_the_code(tmp_path):
    repo = tmp_path / "repo"
    (repo / "kd_core").mkdir(parents=True)
    _git(repo, "init", "-q")
    assert runlog._git_state(repo) == (None, None)  # no commit yet
    (repo / "kd_core" / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    head = _git(repo, "rev-parse", "HEAD")
    assert runlog._git_state(repo) == (head, False)
    (repo / "kd_core" / "a.py").write_text("x = 2\n")
    assert runlog._git_state(repo) == (head, True)
    # code installed below an unrelated repository's top level is not that repository's commit
    assert runlog._git_state(repo / "kd_core") == (None, None)
    assert runlog._git_state(tmp_path) == (None, None)  # not a checkout at all


def test_resume_with_same_options_is_accepted_and_keeps_config(tmp_path):
    out = prepare_run_dir(tmp_path / "run", CONFIG)
    before = (out / "config.json").read_text()
    # tuples/paths compare equal to what JSON gave back; ignored keys may change
    resumed = {**CONFIG, "device": "cpu", "iterations": 10000}
    assert validate_run_dir(out, resumed, ignore_keys=("device", "iterations"))
    assert prepare_run_dir(out, resumed, ignore_keys=("device", "iterations")) == out
    assert (out / "config.json").read_text() == before


def test_validate_without_config_reports_new_run_and_writes_nothing(tmp_path):
    assert validate_run_dir(tmp_path / "missing", CONFIG) is False
    assert not (tmp_path / "missing").exists()


def _started(out):
    """Make ``out`` hold progress (a checkpoint): from then on its options are binding."""
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.pt").write_bytes(b"")


@pytest.mark.parametrize("progress", [None, "checkpoints/last.pt", "checkpoints/best.pt", "result.json", "training.json"])
def test_a_run_without_progress_may_be_taken_over_by_other_options(tmp_path, progress):
    out = prepare_run_dir(tmp_path / "run", CONFIG)
    if progress is not None:
        (out / progress).parent.mkdir(exist_ok=True)
        (out / progress).write_bytes(b"")
        with pytest.raises(RunConfigMismatch):
            prepare_run_dir(out, {**CONFIG, "lr": 1.0})
        return
    assert validate_run_dir(out, {**CONFIG, "lr": 1.0}) is False  # nothing to resume: a fresh start
    prepare_run_dir(out, {**CONFIG, "lr": 1.0})
    assert json.loads((out / "config.json").read_text())["lr"] == 1.0


def test_mismatch_names_every_differing_key_with_old_and_new_values(tmp_path):
    out = prepare_run_dir(tmp_path / "run", CONFIG)
    _started(out)
    changed = {**CONFIG, "lr": 1e-3, "dataset": "cifar100", "iterations": 1, "new_option": True}
    del changed["data_fraction"]
    with pytest.raises(RunConfigMismatch) as err:
        validate_run_dir(out, changed, ignore_keys=("iterations",))
    message = str(err.value)
    assert "\n" not in message and str(out) in message
    assert "lr: 0.0002 -> 0.001" in message
    assert 'dataset: "cifar10" -> "cifar100"' in message
    assert "data_fraction: 0.1 -> <absent>" in message
    assert "new_option: <absent> -> true" in message
    assert "iterations:" not in message and "created:" not in message
    assert isinstance(err.value, ValueError)


def test_mismatch_creates_nothing(tmp_path):
    out = prepare_run_dir(tmp_path / "run", CONFIG)
    _started(out)
    before = _tree(tmp_path)
    with pytest.raises(RunConfigMismatch):
        prepare_run_dir(out, {**CONFIG, "lr": 1.0})
    assert _tree(tmp_path) == before


def test_nested_difference_is_detected(tmp_path):
    out = prepare_run_dir(tmp_path / "run", CONFIG)
    _started(out)
    with pytest.raises(RunConfigMismatch, match="loss:"):
        validate_run_dir(out, {**CONFIG, "loss": {"name": "vkd", "weight": 2.0}})


def test_non_main_rank_creates_nothing(tmp_path):
    assert prepare_run_dir(tmp_path / "run", CONFIG, is_main=False) == tmp_path / "run"
    assert _tree(tmp_path) == []


def test_reserved_option_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="created"):
        prepare_run_dir(tmp_path / "run", {**CONFIG, "created": "yesterday"})
    assert _tree(tmp_path) == []


def test_corrupt_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        validate_run_dir(tmp_path, CONFIG)


# --------------------------------------------------------------------------- metrics


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_rows_and_widened_header(tmp_path):
    with MetricsLogger(tmp_path) as metrics:
        metrics.log(1, {"d_loss": 1.5, "g_loss": torch.tensor(0.25)})
        metrics.log(2, {"g_loss": np.float32(0.5), "d_loss": 1.0})
        metrics.log(3, {"d_loss": 0.75, "fid": 40.0})  # new key: header widens, old rows kept
        metrics.log(4, {"g_loss": 0.125})
    assert _read_csv(tmp_path / "metrics.csv") == [
        ["step", "d_loss", "g_loss", "fid"],
        ["1", "1.5", "0.25", ""],
        ["2", "1.0", "0.5", ""],
        ["3", "0.75", "", "40.0"],
        ["4", "", "0.125", ""],
    ]


def test_csv_values_round_trip_exactly(tmp_path):
    value = 0.1 + 0.2
    with MetricsLogger(tmp_path) as metrics:
        metrics.log(0, {"x": value})
    assert float(_read_csv(tmp_path / "metrics.csv")[1][1]) == value


def test_resume_appends_and_truncates_rows_after_the_checkpoint(tmp_path):
    with MetricsLogger(tmp_path) as metrics:
        for step in (100, 200, 300, 400):
            metrics.log(step, {"loss": step / 100})
    # crash after step 400; the last checkpoint was at step 200
    with MetricsLogger(tmp_path) as metrics:
        metrics.truncate_after(200)
        metrics.log(300, {"loss": 30.0})
        metrics.log(400, {"loss": 40.0, "fid": 9.0})
    assert _read_csv(tmp_path / "metrics.csv") == [
        ["step", "loss", "fid"],
        ["100", "1.0", ""],
        ["200", "2.0", ""],
        ["300", "30.0", ""],
        ["400", "40.0", "9.0"],
    ]


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_tensorboard_events_hold_the_scalars(tmp_path):
    with MetricsLogger(tmp_path) as metrics:
        metrics.log(1, {"d_loss": 1.5, "g_loss": 0.25})
        metrics.log(2, {"d_loss": 1.0})
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
    assert _scalars(tmp_path) == {"d_loss": [(1, 1.5), (2, 1.0)], "g_loss": [(1, 0.25)]}


def test_tensorboard_purges_events_after_resume_step(tmp_path):
    with MetricsLogger(tmp_path) as metrics:
        for step in (1, 2, 3):
            metrics.log(step, {"loss": float(step)})
    with MetricsLogger(tmp_path) as metrics:
        metrics.truncate_after(1)
        metrics.log(2, {"loss": 20.0})
    assert _scalars(tmp_path)["loss"] == [(1, 1.0), (2, 20.0)]


def test_disabled_logger_creates_nothing(tmp_path):
    run_dir = tmp_path / "run"
    metrics = MetricsLogger(run_dir, enabled=False)
    metrics.log(1, {"loss": 1.0})
    metrics.truncate_after(0)
    metrics.flush()
    metrics.close()
    assert not run_dir.exists()


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


# --------------------------------------------------------------------------- text log


def test_logger_writes_stderr_and_log_file_once(tmp_path, capsys):
    logger = get_logger("kd_test.main", tmp_path)
    logger = get_logger("kd_test.main", tmp_path)  # reconfiguring must not duplicate lines
    logger.info("step %d done", 7)
    logger.debug("hidden")
    for handler in logger.handlers:
        handler.flush()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith("INFO kd_test.main: step 7 done")
    assert capsys.readouterr().err.count("step 7 done") == 1


def test_non_main_logger_writes_no_file_and_only_warnings(tmp_path, capsys):
    run_dir = tmp_path / "run"
    logger = get_logger("kd_test.worker", run_dir, is_main=False)
    logger.info("chatty")
    logger.warning("careful")
    assert not run_dir.exists()
    err = capsys.readouterr().err
    assert "chatty" not in err and "careful" in err


@pytest.fixture(autouse=True)
def _close_test_loggers():
    yield
    for name in ("kd_test.main", "kd_test.worker"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
