"""kd_core.runtime.fashion_mnist: finding, validating and reading Fashion-MNIST's idx files (tiny fakes of
tests/conftest.py; the real Debian Fashion-MNIST when installed)."""
from __future__ import annotations

import gzip
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tv_datasets
from torchvision import transforms

from kd_core.runtime import datasets as ds
from kd_core.runtime import fashion_mnist as fm

TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
ALL_FILES = TRAIN_FILES + ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_arrays(folder: Path, prefix: str = "train") -> tuple[np.ndarray, np.ndarray]:
    images = gzip.decompress((folder / f"{prefix}-images-idx3-ubyte.gz").read_bytes())
    labels = gzip.decompress((folder / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())
    return np.frombuffer(images, np.uint8, offset=16).reshape(-1, 28, 28), np.frombuffer(labels, np.uint8, offset=8)


@pytest.fixture
def system_dir(monkeypatch, fashion_mnist_raw_dir):
    """The module's system folder pointed at the fake Debian folder."""
    monkeypatch.setattr(fm, "SYSTEM_FASHION_MNIST_DIR", fashion_mnist_raw_dir)
    return fashion_mnist_raw_dir


@pytest.fixture
def no_system_dir(monkeypatch, tmp_path):
    empty = tmp_path / "empty-system-dir"
    empty.mkdir()
    monkeypatch.setattr(fm, "SYSTEM_FASHION_MNIST_DIR", empty)
    return empty


def test_system_folder_default():
    assert fm.SYSTEM_FASHION_MNIST_DIR == Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("spelling", ["data", "./data", "ABSOLUTE"])
def test_the_default_data_root_may_be_missing_and_fashion_mnist_comes_from_the_system_folder(
        spelling, tmp_path, monkeypatch, system_dir):
    """Issue 28 item 5: the documented default root ``data`` (relative to the working directory), typed in any
    spelling, may be missing; the loader then reads the system copy in place, creating nothing. Any other missing
    root is still refused, and so is ``data`` below another directory."""
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path / "data") if spelling == "ABSOLUTE" else spelling
    assert ds.is_default_data_root(root)
    assert ds.check_data_root(root) == Path(root)
    split = fm.load_fashion_mnist(root, train=True)
    assert split.images_path.parent == system_dir and len(split.labels) == 60
    assert not (tmp_path / "data").exists()
    for other in ("datum", "elsewhere/data", str(tmp_path / "x" / "data")):
        assert not ds.is_default_data_root(other)
        with pytest.raises(ds.DatasetNotFound, match="does not exist"):
            ds.check_data_root(other)


# -------------------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("train, n", [(True, 60), (False, 20)])
def test_split_read_in_place_from_the_system_folder(tmp_path, system_dir, train, n):
    root = tmp_path / "missing-root"
    split = fm.load_fashion_mnist(root, train)
    images, labels = idx_arrays(system_dir, "train" if train else "t10k")
    assert split.images.shape == (n, 28, 28) and split.images.dtype == np.uint8
    assert split.labels.shape == (n,) and split.labels.dtype == np.int64
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)
    assert split.images_path == system_dir / f"{'train' if train else 't10k'}-images-idx3-ubyte.gz"
    assert not root.exists()


def test_root_first_uncompressed_first_and_pairs_never_mixed(tmp_path, fashion_mnist_raw_dir, no_system_dir):
    root = tmp_path / "root"
    raw = fm.fashion_mnist_raw_dir(root)
    assert raw == root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in TRAIN_FILES:
        gz = (fashion_mnist_raw_dir / f"{name}.gz").read_bytes()
        (raw / f"{name}.gz").write_bytes(gz)
        (raw / name).write_bytes(gzip.decompress(gz))
    assert fm.locate_fashion_mnist(root, True, system_dir=fashion_mnist_raw_dir) == tuple(raw / f for f in TRAIN_FILES)
    (raw / TRAIN_FILES[1]).unlink()
    assert fm.locate_fashion_mnist(root, True) == (raw / TRAIN_FILES[0], raw / f"{TRAIN_FILES[1]}.gz")
    # The root holding only the images: the pair is taken from the system folder, not mixed.
    (raw / f"{TRAIN_FILES[1]}.gz").unlink()
    assert fm.locate_fashion_mnist(root, True, system_dir=fashion_mnist_raw_dir) == tuple(
        fashion_mnist_raw_dir / f"{f}.gz" for f in TRAIN_FILES)
    with pytest.raises(ds.DatasetNotFound, match=f"{raw} has only {TRAIN_FILES[0]}"):
        fm.locate_fashion_mnist(root, True)


