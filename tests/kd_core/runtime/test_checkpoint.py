"""Atomic checkpoint writing and validated loading (kd_core/runtime/checkpoint.py)."""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_core.runtime import checkpoint
from kd_core.runtime.checkpoint import CheckpointError, atomic_save, load_checkpoint
from kd_core.runtime.seed import capture_rng_state, restore_rng_state


def _training_state() -> dict:
    """What a trainer stores: weights, optimizer state, RNG states, NumPy values, a config."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).pow(2).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": capture_rng_state(),
        "step": 42,
        "best_fid": np.float64(31.5),
        "subset_indices": np.arange(10, dtype=np.int64),
        "config": {"lr": 1e-3, "betas": (0.0, 0.999), "out": "runs/x", "data_root": Path("/data")},
    }


def _tmp_leftovers(directory: Path, name: str) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name != name]


def test_round_trip_preserves_training_state(tmp_path):
    state = _training_state()
    path = tmp_path / "checkpoints" / "last.pt"  # parent does not exist yet
    atomic_save(state, path)
    loaded = load_checkpoint(path, required_keys=("model", "optimizer", "rng"))

    for key, tensor in state["model"].items():
        torch.testing.assert_close(loaded["model"][key], tensor, rtol=0, atol=0)
    exp_avg = state["optimizer"]["state"][0]["exp_avg"]
    torch.testing.assert_close(loaded["optimizer"]["state"][0]["exp_avg"], exp_avg, rtol=0, atol=0)
    assert loaded["step"] == 42 and loaded["best_fid"] == 31.5
    np.testing.assert_array_equal(loaded["subset_indices"], np.arange(10))
    assert loaded["config"]["data_root"] == Path("/data")
    assert _tmp_leftovers(path.parent, "last.pt") == []


def test_loaded_rng_state_reproduces_draws(tmp_path):
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    atomic_save({"rng": state}, tmp_path / "rng.pt")
    random.random(), np.random.rand(), torch.rand(())  # advance all generators
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_optimizer_resumes_identically_from_loaded_state(tmp_path):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        return model, torch.optim.Adam(model.parameters(), lr=0.1)

    def step(model, optimizer, seed):
        gen = torch.Generator().manual_seed(seed)
        optimizer.zero_grad()
        model(torch.randn(8, 3, generator=gen)).pow(2).mean().backward()
        optimizer.step()

    model, optimizer = make()
    step(model, optimizer, 1)
    atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "c.pt")
    step(model, optimizer, 2)

    resumed, resumed_opt = make()
    loaded = load_checkpoint(tmp_path / "c.pt")
    resumed.load_state_dict(loaded["model"])
    resumed_opt.load_state_dict(loaded["optimizer"])
    step(resumed, resumed_opt, 2)
    torch.testing.assert_close(resumed.weight, model.weight, rtol=0, atol=0)


def test_failure_during_save_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)
    old_bytes = path.read_bytes()
    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # some bytes reach the temp file ...
        raise KeyboardInterrupt  # ... then the job is killed

    monkeypatch.setattr(checkpoint.torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": 2, "big": torch.zeros(1000)}, path)

    assert path.read_bytes() == old_bytes
    assert load_checkpoint(path)["step"] == 1
    assert _tmp_leftovers(tmp_path, "last.pt") == []


def test_failure_before_first_save_leaves_nothing(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", broken)
    with pytest.raises(OSError):
        atomic_save({"step": 1}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_failure_in_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)

    def no_rename(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(checkpoint.os, "replace", no_rename)
    with pytest.raises(OSError):
        atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert _tmp_leftovers(tmp_path, "last.pt") == []


def test_save_overwrites_and_is_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)
    atomic_save({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 2
    assert len(synced) >= 2  # at least the file data, once per save


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in _one_line(err) and "does not exist" in str(err.value)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"PK\x03\x04truncated zip"])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in _one_line(err)
    assert isinstance(err.value, ValueError)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save(_training_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in _one_line(err)


def test_not_a_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    atomic_save(torch.zeros(3), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "Tensor" in _one_line(err) and "dict" in str(err.value)


def test_missing_required_keys_are_named(tmp_path):
    path = tmp_path / "c.pt"
    atomic_save({"model": {}, "step": 3}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, required_keys=("model", "optimizer", "ema"))
    message = _one_line(err)
    assert str(path) in message and "optimizer" in message and "ema" in message
    assert "lacks required keys: optimizer, ema" in message


class _Payload:
    """A class the safe loader must refuse: unpickling it could run arbitrary code."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_arbitrary_objects_are_refused_unless_trusted(tmp_path):
    path = tmp_path / "foreign.pt"
    atomic_save({"model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "trusted=True" in _one_line(err) and "torch.nn" in str(err.value)
    assert isinstance(load_checkpoint(path, trusted=True)["model"], torch.nn.Linear)


def test_code_executing_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "getcwd" in _one_line(err)
    assert load_checkpoint(path, trusted=True)["x"] == os.getcwd()  # what the safe loader prevented


def test_plain_pickle_is_rejected_cleanly(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = _one_line(err)
    assert message.startswith(f"cannot read checkpoint {path}: ") and "trusted" not in message
