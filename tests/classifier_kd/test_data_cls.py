"""classifier_kd.data on the tiny fake datasets of tests/conftest.py."""
from __future__ import annotations

import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch

from classifier_kd import data
from classifier_kd.models.checkpoint import CIFAR100_INPUT_SPEC
from kd_core.runtime.seed import subset_indices


def unnormalise(images: torch.Tensor, spec: dict) -> torch.Tensor:
    mean = torch.tensor(spec["mean"]).view(-1, 1, 1)
    std = torch.tensor(spec["std"]).view(-1, 1, 1)
    return images * std + mean


def raw_pixels(name, root, train, index) -> torch.Tensor:
    """The stored image as float (C, H, W) in [0, 1], through no transform of ours."""
    image, _ = data.load_split(name, root, train=train)[index]
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array if array.ndim == 2 else array.transpose(2, 0, 1).copy())


@pytest.mark.parametrize("name, n_train, n_test", [("cifar10", 100, 20), ("cifar100", 200, 100)])
def test_cifar_shapes_spec_and_normalisation(request, name, n_train, n_test):
    root = request.getfixturevalue(f"{name}_root")
    train_set, test_set, spec = data.build_datasets(name, root)
    assert (len(train_set), len(test_set)) == (n_train, n_test)
    mean, std = data.NORMALIZATION[name]
    assert spec == {"size": 32, "mean": list(mean), "std": list(std)}
    image, label = test_set[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= label < data.NUM_CLASSES[name]
    # Test images are only normalised: undoing the normalisation gives the stored pixels back.
    torch.testing.assert_close(unnormalise(image, spec), raw_pixels(name, root, False, 3), atol=1e-6, rtol=0)
    assert set(test_set.targets) == set(range(data.NUM_CLASSES[name]))


def test_cifar100_spec_is_the_checkpoint_default():
    # read_input_spec answers files without a spec (RepDistiller teachers) with CIFAR-100's normalisation.
    mean, std = data.NORMALIZATION["cifar100"]
    assert CIFAR100_INPUT_SPEC == {"size": 32, "mean": mean, "std": std}


def test_training_augmentation_is_a_padded_crop_and_flip(cifar10_root):
    """Every augmented image is one of the 9x9 crops of the 4-px zero-padded image, or its mirror."""
    train_set, _, spec = data.build_datasets("cifar10", cifar10_root)
    raw = torch.nn.functional.pad(raw_pixels("cifar10", cifar10_root, True, 0), (4, 4, 4, 4))
    candidates = [crop for dy in range(9) for dx in range(9)
                  for crop in (raw[:, dy:dy + 32, dx:dx + 32], raw[:, dy:dy + 32, dx:dx + 32].flip(-1))]
    torch.manual_seed(0)
    seen = set()
    for _ in range(6):
        image = unnormalise(train_set[0][0], spec)
        matches = [i for i, crop in enumerate(candidates) if torch.allclose(image, crop, atol=1e-5)]
        assert matches, "augmented image is not a padded crop (or its mirror) of the stored image"
        seen.add(matches[0])
    assert len(seen) > 1  # and it is random


def test_no_augmentation_gives_the_test_transform(cifar10_root):
    train_set, _, _ = data.build_datasets("cifar10", cifar10_root, recipe_augment=False)
    plain = data.load_split("cifar10", cifar10_root, True, data.test_transform("cifar10", data.input_spec("cifar10")))
    torch.testing.assert_close(train_set[5][0], plain[5][0], rtol=0, atol=0)


def test_data_fraction_is_the_seeded_subset(cifar100_root):
    train_set, test_set, _ = data.build_datasets("cifar100", cifar100_root, data_fraction=0.25, subset_seed=3)
    assert isinstance(train_set, torch.utils.data.Subset)
    np.testing.assert_array_equal(train_set.indices, subset_indices(200, 0.25, seed=3))
    assert len(test_set) == 100  # the test set is never subsampled


def test_image_size_resizes_and_is_recorded(cifar10_root):
    train_set, test_set, spec = data.build_datasets("cifar10", cifar10_root, image_size=64)
    assert spec["size"] == 64
    assert train_set[0][0].shape == test_set[0][0].shape == (3, 64, 64)


def check_fashion_item(image: torch.Tensor, raw28: torch.Tensor, spec: dict) -> None:
    assert image.shape == (3, 32, 32)
    pixels = unnormalise(image, spec)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grey, replicated
    torch.testing.assert_close(pixels[0, 2:30, 2:30], raw28, atol=1e-6, rtol=0)  # padded 2 px per side
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert pixels[0][border].abs().max() < 1e-6  # with the black background, as gan_kd pads


def test_fashion_mnist_from_the_debian_folder(tmp_path, fashion_system_dir):
    train_set, test_set, spec = data.build_datasets("fashion_mnist", tmp_path / "empty-root")
    assert (len(train_set), len(test_set)) == (60, 20)
    assert spec == {"size": 32, "mean": [0.2860] * 3, "std": [0.3530] * 3}
    raw = data.load_split("fashion_mnist", tmp_path / "empty-root", train=False)
    check_fashion_item(test_set[4][0], torch.from_numpy(np.asarray(raw[4][0], dtype=np.float32) / 255), spec)
    assert not (tmp_path / "empty-root").exists()  # read in place: nothing copied or decompressed


def test_fashion_mnist_from_torchvision_layout_uncompressed(tmp_path, fashion_mnist_raw_dir, no_system_fashion_mnist):
    raw_folder = tmp_path / "root" / "FashionMNIST" / "raw"
    raw_folder.mkdir(parents=True)
    for path in fashion_mnist_raw_dir.glob("*.gz"):
        (raw_folder / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    _, test_set, spec = data.build_datasets("fashion_mnist", tmp_path / "root")
    images = np.frombuffer((raw_folder / "t10k-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
    check_fashion_item(test_set[0][0], torch.from_numpy(images[:784].reshape(28, 28) / 255.0).float(), spec)


@pytest.mark.parametrize("name, expected", [
    ("cifar10", ["cifar-10-batches-py", "data_batch_1", "test_batch", "batches.meta"]),
    ("cifar100", ["cifar-100-python", "train", "meta"]),
    # Both places looked in: torchvision's layout under the root, and the (here: hidden) Debian folder.
    ("fashion_mnist", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "FashionMNIST/raw",
                       "no-system-fashion-mnist"]),
])
def test_missing_data_names_expected_files(tmp_path, no_system_fashion_mnist, name, expected):
    with pytest.raises(data.DatasetNotFound) as info:
        data.build_datasets(name, tmp_path / "nothing-here")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in message and "--download" in message
    for part in expected:
        assert part in message
    assert not (tmp_path / "nothing-here").exists()


def test_corrupt_idx_file_is_reported(tmp_path, fashion_mnist_raw_dir, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(fashion_mnist_raw_dir, broken)
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    monkeypatch.setattr(data, "SYSTEM_FASHION_MNIST_DIR", broken)
    with pytest.raises(data.DatasetCorrupt, match="train-images-idx3-ubyte"):
        data.build_datasets("fashion_mnist", tmp_path / "root")


def test_transforms_pickle_for_workers(fashion_system_dir, tmp_path):
    train_set, _, _ = data.build_datasets("fashion_mnist", tmp_path)
    clone = pickle.loads(pickle.dumps(train_set))
    torch.manual_seed(1)
    a = clone[0][0]
    torch.manual_seed(1)
    torch.testing.assert_close(a, train_set[0][0])


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        data.build_datasets("mnist", "data")
