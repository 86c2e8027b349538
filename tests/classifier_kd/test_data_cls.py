"""classifier_kd.data, .dataset_specs, .image_transforms and .imagenet_folders on the tiny fake datasets of
tests/conftest.py and tests/classifier_kd/conftest.py."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision import datasets as tv_datasets
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from classifier_kd import data, dataset_specs, image_transforms
from classifier_kd.models.checkpoint import CIFAR100_INPUT_SPEC
from kd_core.runtime import datasets as kd_datasets
from kd_core.runtime import fashion_mnist as kd_fashion_mnist
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
    mean, std = dataset_specs.NORMALIZATION[name]
    assert spec == {"size": 32, "mean": list(mean), "std": list(std)}
    image, label = test_set[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= label < dataset_specs.NUM_CLASSES[name]
    # Test images are only normalised: undoing the normalisation gives the stored pixels back.
    torch.testing.assert_close(unnormalise(image, spec), raw_pixels(name, root, False, 3), atol=1e-6, rtol=0)
    assert set(test_set.targets) == set(range(dataset_specs.NUM_CLASSES[name]))


def test_cifar100_spec_is_the_checkpoint_default():
    # read_input_spec answers files without a spec (RepDistiller teachers) with CIFAR-100's normalisation.
    mean, std = dataset_specs.NORMALIZATION["cifar100"]
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


@pytest.mark.parametrize("name, image_size", [("cifar10", None), ("cifar10", 64), ("imagenet", 48)])
def test_no_augmentation_gives_the_test_transform(request, name, image_size):
    root = request.getfixturevalue(f"{name}_root")
    train_set, _, spec = data.build_datasets(name, root, augment="none", image_size=image_size)
    plain = data.load_split(name, root, True, image_transforms.test_transform(name, spec))
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


def test_corrupt_idx_file_is_reported(tmp_path, broken_fashion_mnist, monkeypatch):
    folder, broken, fragment = broken_fashion_mnist
    monkeypatch.setattr(kd_fashion_mnist, "SYSTEM_FASHION_MNIST_DIR", folder)
    with pytest.raises(data.DatasetCorrupt) as info:
        data.build_datasets("fashion_mnist", tmp_path / "root")
    message = str(info.value)
    assert "\n" not in message and str(broken) in message and fragment in message, message
    assert not (tmp_path / "root").exists()


def test_the_finder_is_kd_cores():
    assert data.DatasetNotFound is kd_datasets.DatasetNotFound and data.DatasetCorrupt is kd_datasets.DatasetCorrupt
    assert data.SYSTEM_FASHION_MNIST_DIR == kd_fashion_mnist.SYSTEM_FASHION_MNIST_DIR


@pytest.mark.skipif(not kd_fashion_mnist.SYSTEM_FASHION_MNIST_DIR.is_dir(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_real_fashion_mnist_with_a_missing_root_creates_nothing(tmp_path):
    root = tmp_path / "nonexistent" / "data"
    test_set = data.load_split("fashion_mnist", root, train=False)
    assert len(test_set) == 10000 and test_set[0][0].size == (28, 28)
    assert not (tmp_path / "nonexistent").exists()


def test_corrupt_cifar_is_one_line_naming_the_file(cifar10_root):
    path = cifar10_root / "cifar-10-batches-py" / "batches.meta"
    path.write_bytes(b"garbage")
    with pytest.raises(data.DatasetCorrupt) as info:
        data.build_datasets("cifar10", cifar10_root)
    assert str(info.value) == (f"CIFAR-10 file {path} failed torchvision's md5 check (it is not the original "
                               f"file); delete it and pass --download to fetch the original again")


def test_unpicklable_cifar_is_corrupt_not_a_traceback(cifar10_root, monkeypatch):
    folder = cifar10_root / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00.")  # a pickled empty dict: no "data" key
    monkeypatch.setattr(tv_datasets.CIFAR10, "test_list",
                        [["test_batch", hashlib.md5((folder / "test_batch").read_bytes()).hexdigest()]])
    with pytest.raises(data.DatasetCorrupt, match=r"^CIFAR-10 files in .* cannot be unpickled \(KeyError: 'data'\)"):
        data.load_split("cifar10", cifar10_root, train=False)


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


# --------------------------------------------------------------------------------------------------------
# ImageNet (ImageFolder) and the recipes' augmentations.

IMAGENET_SIZE = 48  # small, so the ImageNet tests stay fast; transforms scale with spec["size"]


def valid_augments(name: str) -> list[str]:
    return [a for a in image_transforms.AUGMENTATIONS if not (a == "cifar" and name == "imagenet")]


def test_defaults():
    assert image_transforms.AUGMENTATIONS == ("none", "cifar", "imagenet", "three_augment", "rrc", "rrc_randaug")
    assert "imagenet" in dataset_specs.DATASETS and dataset_specs.NUM_CLASSES["imagenet"] == 1000
    assert dataset_specs.NORMALIZATION["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for name in ("cifar10", "cifar100", "fashion_mnist"):
        assert (image_transforms.default_augment(name), dataset_specs.default_image_size(name)) == ("cifar", 32)
        assert dataset_specs.input_spec(name)["size"] == 32
    assert (image_transforms.default_augment("imagenet"),
            dataset_specs.default_image_size("imagenet")) == ("imagenet", 224)
    assert dataset_specs.input_spec("imagenet") == {"size": 224, "mean": [0.485, 0.456, 0.406],
                                                    "std": [0.229, 0.224, 0.225]}
    with pytest.raises(ValueError, match="positive integer"):
        dataset_specs.input_spec("cifar10", 0)


def test_imagenet_shapes_labels_and_spec(imagenet_root):
    train_set, test_set, spec = data.build_datasets("imagenet", imagenet_root, image_size=IMAGENET_SIZE)
    assert (len(train_set), len(test_set)) == (9, 6)
    assert spec == {"size": IMAGENET_SIZE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert train_set.classes == test_set.classes == sorted(p.name for p in (imagenet_root / "train").iterdir())
    for dataset, per_class in ((train_set, 3), (test_set, 2)):
        assert dataset.targets == [c for c in range(3) for _ in range(per_class)]
        image, label = dataset[per_class + 1]
        assert image.shape == (3, IMAGENET_SIZE, IMAGENET_SIZE) and image.dtype == torch.float32
        assert type(label) is int and label == 1


def test_imagenet_test_transform_is_resize_and_centre_crop(imagenet_root):
    """Resize(int(size * 256 / 224)) of the shorter side + CenterCrop(size): 256 / 224 at the default size."""
    _, test_set, spec = data.build_datasets("imagenet", imagenet_root, image_size=IMAGENET_SIZE)
    path, _ = test_set.samples[0]
    raw = Image.open(path).convert("RGB")
    expected = TF.center_crop(TF.resize(raw, int(IMAGENET_SIZE * 256 / 224), antialias=True), IMAGENET_SIZE)
    expected = TF.normalize(TF.to_tensor(expected), spec["mean"], spec["std"])
    torch.testing.assert_close(test_set[0][0], expected, rtol=0, atol=0)
    imagenet_test = image_transforms.test_transform("imagenet", dataset_specs.input_spec("imagenet"))
    assert [type(t) for t in imagenet_test.transforms[:2]] == [transforms.Resize, transforms.CenterCrop]
    assert imagenet_test.transforms[0].size == 256


def test_imagenet_nested_layout_and_subset(tmp_path, imagefolder_writer):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    classes = ("n01", "n02")
    imagefolder_writer(root / "imagenet" / "train", classes, 4, rng)
    imagefolder_writer(root / "imagenet" / "val", classes, 1, rng)
    train_set, test_set, _ = data.build_datasets("imagenet", root, image_size=32, data_fraction=0.5, subset_seed=1)
    assert isinstance(train_set, torch.utils.data.Subset) and len(test_set) == 2
    np.testing.assert_array_equal(train_set.indices, subset_indices(8, 0.5, seed=1))
    assert train_set[0][0].shape == (3, 32, 32)


@pytest.mark.parametrize("download", [False, True])
def test_imagenet_missing_names_the_folders(tmp_path, download):
    root = tmp_path / "nothing-here"
    with pytest.raises(data.DatasetNotFound) as info:
        data.build_datasets("imagenet", root, download=download)
    message = str(info.value)
    assert "\n" not in message and "cannot be downloaded automatically" in message
    for folder in ("train", "val", "imagenet/train", "imagenet/val"):
        assert str(root / folder) in message
    assert not root.exists()


def test_imagenet_with_only_a_train_folder_is_missing(imagenet_root):
    shutil.rmtree(imagenet_root / "val")
    with pytest.raises(data.DatasetNotFound, match=str(imagenet_root / "val")):
        data.load_split("imagenet", imagenet_root, train=True)


def test_imagenet_class_mismatch_is_corrupt(imagenet_root, imagefolder_writer):
    imagefolder_writer(imagenet_root / "val", ("n09999999",), 1, np.random.default_rng(1))
    for train in (True, False):
        with pytest.raises(data.DatasetCorrupt) as info:
            data.load_split("imagenet", imagenet_root, train=train)
        message = str(info.value)
        assert "\n" not in message and "n09999999" in message and "only in val" in message


def test_imagenet_more_than_1000_classes_is_corrupt(tmp_path):
    for split in ("train", "val"):
        for c in range(1001):
            (tmp_path / split / f"n{c:08d}").mkdir(parents=True)
    with pytest.raises(data.DatasetCorrupt, match="1001 class folders, more than ImageNet's 1000"):
        data.load_split("imagenet", tmp_path, train=True)


def test_imagenet_empty_class_folder_is_corrupt(imagenet_root):
    for split in ("train", "val"):
        (imagenet_root / split / "n99999999").mkdir()
    with pytest.raises(data.DatasetCorrupt, match="n99999999"):
        data.load_split("imagenet", imagenet_root, train=False)


def test_unknown_or_misplaced_augment_is_refused_before_reading(tmp_path):
    with pytest.raises(ValueError) as info:
        data.build_datasets("cifar10", tmp_path / "absent", augment="autoaugment")
    assert "unknown augment 'autoaugment'" in str(info.value)
    for name in ("default",) + image_transforms.AUGMENTATIONS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="'cifar' is the 32x32 recipe"):
        data.build_datasets("imagenet", tmp_path / "absent", augment="cifar")


AUGMENT_CASES = ([("cifar10", size, a) for size in (32, 48) for a in image_transforms.AUGMENTATIONS]
                 + [("fashion_mnist", 48, a) for a in image_transforms.AUGMENTATIONS]
                 + [("imagenet", IMAGENET_SIZE, a) for a in valid_augments("imagenet")])


@pytest.fixture
def any_root(cifar10_root, imagenet_root, fashion_system_dir, tmp_path):
    return {"cifar10": cifar10_root, "imagenet": imagenet_root, "fashion_mnist": tmp_path / "fashion"}


@pytest.mark.parametrize("name, size, augment", AUGMENT_CASES)
def test_every_augmentation_gives_the_spec_shape_and_is_random(any_root, name, size, augment):
    train_set, _, spec = data.build_datasets(name, any_root[name], augment=augment, image_size=size)
    torch.manual_seed(0)
    draws = [train_set[1][0] for _ in range(4)]
    for image in draws:
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert torch.isfinite(image).all()
    different = any(not torch.equal(draws[0], other) for other in draws[1:])
    assert different == (augment != "none")


def test_cifar_test_transform_at_224_is_resize_256_and_centre_crop(cifar10_root):
    """timm's eval transform (crop_pct 0.875, bilinear) on the 32x32 image, as OFA / RSD evaluate CIFAR."""
    _, test_set, spec = data.build_datasets("cifar10", cifar10_root, image_size=224)
    first, second = test_set[2][0], test_set[2][0]
    assert first.shape == (3, 224, 224)
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # deterministic
    raw = data.load_split("cifar10", cifar10_root, train=False)[2][0]
    expected = TF.center_crop(TF.resize(raw, 256, InterpolationMode.BILINEAR, antialias=True), 224)
    torch.testing.assert_close(first, TF.normalize(TF.to_tensor(expected), spec["mean"], spec["std"]), rtol=0, atol=0)