def test_missing_names_the_files_and_folders_and_creates_nothing(tmp_path, no_system_dir):
    root = tmp_path / "nothing-here"
    with pytest.raises(ds.DatasetNotFound) as info:
        fm.load_fashion_mnist(root, train=True)
    message = str(info.value)
    assert message == (
        f"Fashion-MNIST not found: expected {TRAIN_FILES[0]} and {TRAIN_FILES[1]} (optionally .gz) in "
        f"{root}/FashionMNIST/raw or {no_system_dir} (Debian's dataset-fashion-mnist package); pass --download "
        f"to fetch it into {root} when online"
    )
    assert not root.exists() and list(no_system_dir.iterdir()) == []


def test_corrupt_files_give_one_line_naming_the_file(tmp_path, broken_fashion_mnist):
    folder, broken, fragment = broken_fashion_mnist
    with pytest.raises(ds.DatasetCorrupt) as info:
        fm.load_fashion_mnist(tmp_path / "root", train=True, system_dir=folder)
    message = str(info.value)
    assert "\n" not in message and str(broken) in message and fragment in message, message
    assert message.startswith("Fashion-MNIST file") and "reinstall Debian's dataset-fashion-mnist" in message
    # The test split of the same folder is whole.
    assert len(fm.load_fashion_mnist(tmp_path / "root", train=False, system_dir=folder).labels) == 20


def test_corrupt_file_under_the_root_says_delete_and_download(tmp_path, broken_fashion_mnist, no_system_dir):
    folder, broken, fragment = broken_fashion_mnist
    root = tmp_path / "root"
    fm.fashion_mnist_raw_dir(root).parent.mkdir(parents=True)
    folder.rename(fm.fashion_mnist_raw_dir(root))
    with pytest.raises(ds.DatasetCorrupt) as info:
        fm.load_fashion_mnist(root, train=True)
    message = str(info.value)
    assert str(fm.fashion_mnist_raw_dir(root) / broken.name) in message and fragment in message
    assert message.endswith("delete it and pass --download to fetch the original again")


def test_exact_messages(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 1234, 1, 28, 28) + bytes(784)))
    with pytest.raises(ds.DatasetCorrupt) as info:
        fm.read_idx(path, "images")
    assert str(info.value) == (f"Fashion-MNIST file {path} is not an idx image file (magic number 1234; expected "
                               f"2051); replace it with the original file")
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 3, 28, 28) + bytes(784)))
    with pytest.raises(ds.DatasetCorrupt) as info:
        fm.read_idx(path, "images", remedy="do something")
    assert str(info.value) == (f"Fashion-MNIST file {path} is truncated (its header declares 3 images of 28x28, "
                               f"2352 bytes of data, but it holds 784); do something")
    plain = tmp_path / "t10k-labels-idx1-ubyte"
    plain.write_bytes(gzip.compress(struct.pack(">II", 2049, 2) + bytes(2)))
    with pytest.raises(ds.DatasetCorrupt, match=r"not an idx label file \(magic number 529205248; expected 2049\) "
                                                r"\(it looks gzip-compressed: name it .gz\); "):
        fm.read_idx(plain, "labels")
    plain.write_bytes(struct.pack(">IH", 2049, 0))
    with pytest.raises(ds.DatasetCorrupt, match=r"is truncated \(6 bytes, shorter than its 8-byte header\)"):
        fm.read_idx(plain, "labels")
    plain.write_bytes(struct.pack(">II", 2049, 0))
    with pytest.raises(ds.DatasetCorrupt, match=r"holds no labels"):
        fm.read_idx(plain, "labels")
    plain.write_bytes(b"\0\0")
    with pytest.raises(ds.DatasetCorrupt, match=r"only 2 bytes"):
        fm.read_idx(plain, "labels")
    plain.write_bytes(struct.pack(">IIII", 2050, 1, 28, 28))
    with pytest.raises(ds.DatasetCorrupt, match=r"\(magic number 2050, an idx file of unsigned bytes in 2 "
                                                r"dimensions; expected 2049\)"):
        fm.read_idx(plain, "labels")
    gz_named = tmp_path / "x.gz"
    gz_named.write_bytes(struct.pack(">II", 2049, 1) + b"\1")
    with pytest.raises(ds.DatasetCorrupt, match=r"is not gzip-compressed \(it looks like an uncompressed idx"):
        fm.read_idx(gz_named, "labels")
    with pytest.raises(ValueError, match="kind"):
        fm.read_idx(plain, "pixels")


def test_unreadable_file_is_corrupt(tmp_path):
    folder = tmp_path / "a-folder.gz"  # a directory where the file should be: open() fails
    folder.mkdir()
    with pytest.raises(ds.DatasetCorrupt, match=r"cannot be read \(IsADirectoryError"):
        fm.read_idx(folder, "images")


