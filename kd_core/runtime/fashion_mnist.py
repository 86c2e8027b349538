"""Fashion-MNIST's files: finding them (in place, gzipped or not), validating them completely and reading them.

Each split is a pair of idx files, ``train-{images-idx3,labels-idx1}-ubyte`` or ``t10k-...``, looked for as
``<file>`` or ``<file>.gz`` in, in order:

1. ``<root>/FashionMNIST/raw`` (torchvision's layout; where ``download=True`` puts them),
2. :data:`SYSTEM_FASHION_MNIST_DIR` (``/usr/share/datasets/fashion-mnist``, Debian's
   ``dataset-fashion-mnist`` package; read at call time, so tests can point it elsewhere).

The first folder holding *both* files of the split wins (an image file is never paired with a label file
from another folder). The files are read in place, gzipped or not. Only when neither folder has them and
``download=True`` does torchvision download them into ``<root>/FashionMNIST/raw``.

Every file is validated completely before use (:func:`read_idx`): the magic number (2051 for images, 2049
for labels, which also fixes the element type, unsigned bytes, and the number of dimensions), the header
length, the declared sizes against the actual number of bytes (truncated and padded files are both
refused), 28x28 images, labels in 0..9, and as many images as labels. A split with another count than the
original 60000 / 10000 is *accepted* when its image and label files agree: a deliberate subset (or a tiny
test fixture) is a consistent dataset, while a mismatch between the two files, a truncation or trailing
bytes is not. ``FASHION_MNIST_SIZES`` holds the original counts for callers that want to insist.

A split comes back raw (:class:`RawSplit`: uint8 images ``(N, 28, 28)``, int64 labels ``(N,)`` and the two
paths); :class:`GreyImageDataset` turns it into ``(transform(PIL image "L"), int label)`` items exactly as
``torchvision.datasets.FashionMNIST`` does.

Errors are :mod:`kd_core.runtime.datasets`' one-line :class:`DatasetNotFound` and :class:`DatasetCorrupt`.
Imports neither ``gan_kd`` nor ``classifier_kd``; torchvision and PIL are imported where needed.
"""
from __future__ import annotations

import gzip
import os
import shutil
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from torch.utils.data import Dataset

from kd_core.runtime.datasets import DatasetCorrupt, DatasetNotFound, error_text
from kd_core.runtime.io import atomic_writer

__all__ = [
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_SIZES",
    "SYSTEM_FASHION_MNIST_DIR",
    "GreyImageDataset",
    "RawSplit",
    "copy_fashion_mnist",
    "fashion_mnist_classes",
    "fashion_mnist_raw_dir",
    "load_fashion_mnist",
    "locate_fashion_mnist",
    "read_idx",
]


def fashion_mnist_classes() -> list[str]:
    """The class names in label order, as torchvision's ``FashionMNIST.classes`` lists them (no file is read)."""
    from torchvision.datasets import FashionMNIST

    return list(FashionMNIST.classes)


# Where Debian's `dataset-fashion-mnist` package installs the four gzipped idx files. Read at call time.
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_SIZES = {True: 60000, False: 10000}  # the original splits; other consistent counts are accepted
FASHION_MNIST_IMAGE_SHAPE = (28, 28)
FASHION_MNIST_CLASSES = 10

# idx magic numbers: 0x00 0x00, element type (0x08 = unsigned byte), number of dimensions.
_IDX_KINDS = {"images": (2051, "image"), "labels": (2049, "label")}
_IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "shorts", 0x0C: "ints", 0x0D: "floats",
              0x0E: "doubles"}
_GZIP_MAGIC = b"\x1f\x8b"


def _describe_magic(magic: int) -> str:
    """What else a magic number could be: another idx file (say which), or nothing (empty)."""
    if magic in (2049, 2051):
        return f", that of an idx {'label' if magic == 2049 else 'image'} file"
    if magic >> 16 == 0 and (magic >> 8) & 0xFF in _IDX_TYPES:
        dims = magic & 0xFF
        return f", an idx file of {_IDX_TYPES[(magic >> 8) & 0xFF]} in {dims} dimension{'s' * (dims != 1)}"
    return ""


