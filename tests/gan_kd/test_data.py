"""gan_kd.data on the tiny fake datasets of tests/conftest.py (and on real Fashion-MNIST if installed)."""
from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset
from torchvision import datasets as tv_datasets

from gan_kd import data
from kd_core.runtime import datasets as kd_datasets
from kd_core.runtime import fashion_mnist as kd_fashion_mnist
from kd_core.runtime import seed as kd_seed


# ---------------------------------------------------------------------------------------------- helpers


def read_cifar(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, list[int]]:
    """Pixels as (N, 32, 32, 3) uint8 and labels, read the way the reference reads CIFAR (bytes keys)."""
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        images.append(entry[b"data"])
        labels += entry[label_key.encode()]
    return np.vstack(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_idx(path: Path) -> np.ndarray:
    blob = gzip.decompress(path.read_bytes())
    ndim = blob[3]
    dims = [int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def expected(pixels_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels_hwc.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1


CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def point_system_dir(monkeypatch, folder: Path) -> None:
    """The loaders read kd_core.runtime.fashion_mnist.SYSTEM_FASHION_MNIST_DIR at call time (gan_kd.data re-exports
    the name; patched too, so both say the same)."""
    monkeypatch.setattr(kd_fashion_mnist, "SYSTEM_FASHION_MNIST_DIR", folder)
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIR", folder)


@pytest.fixture
def no_system_fashion_mnist(monkeypatch, tmp_path):
    """Hide the machine's Debian Fashion-MNIST, so 'missing' really is missing."""
    point_system_dir(monkeypatch, tmp_path / "no-such-dir")


@pytest.fixture
def fashion_root(monkeypatch, tmp_path, fashion_mnist_raw_dir):
    """A data root (not created) whose Fashion-MNIST comes from the fake system folder."""
    point_system_dir(monkeypatch, fashion_mnist_raw_dir)
    return tmp_path / "fm-root"


# ---------------------------------------------------------------------------------------------- loading


def test_registry():
    assert data.DATASETS == ("cifar10", "cifar100", "fashion_mnist")
    # One finder, in kd_core; the names gan_kd.data exported are kd_core's.
    assert data.DatasetNotFound is kd_datasets.DatasetNotFound and data.DatasetCorrupt is kd_datasets.DatasetCorrupt
    assert data.SYSTEM_FASHION_MNIST_DIR == kd_fashion_mnist.SYSTEM_FASHION_MNIST_DIR
    assert data.find_fashion_mnist is kd_fashion_mnist.copy_fashion_mnist
    assert [data.num_classes(n) for n in data.DATASETS] == [10, 100, 10]
    with pytest.raises(ValueError, match="unknown dataset"):
        data.num_classes("mnist")
    assert data.subset_indices is kd_seed.subset_indices


@pytest.mark.parametrize("train", [True, False])
def test_cifar10_pixels_and_labels(cifar10_root, train):
    ds = data.load_dataset("cifar10", cifar10_root, train=train, hflip=False)
    files = CIFAR10_TRAIN if train else ["test_batch"]
    pixels, labels = read_cifar(cifar10_root / "cifar-10-batches-py", files, "labels")
    assert len(ds) == len(labels) == (100 if train else 20)
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        torch.testing.assert_close(image, expected(pixels[i]), rtol=0, atol=1e-6)
        assert label == labels[i]
    assert sorted(set(labels)) == list(range(10))


@pytest.mark.parametrize("train", [True, False])
def test_cifar100_pixels_and_fine_labels(cifar100_root, train):
    ds = data.load_dataset("cifar100", cifar100_root, train=train, hflip=False)
    pixels, labels = read_cifar(cifar100_root / "cifar-100-python", ["train" if train else "test"], "fine_labels")
    assert len(ds) == len(labels) == (200 if train else 100)
    assert [ds[i][1] for i in range(len(ds))] == labels
    for i in (0, len(ds) - 1):
        torch.testing.assert_close(ds[i][0], expected(pixels[i]), rtol=0, atol=1e-6)
    assert sorted(set(labels)) == list(range(100))


def test_flip_only_when_requested(cifar10_root):
    pixels, _ = read_cifar(cifar10_root / "cifar-10-batches-py", CIFAR10_TRAIN, "labels")
    torch.manual_seed(0)
    for hflip, train in ((False, True), (None, False)):  # explicit off; default off on the test split
        ds = data.load_dataset("cifar10", cifar10_root, train=train, hflip=hflip)
        ref, _ = read_cifar(cifar10_root / "cifar-10-batches-py", CIFAR10_TRAIN if train else ["test_batch"], "labels")
        assert all(torch.equal(ds[i][0], expected(ref[i])) for i in range(10) for _ in range(3))
    ds = data.load_dataset("cifar10", cifar10_root, train=True)  # default: flip the training split
    flipped = 0
    for i in range(40):
        image = ds[i % 5][0]
        plain, mirrored = expected(pixels[i % 5]), expected(pixels[i % 5]).flip(-1)
        assert torch.equal(image, plain) or torch.equal(image, mirrored)
        flipped += torch.equal(image, mirrored)
    assert 5 <= flipped <= 35  # p = 0.5


def test_fashion_mnist_pad_and_replicate(fashion_root, fashion_mnist_raw_dir):
    ds = data.load_dataset("fashion_mnist", fashion_root, train=True, hflip=False)
    images = read_idx(fashion_mnist_raw_dir / "train-images-idx3-ubyte.gz")
    labels = read_idx(fashion_mnist_raw_dir / "train-labels-idx1-ubyte.gz")
    assert len(ds) == 60 and data.num_classes("fashion_mnist") == 10
    # the class names torchvision's FashionMNIST lists (a CLIP teacher's prompts need them)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[-1] == "Ankle boot" and len(ds.classes) == 10
    for i in (0, 7, 59):
        image, label = ds[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert label == labels[i]
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
        centre = torch.from_numpy(images[i].astype(np.float32)) / 127.5 - 1
        torch.testing.assert_close(image[0, 2:30, 2:30], centre, rtol=0, atol=1e-6)
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert (image[:, border] == data.FASHION_MNIST_BACKGROUND).all()
    test = data.load_dataset("fashion_mnist", fashion_root, train=False)
    assert len(test) == 20 and sorted({test[i][1] for i in range(20)}) == list(range(10))
    assert not fashion_root.exists()  # read in place: nothing copied or decompressed


def test_transform_pickles():
    """Spawned DataLoader workers need a picklable transform (no lambdas)."""
    for name in data.DATASETS:
        pickle.loads(pickle.dumps(data.image_transform(name, hflip=True)))


# ------------------------------------------------------------------------------------- finding the files


def test_a_copied_root_is_read_by_load_dataset(tmp_path, fashion_mnist_raw_dir):
    """What the explicit copy writes (kd_core's copy_fashion_mnist, tested there) is what the GAN's loader reads."""
    root = tmp_path / "root"
    data.find_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)
    assert len(data.load_dataset("fashion_mnist", root, train=False)) == 20  # read from there, in place


def test_fashion_mnist_from_torchvision_layout(tmp_path, fashion_mnist_raw_dir, no_system_fashion_mnist):
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in fashion_mnist_raw_dir.iterdir():  # decompressed, as torchvision's download leaves them
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    ds = data.load_dataset("fashion_mnist", tmp_path / "root", train=True, hflip=False)
    images = read_idx(fashion_mnist_raw_dir / "train-images-idx3-ubyte.gz")
    centre = torch.from_numpy(images[3] / 127.5 - 1).float()
    torch.testing.assert_close(ds[3][0][0, 2:30, 2:30], centre, rtol=0, atol=1e-6)
    assert sorted(p.name for p in raw.iterdir()) == sorted(gz.stem for gz in fashion_mnist_raw_dir.iterdir())


@pytest.mark.parametrize(
    "name, folder, files",
    [
        ("cifar10", "cifar-10-batches-py",
         ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]),
        ("cifar100", "cifar-100-python", ["train", "test", "meta"]),
        ("fashion_mnist", "FashionMNIST/raw", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "no-such-dir"]),
    ],
)
def test_missing_dataset_names_expected_files(tmp_path, no_system_fashion_mnist, name, folder, files):
    root = tmp_path / "empty"
    with pytest.raises(data.DatasetNotFound) as info:
        data.load_dataset(name, root)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in message and "--download" in message and str(root / folder) in message
    for f in files:
        assert f in message
    assert not root.exists()


def test_corrupted_cifar_is_reported(cifar10_root):
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(b"garbage")
    with pytest.raises(data.DatasetCorrupt) as info:
        data.load_dataset("cifar10", cifar10_root)
    message = str(info.value)
    assert "\n" not in message and f"{path} failed torchvision's md5 check" in message and "--download" in message


def test_unpicklable_cifar_is_reported(cifar100_root, monkeypatch):
    """Garbage whose md5 is the expected one still gives one line, not an unpickling traceback."""
    (cifar100_root / "cifar-100-python" / "train").write_bytes(b"garbage")
    monkeypatch.setattr(tv_datasets.CIFAR100, "train_list", [["train", hashlib.md5(b"garbage").hexdigest()]])
    with pytest.raises(data.DatasetCorrupt, match=r"^CIFAR-100 files in .*cifar-100-python cannot be unpickled "
                                                  r"\(UnpicklingError: .*\); delete them and pass --download"):
        data.load_dataset("cifar100", cifar100_root)


def test_corrupt_fashion_mnist_is_one_line_naming_the_file(monkeypatch, tmp_path, broken_fashion_mnist):
    folder, broken, fragment = broken_fashion_mnist
    point_system_dir(monkeypatch, folder)
    with pytest.raises(data.DatasetCorrupt) as info:
        data.load_dataset("fashion_mnist", tmp_path / "root", train=True)
    message = str(info.value)
    assert "\n" not in message and str(broken) in message and fragment in message, message
    assert not (tmp_path / "root").exists()


@pytest.mark.skipif(not kd_fashion_mnist.SYSTEM_FASHION_MNIST_DIR.is_dir(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package_creates_nothing(tmp_path):
    root = tmp_path / "nonexistent" / "data"
    ds = data.load_dataset("fashion_mnist", root, train=True)
    assert len(ds) == 60000
    assert sorted(np.unique(ds.targets).tolist()) == list(range(10))
    image, _ = ds[0]
    assert image.shape == (3, 32, 32) and image.min() >= -1 and image.max() <= 1
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.skipif(not kd_fashion_mnist.SYSTEM_FASHION_MNIST_DIR.is_dir(),
                    reason="Debian dataset-fashion-mnist not installed")
@pytest.mark.parametrize("train", [True, False])
def test_fashion_mnist_items_bitwise_equal_to_torchvision(tmp_path, train):
    """The earlier path was torchvision's FashionMNIST + image_transform: same tensors, same RNG draws."""
    raw = tmp_path / "reference" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    prefix = "train" if train else "t10k"
    for name in kd_fashion_mnist.FASHION_MNIST_FILES[True] + kd_fashion_mnist.FASHION_MNIST_FILES[False]:
        if name.startswith(prefix):
            blob = gzip.decompress((kd_fashion_mnist.SYSTEM_FASHION_MNIST_DIR / f"{name}.gz").read_bytes())
        else:
            blob = b""  # torchvision only checks that the other split's files exist
        (raw / name).write_bytes(blob)
    indices = [0, 1, 7, 4242 if train else 999, -1]
    for hflip in (False, True):
        ours = data.load_dataset("fashion_mnist", tmp_path / "missing", train=train, hflip=hflip)
        reference = tv_datasets.FashionMNIST(str(tmp_path / "reference"), train=train,
                                             transform=data.image_transform("fashion_mnist", hflip))
        assert len(ours) == len(reference) == (60000 if train else 10000)
        torch.manual_seed(123)
        mine = [ours[i % len(ours)] for i in indices * 4]
        after_ours = torch.rand(1)
        torch.manual_seed(123)
        theirs = [reference[i % len(reference)] for i in indices * 4]
        assert torch.equal(after_ours, torch.rand(1))  # the same random numbers consumed
        for (a, label_a), (b, label_b) in zip(mine, theirs):
            assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
            assert type(label_a) is type(label_b) is int and label_a == label_b
        if hflip:  # and the flips did happen
            plain = data.load_dataset("fashion_mnist", tmp_path / "missing", train=train, hflip=False)
            flipped = [not torch.equal(a, plain[i][0]) for (a, _), i in zip(mine, indices * 4)]
            assert any(flipped) and not all(flipped)


# --------------------------------------------------------------------------------------------- subsets


def test_subset_sizes_and_prefix(cifar100_root):
    ds = data.load_dataset("cifar100", cifar100_root, hflip=False)  # 200 images
    tenth, idx10 = data.subset(ds, 0.1, seed=0)
    fifth, idx20 = data.subset(ds, 0.2, seed=0)
    whole, idx100 = data.subset(ds, 1.0, seed=0)
    assert (len(tenth), len(fifth), len(whole)) == (20, 40, 200)
    np.testing.assert_array_equal(idx10, idx20[:20])  # DiffAugment's draw: 10% is the first half of 20%
    np.testing.assert_array_equal(idx100, np.arange(200))
    assert len(set(idx20.tolist())) == 40
    assert torch.equal(tenth[3][0], ds[int(idx10[3])][0]) and tenth[3][1] == ds[int(idx10[3])][1]
    assert not np.array_equal(data.subset(ds, 0.1, seed=1)[1], idx10)


def test_saved_indices_round_trip(tmp_path):
    indices = data.subset_indices(50000, 0.1, seed=0)
    path = data.save_indices(tmp_path / "run", indices)
    assert path == tmp_path / "run" / "subset_indices.npy"
    loaded = data.load_indices(tmp_path / "run")
    assert loaded.dtype == np.int64
    np.testing.assert_array_equal(loaded, indices)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["subset_indices.npy"]


# ---------------------------------------------------------------------------------------------- loader


def numbered(n: int) -> TensorDataset:
    """Item i is (i, i % 10): batches show which items they hold."""
    return TensorDataset(torch.arange(n), torch.arange(n) % 10)


def take(iterator, k: int) -> list[torch.Tensor]:
    return [next(iterator)[0] for _ in range(k)]


def test_loader_epochs_are_reshuffled_permutations():
    batches = take(data.infinite_loader(numbered(24), 4, seed=0), 12)  # two epochs of 6 batches
    first, second = torch.cat(batches[:6]), torch.cat(batches[6:])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(24))
    assert not torch.equal(first, second)


def test_loader_is_deterministic():
    a = take(data.infinite_loader(numbered(30), 4, seed=3), 20)
    b = take(data.infinite_loader(numbered(30), 4, seed=3), 20)
    c = take(data.infinite_loader(numbered(30), 4, seed=4), 20)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_loader_drop_last():
    per_epoch = data.batches_per_epoch(30, 4)
    assert per_epoch == 7 and data.batches_per_epoch(30, 4, drop_last=False) == 8
    assert all(len(b) == 4 for b in take(data.infinite_loader(numbered(30), 4, seed=0), 3 * per_epoch))
    sizes = [len(b) for b in take(data.infinite_loader(numbered(30), 4, seed=0, drop_last=False), 16)]
    assert sizes == [4] * 7 + [2] + [4] * 7 + [2]


@pytest.mark.parametrize("world_size, rank", [(1, 0), (2, 1)])
def test_loader_resume_continues_the_same_stream(world_size, rank):
    kwargs = dict(seed=7, rank=rank, world_size=world_size)
    per_epoch = data.batches_per_epoch(30, 4, world_size)  # 3 per rank with 2 ranks
    stream = take(data.infinite_loader(numbered(30), 4, **kwargs), 4 * per_epoch)
    for done in range(4 * per_epoch - 1):
        epoch, k = divmod(done, per_epoch)
        resumed = data.infinite_loader(numbered(30), 4, start_epoch=epoch, skip_batches=k, **kwargs)
        assert torch.equal(next(resumed)[0], stream[done])
        # skip_batches past one epoch rolls over, so a trainer can pass its batch count as is
        rolled = data.infinite_loader(numbered(30), 4, skip_batches=done, **kwargs)
        assert torch.equal(next(rolled)[0], stream[done])


def test_loader_ranks_are_disjoint_shards():
    world_size, n = 3, 31
    per_epoch = data.batches_per_epoch(n, 2, world_size)  # 10 items per rank -> 5 batches
    for epoch in range(2):
        shards = []
        for rank in range(world_size):
            it = data.infinite_loader(numbered(n), 2, seed=1, rank=rank, world_size=world_size, start_epoch=epoch)
            shards.append(set(torch.cat(take(it, per_epoch)).tolist()))
        assert all(len(s) == 10 for s in shards)
        assert len(set.union(*shards)) == 30  # pairwise disjoint; one item left out per epoch


def test_loader_with_worker_matches_in_process():
    a = take(data.infinite_loader(numbered(20), 4, seed=2), 8)
    b = take(data.infinite_loader(numbered(20), 4, seed=2, num_workers=1), 8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_loader_on_cifar_batches(cifar10_root):
    ds, _ = data.subset(data.load_dataset("cifar10", cifar10_root), 0.2)
    images, labels = next(data.infinite_loader(ds, 8, seed=0))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (8,) and labels.dtype == torch.int64


def test_loader_rejects_too_small_dataset():
    with pytest.raises(ValueError, match="no batch"):
        data.infinite_loader(numbered(5), 4, seed=0, world_size=2)
