"""Shared fixtures: tiny fake datasets on disk, in the exact formats torchvision reads.

Every fixture writes into the test's ``tmp_path``; the CIFAR ones share ``tmp_path / "data"`` as their root,
as a real ``--data-root`` would. Contents are deterministic (seeded), and the labels of every split cover
every class.

CIFAR files are checked by torchvision against the md5s of the real archives, so the CIFAR fixtures patch
the md5 entries of ``torchvision.datasets.CIFAR10`` / ``CIFAR100`` to the fakes' own md5s (for the test's
duration only): the integrity check still runs, on our files.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

CIFAR10_TRAIN_PER_BATCH = 20  # x 5 batch files = 100 training images
CIFAR10_TEST = 20
CIFAR100_TRAIN = 200
CIFAR100_TEST = 100
FASHION_MNIST_TRAIN = 60
FASHION_MNIST_TEST = 20


@pytest.fixture(autouse=True, scope="session")
def no_metrics_cache():
    """Tests (and the commands they start) compute every real-data feature afresh: the on-disk cache of
    gan_kd.metrics.cache is off unless a test turns it on (tests/gan_kd/metrics/test_cache.py). Session-scoped, so
    that it holds before any module-scoped fixture builds an evaluator."""
    import os

    from gan_kd.metrics.cache import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = "off"
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


def _labels(n: int, n_classes: int, rng: np.random.Generator) -> list[int]:
    """``n >= n_classes`` labels, every class present, in random order."""
    return rng.permutation(np.arange(n) % n_classes).tolist()


def _py2_pickle(obj: dict) -> bytes:
    """Pickle a dict the way the CIFAR files were written (Python 2): keys as byte strings.

    The real files store keys as Python-2 ``str``, which loads as ``"data"`` with ``encoding="latin1"``
    (torchvision) and as ``b"data"`` with ``encoding="bytes"``. Python 3 cannot emit that opcode for a key,
    so we pickle with ``str`` keys and rewrite each key's BINUNICODE opcode into SHORT_BINSTRING.
    """
    blob = pickle.dumps(obj, protocol=2)
    for key in obj:
        raw = key.encode("ascii")
        unicode_op = b"X" + struct.pack("<I", len(raw)) + raw
        assert blob.count(unicode_op) == 1, key
        blob = blob.replace(unicode_op, b"U" + bytes([len(raw)]) + raw)
    return blob


def _write(path: Path, payload: dict) -> str:
    """Write a py2-style pickle; return its md5 (what torchvision's integrity check compares)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = _py2_pickle(payload)
    path.write_bytes(blob)
    return hashlib.md5(blob).hexdigest()


def _images(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3072) uint8: CIFAR's row layout, channel-major (R plane, G plane, B plane), each 32x32 row-major."""
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


@pytest.fixture
def cifar10_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root holding a fake ``cifar-10-batches-py/`` (100 train, 20 test images); returns the root."""
    rng = np.random.default_rng(10)
    root = tmp_path / "data"
    folder = root / datasets.CIFAR10.base_folder
    train_list = []
    for i in range(1, 6):
        name = f"data_batch_{i}"
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": _labels(CIFAR10_TRAIN_PER_BATCH, 10, rng),
            "data": _images(CIFAR10_TRAIN_PER_BATCH, rng),
            "filenames": [f"fake_{i}_{j}.png" for j in range(CIFAR10_TRAIN_PER_BATCH)],
        }
        train_list.append([name, _write(folder / name, batch)])
    test = {
        "batch_label": "testing batch 1 of 1",
        "labels": _labels(CIFAR10_TEST, 10, rng),
        "data": _images(CIFAR10_TEST, rng),
        "filenames": [f"fake_test_{j}.png" for j in range(CIFAR10_TEST)],
    }
    test_list = [["test_batch", _write(folder / "test_batch", test)]]
    meta = {
        "num_cases_per_batch": CIFAR10_TRAIN_PER_BATCH,
        "label_names": [f"class_{c}" for c in range(10)],
        "num_vis": 3072,
    }
    meta_md5 = _write(folder / "batches.meta", meta)
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(datasets.CIFAR10, "test_list", test_list)
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": meta_md5})
    return root


@pytest.fixture
def cifar100_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root holding a fake ``cifar-100-python/`` (200 train, 100 test images); returns the root."""
    rng = np.random.default_rng(100)
    root = tmp_path / "data"
    folder = root / datasets.CIFAR100.base_folder
    md5 = {}
    for split, n in (("train", CIFAR100_TRAIN), ("test", CIFAR100_TEST)):
        fine = _labels(n, 100, rng)
        payload = {
            "filenames": [f"fake_{split}_{j}.png" for j in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [label // 5 for label in fine],
            "data": _images(n, rng),
        }
        md5[split] = _write(folder / split, payload)
    meta = {
        "fine_label_names": [f"fine_{c}" for c in range(100)],
        "coarse_label_names": [f"coarse_{c}" for c in range(20)],
    }
    meta_md5 = _write(folder / "meta", meta)
    monkeypatch.setattr(datasets.CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(datasets.CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(datasets.CIFAR100, "meta", {**datasets.CIFAR100.meta, "md5": meta_md5})
    return root


def _idx_images(images: np.ndarray) -> bytes:
    """idx3-ubyte: magic 2051, then n, rows, cols as big-endian uint32, then the pixels."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    """idx1-ubyte: magic 2049, then n as big-endian uint32, then one byte per label."""
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


@pytest.fixture
def fashion_mnist_raw_dir(tmp_path: Path) -> Path:
    """A folder laid out like Debian's ``/usr/share/datasets/fashion-mnist``: the four gzipped idx files.

    60 train and 20 test 28x28 images. Pixels are random but the outermost 2-pixel ring is 0, like the
    real images' black background.
    """
    rng = np.random.default_rng(28)
    folder = tmp_path / "fashion-mnist-system"
    folder.mkdir()
    for prefix, n in (("train", FASHION_MNIST_TRAIN), ("t10k", FASHION_MNIST_TEST)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 2:-2, 2:-2] = rng.integers(0, 256, size=(n, 24, 24), dtype=np.uint8)
        labels = np.array(_labels(n, 10, rng), dtype=np.uint8)
        for name, blob in ((f"{prefix}-images-idx3-ubyte", _idx_images(images)),
                           (f"{prefix}-labels-idx1-ubyte", _idx_labels(labels))):
            with gzip.GzipFile(folder / f"{name}.gz", "wb", mtime=0) as f:
                f.write(blob)
    return folder


# Ways to break the fake Fashion-MNIST training split, for the loaders' DatasetCorrupt tests:
# case -> (file broken, a fragment the one-line error must contain).
FASHION_MNIST_CORRUPTIONS = {
    "garbage": ("train-images-idx3-ubyte", "is not an idx image file"),
    "not_gzip": ("train-images-idx3-ubyte.gz", "is not gzip-compressed"),
    "damaged_gzip": ("train-images-idx3-ubyte.gz", "is a damaged gzip file"),
    "wrong_magic": ("train-images-idx3-ubyte.gz", "(magic number 1234; expected 2051)"),
    "swapped": ("train-images-idx3-ubyte.gz", "(magic number 2049, that of an idx label file; expected 2051)"),
    "truncated": ("train-images-idx3-ubyte.gz", "is truncated"),
    "padded": ("train-images-idx3-ubyte.gz", "bytes after the 60 images of 28x28"),
    "image_size": ("train-images-idx3-ubyte.gz", "holds images of 32x32, expected 28x28"),
    "count_mismatch": ("train-labels-idx1-ubyte.gz", "(59 labels) do not belong together"),
    "label_range": ("train-labels-idx1-ubyte.gz", "label(s) outside 0..9 (e.g. 12 at index 5)"),
}


def break_fashion_mnist(folder: Path, case: str) -> Path:
    """Break the training split of a folder of the four gzipped idx files as ``case`` says (one of
    :data:`FASHION_MNIST_CORRUPTIONS`); returns the path of the broken file (which may be a new one)."""
    images_gz, labels_gz = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    images, labels = gzip.decompress(images_gz.read_bytes()), gzip.decompress(labels_gz.read_bytes())
    target = folder / FASHION_MNIST_CORRUPTIONS[case][0]
    if case == "garbage":  # an uncompressed file of random bytes, which is found before the .gz
        images_gz.unlink()
        target.write_bytes(np.random.default_rng(0).integers(1, 256, 500, dtype=np.uint8).tobytes())
    elif case == "not_gzip":
        target.write_bytes(b"not gzip at all")
    elif case == "damaged_gzip":
        target.write_bytes(images_gz.read_bytes()[:200])
    elif case == "wrong_magic":
        target.write_bytes(gzip.compress(struct.pack(">I", 1234) + images[4:], mtime=0))
    elif case == "swapped":
        target.write_bytes(labels_gz.read_bytes())
    elif case == "truncated":
        target.write_bytes(gzip.compress(images[:-100], mtime=0))
    elif case == "padded":
        target.write_bytes(gzip.compress(images + b"\0" * 7, mtime=0))
    elif case == "image_size":
        n = len(labels) - 8
        target.write_bytes(gzip.compress(struct.pack(">IIII", 2051, n, 32, 32) + bytes(n * 32 * 32), mtime=0))
    elif case == "count_mismatch":  # a consistent label file, but one label short of the images
        target.write_bytes(gzip.compress(struct.pack(">II", 2049, len(labels) - 9) + labels[8:-1], mtime=0))
    elif case == "label_range":
        broken = bytearray(labels)
        broken[8 + 5] = 12
        target.write_bytes(gzip.compress(bytes(broken), mtime=0))
    else:
        raise ValueError(case)
    return target


@pytest.fixture(params=list(FASHION_MNIST_CORRUPTIONS))
def broken_fashion_mnist(request, tmp_path: Path, fashion_mnist_raw_dir: Path) -> tuple[Path, Path, str]:
    """``(folder, broken_file, fragment)``, once per case of :data:`FASHION_MNIST_CORRUPTIONS`: a copy of
    :func:`fashion_mnist_raw_dir` whose training split is broken (the test split stays whole), the broken
    file, and a fragment the loaders' one-line ``DatasetCorrupt`` message must contain."""
    folder = tmp_path / f"broken-fashion-mnist-{request.param}"
    folder.mkdir()
    for path in fashion_mnist_raw_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder, break_fashion_mnist(folder, request.param), FASHION_MNIST_CORRUPTIONS[request.param][1]


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test: on a shared 2-core box, threads contend and slow down up to 10x.

    Modules with big models use it for every test: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _TouchOnUnpickle:
    """Unpickling this object creates ``marker``: a stand-in for a weights file that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """``(file, marker)``: a torch file shaped like a checkpoint whose unpickling would create ``marker``.

    Every option that takes a file must refuse it with one line and leave ``marker`` uncreated. (Loading it
    with ``torch.load(weights_only=False)`` does create the marker: ``tests/kd_core/runtime/test_checkpoint.py``
    checks that the threat is real.)
    """
    marker = tmp_path / "payload-ran"
    path = tmp_path / "malicious.pt"
    torch.save({"model": _TouchOnUnpickle(marker), "format": "classifier_kd/1", "arch": "resnet8x4",
                "num_classes": 10, "feature_dim": 256}, path)
    return path, marker
