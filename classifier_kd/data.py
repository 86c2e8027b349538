"""Reading the classifiers' datasets -- CIFAR-10/100, Fashion-MNIST, ImageNet -- with their transforms attached.

:func:`load_split` reads one split; :func:`build_datasets` gives the training set with a recipe's augmentation
(:mod:`classifier_kd.image_transforms`), the test set and the input spec (:mod:`classifier_kd.dataset_specs`).

Datasets (:data:`~classifier_kd.dataset_specs.DATASETS`)
--------------------------------------------------------
* CIFAR-10/100 are read with torchvision from ``<root>/cifar-10-batches-py`` / ``<root>/cifar-100-python``.
* Fashion-MNIST (28x28 grey) is padded to 32x32 with its black background and repeated to 3 channels,
  exactly as ``gan_kd`` prepares it, so one checkpoint trained here can teach the GAN discriminator.
  Its files are read in place, gzipped or not, from ``<root>/FashionMNIST/raw`` (torchvision's layout)
  or from Debian's ``dataset-fashion-mnist`` package (:data:`SYSTEM_FASHION_MNIST_DIR`); nothing is
  copied or decompressed to disk. Finding and validating the CIFAR and Fashion-MNIST files is
  ``kd_core.runtime.datasets``' job, shared with ``gan_kd`` (one-line :class:`DatasetNotFound` /
  :class:`DatasetCorrupt`).
* ImageNet is two ``torchvision.datasets.ImageFolder`` trees (one sub-folder per class), found and checked by
  :mod:`classifier_kd.imagenet_folders`. It cannot be downloaded automatically.

Every item is ``(float image tensor (3, size, size), int label)``, normalised with the dataset's mean and
std (:data:`~classifier_kd.dataset_specs.NORMALIZATION`). What a model trained on them expects is the *input spec*
``{"size", "mean", "std"}`` returned next to the datasets: images in [0, 1] at ``size`` x ``size``,
normalised with ``mean`` / ``std``. Trainers store it in the checkpoint (``save_classifier(...,
input_spec=spec)``) so whoever loads the model (the GAN teacher, ``evaluate``) feeds it what it was
trained on. The default size is 32 for the 32x32 datasets and 224 for ImageNet
(:func:`~classifier_kd.dataset_specs.default_image_size`).

``data_fraction < 1`` trains on ``kd_core.runtime.seed.subset_indices``, the same seeded draw as the GAN
side; the returned training set is then a ``Subset`` whose ``indices`` the trainer saves.
"""
from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset, Subset

from classifier_kd.dataset_specs import check_name, input_spec
from classifier_kd.image_transforms import test_transform, train_transform
from classifier_kd.imagenet_folders import load_imagenet
from kd_core.runtime.cifar import load_cifar
from kd_core.runtime.datasets import DatasetCorrupt, DatasetNotFound, check_data_root
from kd_core.runtime.fashion_mnist import (
    SYSTEM_FASHION_MNIST_DIR,
    GreyImageDataset,
    fashion_mnist_classes,
    load_fashion_mnist,
)
from kd_core.runtime.seed import subset_indices

__all__ = [
    "SYSTEM_FASHION_MNIST_DIR",
    "DatasetCorrupt",
    "DatasetNotFound",
    "build_datasets",
    "check_data_root",
    "load_split",
]

# SYSTEM_FASHION_MNIST_DIR is kd_core.runtime.fashion_mnist's, DatasetNotFound, DatasetCorrupt and check_data_root
# are kd_core.runtime.datasets' (re-exported).
# The system folder is read from kd_core.runtime.fashion_mnist at call time: point *that* one elsewhere in tests.


def _load_fashion_mnist(root: Path, train: bool, transform, download: bool) -> Dataset:
    return GreyImageDataset.from_split(load_fashion_mnist(root, train, download=download), transform,
                                       classes=fashion_mnist_classes())


def _load_cifar(name: str, root: Path, train: bool, transform, download: bool) -> Dataset:
    return load_cifar(name, root, train, transform=transform, download=download)


def load_split(name: str, root: str | os.PathLike, train: bool, transform=None, download: bool = False) -> Dataset:
    """One split of ``name`` with ``transform`` attached; items are ``(image, int label)``.

    Raises :class:`DatasetNotFound` (one line naming the expected files or folders) when they are missing and
    cannot be downloaded, and :class:`DatasetCorrupt` when they are there but unreadable or inconsistent.
    """
    name, root = check_name(name), Path(root)
    if name == "fashion_mnist":
        return _load_fashion_mnist(root, train, transform, download)
    if name == "imagenet":
        return load_imagenet(root, train, transform, download)
    return _load_cifar(name, root, train, transform, download)


def build_datasets(
    name: str,
    root: str | os.PathLike,
    *,
    augment: str = "default",
    image_size: int | None = None,
    data_fraction: float = 1.0,
    subset_seed: int = 0,
    download: bool = False,
) -> tuple[Dataset, Dataset, dict]:
    """``(train_set, test_set, spec)`` for ``name`` (one of :data:`~classifier_kd.dataset_specs.DATASETS`) under
    ``root``.

    ``train_set`` carries the training transform of ``augment`` (one of
    :data:`~classifier_kd.image_transforms.AUGMENTATIONS`, or ``"default"``:
    :func:`~classifier_kd.image_transforms.default_augment`) and is a ``Subset`` of ``subset_indices(n,
    data_fraction, subset_seed)`` when ``data_fraction < 1``; ``test_set`` is the whole test split with the test
    transform. ``image_size=None`` is :func:`~classifier_kd.dataset_specs.default_image_size`. ``spec`` (see
    :func:`~classifier_kd.dataset_specs.input_spec`) describes the model input. Arguments are checked (ValueError)
    before any file is touched.
    """
    name = check_name(name)
    spec = input_spec(name, image_size)
    train_tf, test_tf = train_transform(name, spec, augment), test_transform(name, spec)
    train_set = load_split(name, root, True, train_tf, download)
    test_set = load_split(name, root, False, test_tf, download)
    if data_fraction != 1.0:
        indices = subset_indices(len(train_set), data_fraction, seed=subset_seed)
        train_set = Subset(train_set, indices.tolist())
    return train_set, test_set, spec
