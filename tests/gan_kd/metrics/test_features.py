"""gan_kd.metrics.features: the label-free VGG-16 spaces (specs, determinism, files) and the classifier space."""
from __future__ import annotations

import pytest
import torch

from gan_kd.metrics import features
from gan_kd.metrics.features import FeatureSpaceError, build_label_free

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def grey_images(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 216, (n, 1, 32, 32), dtype=torch.uint8, generator=g).expand(n, 3, 32, 32).contiguous()


@pytest.fixture(scope="module")
def random_space() -> features.VGG16Trunk:
    return build_label_free("vgg16-random")


# ---------------------------------------------------------------------------------------------- vgg16-random


def test_vgg16_random_is_deterministic_and_leaves_the_global_rng_alone(random_space):
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    again = build_label_free("vgg16-random:0")  # the default seed, spelled out
    assert torch.equal(state, torch.random.get_rng_state())
    fingerprint = again.describe()["sha256_16"]
    assert fingerprint == random_space.describe()["sha256_16"]
    images = grey_images()
    assert torch.equal(again.features(images), random_space.features(images))
    # the CPU path switches the trunk to channels_last; the fingerprint (of the values) must not move
    assert again.describe()["sha256_16"] == fingerprint
    assert torch.equal(state, torch.random.get_rng_state())


def test_vgg16_random_seeds_differ(random_space):
    other = build_label_free("vgg16-random:1")
    assert other.name == "vgg16-random:1" and random_space.name == "vgg16-random:0"
    assert other.describe()["sha256_16"] != random_space.describe()["sha256_16"]
    images = grey_images()
    assert not torch.allclose(other.features(images), random_space.features(images))


def test_vgg16_random_describes_itself(random_space):
    record = random_space.describe()
    assert record["name"] == "vgg16-random:0"
    assert record["sees_colour"] is True and record["uses_labels"] is False
    assert len(record["sha256_16"]) == 16 and int(record["sha256_16"], 16) >= 0


def test_features_shape_dtype_and_batching(random_space, monkeypatch):
    images = grey_images(n=7)
    whole = random_space.features(images)
    assert whole.shape == (7, 512) and whole.dtype == torch.float64
    assert torch.isfinite(whole).all() and whole.abs().max() > 0
    monkeypatch.setattr(features, "FEATURE_BATCH", 3)  # 3 + 3 + 1: the same rows, to float32 rounding
    torch.testing.assert_close(random_space.features(images), whole, rtol=1e-4, atol=1e-5 * float(whole.abs().max()))


def test_features_are_of_order_one(random_space):
    """Kaiming fan-in keeps the trunk's output away from 0 (fan-out would shrink it ~10x over 13 layers)."""
    spread = random_space.features(grey_images(n=16)).std(dim=0).mean()
    assert 0.05 < float(spread) < 100


def test_feature_space_stays_in_eval_mode(random_space):
    random_space.train()
    assert not random_space.training and not random_space.trunk.training


