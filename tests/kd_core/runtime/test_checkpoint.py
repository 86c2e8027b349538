"""The safe loader (kd_core/runtime/checkpoint.py): round trips, refusals, the integrity check, .prev hints."""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_core.runtime.checkpoint import (
    CheckpointCorrupt,
    CheckpointError,
    load_checkpoint,
    load_weights_file,
    previous_path,
)
from kd_core.runtime.checkpoint_save import atomic_save
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
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module, as some teachers ship
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = _one_line(err)
    assert "torch.nn" in message and "files that need code to load are not accepted" in message
    assert "trusted" not in message  # the CLIs have no such option; do not suggest one
    assert isinstance(load_checkpoint(path, trusted=True)["model"], torch.nn.Linear)


def test_code_executing_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "getcwd" in _one_line(err) and "trusted" not in str(err.value)
    assert load_checkpoint(path, trusted=True)["x"] == os.getcwd()  # what the safe loader prevented


def test_plain_pickle_is_rejected_cleanly(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = _one_line(err)
    assert message.startswith(f"cannot read checkpoint {path}: ") and "trusted" not in message


# ---------------------------------------------------------------- integrity record

def _assert_same(actual, expected, where="obj"):
    """Deep equality that also requires the same container and scalar types (tensors bit-exact)."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        def as_bytes(t):
            return t.contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(as_bytes(actual), as_bytes(expected)), where  # bit-exact
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype, where
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys differ"
        for key in expected:
            _assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_same(a, e, f"{where}.{index}")
    else:
        assert actual == expected, where


def test_round_trip_returns_exactly_what_was_saved(tmp_path):
    state = _training_state()
    state["half"] = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t()  # non-contiguous bf16
    state["flags"] = [True, None, b"raw", -0.0, 2**70]
    keys_before = list(state)
    path = tmp_path / "last.pt"
    atomic_save(state, path)
    assert list(state) == keys_before  # the caller's dict is not modified

    raw = torch.load(path, weights_only=False)
    assert list(raw) == keys_before + ["integrity"]
    assert raw["integrity"]["algorithm"] == "sha256" and len(raw["integrity"]["digest"]) == 64

    loaded = load_checkpoint(path)
    assert "integrity" not in loaded
    _assert_same(loaded, state)


def test_digest_is_deterministic_and_content_defined(tmp_path):
    def digest(obj, name):
        atomic_save(obj, tmp_path / name)
        return torch.load(tmp_path / name, weights_only=False)["integrity"]["digest"]

    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert digest({"w": base.t()}, "a.pt") == digest({"w": base.t().contiguous()}, "b.pt")  # strides do not matter
    assert digest(_training_state(), "c.pt") == digest(_training_state(), "d.pt")
    assert digest({"w": base}, "e.pt") != digest({"w": base.reshape(4, 3)}, "f.pt")  # shapes do
    assert digest({"w": base}, "g.pt") != digest({"w": base.double()}, "h.pt")  # and dtypes


def test_caller_integrity_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="integrity"):
        atomic_save({"integrity": 1, "step": 2}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_type_is_refused_with_its_key_path(tmp_path):
    with pytest.raises(TypeError, match=r"'a\.b\.1'"):
        atomic_save({"a": {"b": [1, {1, 2}]}}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def _flip_middle(path: Path, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + n] = bytes(b ^ 0xFF for b in data[middle:middle + n])
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_tensor_data_are_detected(tmp_path):
    path = tmp_path / "runs" / "x" / "checkpoints" / "last.pt"
    atomic_save({"weights": torch.arange(100_000, dtype=torch.float32), "step": 7}, path)
    _flip_middle(path)  # torch.load itself does not notice: the zip CRCs are not checked
    with pytest.raises(CheckpointCorrupt) as err:
        load_checkpoint(path)
    message = _one_line(err)
    assert message.startswith(f"checkpoint {path} is corrupted (SHA-256 integrity check failed); ")
    assert isinstance(err.value, CheckpointError)


@pytest.mark.parametrize("tamper", [
    lambda s: s.update(step=43),
    lambda s: s.update(step=True if s["step"] == 1 else 1),  # same value, another type
    lambda s: s["config"].update(lr=1e-2),
    lambda s: s["config"].update(betas=list(s["config"]["betas"])),  # tuple -> list
    lambda s: s["config"].update(data_root=str(s["config"]["data_root"])),  # Path -> str
    lambda s: s["model"].pop("bias"),
    lambda s: s.update(model=dict(reversed(list(s["model"].items())))),  # key order
    lambda s: s["subset_indices"].__setitem__(0, 9),
    lambda s: s.update(best_fid=np.float32(31.5)),
], ids=["int", "type", "nested-float", "tuple-list", "path-str", "dropped-key", "key-order", "array", "np-dtype"])
def test_tampered_payload_keeping_the_old_record_is_detected(tmp_path, tamper):
    path = tmp_path / "c.pt"
    state = _training_state()
    state["step"] = 1
    atomic_save(state, path)
    raw = torch.load(path, weights_only=False)
    tamper(raw)
    torch.save(raw, path)  # the old integrity record is kept
    with pytest.raises(CheckpointCorrupt) as err:
        load_checkpoint(path)
    assert str(path) in _one_line(err)


def test_malformed_record_is_corrupt(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"step": 1, "integrity": "deadbeef"}, path)
    with pytest.raises(CheckpointCorrupt):
        load_checkpoint(path)


def test_file_without_record_loads_as_before(tmp_path):
    path = tmp_path / "external.pt"
    state = _training_state()
    torch.save(state, path)
    _assert_same(load_checkpoint(path), state)


# ---------------------------------------------------------------- the previous checkpoint

def test_previous_path():
    assert previous_path("runs/x/checkpoints/last.pt") == Path("runs/x/checkpoints/last.prev.pt")
    assert previous_path(Path("best")) == Path("best.prev")


def test_corrupted_last_names_the_intact_previous(tmp_path):
    path, prev = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    for step in (1, 2):
        atomic_save({"step": step, "w": torch.arange(100_000, dtype=torch.float32)}, path, keep_previous=True)
    _flip_middle(path)
    with pytest.raises(CheckpointCorrupt) as err:
        load_checkpoint(path, required_keys=("step",))
    assert _one_line(err) == (f"checkpoint {path} is corrupted (SHA-256 integrity check failed); "
                              f"the previous checkpoint {prev} is intact: move it over {path} to resume from it")
    os.replace(prev, path)  # what the message says to do
    assert load_checkpoint(path)["step"] == 1


def test_truncated_last_names_the_intact_previous_and_a_bad_previous_is_reported(tmp_path):
    path, prev = tmp_path / "last.pt", tmp_path / "last.prev.pt"
    for step in (1, 2):
        atomic_save({"step": step, "w": torch.arange(100_000, dtype=torch.float32)}, path, keep_previous=True)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = _one_line(err)
    assert message.startswith(f"cannot read checkpoint {path}: ")
    assert message.endswith(f"; the previous checkpoint {prev} is intact: move it over {path} to resume from it")

    _flip_middle(prev)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "no intact previous checkpoint exists" in _one_line(err) and "intact: move" not in str(err.value)


# ---------------------------------------------------------------- code-executing pickles

class _TouchMarker:
    """Unpickling this creates ``marker``: a stand-in for any code an attacker could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("wrapped", [False, True])
def test_malicious_pickle_never_runs(tmp_path, wrapped):
    marker = tmp_path / "pwned"
    evil = {"weight": torch.zeros(2), "x": _TouchMarker(marker)}
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": evil} if wrapped else evil, path)

    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = _one_line(err)
    # pickle protocol 2 spells Path.touch as builtins.getattr(Path, "touch"): the refused global is getattr
    assert message.endswith("; files that need code to load are not accepted") and "refuses (" in message
    with pytest.raises(CheckpointError) as err:
        load_weights_file(path, "Inception weights")
    assert _one_line(err).startswith(f"Inception weights {path} holds objects the safe loader refuses (")
    assert not marker.exists()

    load_checkpoint(path, trusted=True)  # the payload is real: the unrestricted unpickler runs it
    assert marker.exists()


# ---------------------------------------------------------------- plain weight files

def _weights() -> dict:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).state_dict()


