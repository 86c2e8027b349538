"""Issue 12, item 1: runs killed (SIGKILL) three times at random points and resumed, with DataLoader workers,
end bitwise equal to an uninterrupted run — for a tiny classifier and a tiny GAN on fixture Fashion-MNIST files."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kd_core.runtime.fashion_mnist import copy_fashion_mnist
from kd_core.runtime.metrics import read_metrics

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def saved_step(path: Path, key: str) -> int:
    try:
        return int(torch.load(path, weights_only=False)[key])
    except (OSError, RuntimeError, EOFError, KeyError):  # not written yet (or being renamed into place)
        return -1


def kill_three_times_then_finish(command: list[str], last: Path, key: str, total: int, seed: int) -> None:
    """Start ``command`` and SIGKILL it three times, then let it finish.

    Each kill waits for a checkpoint one or two steps past the previous one and then fires at a random moment within
    the next fraction of a step. Waiting on a step (not on a wall-clock delay) keeps every kill before the end however
    fast the machine is; a delay of up to a second let a fast CI machine finish the run before the third kill.
    """
    rng = random.Random(seed)
    for _ in range(3):
        target = max(saved_step(last, key), 0) + rng.randint(1, 2)
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and saved_step(last, key) < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the next step (or in writing its checkpoint)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert saved_step(last, key) < total, "the run finished before the third kill: make it longer"
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def assert_same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")


@pytest.fixture
def data_root(fashion_mnist_raw_dir, tmp_path) -> Path:
    root = tmp_path / "data"
    copy_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)  # subprocesses need real files under the root
    return root


def test_classifier_killed_three_times_with_workers_equals_an_uninterrupted_run(data_root, tmp_path):
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "classifier_kd.cli", "train-teacher", "--model", "resnet8x4", "--batch-size", "4",
                "--epochs", "8", "--milestones", "6", "--workers", "2", "--device", "cpu", "--log-every", "5",
                "--dataset", "fashion_mnist", "--data-root", str(data_root), "--out", str(out)]

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    kill_three_times_then_finish(command(killed), killed / "checkpoints" / "last.pt", "epoch", 8, seed=1)
    done = subprocess.run(command(straight), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)
    assert_same_tensors(a["target"], b["target"], "target")
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
    rows = [[{k: v for k, v in row.items() if k != "epoch_time_s"} for row in read_metrics(d)] for d in (straight, killed)]
    assert rows[0] == rows[1]


def test_gan_killed_three_times_with_workers_equals_an_uninterrupted_run(data_root, tmp_path):
    def command(out: Path, workers: int = 2) -> list[str]:
        return [sys.executable, "-m", "gan_kd.cli", "train", "--out", str(out), "--preset", "da", "--dataset",
                "fashion_mnist", "--data-root", str(data_root), "--iterations", "20", "--checkpoint-every", "1",
                "--sample-every", "0", "--g-ch", "4", "--d-ch", "4", "--batch-size", "10", "--d-steps", "2",
                "--log-every", "3", "--threads", "1", "--workers", str(workers)]

    killed, straight, one_worker = tmp_path / "killed", tmp_path / "straight", tmp_path / "one_worker"
    kill_three_times_then_finish(command(killed), killed / "checkpoints" / "last.pt", "iteration", 20, seed=2)
    for out, workers in ((straight, 2), (one_worker, 1)):
        done = subprocess.run(command(out, workers), env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    for other in (killed, one_worker):  # the worker count does not change what is drawn either
        b = torch.load(other / "checkpoints" / "last.pt", weights_only=False)
        for key in ("generator", "critic", "generator_ema", "opt_g", "opt_d"):
            assert_same_tensors(a[key], b[key], f"{other.name}.{key}")
    assert read_metrics(killed) == read_metrics(straight)
