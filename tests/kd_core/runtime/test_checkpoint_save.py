"""Crash-safe checkpoint writing (kd_core/runtime/checkpoint_save.py): failures, NaN/Inf refusal, rotation."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_core.runtime import checkpoint_save
from kd_core.runtime.checkpoint import load_checkpoint
from kd_core.runtime.checkpoint_save import NonFiniteCheckpoint, atomic_save


def _tmp_leftovers(directory: Path, name: str) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name != name]


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_failure_during_save_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)
    old_bytes = path.read_bytes()
    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # some bytes reach the temp file ...
        raise KeyboardInterrupt  # ... then the job is killed

    monkeypatch.setattr(checkpoint_save.torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": 2, "big": torch.zeros(1000)}, path)

    assert path.read_bytes() == old_bytes
    assert load_checkpoint(path)["step"] == 1
    assert _tmp_leftovers(tmp_path, "last.pt") == []


def test_failure_before_first_save_leaves_nothing(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint_save.torch, "save", broken)
    with pytest.raises(OSError):
        atomic_save({"step": 1}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_failure_in_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(checkpoint_save.os, "replace", no_rename)
    with pytest.raises(OSError):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert _tmp_leftovers(tmp_path, "last.pt") == []


def test_save_overwrites_and_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(checkpoint_save.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)
    atomic_save({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 2
    assert len(synced) >= 2  # at least the file data, once per save


# ---------------------------------------------------------------- non-finite tensors

def _optimizer_like(bad: torch.Tensor) -> dict:
    return {
        "generator": {"blocks.0.weight": torch.ones(2, 2)},
        "opt_d": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4)},
                            3: {"step": torch.tensor(3.0), "exp_avg": bad}},
                  "param_groups": [{"lr": 1e-4, "params": [0, 3]}]},
        "iteration": 10,
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tensors_are_never_written(tmp_path, dtype, bad_value):
    path = tmp_path / "last.pt"
    atomic_save(_optimizer_like(torch.zeros(5)), path, keep_previous=True)
    old_bytes = path.read_bytes()
    bad = torch.tensor([0.0, bad_value, 1.0, bad_value, 2.0], dtype=dtype)
    with pytest.raises(NonFiniteCheckpoint) as err:
        atomic_save(_optimizer_like(bad), path, keep_previous=True)
    message = _one_line(err)
    assert str(path) in message and "opt_d.state.3.exp_avg" in message and "2 non-finite values" in message
    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp files, no rotation


def test_non_finite_check_runs_before_any_file_or_directory_exists(tmp_path):
    target = tmp_path / "new" / "last.pt"
    with pytest.raises(NonFiniteCheckpoint, match="metrics.fid"):
        atomic_save({"metrics": {"fid": np.array([1.0, np.nan])}, "ok": torch.zeros(2)}, target)
    with pytest.raises(NonFiniteCheckpoint):
        atomic_save(torch.tensor([float("inf")]), target)  # a bare tensor too
    assert list(tmp_path.iterdir()) == []


def test_non_finite_python_floats_and_integer_tensors_are_fine(tmp_path):
    state = {"best": {"fid": float("inf")}, "counts": torch.arange(3)}  # a metric placeholder is not a weight
    atomic_save(state, tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt")["best"]["fid"] == float("inf")


# ---------------------------------------------------------------- rotation

@pytest.mark.parametrize("hard_links", [True, False])
def test_rotation_keeps_the_previous_file(tmp_path, monkeypatch, hard_links):
    if not hard_links:
        def no_link(src, dst):
            raise OSError(1, "Operation not permitted")
        monkeypatch.setattr(checkpoint_save.os, "link", no_link)
    path, prev = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    atomic_save({"step": 1}, path, keep_previous=True)
    assert not prev.exists()  # nothing to keep yet
    contents = [path.read_bytes()]
    for step in (2, 3):
        atomic_save({"step": step, "w": torch.full((3,), float(step))}, path, keep_previous=True)
        assert prev.read_bytes() == contents[-1]
        contents.append(path.read_bytes())
    assert load_checkpoint(path)["step"] == 3 and load_checkpoint(prev)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


def test_rotation_never_leaves_the_target_missing(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)
    real_replace = os.replace
    seen = []

    def checked_replace(src, dst):
        seen.append(path.exists())
        real_replace(src, dst)
        seen.append(path.exists())

    monkeypatch.setattr(checkpoint_save.os, "replace", checked_replace)
    atomic_save({"step": 2}, path, keep_previous=True)
    assert len(seen) == 4 and all(seen)  # one replace for .prev, one for the target
