"""Classifier checkpoints: our format, RepDistiller/mdistiller teacher files, bare state_dicts, errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classifier_kd.models import create_model, load_classifier, save_classifier
from classifier_kd.models.checkpoint import FORMAT


def _outputs(net: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(7)
    with torch.no_grad():
        return net.eval()(torch.randn(2, 3, 32, 32))


def _trained_like(name: str, num_classes: int = 100) -> torch.nn.Module:
    """A model whose BN running statistics differ from a fresh one's, so a skipped buffer would show."""
    torch.manual_seed(0)
    net = create_model(name, num_classes).train()
    with torch.no_grad():
        net(torch.randn(4, 3, 32, 32))
    return net


def _repdistiller_file(path: Path, net: torch.nn.Module, prefix: str = "") -> Path:
    """What RepDistiller's train_teacher.py writes to <name>_vanilla/ckpt_epoch_240.pth."""
    state = {prefix + key: value for key, value in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(73.26)}, path)
    return path


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_2"])
def test_repdistiller_teacher_loads_strict(tmp_path, name):
    source = _trained_like(name)
    path = _repdistiller_file(tmp_path / f"{name}_vanilla" / "ckpt_epoch_240.pth", source)
    loaded = load_classifier(path, arch=name)
    assert loaded.num_classes == 100  # read off the final layer
    torch.testing.assert_close(_outputs(loaded), _outputs(source), rtol=0, atol=0)


def test_num_classes_inferred_from_final_layer(tmp_path):
    path = _repdistiller_file(tmp_path / "c10.pth", _trained_like("vgg8", num_classes=10))
    assert load_classifier(path, arch="vgg8").num_classes == 10


def test_dataparallel_prefix_and_bare_state_dict(tmp_path):
    source = _trained_like("resnet20")
    wrapped = _repdistiller_file(tmp_path / "dp.pth", source, prefix="module.")
    bare = tmp_path / "bare.pth"
    torch.save(source.state_dict(), bare)
    for path in (wrapped, bare):
        torch.testing.assert_close(_outputs(load_classifier(path, arch="resnet20")), _outputs(source))


def test_missing_bn_counters_are_tolerated(tmp_path):
    # Checkpoints written by PyTorch < 0.4.1 have no num_batches_tracked buffers.
    source = _trained_like("resnet20")
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"model": state}, path)
    torch.testing.assert_close(_outputs(load_classifier(path, arch="resnet20")), _outputs(source))


def test_create_model_with_weights(tmp_path):
    source = _trained_like("MobileNetV2")
    path = _repdistiller_file(tmp_path / "mv2.pth", source)
    loaded = create_model("MobileNetV2", 100, weights=path)
    torch.testing.assert_close(_outputs(loaded), _outputs(source), rtol=0, atol=0)


def test_our_format_round_trip(tmp_path):
    source = _trained_like("wrn_16_2", num_classes=10)
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    save_classifier(path, source, "wrn_16_2", 10, epoch=240, accuracy=91.5)
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["arch"] == "wrn_16_2"
    assert (raw["num_classes"], raw["feature_dim"], raw["epoch"], raw["accuracy"]) == (10, 128, 240, 91.5)
    loaded = load_classifier(path)  # arch and num_classes come from the file
    assert type(loaded) is type(source) and loaded.num_classes == 10
    torch.testing.assert_close(_outputs(loaded), _outputs(source), rtol=0, atol=0)
    assert load_classifier(path, arch="wrn_16_2", num_classes=10).num_classes == 10


def test_save_unwraps_dataparallel_and_rejects_reserved_extras(tmp_path):
    source = _trained_like("resnet20")
    save_classifier(tmp_path / "dp.pt", torch.nn.DataParallel(source), "resnet20", 100)
    assert next(iter(torch.load(tmp_path / "dp.pt", weights_only=True)["model"])) == "conv1.weight"
    with pytest.raises(ValueError, match="clash"):
        save_classifier(tmp_path / "x.pt", source, "resnet20", 100, format="mine")
    with pytest.raises(ValueError, match="num_classes=10"):
        save_classifier(tmp_path / "x.pt", source, "resnet20", 10)


def test_our_format_wrong_arch_names_both(tmp_path):
    path = tmp_path / "best.pt"
    save_classifier(path, create_model("resnet8x4", 100), "resnet8x4", 100)
    with pytest.raises(ValueError, match="'resnet8x4'.*'resnet32x4'"):
        load_classifier(path, arch="resnet32x4")
    with pytest.raises(ValueError, match="100 classes.*num_classes=10"):
        load_classifier(path, num_classes=10)


def test_mismatched_architecture_is_one_line_naming_keys(tmp_path):
    path = _repdistiller_file(tmp_path / "r8x4.pth", create_model("resnet8x4", 100))
    with pytest.raises(ValueError) as info:
        load_classifier(path, arch="resnet32x4")
    message = str(info.value)
    assert "\n" not in message
    assert "resnet32x4" in message and "missing keys: layer1.1." in message


def test_mismatched_num_classes_names_the_head(tmp_path):
    path = _repdistiller_file(tmp_path / "r20.pth", create_model("resnet20", 100))
    with pytest.raises(ValueError, match=r"shape mismatch: fc\.weight \(100, 64\) vs \(10, 64\)"):
        load_classifier(path, arch="resnet20", num_classes=10)


def test_foreign_layout_needs_arch_and_missing_file_names_path(tmp_path):
    path = _repdistiller_file(tmp_path / "r20.pth", create_model("resnet20", 100))
    with pytest.raises(ValueError, match="arch=NAME"):
        load_classifier(path)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_classifier(path, arch="nope")
    missing = tmp_path / "resnet56_vanilla" / "ckpt_epoch_240.pth"
    with pytest.raises(FileNotFoundError, match="resnet56_vanilla"):
        load_classifier(missing, arch="resnet56")
    odd = tmp_path / "odd.pth"
    torch.save({"net": 3}, odd)
    with pytest.raises(ValueError, match="top-level keys: net"):
        load_classifier(odd, arch="resnet20")