def test_small_image_size_resizes_the_32x32_image(cifar10_root):
    _, test_set, _ = data.build_datasets("cifar10", cifar10_root, image_size=16)
    assert test_set[0][0].shape == (3, 16, 16)


def test_recipe_steps():
    """What each recipe is made of, in order (the parameters the module docstring cites)."""
    spec = dataset_specs.input_spec("cifar100", 224)

    def steps(augment):
        return image_transforms.train_transform("cifar100", spec, augment).transforms

    cifar = steps("cifar")
    assert isinstance(cifar[0], transforms.RandomCrop) and cifar[0].size == (32, 32) and cifar[0].padding == 4
    assert isinstance(cifar[2], transforms.Resize)  # the crop is taken at 32, before resizing to 224
    imagenet = steps("imagenet")
    assert type(imagenet[0]) is transforms.RandomResizedCrop and imagenet[0].scale == (0.08, 1.0)
    assert imagenet[0].interpolation == InterpolationMode.BILINEAR
    three = steps("three_augment")
    assert three[0].interpolation == InterpolationMode.BICUBIC and three[0].scale == (0.08, 1.0)
    jitter = three[3]
    assert isinstance(jitter, transforms.ColorJitter)
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.7, 1.3),) * 3 + (None,)
    rrc, randaug = steps("rrc"), steps("rrc_randaug")
    assert isinstance(rrc[0], image_transforms.RandomResizedCropRandomInterpolation) and rrc[0].scale == (0.08, 1.0)
    assert set(rrc[0].interpolations) == {InterpolationMode.BILINEAR, InterpolationMode.BICUBIC}
    for recipe in (rrc, randaug):  # timm turns colour jitter off under an auto-augment policy; cnn.yaml sets 0
        assert not any(isinstance(t, transforms.ColorJitter) for t in recipe)
    assert isinstance(randaug[2], transforms.RandAugment)
    assert (randaug[2].num_ops, randaug[2].magnitude, randaug[2].num_magnitude_bins) == (2, 9, 11)
    erasing = randaug[-1]
    assert isinstance(erasing, transforms.RandomErasing) and isinstance(randaug[-2], transforms.Normalize)
    assert (erasing.p, erasing.value) == (0.25, "random")


