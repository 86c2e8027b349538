"""Real images for the GAN: CIFAR-10/100 and Fashion-MNIST as 3x32x32 tensors in [-1, 1].

What this module settles, and where it comes from (``shared/reference/gan.md`` sec. 2 and 4):

* Pixels map as ``x / 127.5 - 1`` (the reference's ``ToTensor`` + ``Normalize(0.5, 0.5)``), so they share
  the generator's ``tanh`` range.
* The only augmentation of real images in the loader is a random horizontal flip (p = 0.5), the
  reference's ``--mirror_augment``. DiffAugment is applied later, on the D input, by ``gan_kd.diffaug``.
* Data-limited runs train on ``subset_indices(len(train), fraction, seed)`` from ``kd_core.runtime.seed``,
  DiffAugment's own draw; the indices are saved in the run directory.
* The loader is an endless, resumable stream of batches, sharded across DDP ranks.

Fashion-MNIST (28x28 grey) is padded to 32x32 with its own background value and repeated to 3 channels, so
the same BigGAN-32 and the same 3-channel teachers work on all three datasets.

Finding and validating the files is ``kd_core.runtime.datasets``' job (shared with ``classifier_kd``):
Fashion-MNIST is read in place, gzipped or not, from ``<root>/FashionMNIST/raw`` or Debian's
``dataset-fashion-mnist`` package (:data:`SYSTEM_FASHION_MNIST_DIR`), CIFAR through torchvision; nothing is
written unless ``download=True``. Missing files raise :class:`DatasetNotFound`, unreadable or inconsistent
ones :class:`DatasetCorrupt` (one line each).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms

from kd_core.runtime.cifar import load_cifar
from kd_core.runtime.datasets import DatasetCorrupt, DatasetNotFound, check_data_root
from kd_core.runtime.fashion_mnist import (
    SYSTEM_FASHION_MNIST_DIR,
    GreyImageDataset,
    copy_fashion_mnist,
    fashion_mnist_classes,
    load_fashion_mnist,
)
from kd_core.runtime.io import write_npy
from kd_core.runtime.seed import SeededItems, seeded_batch, subset_indices

__all__ = [
    "DATASETS",
    "SYSTEM_FASHION_MNIST_DIR",
    "DatasetCorrupt",
    "DatasetNotFound",
    "check_data_root",
    "num_classes",
    "load_dataset",
    "image_transform",
    "find_fashion_mnist",
    "subset",
    "subset_indices",
    "save_indices",
    "load_indices",
    "batches_per_epoch",
    "infinite_loader",
]

DATASETS = ("cifar10", "cifar100", "fashion_mnist")

_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10}

# SYSTEM_FASHION_MNIST_DIR is kd_core.runtime.fashion_mnist's, DatasetNotFound, DatasetCorrupt and check_data_root
# are kd_core.runtime.datasets' (re-exported).
# The system folder is read from kd_core.runtime.fashion_mnist at call time: point *that* one elsewhere in tests.

# find_fashion_mnist(root, system_dir=None) is kept as the name of kd_core's explicit copy_fashion_mnist:
# it copies the gzipped files into <root>/FashionMNIST/raw when asked; load_dataset never calls it.
find_fashion_mnist = copy_fashion_mnist

# Fashion-MNIST's background is black (pixel 0), i.e. -1 in [-1, 1]. Padding with it makes the 2-pixel
# border indistinguishable from the image's own background: no artificial frame for D to key on.
FASHION_MNIST_BACKGROUND = -1.0
IMAGE_SIZE = 32


def num_classes(name: str) -> int:
    """Number of classes of a dataset in :data:`DATASETS` (the conditional G and D need it)."""
    return _NUM_CLASSES[_check_name(name)]


def dataset_class_names(dataset) -> list[str]:
    """The class names of a torchvision dataset (``.classes``), for a CLIP teacher's prompts."""
    names = getattr(dataset, "classes", None)
    if not names:
        raise ValueError(f"{type(dataset).__name__} lists no class names (.classes); a CLIP teacher's class "
                         f"embeddings need them")
    return [str(name) for name in names]


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


# --------------------------------------------------------------------------------------------------------
# Pixel conversions. Module-level functions (not lambdas) so the transform pickles for spawned workers.


