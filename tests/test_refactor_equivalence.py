"""Refactors must not change what is trained: the same seed gives bitwise-equal checkpoints before and after.

The code of :data:`REFERENCE` (a commit of this repository) is extracted with ``git archive`` and run side by side
with the working tree, on the same machine, with the same commands: a tiny GAN run (vkd-whiten, a classifier
teacher, two iterations with two D steps each) and a tiny classifier distillation (VkD, two epochs of two steps).
Every tensor, number and RNG state of the resulting ``last.pt`` must be equal, bit for bit. Comparing two runs
on one machine, rather than against stored digests, keeps the test independent of CPU kernels (AVX2 / AVX-512)
and torch versions.

Move :data:`REFERENCE` forward only in a commit that changes training behaviour on purpose, and say so there.
Skipped when git or the reference commit is not available (e.g. a shallow clone or an sdist).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# The last commit whose training behaviour is the baseline (the default projector became `qr` before it).
REFERENCE = os.environ.get("KD_REFERENCE_COMMIT", "9d1fa0b288f70b9bb8b6276bd743c532490e7545")
PACKAGES = ("kd_core", "gan_kd", "classifier_kd")


def extract(commit: str, into: Path) -> Path:
    git = shutil.which("git")
    if git is None or subprocess.run([git, "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
                                     capture_output=True).returncode != 0:
        pytest.skip(f"git or commit {commit} not available")
    into.mkdir(parents=True)
    archive = subprocess.run([git, "-C", str(REPO), "archive", commit, *PACKAGES], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run(code_root: Path, module: str, args: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def assert_equal(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                     and torch.equal(a.nan_to_num(), b.nan_to_num())), where
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape") and hasattr(a, "dtype"):  # NumPy arrays (RNG state)
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all(), where
    else:
        assert a == b, (where, a, b)


# What describes rather than trains: options, integrity record, wall time, and the run's bookkeeping (how far
# metrics.jsonl had got, the partial metrics window), which later commits added to last.pt.
BOOKKEEPING = ("integrity", "config", "wall_time", "metrics_offset", "log_window")


def trained_state(path: Path) -> dict:
    """The checkpoint without :data:`BOOKKEEPING`."""
    state = torch.load(path, weights_only=False)
    for key in BOOKKEEPING:
        state.pop(key, None)
    return state


def test_same_seed_gives_bitwise_equal_checkpoints_as_the_reference(fashion_mnist_raw_dir, tmp_path):
    reference = extract(REFERENCE, tmp_path / "reference")
    data = tmp_path / "data"
    raw = data / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in fashion_mnist_raw_dir.iterdir():
        shutil.copy(path, raw / path.name)
    teacher = tmp_path / "teacher"
    run(REPO, "classifier_kd.cli", ["train-teacher", "--model", "resnet8x4", "--dataset", "fashion_mnist",
                                    "--data-root", str(data), "--epochs", "1", "--batch-size", "16",
                                    "--max-steps-per-epoch", "2", "--milestones", "1", "--workers", "0",
                                    "--device", "cpu", "--out", str(teacher)], tmp_path)
    teacher_ckpt = teacher / "checkpoints" / "best.pt"
    gan = ["train", "--preset", "vkd-whiten", "--teacher", f"ckpt:{teacher_ckpt}", "--dataset", "fashion_mnist",
           "--data-root", str(data), "--iterations", "2", "--g-ch", "4", "--d-ch", "4", "--batch-size", "10",
           "--d-steps", "2", "--sample-every", "0", "--log-every", "1", "--threads", "1", "--device", "cpu"]
    student = ["distill", "--student", "resnet8x4", "--teacher-ckpt", str(teacher_ckpt), "--method", "vkd",
               "--dataset", "fashion_mnist", "--data-root", str(data), "--epochs", "2", "--batch-size", "8",
               "--max-steps-per-epoch", "2", "--milestones", "1", "--workers", "0", "--device", "cpu"]
    for name, code in (("current", REPO), ("reference", reference)):
        run(code, "gan_kd.cli", [*gan, "--out", str(tmp_path / name / "gan")], tmp_path)
        run(code, "classifier_kd.cli", [*student, "--out", str(tmp_path / name / "student")], tmp_path)
    for run_name in ("gan", "student"):
        current = trained_state(tmp_path / "current" / run_name / "checkpoints" / "last.pt")
        before = trained_state(tmp_path / "reference" / run_name / "checkpoints" / "last.pt")
        assert_equal(current, before, run_name)
