"""kd_core.runtime.run: the run directory (options, provenance, resume checks), its lock, and the text log."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kd_core.runtime import run as runlog
from kd_core.runtime.run import (LOCK_FILE, RunConfigMismatch, RunLock, RunLocked, get_logger, lock_run_dir,
                                 prepare_run_dir, validate_run_dir)

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


# --------------------------------------------------------------------------- lock

HOLD = "import sys, time; from kd_core.runtime.run import RunLock; lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


def hold_in_subprocess(run_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    with pytest.raises(RunLocked, match=f"in use by another training process \\(pid {os.getpid()} on "):
        RunLock(tmp_path / "run").acquire()
    assert first.held
    first.release()
    with RunLock(tmp_path / "run") as again:
        assert again.held and json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_live_process_blocks_and_a_killed_one_does_not(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = hold_in_subprocess(run_dir)
    try:
        with pytest.raises(RunLocked, match=f"pid {process.pid}"):
            RunLock(run_dir).acquire()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (run_dir / LOCK_FILE).is_file()  # the stale file is still there ...
    with RunLock(run_dir) as lock:          # ... and does not block
        assert lock.held


FORK_AND_HOLD = ("import os, sys, time; from kd_core.runtime.run import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
                 "child = os.fork()\nif child == 0: time.sleep(600); os._exit(0)\n"
                 "print(child, flush=True); time.sleep(600)")


def test_a_forked_child_of_a_killed_holder_does_not_keep_the_lock(tmp_path):
    """Data-loader workers outlive a SIGKILL'd trainer by seconds; they inherit its lock file descriptor
    but must not hold the directory against the resume (an ``flock`` would, a record lock does not)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    process = subprocess.Popen([sys.executable, "-c", FORK_AND_HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    child = int(process.stdout.readline())
    try:
        with pytest.raises(RunLocked, match=f"pid {process.pid}"):
            RunLock(run_dir).acquire()
        process.send_signal(signal.SIGKILL)
        process.wait()
        os.kill(child, 0)  # the orphan is still alive, with the lock file open ...
        with RunLock(run_dir) as lock:  # ... and does not block
            assert lock.held
    finally:
        process.kill()
        process.wait()
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_refused_start_leaves_no_directory_behind(tmp_path):
    lock = RunLock(tmp_path / "new" / "run").acquire()
    lock.release()
    assert not (tmp_path / "new" / "run").exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    with RunLock(existing):
        pass
    assert existing.is_dir()  # a directory it did not create stays, with its lock file

    used = tmp_path / "used"
    with RunLock(used):
        (used / "config.json").write_text("{}")
    assert sorted(p.name for p in used.iterdir()) == [LOCK_FILE, "config.json"]


def test_lock_run_dir_takes_the_lock_on_the_main_rank_only(tmp_path):
    assert lock_run_dir(tmp_path / "a", is_main=False) is None and not (tmp_path / "a").exists()
    lock = lock_run_dir(tmp_path / "a")
    try:
        with pytest.raises(RunLocked):
            lock_run_dir(tmp_path / "a")
    finally:
        lock.release()


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


# --------------------------------------------------------------------------- Run: the whole lifecycle


def test_run_lifecycle_writes_config_checkpoints_metrics_and_result(tmp_path):
    import torch

    from kd_core.runtime.run import Run

    out = tmp_path / "run"
    run = Run(out, CONFIG, ignore_keys=("iterations",), logger_name="kd_test.run").open(required_keys=("step",))
    assert not run.resuming and run.last is None and run.lock.held and _tree(out) == [LOCK_FILE]
    with run:
        assert run.stops is not None
        log = run.start(0)
        log.info("first")
        run.metrics.log(1, {"loss": 1.0})
        run.save_last({"step": 1, "w": torch.ones(2)})
        run.metrics.log(2, {"loss": 0.5})  # after last.pt: dropped on resume
        run.save_best({"step": 1})
    assert not run.lock  # released at the end of the with block
    assert json.loads((out / "config.json").read_text())["lr"] == 2e-4
    last = torch.load(run.last_path, weights_only=True)
    assert last["step"] == 1 and last["metrics_offset"] == len('{"step": 1, "loss": 1.0}\n')
    assert run.best_path.is_file() and not run.result_path.exists()

    again = Run(out, {**CONFIG, "iterations": 9}, ignore_keys=("iterations",)).open(required_keys=("step",))
    assert again.resuming and torch.equal(again.last["w"], torch.ones(2))
    with again:
        again.start(again.last["step"])
        again.metrics.log(2, {"loss": 0.25})
        again.finish({"done": True})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.25}]
    assert json.loads(again.result_path.read_text()) == {"done": True}


def test_run_open_refuses_before_writing_and_releases_the_lock(tmp_path):
    from kd_core.runtime.checkpoint import CheckpointError
    from kd_core.runtime.run import Run

    out = tmp_path / "run"
    with Run(out, CONFIG).open() as first:
        first.start(0)
        first.save_last({"step": 1})
        with pytest.raises(RunLocked):  # a second process would be refused the same way
            Run(out, CONFIG).open()
    with pytest.raises(RunConfigMismatch, match="lr: 0.0002 -> 0.1"):
        Run(out, {**CONFIG, "lr": 0.1}).open()
    (out / "checkpoints" / "last.pt").write_bytes(b"torn")
    (out / "checkpoints" / "last.prev.pt").unlink(missing_ok=True)
    with pytest.raises(CheckpointError):
        Run(out, CONFIG).open()
    (out / "checkpoints" / "last.pt").unlink()
    (out / "result.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a finished run but no checkpoints/last.pt"):
        Run(out, CONFIG).open()
    with Run(out / "fresh", CONFIG).open() as lock_free:  # every refusal above released its lock
        assert lock_free.lock.held
    assert not (out / "fresh").exists()  # nothing written: the directory the lock made is gone again


def test_an_option_added_later_matches_old_runs_at_its_implicit_value(tmp_path):
    """Runs recorded before an option existed resume when it has the value they had implicitly, and only then."""
    prepare_run_dir(tmp_path, CONFIG)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"progress")
    assert validate_run_dir(tmp_path, {**CONFIG, "distill_loss": "vkd"}, added_keys={"distill_loss": "vkd"})
    with pytest.raises(RunConfigMismatch, match='distill_loss: "vkd" -> "spkd"'):
        validate_run_dir(tmp_path, {**CONFIG, "distill_loss": "spkd"}, added_keys={"distill_loss": "vkd"})
    with pytest.raises(RunConfigMismatch, match="distill_loss"):  # without the declaration: a mismatch
        validate_run_dir(tmp_path, {**CONFIG, "distill_loss": "vkd"})