def read_idx(path: str | os.PathLike, kind: str, remedy: str = "replace it with the original file") -> np.ndarray:
    """The validated uint8 array of a Fashion-MNIST idx file, gzipped (``.gz``) or not.

    ``kind`` is ``"images"`` (magic 2051: ``(N, 28, 28)``) or ``"labels"`` (magic 2049: ``(N,)``, values in
    0..9). The whole file is checked (see the module docstring); any problem raises a one-line
    :class:`DatasetCorrupt` naming ``path`` and ending with ``remedy``. The images come back as a read-only
    view of the file's bytes (no copy).
    """
    if kind not in _IDX_KINDS:
        raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
    path = Path(path)
    magic_expected, noun = _IDX_KINDS[kind]

    def corrupt(problem: str) -> DatasetCorrupt:
        return DatasetCorrupt(f"Fashion-MNIST file {path} {problem}; {remedy}")

    gzipped = path.name.endswith(".gz")
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as err:
        raise corrupt(f"cannot be read ({error_text(err)})") from err
    if gzipped:
        if not blob.startswith(_GZIP_MAGIC):
            hint = " (it looks like an uncompressed idx file: drop the .gz)" if blob[:2] == b"\0\0" else ""
            raise corrupt(f"is not gzip-compressed{hint}")
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as err:
            raise corrupt(f"is a damaged gzip file ({error_text(err)})") from err

    if len(blob) < 4:
        raise corrupt(f"is not an idx {noun} file (only {len(blob)} bytes, no 4-byte magic number)")
    magic = int.from_bytes(blob[:4], "big")
    if magic != magic_expected:
        hint = " (it looks gzip-compressed: name it .gz)" if blob.startswith(_GZIP_MAGIC) else ""
        raise corrupt(f"is not an idx {noun} file (magic number {magic}{_describe_magic(magic)}; expected "
                      f"{magic_expected}){hint}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise corrupt(f"is truncated ({len(blob)} bytes, shorter than its {header}-byte header)")
    shape = tuple(int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    n = shape[0]
    if kind == "images" and shape[1:] != FASHION_MNIST_IMAGE_SHAPE:
        raise corrupt(f"holds images of {shape[1]}x{shape[2]}, expected "
                      f"{FASHION_MNIST_IMAGE_SHAPE[0]}x{FASHION_MNIST_IMAGE_SHAPE[1]}")
    if n == 0:
        raise corrupt(f"holds no {kind} (its header declares 0)")
    declared = int(np.prod(shape))
    actual = len(blob) - header
    items = f"{n} {kind}" + (f" of {shape[1]}x{shape[2]}" if kind == "images" else "")
    if actual < declared:
        raise corrupt(f"is truncated (its header declares {items}, {declared} bytes of data, but it holds "
                      f"{actual})")
    if actual > declared:
        raise corrupt(f"has {actual - declared} bytes after the {items} its header declares (padded, or not "
                      f"the original file)")
    array = np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape)
    if kind == "labels":
        bad = np.flatnonzero(array >= FASHION_MNIST_CLASSES)
        if bad.size:
            raise corrupt(f"has {bad.size} label(s) outside 0..{FASHION_MNIST_CLASSES - 1} (e.g. "
                          f"{int(array[bad[0]])} at index {int(bad[0])})")
    return array


class RawSplit(NamedTuple):
    """One Fashion-MNIST split as stored: uint8 images ``(N, 28, 28)``, int64 labels ``(N,)``, and their files."""

    images: np.ndarray
    labels: np.ndarray
    images_path: Path
    labels_path: Path


def fashion_mnist_raw_dir(root: str | os.PathLike) -> Path:
    """``<root>/FashionMNIST/raw``: torchvision's layout, where a download puts the files."""
    return Path(root) / "FashionMNIST" / "raw"


def _system_dir(system_dir) -> Path:
    return Path(SYSTEM_FASHION_MNIST_DIR if system_dir is None else system_dir)


def _in_folder(folder: Path, filename: str) -> Path | None:
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate_fashion_mnist(root: str | os.PathLike, train: bool,
                         system_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(images_path, labels_path)`` of a split: the first of ``<root>/FashionMNIST/raw`` and the system
    folder (``system_dir``, default :data:`SYSTEM_FASHION_MNIST_DIR`) holding both files, each as is or
    ``.gz``. Only looks; raises :class:`DatasetNotFound` (one line, naming the files and both folders)."""
    files = FASHION_MNIST_FILES[bool(train)]
    folders = (fashion_mnist_raw_dir(root), _system_dir(system_dir))
    partial = []
    for folder in folders:
        found = [_in_folder(folder, f) for f in files]
        if None not in found:
            return found[0], found[1]
        if found != [None, None]:
            partial.append(f"{folder} has only {next(p.name for p in found if p is not None)}")
    partial_text = f" ({'; '.join(partial)})" if partial else ""
    raise DatasetNotFound(
        f"Fashion-MNIST not found: expected {files[0]} and {files[1]} (optionally .gz) in {folders[0]} or "
        f"{folders[1]} (Debian's dataset-fashion-mnist package){partial_text}; pass --download to fetch it "
        f"into {Path(root)} when online"
    )


def _remedy(path: Path, root: Path) -> str:
    if path.parent == fashion_mnist_raw_dir(root):
        return "delete it and pass --download to fetch the original again"
    return (f"reinstall Debian's dataset-fashion-mnist package, or put the original files in "
            f"{fashion_mnist_raw_dir(root)}")


def _download_fashion_mnist(root: Path, train: bool) -> None:
    from torchvision import datasets

    try:
        datasets.FashionMNIST(str(root), train=train, download=True)  # into <root>/FashionMNIST/raw
    except Exception as err:  # network, HTTP, disk errors, or torchvision rejecting what it fetched
        raise DatasetNotFound(f"Fashion-MNIST download into {fashion_mnist_raw_dir(root)} failed "
                              f"({error_text(err)}); check the network, or get the files another way "
                              f"(e.g. Debian's dataset-fashion-mnist package)") from err


def load_fashion_mnist(root: str | os.PathLike, train: bool, download: bool = False,
                       system_dir: str | os.PathLike | None = None) -> RawSplit:
    """One Fashion-MNIST split, found by :func:`locate_fashion_mnist`, read in place and fully validated.

    Without the files and with ``download=True``, torchvision downloads them into ``<root>/FashionMNIST/raw``
    first (the only case in which anything is written). Raises :class:`DatasetNotFound` or
    :class:`DatasetCorrupt`, one line each.
    """
    root = Path(root)
    try:
        images_path, labels_path = locate_fashion_mnist(root, train, system_dir)
    except DatasetNotFound:
        if not download:
            raise
        _download_fashion_mnist(root, train)
        images_path, labels_path = locate_fashion_mnist(root, train, system_dir)
    images = read_idx(images_path, "images", _remedy(images_path, root))
    labels = read_idx(labels_path, "labels", _remedy(labels_path, root)).astype(np.int64)
    if len(images) != len(labels):
        raise DatasetCorrupt(
            f"Fashion-MNIST files {images_path} ({len(images)} images) and {labels_path} ({len(labels)} labels) "
            f"do not belong together; {_remedy(images_path, root)}"
        )
    return RawSplit(images, labels, images_path, labels_path)


def copy_fashion_mnist(root: str | os.PathLike, system_dir: str | os.PathLike | None = None) -> Path | None:
    """Explicitly copy the four files from the system folder into ``<root>/FashionMNIST/raw``, as they are.

    Never called by the loaders (they read the system folder in place); for making a self-contained data
    root, e.g. for a process that cannot see a patched :data:`SYSTEM_FASHION_MNIST_DIR`. Files already in
    the raw folder (gzipped or not) are left alone; each copy is written to a temporary name and renamed.
    Nothing is created when there is nothing to copy. Returns the raw folder if it then holds all four
    files, else ``None``.
    """
    raw, system = fashion_mnist_raw_dir(root), _system_dir(system_dir)
    names = FASHION_MNIST_FILES[True] + FASHION_MNIST_FILES[False]
    for name in names:
        if _in_folder(raw, name) is not None:
            continue
        source = _in_folder(system, name)
        if source is None:
            continue
        with open(source, "rb") as src, atomic_writer(raw / source.name) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return raw if all(_in_folder(raw, name) is not None for name in names) else None


class GreyImageDataset(Dataset):
    """``(transform(PIL image "L"), int label)`` items from uint8 ``(N, H, W)`` images and their labels.

    Exactly what ``torchvision.datasets.FashionMNIST`` yields for the same arrays (``Image.fromarray`` of
    the uint8 image, then the transform), so its transforms give bitwise the same tensors and draw the same
    random numbers. ``targets`` is the int64 label array; ``classes`` the class names, as torchvision's
    datasets list them (:func:`fashion_mnist_classes` for Fashion-MNIST).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None, classes=None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.data, self.targets, self.transform = images, np.asarray(labels, dtype=np.int64), transform
        self.classes = list(classes) if classes is not None else []

    @classmethod
    def from_split(cls, split: RawSplit, transform=None, classes=None) -> "GreyImageDataset":
        return cls(split.images, split.labels, transform, classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.data[index])  # uint8 (H, W) -> mode "L"
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])
