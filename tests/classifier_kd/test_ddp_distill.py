"""`classifier-kd distill` under torchrun: two gloo processes give the weights of one process with the same
global batch and seed (marked slow: CI runs it).

The student is torchvision's ViT-B/16 at 32 px (4 patches): no batch norm and no dropout, so the only
differences between one process with batch 16 and two with batch 8 are the order of float sums. The teacher
runs in eval mode (its batch norm uses running statistics) and augmentation is off, so every rank sees the
images one process would, and DDP's gradient average equals the gradient of the global mean loss.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classifier_kd.models import create_model
from classifier_kd.models.checkpoint import save_classifier

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_distill(nproc: int, out: Path, root: Path, teacher: Path, batch_size: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(free_port()), "-m", "classifier_kd.cli", "distill",
               "--student", "vit_b_16", "--image-size", "32", "--teacher-ckpt", str(teacher), "--method", "kd",
               "--dataset", "fashion_mnist", "--data-root", str(root), "--augment", "none",
               "--batch-size", str(batch_size), "--epochs", "1", "--max-steps-per-epoch", "2", "--milestones", "",
               "--lr", "0.01", "--workers", "0", "--device", "cpu", "--log-every", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_two_processes_match_one_with_the_same_global_batch(fashion_mnist_raw_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(fashion_mnist_raw_dir, root / "FashionMNIST" / "raw")
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_classifier(teacher, create_model("resnet20", 10), "resnet20", 10,
                    input_spec={"size": 32, "mean": [0.2860] * 3, "std": [0.3530] * 3})

    single = run_distill(1, tmp_path / "one", root, teacher, batch_size=16)
    assert single.returncode == 0, single.stderr[-3000:]
    double = run_distill(2, tmp_path / "two", root, teacher, batch_size=8)
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stderr.count("it 2/2") == 1  # rank 0 reports, rank 1 stays quiet
    result = json.loads((tmp_path / "two" / "result.json").read_text())
    assert result["world_size"] == 2
    assert result["command"].startswith("torchrun --nproc_per_node 2 -m classifier_kd.cli distill --student vit_b_16")

    one = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=False)["target"]
    two = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=False)["target"]
    torch.manual_seed(0)  # the CLI seeds the student's initialisation with --seed 0
    initial = create_model("vit_b_16", 10, image_size=32).state_dict()
    student_keys = [key for key in one if key.startswith("student.")]
    assert student_keys and set(one) == set(two)
    moved = max((one[key] - initial[key.removeprefix("student.")]).abs().max().item() for key in student_keys)
    differ = max((one[key] - two[key]).abs().max().item() for key in student_keys)
    assert moved > 1e-3  # two SGD steps changed the weights ...
    assert differ < 1e-5  # ... identically in both runs, up to float summation order