def test_consistent_non_standard_counts_are_accepted(system_dir, tmp_path):
    """60 / 20 images instead of 60000 / 10000: a consistent subset is accepted (module docstring)."""
    assert fm.FASHION_MNIST_SIZES == {True: 60000, False: 10000}
    assert len(fm.load_fashion_mnist(tmp_path, True).images) == 60


class FakeFashionMNIST:
    """Stands in for torchvision's downloader: copies the fake files into <root>/FashionMNIST/raw."""

    calls: list = []
    source: Path | None = None

    def __init__(self, root, train, download):
        type(self).calls.append((root, train, download))
        if self.source is None:
            raise urllib.error.URLError("no network\nat all")
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for path in self.source.iterdir():
            (raw / path.stem).write_bytes(gzip.decompress(path.read_bytes()))


@pytest.fixture
def fake_download(monkeypatch):
    monkeypatch.setattr(FakeFashionMNIST, "calls", [])
    monkeypatch.setattr(tv_datasets, "FashionMNIST", FakeFashionMNIST)
    return FakeFashionMNIST


def test_download_only_when_asked_and_missing(tmp_path, fashion_mnist_raw_dir, no_system_dir, fake_download,
                                              monkeypatch):
    root = tmp_path / "root"
    with pytest.raises(ds.DatasetNotFound):
        fm.load_fashion_mnist(root, True)
    assert fake_download.calls == [] and not root.exists()
    with pytest.raises(ds.DatasetNotFound) as info:  # offline
        fm.load_fashion_mnist(root, True, download=True)
    assert str(info.value) == (f"Fashion-MNIST download into {root}/FashionMNIST/raw failed (URLError: <urlopen "
                               f"error no network at all>); check the network, or get the files another way "
                               f"(e.g. Debian's dataset-fashion-mnist package)")
    monkeypatch.setattr(FakeFashionMNIST, "source", fashion_mnist_raw_dir)
    split = fm.load_fashion_mnist(root, False, download=True)
    assert fake_download.calls[-1] == (str(root), False, True) and len(split.labels) == 20
    assert split.labels_path == root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    calls = len(fake_download.calls)
    fm.load_fashion_mnist(root, True, download=True)  # present now: no second download
    assert len(fake_download.calls) == calls


def test_no_download_when_the_system_folder_has_the_files(tmp_path, system_dir, fake_download):
    fm.load_fashion_mnist(tmp_path / "root", True, download=True)
    assert fake_download.calls == [] and not (tmp_path / "root").exists()


def test_copy_fashion_mnist_is_explicit_and_copies_as_is(tmp_path, fashion_mnist_raw_dir):
    root = tmp_path / "root"
    assert fm.copy_fashion_mnist(root, system_dir=tmp_path / "nowhere") is None
    assert not root.exists()  # nothing created when there is nothing to copy
    raw = fm.copy_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)
    assert raw == root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{f}.gz" for f in ALL_FILES)
    for f in ALL_FILES:
        assert (raw / f"{f}.gz").read_bytes() == (fashion_mnist_raw_dir / f"{f}.gz").read_bytes()
    (raw / f"{ALL_FILES[0]}.gz").write_bytes(b"sentinel")  # present files are left alone
    assert fm.copy_fashion_mnist(root, system_dir=fashion_mnist_raw_dir) == raw
    assert (raw / f"{ALL_FILES[0]}.gz").read_bytes() == b"sentinel"


def test_grey_image_dataset_matches_torchvision_items(system_dir, tmp_path):
    split = fm.load_fashion_mnist(tmp_path, False)
    dataset = fm.GreyImageDataset.from_split(split, transforms.PILToTensor())
    assert len(dataset) == 20 and dataset.targets.dtype == np.int64
    image, label = dataset[3]
    assert type(label) is int and label == split.labels[3]
    assert torch.equal(image, torch.from_numpy(split.images[3].copy())[None])
    assert fm.GreyImageDataset(split.images, split.labels)[0][0].mode == "L"
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[5][0], dataset[5][0])
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        fm.GreyImageDataset(split.images[:3], split.labels[:2])
    assert isinstance(fm.GreyImageDataset(split.images, split.labels)[1][0], Image.Image)


@pytest.mark.skipif(not fm.SYSTEM_FASHION_MNIST_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_real_debian_files_validate_and_nothing_is_created(tmp_path):
    root = tmp_path / "nonexistent" / "data"
    for train, n in ((True, 60000), (False, 10000)):
        split = fm.load_fashion_mnist(root, train)
        assert split.images.shape == (n, 28, 28) and len(split.labels) == n == fm.FASHION_MNIST_SIZES[train]
        assert np.bincount(split.labels).tolist() == [n // 10] * 10
    assert not (tmp_path / "nonexistent").exists()
