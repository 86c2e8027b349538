"""ImageNet's files: finding its two folder trees under a root, checking that they agree, reading a split.

ImageNet is two ``torchvision.datasets.ImageFolder`` trees (one sub-folder per class, the validation
images sorted into class folders too): ``<root>/train`` + ``<root>/val``, or ``<root>/imagenet/train`` +
``<root>/imagenet/val`` (mdistiller's ``data/imagenet`` layout). Both splits must list the same classes
(labels are the index of the folder name in sorted order) and at most 1000 of them; a subset of the
classes is accepted. It cannot be downloaded automatically.

A missing tree is kd_core's one-line :class:`~kd_core.runtime.datasets.DatasetNotFound`; trees that disagree, hold
more classes than ImageNet or a class folder without images, :class:`~kd_core.runtime.datasets.DatasetCorrupt`.
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset
from torchvision import datasets

from classifier_kd.dataset_specs import NUM_CLASSES
from kd_core.runtime.datasets import DatasetCorrupt, DatasetNotFound, single_line

__all__ = ["load_imagenet"]

_IMAGENET_LAYOUTS = (("train", "val"), ("imagenet/train", "imagenet/val"))


def _imagenet_folders(root: Path, download: bool) -> tuple[Path, Path]:
    """``(train_dir, val_dir)`` of the first ImageNet layout under ``root`` whose two folders exist."""
    for train_name, val_name in _IMAGENET_LAYOUTS:
        train_dir, val_dir = root / train_name, root / val_name
        if train_dir.is_dir() and val_dir.is_dir():
            return train_dir, val_dir
    expected = " or ".join(f"{root / t} + {root / v}" for t, v in _IMAGENET_LAYOUTS)
    why = "--download was given but " if download else ""
    raise DatasetNotFound(
        f"ImageNet not found: expected the ImageFolder trees {expected} (one sub-folder per class, the "
        f"validation images sorted into class folders too); {why}ImageNet cannot be downloaded automatically, "
        f"get ILSVRC2012 from image-net.org"
    )


def _imagenet_classes(folder: Path) -> list[str]:
    try:
        classes, _ = datasets.folder.find_classes(folder)
    except FileNotFoundError as err:  # no class sub-folder at all
        raise DatasetCorrupt(f"ImageNet folder {folder} holds no class sub-folders: {single_line(err)}") from err
    return classes


def load_imagenet(root: Path, train: bool, transform, download: bool) -> Dataset:
    train_dir, val_dir = _imagenet_folders(root, download)
    train_classes, val_classes = _imagenet_classes(train_dir), _imagenet_classes(val_dir)
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise DatasetCorrupt(
            f"ImageNet class folders differ between {train_dir} ({len(train_classes)} classes) and {val_dir} "
            f"({len(val_classes)} classes): only in train {only_train[:5]}{' ...' if len(only_train) > 5 else ''}, "
            f"only in val {only_val[:5]}{' ...' if len(only_val) > 5 else ''}"
        )
    if len(train_classes) > NUM_CLASSES["imagenet"]:
        raise DatasetCorrupt(f"ImageNet folder {train_dir} has {len(train_classes)} class folders, more than "
                             f"ImageNet's {NUM_CLASSES['imagenet']}")
    folder = train_dir if train else val_dir
    try:
        return datasets.ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as err:  # a class folder without any image
        raise DatasetCorrupt(f"ImageNet folder {folder}: {single_line(err)}") from err
