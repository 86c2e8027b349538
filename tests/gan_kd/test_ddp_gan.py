"""`gan-kd train` under torchrun: two gloo processes on the CPU (marked slow: CI runs it)."""
import socket
import subprocess
import sys

import pytest
import torch

from classifier_kd.models import create_model
from classifier_kd.models.checkpoint import save_classifier
from gan_kd.data import find_fashion_mnist

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run_completes_and_saves_once(fashion_mnist_raw_dir, tmp_path):
    root = tmp_path / "data"
    find_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)
    teacher = tmp_path / "teacher.pt"
    save_classifier(teacher, create_model("resnet20", num_classes=10), "resnet20", 10,
                    input_spec={"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3})
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "gan_kd.cli", "train", "--out", str(out), "--preset", "vkd-whiten", "--teacher", f"ckpt:{teacher}",
               "--dataset", "fashion_mnist", "--data-root", str(root), "--iterations", "3", "--g-ch", "4", "--d-ch", "4",
               "--batch-size", "20", "--d-steps", "2", "--log-every", "1", "--sample-every", "0", "--device", "cpu",
               "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("G parameters:") == 1  # rank 0 logs, rank 1 stays quiet
    assert done.stderr.count("it 3/3") == 1  # one progress line per step, not one per rank
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["iteration"] == 3 and len(state["rng"]) == 2  # both ranks' RNG states for an exact resume
    summary = (out / "result.json").read_text()
    assert '"world_size": 2' in summary