def test_features_reject_non_uint8_and_bad_shapes(random_space):
    with pytest.raises(ValueError, match="uint8"):
        random_space.features(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="uint8"):
        random_space.features(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_a_red_tint_changes_the_label_free_features(random_space):
    grey = grey_images(n=16, seed=3)
    tinted = grey.clone()
    tinted[:, 0] = (tinted[:, 0].int() + 40).clamp(max=255).to(torch.uint8)
    a, b = random_space.features(grey), random_space.features(tinted)
    # the change is of the order of the differences between images, not numerical noise
    per_image_change = (a - b).norm(dim=1).mean()
    between_images = (a[:8] - a[8:]).norm(dim=1).mean()
    assert float(per_image_change) > 0.1 * float(between_images)


# ---------------------------------------------------------------------------------------------- bad specs


@pytest.mark.parametrize("spec, fragment", [
    ("vgg17", "unknown label-free features 'vgg17'"),
    ("vgg16-random:x", "the seed of vgg16-random:SEED must be an integer"),
    ("vgg16-imagenet:extra", "unknown label-free features"),
    ("vgg16:", "unknown label-free features"),
    ("", "unknown label-free features"),
])
def test_bad_specs_raise_one_line(spec, fragment):
    with pytest.raises(FeatureSpaceError, match=fragment) as info:
        build_label_free(spec)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_missing_vgg16_file(tmp_path):
    with pytest.raises(FeatureSpaceError, match="does not exist") as info:
        build_label_free(f"vgg16:{tmp_path / 'missing.pt'}")
    assert "\n" not in str(info.value)


def test_vgg16_file_that_does_not_fit(tmp_path):
    """A resnet's state dict: no features.* keys -> one line naming the file and the expected layout."""
    from classifier_kd.models import create_model

    path = tmp_path / "resnet20.pt"
    torch.save(create_model("resnet20", 10).state_dict(), path)
    with pytest.raises(FeatureSpaceError, match=r"do not fit torchvision's VGG-16 trunk") as info:
        build_label_free(f"vgg16:{path}")
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_vgg16_file_with_wrong_shapes(tmp_path, random_space):
    state = {f"features.{k}": v for k, v in random_space.trunk.state_dict().items()}
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)  # a grey first layer
    path = tmp_path / "vgg16-grey.pt"
    torch.save(state, path)
    with pytest.raises(FeatureSpaceError, match="do not fit") as info:
        build_label_free(f"vgg16:{path}")
    assert "\n" not in str(info.value)


def test_vgg16_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(FeatureSpaceError) as info:
        build_label_free(f"vgg16:{path}")
    assert "\n" not in str(info.value)


def test_vgg16_file_refuses_pickled_code(malicious_checkpoint):
    path, marker = malicious_checkpoint
    with pytest.raises(FeatureSpaceError):
        build_label_free(f"vgg16:{path}")
    assert not marker.exists()


def test_torchvision_vgg16_state_dict_loads_and_gives_the_same_features(tmp_path):
    """A whole torchvision vgg16() state dict (classifier keys included, and ignored) gives the features of the
    module it came from: the trunk on ImageNet-normalised [0, 1] inputs, pooled."""
    from torchvision.models import vgg16

    torch.manual_seed(0)
    model = vgg16(weights=None).eval()
    path = tmp_path / "vgg16.pt"
    torch.save(model.state_dict(), path)
    space = build_label_free(f"vgg16:{path}")
    assert space.name == "vgg16:vgg16.pt"
    images = grey_images(n=4, seed=5)
    images[:, 1] = 255 - images[:, 1]  # some colour too
    mean = torch.tensor(features.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(features.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.features((images.float() / 255 - mean) / std).flatten(1).double()  # 512 x 1 x 1
    got = space.features(images)
    assert got.shape == (4, 512)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert space.describe()["sha256_16"] == features.fingerprint(features.VGG16Trunk("x", model.features))


# ---------------------------------------------------------------------------------------------- classifier space


def test_classifier_space_features_and_logits(classifier_ckpt):
    from classifier_kd.models import load_classifier

    space = features.ClassifierSpace(f"ckpt:{classifier_ckpt}", with_head=True)
    network = load_classifier(classifier_ckpt).eval()
    assert space.uses_labels and space.name == "resnet8x4"
    images = grey_images(n=4, seed=6)
    feats = space.features(images)
    # native preprocessing: [-1, 1] -> [0, 1] -> the checkpoint's recorded mean / std
    spec = space.extractor.input_spec
    x = ((images.float() / 127.5 - 1) + 1) / 2
    x = (x - torch.tensor(spec["mean"]).view(1, 3, 1, 1)) / torch.tensor(spec["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = network.forward_features(x).double()
        expected_logits = network.forward_head(expected.float())
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(space.logits(feats), expected_logits, rtol=1e-4, atol=1e-4)


def test_classifier_space_bad_spec_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        features.ClassifierSpace(f"ckpt:{tmp_path / 'none.pt'}")


def test_the_default_space_is_vgg16_at_half_width():
    from gan_kd.metrics.features import LABEL_FREE_DEFAULT, random_vgg16

    half, full = build_label_free(LABEL_FREE_DEFAULT), random_vgg16(0)
    assert half.name == "vgg16-half-random:0" and full.name == "vgg16-random:0"
    convs = [m for m in half.trunk if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256]
    assert half.features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 256)
    assert full.features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 512)