def test_load_weights_file_reads_safetensors_and_torch_files(tmp_path):
    from safetensors.torch import save_file

    weights = _weights()
    save_file(dict(weights), tmp_path / "w.safetensors")
    torch.save(weights, tmp_path / "w.pth")
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "wrapped.pt")
    atomic_save(dict(weights), tmp_path / "ours.pt")  # with an integrity record, which is removed
    for name in ("w.safetensors", "w.pth", "wrapped.pt", "ours.pt"):
        loaded = load_weights_file(tmp_path / name, "CLIP weights")
        assert sorted(loaded) == sorted(weights), name
        for key, tensor in weights.items():
            assert torch.equal(loaded[key], tensor) and loaded[key].device.type == "cpu", (name, key)


@pytest.mark.parametrize("content, reason", [
    (torch.zeros(3), "holds a Tensor, expected a mapping"),
    ([torch.zeros(3)], "holds a list, expected a mapping"),
    ({}, "holds no tensors"),
    ({"state_dict": {}}, "holds no tensors"),
    ({"fc.weight": torch.zeros(2), "epoch": 3}, "maps 'epoch' to a int"),
    ({0: torch.zeros(2)}, "has a int key 0"),
    ({"fc.weight": torch.tensor([1.0, float("nan"), float("inf")])}, "holds 2 non-finite values in fc.weight"),
])
def test_load_weights_file_refuses_what_is_not_weights(tmp_path, content, reason):
    path = tmp_path / "w.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as err:
        load_weights_file(path, "Inception weights")
    message = _one_line(err)
    assert message.startswith(f"Inception weights {path} ") and reason in message


@pytest.mark.parametrize("name, content", [
    ("w.safetensors", b"not safetensors"),
    ("w.pth", b"PK\x03\x04truncated zip"),
    ("missing.pth", None),
])
def test_load_weights_file_unreadable_or_missing(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_weights_file(path, "Inception weights")
    assert f"Inception weights {path}" in _one_line(err)
