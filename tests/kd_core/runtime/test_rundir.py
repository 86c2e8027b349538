"""kd_core.runtime.rundir: the run directory's options (config.json with provenance, resume checks)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kd_core.runtime.rundir import RunConfigMismatch, prepare_run_dir, validate_run_dir

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


def test_new_run_writes_options_and_metadata(tmp_path):
    out = tmp_path / "runs" / "a"
    assert prepare_run_dir(out, CONFIG) == out
    written = json.loads((out / "config.json").read_text())
    assert written["betas"] == [0.0, 0.999] and written["data_root"] == "/data"
    assert written["loss"] == {"name": "vkd", "weight": 1.0}
    assert {"package_version", "git_commit", "created"} <= set(written)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", written["created"])
    assert _tree(tmp_path / "runs") == ["a", "a/config.json"]


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
