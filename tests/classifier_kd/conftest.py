"""Fixtures of the classifier tests: where ``classifier_kd.data`` looks for Debian's Fashion-MNIST files."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def fashion_system_dir(fashion_mnist_raw_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Debian location at the tiny fake Fashion-MNIST (60 train, 20 test images); returns it."""
    from classifier_kd import data

    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIR", fashion_mnist_raw_dir)
    return fashion_mnist_raw_dir


@pytest.fixture
def no_system_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hide a real /usr/share/datasets/fashion-mnist, so "missing data" paths are tested on any machine."""
    from classifier_kd import data

    empty = tmp_path / "no-system-fashion-mnist"
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIR", empty)
    return empty
