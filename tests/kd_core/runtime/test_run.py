"""kd_core.runtime.run: Run, the whole lifecycle of a run directory."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kd_core.runtime.lock import LOCK_FILE, RunLocked
from kd_core.runtime.rundir import RunConfigMismatch

CONFIG = {"dataset": "cifar10", "lr": 2e-4, "iterations": 5000, "data_root": Path("/data")}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


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