def test_three_augment_reaches_grayscale_solarize_and_blur():
    """The one-of step picks each of its three operations, each as DeiT III applies it."""
    spec = dataset_specs.input_spec("cifar10", 32)
    one_of = image_transforms.train_transform("cifar10", spec, "three_augment").transforms[2]
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    solarized = np.asarray(ImageOps.solarize(image, threshold=128))
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        out = np.asarray(one_of(image))
        if (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all():
            np.testing.assert_array_equal(out[..., 0], np.asarray(image.convert("L")))
            seen.add("grayscale")
        elif np.array_equal(out, solarized):
            seen.add("solarize")
        else:
            assert out.shape == (32, 32, 3) and not np.array_equal(out, np.asarray(image))
            # a blur smooths: neighbouring pixels get closer
            roughness = [np.abs(np.diff(np.asarray(a, dtype=int), axis=0)).mean() for a in (out, image)]
            assert roughness[0] < roughness[1]
            seen.add("blur")
    assert seen == {"grayscale", "solarize", "blur"}


def test_three_augment_output_is_sometimes_grey(cifar10_root):
    """Grey survives the colour jitter (brightness, contrast and saturation keep R = G = B)."""
    train_set, _, spec = data.build_datasets("cifar10", cifar10_root, augment="three_augment", image_size=40)
    torch.manual_seed(1)
    grey = []
    for _ in range(12):
        pixels = unnormalise(train_set[0][0], spec)
        grey.append(all(torch.allclose(pixels[c], pixels[0], atol=1e-5) for c in (1, 2)))
    assert any(grey) and not all(grey)


@pytest.mark.parametrize("name, size, augment", [c for c in AUGMENT_CASES if c[1] != 32] + [
    ("imagenet", IMAGENET_SIZE, "test"), ("cifar10", 48, "test"), ("fashion_mnist", 32, "test")])
def test_every_transform_pickles(any_root, name, size, augment):
    spec = dataset_specs.input_spec(name, size)
    transform = (image_transforms.test_transform(name, spec) if augment == "test"
                 else image_transforms.train_transform(name, spec, augment))
    clone = pickle.loads(pickle.dumps(transform))
    image = data.load_split(name, any_root[name], train=True)[0][0]
    torch.manual_seed(5)
    expected = transform(image)
    torch.manual_seed(5)
    torch.testing.assert_close(clone(image), expected, rtol=0, atol=0)
