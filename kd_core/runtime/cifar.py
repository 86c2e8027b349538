"""CIFAR-10/100's files: which ones torchvision needs under a root, and reading a split with one-line errors.

Read by torchvision's ``CIFAR10`` / ``CIFAR100`` from ``<root>/cifar-10-batches-py`` / ``<root>/cifar-100-python``.
torchvision checks the md5 of every data file (both splits) and the meta file, so all of them are expected.
Note that torchvision *unpickles* these files (they are the datasets' original Python pickles, not model
weights). The md5 check against the original archives' checksums runs first, so only the original files are
unpickled; a file that fails it, or that still cannot be unpickled, is reported as :class:`DatasetCorrupt`.

Errors are :mod:`kd_core.runtime.datasets`' one-line :class:`DatasetNotFound` and :class:`DatasetCorrupt`.
Imports neither ``gan_kd`` nor ``classifier_kd``; torchvision is imported where needed.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import NamedTuple

from kd_core.runtime.datasets import DISPLAY_NAMES, DatasetCorrupt, DatasetNotFound, error_text

__all__ = [
    "CIFAR_DATASETS",
    "CifarFiles",
    "cifar_files",
    "load_cifar",
]

CIFAR_DATASETS = ("cifar10", "cifar100")


class CifarFiles(NamedTuple):
    """torchvision's layout for a CIFAR dataset under a root: the folder, every file it checks, those missing."""

    folder: Path
    expected: tuple[str, ...]
    missing: tuple[str, ...]


def _cifar_class(name: str):
    from torchvision import datasets

    if name not in CIFAR_DATASETS:
        raise ValueError(f"not a CIFAR dataset: {name!r}; choose one of {', '.join(CIFAR_DATASETS)}")
    return datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100


def cifar_files(name: str, root: str | os.PathLike) -> CifarFiles:
    """Which files torchvision's ``CIFAR10`` / ``CIFAR100`` needs under ``root`` and which are missing.

    All data files of both splits and the meta file: torchvision checks every one, whichever split is read.
    """
    cls = _cifar_class(name)
    folder = Path(root) / cls.base_folder
    expected = tuple(f for f, _ in cls.train_list + cls.test_list) + (cls.meta["filename"],)
    return CifarFiles(folder, expected, tuple(f for f in expected if not (folder / f).is_file()))


def _cifar_not_found(name: str, files: CifarFiles) -> DatasetNotFound:
    status = ("none of them is there" if len(files.missing) == len(files.expected)
              else f"missing {', '.join(files.missing)}")
    return DatasetNotFound(
        f"{DISPLAY_NAMES[name]} not found: expected {files.folder}/{{{', '.join(files.expected)}}}; {status}; "
        f"pass --download to fetch it when online"
    )


def _failing_md5(cls, folder: Path) -> str | None:
    from torchvision.datasets.utils import check_integrity

    for filename, md5 in cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])]:
        if not check_integrity(str(folder / filename), md5):
            return filename
    return None


def load_cifar(name: str, root: str | os.PathLike, train: bool, transform=None, download: bool = False):
    """torchvision's ``CIFAR10`` / ``CIFAR100`` split with ``transform``; items ``(transform(PIL RGB), int)``.

    Missing files: :class:`DatasetNotFound` naming them, unless ``download`` (torchvision then fetches the
    archive into ``root``; a failed download is a :class:`DatasetNotFound` too). Files present but not the
    originals (md5) or not unpicklable: :class:`DatasetCorrupt`, reported rather than replaced. A download
    happens only when files are missing (torchvision then extracts the whole archive into the folder).
    """
    cls = _cifar_class(name)
    files = cifar_files(name, root)
    display = DISPLAY_NAMES[name]
    fetch = bool(files.missing)
    if fetch and not download:
        raise _cifar_not_found(name, files)
    try:
        return cls(str(root), train=train, transform=transform, download=fetch)
    except Exception as err:
        if fetch:  # the download, or what it fetched
            raise DatasetNotFound(f"{display} download into {Path(root)} failed ({error_text(err)}); check the "
                                  f"network, or put the files in {files.folder}") from err
        if isinstance(err, RuntimeError):  # torchvision's md5 check ("Dataset not found or corrupted")
            bad = _failing_md5(cls, files.folder)
            if bad is not None:
                raise DatasetCorrupt(f"{display} file {files.folder / bad} failed torchvision's md5 check (it is "
                                     f"not the original file); delete it and pass --download to fetch the "
                                     f"original again") from err
            raise DatasetCorrupt(f"{display} files in {files.folder} failed torchvision's check "
                                 f"({error_text(err)}); delete them and pass --download to fetch them again") from err
        if isinstance(err, OSError):
            raise DatasetCorrupt(f"{display} files in {files.folder} cannot be read ({error_text(err)})") from err
        if isinstance(err, (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError,
                            AttributeError, ImportError)):
            raise DatasetCorrupt(f"{display} files in {files.folder} cannot be unpickled ({error_text(err)}); "
                                 f"delete them and pass --download to fetch them again") from err
        raise
