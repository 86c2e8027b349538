"""kd_core.runtime.lock: one live training process per run directory."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kd_core.runtime.lock import LOCK_FILE, RunLock, RunLocked, lock_run_dir

HOLD = "import sys, time; from kd_core.runtime.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


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


FORK_AND_HOLD = ("import os, sys, time; from kd_core.runtime.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
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
