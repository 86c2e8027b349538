"""Fixtures of the classifier tests: where ``classifier_kd.data`` looks for Debian's Fashion-MNIST files, and a
tiny fake ImageNet in torchvision's ImageFolder layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _point_system_dir(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """The loaders read kd_core.runtime.fashion_mnist.SYSTEM_FASHION_MNIST_DIR at call time; classifier_kd.data's
    re-exported name is patched too, so both say the same."""
    from classifier_kd import data
    from kd_core.runtime import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "SYSTEM_FASHION_MNIST_DIR", folder)
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIR", folder)


@pytest.fixture
def fashion_system_dir(fashion_mnist_raw_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Debian location at the tiny fake Fashion-MNIST (60 train, 20 test images); returns it."""
    _point_system_dir(monkeypatch, fashion_mnist_raw_dir)
    return fashion_mnist_raw_dir


@pytest.fixture
def no_system_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hide a real /usr/share/datasets/fashion-mnist, so "missing data" paths are tested on any machine."""
    empty = tmp_path / "no-system-fashion-mnist"
    _point_system_dir(monkeypatch, empty)
    return empty


IMAGENET_CLASSES = ("n01440764", "n01443537", "n01484850")  # three real WordNet ids, sorted
IMAGENET_TRAIN_PER_CLASS = 3
IMAGENET_VAL_PER_CLASS = 2
# (width, height) of the fake images, cycled: landscape, portrait, square, none of them the input size.
_IMAGENET_SIZES = ((40, 30), (36, 52), (45, 45))


def write_imagefolder(folder: Path, classes, per_class: int, rng) -> None:
    """An ImageFolder tree: ``folder/<class>/<i>.{png,JPEG}`` with random RGB pixels (PNG and JPEG alternate)."""
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = _IMAGENET_SIZES[(c + i) % len(_IMAGENET_SIZES)]
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            suffix = "png" if (c + i) % 2 == 0 else "JPEG"
            Image.fromarray(pixels).save(folder / name / f"{name}_{i}.{suffix}")


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    """A fake ImageNet: ``<root>/train`` (3 classes x 3 images) and ``<root>/val`` (3 x 2); returns the root."""
    rng = np.random.default_rng(1000)
    root = tmp_path / "imagenet-root"
    write_imagefolder(root / "train", IMAGENET_CLASSES, IMAGENET_TRAIN_PER_CLASS, rng)
    write_imagefolder(root / "val", IMAGENET_CLASSES, IMAGENET_VAL_PER_CLASS, rng)
    return root


@pytest.fixture
def imagefolder_writer():
    """:func:`write_imagefolder`, for tests that build their own (broken) ImageNet trees."""
    return write_imagefolder
