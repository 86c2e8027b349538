"""What every dataset loader shares: the one-line errors, the display names and the rule for ``--data-root``.

One family of modules answers "where are the files, are they whole, and what do I tell the user when they are
not", so ``gan_kd.data`` and ``classifier_kd.data`` only add their own transforms: Fashion-MNIST is
:mod:`kd_core.runtime.fashion_mnist`, CIFAR-10/100 :mod:`kd_core.runtime.cifar`, and this module holds what
both use. Nothing there writes to disk unless asked: without ``download=True`` no directory is created and no
file is copied or decompressed (the one writer besides the download is
:func:`~kd_core.runtime.fashion_mnist.copy_fashion_mnist`, which exists to be called explicitly).

Errors are one line, naming the file or folder and what to do:

* :class:`DatasetNotFound` (a ``FileNotFoundError``): the files are not where they are looked for (and no
  download was asked for, or the download failed); names every place looked in and the expected files.
* :class:`DatasetCorrupt` (a ``ValueError``): the files are there but unreadable or inconsistent.

:func:`check_data_root` is for command lines, typed or defaulted alike: a ``--data-root`` that does not exist is
an error there (a typo must not fall through to another copy of the data), except the documented default
:data:`DEFAULT_DATA_ROOT` (``data``, relative to the working directory) and a root that ``--download`` will
create. The loaders treat a missing root as "look elsewhere (the system folder) or not found", so a missing
default root means: Fashion-MNIST from Debian's copy, read in place (nothing is written), and for CIFAR or
ImageNet the loaders' one-line "not found" naming the files they expected.

Imports neither ``gan_kd`` nor ``classifier_kd``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DEFAULT_DATA_ROOT",
    "DISPLAY_NAMES",
    "DatasetCorrupt",
    "DatasetNotFound",
    "check_data_root",
    "error_text",
    "is_default_data_root",
    "single_line",
]


class DatasetNotFound(FileNotFoundError):
    """The dataset's files are not where they are looked for (and no download was asked for or possible)."""


class DatasetCorrupt(ValueError):
    """The dataset's files are there but cannot be read, or are inconsistent (truncated, wrong format...)."""


DISPLAY_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "fashion_mnist": "Fashion-MNIST"}


def single_line(text: object) -> str:
    """``text`` (an exception or any object) with every run of whitespace, newlines included, made one space."""
    return " ".join(str(text).split())


def error_text(err: BaseException) -> str:
    """``Type: message`` of an exception on one line, for the loaders' one-line errors."""
    text = single_line(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# The documented default of every ``--data-root`` option, relative to the working directory. The one root that
# may be missing (see check_data_root).
DEFAULT_DATA_ROOT = "data"


def is_default_data_root(root: str | os.PathLike) -> bool:
    """Whether ``root`` is :data:`DEFAULT_DATA_ROOT` (``data``, ``./data`` or its absolute path)."""
    return os.path.abspath(root) == os.path.abspath(DEFAULT_DATA_ROOT)


def check_data_root(root: str | os.PathLike, download: bool = False) -> Path:
    """``root`` as a Path, if a command line may use it: the rule of every ``--data-root``, typed or defaulted.

    A root that is a file is always refused. A missing root is refused unless ``download`` (torchvision then
    creates it) or it is the default :data:`DEFAULT_DATA_ROOT`, which may be missing: the loaders then read
    Fashion-MNIST from :data:`~kd_core.runtime.fashion_mnist.SYSTEM_FASHION_MNIST_DIR` in place, or say which
    files they expected. Raises :class:`DatasetNotFound` (one line naming the root). Nothing is created.
    """
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise DatasetNotFound(f"data root {path} is a file, not a folder; pass an existing folder")
    if not path.exists() and not download and not is_default_data_root(path):
        raise DatasetNotFound(f"data root {path} does not exist; pass an existing folder or --download (only the "
                              f"default {DEFAULT_DATA_ROOT!r} may be missing: Fashion-MNIST is then read from Debian's "
                              f"copy)")
    return path
