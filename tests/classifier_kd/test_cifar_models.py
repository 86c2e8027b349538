"""The CIFAR zoo against the reference numbers (losses.md §3): parameter counts, pooled and stage shapes,
RepDistiller's module names, and the forward_features / forward_head seam."""
from __future__ import annotations

import functools
import io

import pytest
import torch

from classifier_kd.models import CIFAR_MODELS, available, create_model

# name -> (parameters with 100 classes, pooled feature dim, stage maps (C, H, W) for a 32x32 input)
R4 = [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
R1 = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
W2 = [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)]
VGG = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]
ZOO = {
    "resnet8x4": (1_233_540, 256, R4),
    "resnet32x4": (7_433_860, 256, R4),
    "resnet20": (278_324, 64, R1),
    "resnet32": (472_756, 64, R1),
    "resnet56": (861_620, 64, R1),
    "resnet110": (1_736_564, 64, R1),
    "wrn_40_2": (2_255_156, 128, W2),
    "wrn_16_2": (703_284, 128, W2),
    "wrn_40_1": (569_780, 64, R1),
    "vgg13": (9_462_180, 512, VGG),
    "vgg8": (3_965_028, 512, VGG),
    "MobileNetV2": (812_836, 1280, [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)]),
    "ShuffleV1": (949_258, 960, [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4)]),
    "ShuffleV2": (1_355_528, 1024, [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4)]),
    "ResNet50": (23_705_252, 2048, [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)]),
}

# A few state_dict keys per model that RepDistiller's checkpoints contain (its module names).
REPDISTILLER_KEYS = {
    "resnet8x4": ["conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
                  "layer3.0.conv2.weight", "layer3.0.bn2.num_batches_tracked", "fc.weight", "fc.bias"],
    "resnet56": ["layer1.8.conv2.weight", "layer2.0.downsample.0.weight", "layer3.8.bn2.weight", "fc.weight"],
    "wrn_40_2": ["conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight",
                 "block3.layer.5.conv2.weight", "bn1.running_mean", "fc.weight"],
    "vgg8": ["block0.0.weight", "block0.0.bias", "block0.1.running_mean", "block4.1.weight", "classifier.weight"],
    "vgg13": ["block0.3.weight", "block0.4.weight", "block4.4.running_var", "classifier.bias"],
    "MobileNetV2": ["conv1.0.weight", "conv1.1.weight", "blocks.0.0.conv.0.weight", "blocks.6.0.conv.7.bias",
                    "conv2.0.weight", "conv2.1.running_var", "classifier.0.weight"],
    "ShuffleV1": ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer3.3.bn3.weight", "linear.weight"],
    "ShuffleV2": ["layer1.0.conv5.weight", "layer1.0.bn5.weight", "layer1.3.conv3.weight", "conv2.weight",
                  "bn2.weight", "linear.weight"],
    "ResNet50": ["layer1.0.shortcut.0.weight", "layer1.0.shortcut.1.weight", "layer4.2.conv3.weight",
                 "layer4.2.bn3.weight", "linear.weight"],
}


@functools.lru_cache(maxsize=None)
def model(name: str) -> torch.nn.Module:
    """One eval-mode instance per name, shared by the read-only tests below (building ResNet50 is slow)."""
    torch.manual_seed(0)
    return create_model(name, 100).eval()


@functools.lru_cache(maxsize=None)
def run(name: str) -> dict[str, object]:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    net = model(name)
    with torch.no_grad():
        features = net.forward_features(x)
        return {"x": x, "features": features, "head": net.forward_head(features), "logits": net(x),
                "stages": net.forward_stages(x)}


def test_registry_is_exactly_the_zoo():
    assert set(CIFAR_MODELS) == set(ZOO)
    assert available() == sorted(available())
    assert set(ZOO) <= set(available())


@pytest.mark.parametrize("name", ZOO)
def test_parameter_count_and_feature_dim(name):
    params, feature_dim, _ = ZOO[name]
    net = model(name)
    assert sum(p.numel() for p in net.parameters()) == params
    assert net.feature_dim == feature_dim
    assert net.num_classes == 100


@pytest.mark.parametrize("name", ZOO)
def test_forward_shapes_and_seam(name):
    _, feature_dim, stages = ZOO[name]
    out = run(name)
    assert out["features"].shape == (2, feature_dim)
    assert out["logits"].shape == (2, 100)
    torch.testing.assert_close(out["logits"], out["head"], rtol=0, atol=0)
    assert [tuple(s.shape[1:]) for s in out["stages"]] == stages


@pytest.mark.parametrize("name", ZOO)
def test_state_dict_round_trip_strict(name):
    source = model(name)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # a different init, so equal outputs prove the load
    target = create_model(name, 100).eval()
    target.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(target(run(name)["x"]), run(name)["logits"], rtol=0, atol=0)


@pytest.mark.parametrize("name", REPDISTILLER_KEYS)
def test_repdistiller_module_names(name):
    keys = model(name).state_dict().keys()
    missing = [key for key in REPDISTILLER_KEYS[name] if key not in keys]
    assert not missing


def test_wrn_40_1_first_block_has_no_projection_shortcut():
    # 16 -> 16 channels: identity shortcut, so no convShortcut in block1 (and none in a checkpoint).
    keys = model("wrn_40_1").state_dict().keys()
    assert not any(key.startswith("block1.layer.0.convShortcut") for key in keys)
    assert "block2.layer.0.convShortcut.weight" in keys


def test_num_classes_sets_the_head():
    net = create_model("resnet20", 10)
    assert net.num_classes == 10 and net.fc.out_features == 10
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_train_mode_backward():
    net = create_model("resnet8x4", 100).train()
    loss = net(torch.randn(2, 3, 32, 32)).logsumexp(dim=1).mean()
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*resnet32x4.*wrn_40_2"):
        create_model("resnet9000", 100)


def test_pretrained_cifar_model_asks_for_weights_path():
    with pytest.raises(ValueError, match="weights=PATH"):
        create_model("resnet32x4", 100, pretrained=True)


def test_models_know_their_registry_name(tmp_path):
    from classifier_kd.models import create_model, load_classifier, save_classifier

    model = create_model("resnet20", num_classes=10)
    assert model.arch == "resnet20"
    save_classifier(tmp_path / "m.pt", model, "resnet20", 10)
    assert load_classifier(tmp_path / "m.pt").arch == "resnet20"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_class_embeddings_give_the_logits_of_the_pooled_features(name):
    """What label distillation, KD-DLGAN and gan-kd's `cls` metric rely on: head(forward_features(x)) = logits."""
    torch.manual_seed(0)
    net = create_model(name, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.class_embeddings().logits(net.forward_features(x)), net(x), rtol=1e-4, atol=1e-5)
