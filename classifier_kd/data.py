"""Datasets for the classifiers: CIFAR-10/100 and Fashion-MNIST with the CIFAR recipe's transforms.

* Training images get the recipe's augmentation (RandomCrop 32 with 4 px zero padding + horizontal flip,
  as RepDistiller / mdistiller ``dataset/cifar100.py``); test images are only normalised.
* Images are normalised with their dataset's mean and std (:data:`NORMALIZATION`). What a model trained on
  them expects is the *input spec* ``{"size", "mean", "std"}`` returned next to the datasets: images in
  [0, 1] at ``size`` x ``size``, normalised with ``mean`` / ``std``. Trainers store it in the checkpoint
  (``save_classifier(..., input_spec=spec)``) so whoever loads the model (the GAN teacher, ``evaluate``)
  feeds it what it was trained on.
* Fashion-MNIST (28x28 grey) is padded to 32x32 with its black background and repeated to 3 channels,
  exactly as ``gan_kd`` prepares it, so one checkpoint trained here can teach the GAN discriminator.
  Its files are read in place, gzipped or not, from ``<root>/FashionMNIST/raw`` (torchvision's layout)
  or from Debian's ``dataset-fashion-mnist`` package (:data:`SYSTEM_FASHION_MNIST_DIR`); nothing is
  copied or decompressed to disk.
* ``data_fraction < 1`` trains on ``kd_core.runtime.seed.subset_indices``, the same seeded draw as the
  GAN side; the returned training set is then a ``Subset`` whose ``indices`` the trainer saves.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms

from kd_core.runtime.seed import subset_indices

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "NUM_CLASSES",
    "SYSTEM_FASHION_MNIST_DIR",
    "DatasetNotFound",
    "build_datasets",
    "input_spec",
    "load_split",
    "test_transform",
    "train_transform",
]

DATASETS = ("cifar10", "cifar100", "fashion_mnist")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10}

# Per-channel mean and std of the training images in [0, 1]. CIFAR-10/100: the values of the KD codebases
# (RepDistiller, mdistiller, CRD). Fashion-MNIST: the usual 28x28 values (0.2860 / 0.3530, computed over the
# 60k training images), replicated to the 3 channels; the zero-padded 32x32 images have 0.2190 / 0.3318,
# an affine difference the first conv + BN absorb, so the commonly quoted numbers are kept.
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "fashion_mnist": ((0.2860,) * 3, (0.3530,) * 3),
}

# Where Debian's `dataset-fashion-mnist` package installs the four gzipped idx files. Read at call time,
# so tests can point it at a fixture.
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_CLASS = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
_DISPLAY_NAME = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "fashion_mnist": "Fashion-MNIST"}
CIFAR_PADDING = 4  # RandomCrop(32, padding=4)


class DatasetNotFound(FileNotFoundError):
    """The dataset's files are not where they are looked for (and no download was asked for)."""


class DatasetCorrupt(ValueError):
    """The dataset's files are there but cannot be read (e.g. they fail torchvision's md5 check)."""


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


# --------------------------------------------------------------------------------------------------------
# Transforms. Module-level functions, not lambdas, so they pickle for DataLoader workers.


def input_spec(name: str, image_size: int = 32) -> dict:
    """What a model trained on ``name`` expects: images in [0, 1], ``size`` x ``size``, then (x - mean) / std."""
    mean, std = NORMALIZATION[_check_name(name)]
    return {"size": int(image_size), "mean": list(mean), "std": list(std)}


def pad_grey_to_rgb32(image: torch.Tensor) -> torch.Tensor:
    """(1, 28, 28) in [0, 1] -> (3, 32, 32): 2 px of black background on every side (Fashion-MNIST's own
    background, as ``gan_kd.data`` pads), grey replicated to RGB. Padding keeps every pixel exact."""
    return F.pad(image, (2, 2, 2, 2), value=0.0).expand(3, -1, -1).contiguous()


def _base_steps(name: str) -> list:
    """PIL image -> float (3, 32, 32) in [0, 1]."""
    steps: list = [transforms.ToTensor()]
    if name == "fashion_mnist":
        steps.append(transforms.Lambda(pad_grey_to_rgb32))
    return steps


def _resize_and_normalize(spec: dict) -> list:
    steps: list = []
    if spec["size"] != 32:
        steps.append(transforms.Resize((spec["size"], spec["size"]), antialias=True))
    steps.append(transforms.Normalize(spec["mean"], spec["std"]))
    return steps


def train_transform(name: str, spec: dict, recipe_augment: bool = True) -> transforms.Compose:
    """The CIFAR recipe's training transform: crop with 4 px of zero padding, flip, normalise.

    Cropping is done on the 32x32 image before any resize, so the padding is the recipe's 4 px.
    ``recipe_augment=False`` gives the test transform (e.g. for feature extraction on training images).
    """
    steps = _base_steps(_check_name(name))
    if recipe_augment:
        steps += [transforms.RandomCrop(32, padding=CIFAR_PADDING), transforms.RandomHorizontalFlip()]
    return transforms.Compose(steps + _resize_and_normalize(spec))