def uint8_to_signed_unit(image: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) in [0, 255] -> float32 in [-1, 1] as ``x / 127.5 - 1``: the generator's tanh range."""
    return image.to(torch.float32) / 127.5 - 1.0


def pad_to_32(image: torch.Tensor) -> torch.Tensor:
    """Pad a (C, 28, 28) Fashion-MNIST image to (C, 32, 32) with the background value.

    Padding (2 px per side, as LeNet did for MNIST) keeps every original pixel exact, unlike resizing,
    and lets the 32x32 BigGAN be used unchanged.
    """
    pad_h, pad_w = IMAGE_SIZE - image.shape[-2], IMAGE_SIZE - image.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"image {tuple(image.shape)} is larger than {IMAGE_SIZE}x{IMAGE_SIZE}")
    top, left = pad_h // 2, pad_w // 2
    return F.pad(image, (left, pad_w - left, top, pad_h - top), value=FASHION_MNIST_BACKGROUND)


def grey_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Repeat a (1, H, W) grey image to (3, H, W): G, D and the (RGB) teachers all take 3 channels."""
    return image.repeat(3, 1, 1)


def image_transform(name: str, hflip: bool) -> transforms.Compose:
    """PIL image -> float32 (3, 32, 32) in [-1, 1], with a random horizontal flip (p = 0.5) if ``hflip``.

    The flip comes first, on the PIL image, as in the reference loader.
    """
    steps: list = [transforms.RandomHorizontalFlip(p=0.5)] if hflip else []
    steps += [transforms.PILToTensor(), transforms.Lambda(uint8_to_signed_unit)]
    if _check_name(name) == "fashion_mnist":
        steps += [transforms.Lambda(pad_to_32), transforms.Lambda(grey_to_rgb)]
    return transforms.Compose(steps)


# --------------------------------------------------------------------------------------------------------
# Loading.


def load_dataset(
    name: str,
    root: str | os.PathLike,
    train: bool = True,
    download: bool = False,
    hflip: bool | None = None,
) -> Dataset:
    """One split of ``name`` with :func:`image_transform` attached.

    Items are ``(float32 (3, 32, 32) in [-1, 1], int label)``. ``hflip=None`` flips the training split only:
    real images are mirrored as in the reference, while the test split (the FID reference set) stays as is.

    CIFAR is torchvision's ``CIFAR10`` / ``CIFAR100``. Fashion-MNIST is read in place (see
    ``kd_core.runtime.fashion_mnist.load_fashion_mnist``) into a :class:`GreyImageDataset`, whose items are
    bitwise those of torchvision's ``FashionMNIST`` with the same transform (and draw the same random flip).
    A missing ``root`` is not created: the files are then looked for in the system folder. Without the
    files, raises :class:`DatasetNotFound` naming the expected files (``download=True`` lets torchvision
    fetch them into ``root``); with unreadable or inconsistent files, :class:`DatasetCorrupt`.
    """
    name = _check_name(name)
    if hflip is None:
        hflip = train
    transform = image_transform(name, hflip)
    if name == "fashion_mnist":
        return GreyImageDataset.from_split(load_fashion_mnist(root, train, download=download), transform,
                                           classes=fashion_mnist_classes())
    return load_cifar(name, root, train, transform=transform, download=download)


# --------------------------------------------------------------------------------------------------------
# Data-limited subsets.


def subset(dataset: Dataset, fraction: float, seed: int = 0) -> tuple[Subset, np.ndarray]:
    """``fraction`` of ``dataset`` chosen exactly as DiffAugment does (:func:`subset_indices`).

    Not stratified; for one seed the 10% subset is the first half of the 20% one. Returns the subset and
    its indices (save them in the run with :func:`save_indices`).
    """
    indices = subset_indices(len(dataset), fraction, seed=seed)
    return Subset(dataset, indices.tolist()), indices


def save_indices(run_dir: str | os.PathLike, indices: np.ndarray) -> Path:
    """Write ``<run_dir>/subset_indices.npy`` (int64), atomically; returns its path.

    Saved so a run documents which images it trained on, and a resume can check it uses the same ones.
    """
    return write_npy(Path(run_dir) / "subset_indices.npy", np.asarray(indices, dtype=np.int64))


def load_indices(run_dir: str | os.PathLike) -> np.ndarray:
    """Read the indices :func:`save_indices` wrote into ``run_dir``."""
    return np.load(Path(run_dir) / "subset_indices.npy")


# --------------------------------------------------------------------------------------------------------
# The endless loader.


def batches_per_epoch(n_items: int, batch_size: int, world_size: int = 1, drop_last: bool = True) -> int:
    """Batches one rank gets per epoch from :func:`infinite_loader`.

    Each rank gets ``n_items // world_size`` items per epoch (the few left over are dropped, at random,
    so shards stay disjoint); a last incomplete batch is dropped if ``drop_last``.
    """
    per_rank = n_items // world_size
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)


class _EndlessBatchSampler(Sampler):
    """Index batches for one rank, epoch after epoch, starting ``skip_batches`` into ``start_epoch``.

    Each epoch's order is DistributedSampler's: a permutation from a torch.Generator seeded with
    ``seed + epoch``, cut to a multiple of ``world_size`` and dealt out round-robin, so ranks are disjoint.
    Skipping works on indices, so no image is loaded for the skipped batches.
    """

    def __init__(self, n_items, batch_size, seed, rank, world_size, drop_last, start_epoch, skip_batches,
                 seeded_items=False):
        self.sampler = DistributedSampler(
            range(n_items), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size, self.drop_last = batch_size, drop_last
        self.start_epoch, self.skip_batches = start_epoch, skip_batches
        self.seed, self.rank, self.seeded_items = seed, rank, seeded_items

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.start_epoch, self.skip_batches
        while True:
            self.sampler.set_epoch(epoch)
            indices = list(self.sampler)
            batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
            if self.drop_last and batches and len(batches[-1]) < self.batch_size:
                batches.pop()
            for number in range(skip, len(batches)):
                if self.seeded_items:  # (seed, index) pairs for SeededItems: see kd_core.runtime.seed
                    yield seeded_batch(batches[number], self.seed, self.rank, epoch, number * self.batch_size)
                else:
                    yield batches[number]
            epoch, skip = epoch + 1, 0


def infinite_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    drop_last: bool = True,
    start_epoch: int = 0,
    skip_batches: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless iterator of ``(images, labels)`` batches for this rank, reshuffled every epoch.

    Order: epoch ``e`` is DistributedSampler's order for ``(seed, e)``, so it depends only on
    ``(seed, epoch, rank, world_size)``, and ranks see disjoint items. One DataLoader serves all epochs,
    so workers start once.

    Resume: pass the number of batches already consumed as ``skip_batches`` (values past one epoch roll
    over into later epochs), or ``start_epoch, skip_batches = divmod(done, batches_per_epoch(...))``; the
    stream then continues with exactly the batch an uninterrupted run would have produced next.
    The random flips too: with ``num_workers=0`` they come from the global torch RNG (restore it with
    ``kd_core.runtime.seed.restore_rng_state``); with workers, each item's flip is seeded from ``(seed, rank,
    epoch, position in the epoch)`` (:class:`~kd_core.runtime.seed.SeededItems`), so it does not depend on the
    number of workers or on where the run was resumed.
    """
    n_per_epoch = batches_per_epoch(len(dataset), batch_size, world_size, drop_last)
    if n_per_epoch < 1:
        raise ValueError(
            f"{len(dataset)} items over {world_size} rank(s) give no batch of {batch_size} per epoch"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world of size {world_size}")
    if start_epoch < 0 or skip_batches < 0:
        raise ValueError("start_epoch and skip_batches must be >= 0")
    extra_epochs, skip_batches = divmod(skip_batches, n_per_epoch)
    start_epoch += extra_epochs
    batch_sampler = _EndlessBatchSampler(
        len(dataset), batch_size, seed, rank, world_size, drop_last, start_epoch, skip_batches,
        seeded_items=num_workers > 0,
    )
    if num_workers > 0:
        dataset = SeededItems(dataset)
    # The DataLoader draws its workers' base seed from this generator rather than the global RNG.
    worker_seed = np.random.SeedSequence([seed, rank, start_epoch, skip_batches]).generate_state(1)[0]
    loader = DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(int(worker_seed)),
    )
    return iter(loader)