def test_transform(name: str, spec: dict) -> transforms.Compose:
    """Test images are only converted (padded for Fashion-MNIST), resized if asked and normalised."""
    return transforms.Compose(_base_steps(_check_name(name)) + _resize_and_normalize(spec))


# --------------------------------------------------------------------------------------------------------
# Reading the files.


class IdxImageDataset(Dataset):
    """Grey images and labels from a pair of (optionally gzipped) idx files, held in memory.

    Items are ``(PIL image (mode "L"), int label)``, like ``torchvision.datasets.FashionMNIST``.
    """

    def __init__(self, images_path: Path, labels_path: Path, transform=None) -> None:
        self.images = _read_idx(images_path, magic=2051)
        self.targets = _read_idx(labels_path, magic=2049).astype(np.int64)
        if len(self.images) != len(self.targets):
            raise DatasetCorrupt(f"{images_path} has {len(self.images)} images but {labels_path} "
                                 f"{len(self.targets)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])  # uint8 (H, W) -> mode "L"
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an idx file: magic (4 bytes big-endian), one uint32 per dimension, the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            blob = f.read()
        header = np.frombuffer(blob, dtype=">u4", count=1)[0]
        if header != magic:
            raise ValueError(f"magic number {header}, expected {magic}")
        ndim = magic & 0xFF
        shape = tuple(int(d) for d in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
        return np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, ValueError) as err:
        raise DatasetCorrupt(f"cannot read idx file {path}: {err}") from err


def _find_fashion_file(root: Path, filename: str) -> Path | None:
    """The first of ``<root>/FashionMNIST/raw/<f>[.gz]``, ``<system dir>/<f>[.gz]`` that exists."""
    for folder in (root / "FashionMNIST" / "raw", Path(SYSTEM_FASHION_MNIST_DIR)):
        for candidate in (folder / filename, folder / f"{filename}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _load_fashion_mnist(root: Path, train: bool, transform, download: bool) -> Dataset:
    files = _FASHION_FILES[train]
    found = [_find_fashion_file(root, f) for f in files]
    if None in found and download:
        datasets.FashionMNIST(str(root), train=train, download=True)  # into <root>/FashionMNIST/raw
        found = [_find_fashion_file(root, f) for f in files]
    if None in found:
        missing = [f for f, path in zip(files, found) if path is None]
        raise DatasetNotFound(
            f"Fashion-MNIST not found: expected {', '.join(missing)} (optionally .gz) in "
            f"{root / 'FashionMNIST' / 'raw'} or {SYSTEM_FASHION_MNIST_DIR} (Debian's dataset-fashion-mnist); "
            f"pass --download to fetch it when online"
        )
    return IdxImageDataset(found[0], found[1], transform)


def _load_cifar(name: str, root: Path, train: bool, transform, download: bool) -> Dataset:
    cls = _CIFAR_CLASS[name]
    folder = root / cls.base_folder
    needed = [f for f, _ in (cls.train_list if train else cls.test_list)] + [cls.meta["filename"]]
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing and not download:
        every_file = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        raise DatasetNotFound(
            f"{_DISPLAY_NAME[name]} not found: expected {folder}/{{{', '.join(every_file)}}}, missing "
            f"{', '.join(missing)}; pass --download to fetch it when online"
        )
    try:
        return cls(str(root), train=train, transform=transform, download=bool(missing))
    except RuntimeError as err:  # files present but failing torchvision's md5 check
        raise DatasetCorrupt(f"{_DISPLAY_NAME[name]} files in {folder} failed torchvision's integrity check; "
                             f"delete them and pass --download to fetch them again") from err


def load_split(name: str, root: str | os.PathLike, train: bool, transform=None, download: bool = False) -> Dataset:
    """One split of ``name`` with ``transform`` attached; items are ``(image, int label)``.

    Raises :class:`DatasetNotFound` (one line naming the expected files) when they are missing and
    ``download`` is false, and :class:`DatasetCorrupt` when they are there but unreadable.
    """
    name, root = _check_name(name), Path(root)
    if name == "fashion_mnist":
        return _load_fashion_mnist(root, train, transform, download)
    return _load_cifar(name, root, train, transform, download)


def build_datasets(
    name: str,
    root: str | os.PathLike,
    *,
    recipe_augment: bool = True,
    image_size: int = 32,
    data_fraction: float = 1.0,
    subset_seed: int = 0,
    download: bool = False,
) -> tuple[Dataset, Dataset, dict]:
    """``(train_set, test_set, spec)`` for ``name`` (one of :data:`DATASETS`) under ``root``.

    ``train_set`` carries the recipe's augmentation (unless ``recipe_augment=False``) and is a ``Subset``
    of ``subset_indices(n, data_fraction, subset_seed)`` when ``data_fraction < 1``; ``test_set`` is the
    whole test split, normalised only. ``spec`` (see :func:`input_spec`) describes the model input.
    """
    name = _check_name(name)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    spec = input_spec(name, image_size)
    train_set = load_split(name, root, True, train_transform(name, spec, recipe_augment), download)
    test_set = load_split(name, root, False, test_transform(name, spec), download)
    if data_fraction != 1.0:
        indices = subset_indices(len(train_set), data_fraction, seed=subset_seed)
        train_set = Subset(train_set, indices.tolist())
    return train_set, test_set, spec
