"""Tests for gan_kd.teacher: frozen CLIP / classifier teachers built offline from local files.

The CLIP teacher is checked against open_clip itself (``encode_image`` of the same weights, fed the way
KD-DLGAN did or the way CLIP was trained, ``shared/reference/eval-and-teacher.md`` §2), the classifier
teacher against the classifier's own ``forward_features``. Weights are random: these are tests of
plumbing, preprocessing and freezing, not of feature quality.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classifier_kd.models.checkpoint import load_classifier
from gan_kd.teacher import (
    ClassifierTeacher,
    ClipTeacher,
    TeacherError,
    build_teacher,
    nearest_upsample,
    parse_teacher_spec,
)


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """D-input-like images in [-1, 1]."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


# ------------------------------------------------------------------------------ spec parsing


@pytest.mark.parametrize("spec, expected", [
    ("clip:ViT-B-32", ("clip", "ViT-B-32")),
    ("clip:RN50-quickgelu", ("clip", "RN50-quickgelu")),
    ("ckpt:runs/teacher.pt", ("ckpt", "runs/teacher.pt")),
    ("ckpt:C:/weights/t.pt", ("ckpt", "C:/weights/t.pt")),  # only the first colon separates
])
def test_parse_teacher_spec_accepts_both_forms(spec, expected):
    assert parse_teacher_spec(spec) == expected


@pytest.mark.parametrize("spec", ["ViT-B-32", "clip:", "ckpt:", "timm:resnet50", "CLIP:ViT-B-32", ":x", ""])
def test_parse_teacher_spec_rejects_others_naming_both_forms(spec):
    with pytest.raises(TeacherError) as error:
        parse_teacher_spec(spec)
    message = assert_one_line(error)
    assert "clip:" in message and "ckpt:" in message


def test_teacher_error_is_a_value_error():
    assert issubclass(TeacherError, ValueError)


# ------------------------------------------------------------------------------ nearest upsampling


def test_nearest_upsample_replicates_each_pixel_into_a_block():
    x = images(2, 32)
    up = nearest_upsample(x, 224)
    assert up.shape == (2, 3, 224, 224)
    blocks = up.view(2, 3, 32, 7, 32, 7)  # pixel (i, j) -> rows 7i..7i+6, cols 7j..7j+6
    assert torch.equal(blocks, x[:, :, :, None, :, None].expand_as(blocks))
    assert nearest_upsample(x, 32) is x


# ------------------------------------------------------------------------------ CLIP teacher


@pytest.fixture(scope="module")
def clip_teacher(clip_model_name, clip_weights_file):
    return ClipTeacher(clip_model_name, weights=clip_weights_file)


@pytest.fixture(scope="module")
def clip_teacher_native(clip_model_name, clip_weights_file):
    return ClipTeacher(clip_model_name, weights=clip_weights_file, preprocessing="native")


def test_clip_teacher_loads_from_weights_file_offline_bf16(clip_model_name, clip_weights_file, clip_model,
                                                           clip_teacher, no_network):
    teacher = build_teacher(f"clip:{clip_model_name}", weights=str(clip_weights_file), bf16=True)
    assert isinstance(teacher, ClipTeacher)
    for name, value in clip_model.visual.state_dict().items():  # the file's weights, not a fresh random init
        assert torch.equal(teacher.network.state_dict()[name], value), name
    assert teacher.feature_dim == clip_model.visual.output_dim
    assert str(clip_weights_file) in teacher.description
    x = images(2)
    features = teacher(x)  # bf16 autocast, float32 out, close to the fp32 teacher
    assert features.dtype == torch.float32
    assert (cosine(features, clip_teacher(x)) > 0.99).all()
    assert no_network == []


def test_clip_teacher_output_shape_and_dtype(clip_teacher, clip_model):
    features = clip_teacher(images(3))
    assert features.shape == (3, clip_model.visual.output_dim) == (3, clip_teacher.feature_dim)
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()


def test_clip_teacher_matches_encode_image_on_nearest_upsampled_input(clip_teacher, clip_model):
    x = images(2)
    expected = clip_model.encode_image(F.interpolate(x, size=(224, 224), mode="nearest"))  # KD-DLGAN: no mean/std
    torch.testing.assert_close(clip_teacher(x), expected, rtol=1e-4, atol=1e-5)


def test_clip_teacher_native_matches_open_clip_preprocess_val(clip_teacher_native, clip_teacher, clip_model,
                                                               clip_preprocess_val):
    x = images(2)
    # open_clip's own val transform (bicubic 224, centre crop, CLIP mean/std) applied to the [0, 1] images
    expected = clip_model.encode_image(clip_preprocess_val((x + 1) / 2))
    features = clip_teacher_native(x)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(features, clip_teacher(x), atol=1e-3)  # the two preprocessings really differ


def test_clip_teacher_is_frozen(clip_teacher):
    assert all(not p.requires_grad for p in clip_teacher.parameters())
    x = images(2).requires_grad_(True)
    features = clip_teacher(x)
    assert not features.requires_grad and features.grad_fn is None
    clip_teacher.train()
    assert not clip_teacher.training
    assert not any(module.training for module in clip_teacher.modules())
    clip_teacher.train(True)
    assert not any(module.training for module in clip_teacher.modules())


def test_clip_teacher_missing_weights_file(clip_model_name, tmp_path, no_network):
    missing = tmp_path / "nope.pt"
    with pytest.raises(TeacherError) as error:
        ClipTeacher(clip_model_name, weights=missing)
    assert str(missing) in assert_one_line(error)
    assert no_network == []


def test_clip_teacher_corrupt_weights_file(clip_model_name, tmp_path, no_network):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a torch file\n" * 10)
    with pytest.raises(TeacherError) as error:
        ClipTeacher(clip_model_name, weights=corrupt)
    message = assert_one_line(error)
    assert str(corrupt) in message and clip_model_name in message
    assert no_network == []


def test_clip_teacher_weights_of_another_architecture(clip_weights_file, no_network):
    with pytest.raises(TeacherError) as error:
        ClipTeacher("ViT-S-32", weights=clip_weights_file)  # the file holds ViT-S-32-alt (other text tower)
    assert "ViT-S-32" in assert_one_line(error)
    assert no_network == []


def test_clip_teacher_unknown_model(clip_weights_file, no_network):
    with pytest.raises(TeacherError) as error:
        ClipTeacher("ViT-Q-99", weights=clip_weights_file)
    message = assert_one_line(error)
    assert "ViT-Q-99" in message and "ViT-B-32" in message
    assert no_network == []


def test_clip_teacher_unknown_pretrained_tag_fails_before_any_download(no_network):
    with pytest.raises(TeacherError) as error:
        ClipTeacher("ViT-B-32", pretrained="no-such-tag")
    message = assert_one_line(error)
    assert "no-such-tag" in message and "openai" in message  # names the allowed tags
    assert no_network == []


def test_clip_teacher_without_weights_is_refused(clip_model_name, no_network):
    with pytest.raises(TeacherError) as error:
        ClipTeacher(clip_model_name)
    message = assert_one_line(error)
    assert "--teacher-pretrained" in message and "--teacher-weights" in message
    assert no_network == []


def test_unknown_preprocessing_is_refused(classifier_ckpt):
    with pytest.raises(TeacherError) as error:
        build_teacher(f"ckpt:{classifier_ckpt}", preprocessing="imagenet")
    message = assert_one_line(error)
    assert "kd-dlgan" in message and "native" in message


# ------------------------------------------------------------------------------ classifier teacher


@pytest.fixture(scope="module")
def classifier(classifier_ckpt) -> nn.Module:
    """The checkpoint's network, loaded directly, in eval mode."""
    return load_classifier(classifier_ckpt).eval()


def normalised(x: torch.Tensor, spec: dict) -> torch.Tensor:
    mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def test_classifier_teacher_returns_forward_features(classifier_ckpt, classifier):
    teacher = build_teacher(f"ckpt:{classifier_ckpt}")
    assert isinstance(teacher, ClassifierTeacher)
    x = images(4)
    with torch.no_grad():
        expected = classifier.forward_features(x)  # eval mode: BN running statistics
        in_train_mode = copy.deepcopy(classifier).train().forward_features(x)  # a copy: train mode moves BN stats
    features = teacher(x)
    assert features.shape == (4, classifier.feature_dim) == (4, teacher.feature_dim)
    torch.testing.assert_close(features, expected)
    assert not torch.allclose(features, in_train_mode, atol=1e-3)  # the fixture's BN stats are not (0, 1)


def test_classifier_teacher_upsamples_smaller_inputs_by_nearest(classifier_ckpt, classifier):
    teacher = ClassifierTeacher(classifier_ckpt)
    x = images(2, size=16)
    with torch.no_grad():
        expected = classifier.forward_features(x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    torch.testing.assert_close(teacher(x), expected)


def test_classifier_teacher_native_applies_stored_mean_std(classifier_ckpt, classifier, classifier_input_spec):
    teacher = ClassifierTeacher(classifier_ckpt, preprocessing="native")
    assert teacher.input_spec["size"] == classifier_input_spec["size"]
    x = images(4)
    with torch.no_grad():
        expected = classifier.forward_features(normalised(x, classifier_input_spec))
    torch.testing.assert_close(teacher(x), expected)
    assert not torch.allclose(teacher(x), ClassifierTeacher(classifier_ckpt)(x), atol=1e-3)


def test_classifier_teacher_without_input_spec_uses_cifar100_normalisation(classifier, tmp_path):
    from classifier_kd.models import save_classifier
    from classifier_kd.models.checkpoint import CIFAR100_INPUT_SPEC

    path = tmp_path / "no-spec.pt"
    save_classifier(path, classifier, "resnet8x4", 10)
    teacher = ClassifierTeacher(path, preprocessing="native")
    x = images(2)
    with torch.no_grad():
        expected = classifier.forward_features(normalised(x, CIFAR100_INPUT_SPEC))
    torch.testing.assert_close(teacher(x), expected)


def test_classifier_teacher_reads_repdistiller_layout_with_arch(classifier, tmp_path):
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": classifier.state_dict(), "epoch": 240, "accuracy": 0.5}, path)
    teacher = build_teacher(f"ckpt:{path}", arch="resnet8x4")
    x = images(2)
    with torch.no_grad():
        expected = classifier.forward_features(x)
    torch.testing.assert_close(teacher(x), expected)
    with pytest.raises(TeacherError) as error:  # no arch recorded in that layout
        build_teacher(f"ckpt:{path}")
    assert "arch" in assert_one_line(error)


def test_classifier_teacher_is_frozen(classifier_ckpt):
    teacher = ClassifierTeacher(classifier_ckpt)
    assert all(not p.requires_grad for p in teacher.parameters())
    x = images(2).requires_grad_(True)
    features = teacher(x)
    assert not features.requires_grad
    teacher.train()
    assert not any(module.training for module in teacher.modules())
    buffers = {name: b.clone() for name, b in teacher.named_buffers()}
    teacher(images(8, seed=1))
    assert all(torch.equal(b, buffers[name]) for name, b in teacher.named_buffers())  # BN stats untouched


def test_classifier_teacher_bf16_returns_float32_close_to_fp32(classifier_ckpt):
    x = images(4)
    fp32 = ClassifierTeacher(classifier_ckpt)(x)
    bf16 = ClassifierTeacher(classifier_ckpt, bf16=True)(x)
    assert bf16.dtype == torch.float32
    assert (cosine(bf16, fp32) > 0.99).all()


def test_classifier_teacher_missing_file(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(TeacherError) as error:
        build_teacher(f"ckpt:{missing}")
    assert str(missing) in assert_one_line(error)


def test_classifier_teacher_corrupt_file(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(TeacherError) as error:
        build_teacher(f"ckpt:{corrupt}")
    assert str(corrupt) in assert_one_line(error)


def test_classifier_teacher_wrong_arch(classifier_ckpt):
    with pytest.raises(TeacherError) as error:
        build_teacher(f"ckpt:{classifier_ckpt}", arch="resnet20")
    assert "resnet20" in assert_one_line(error)


# ------------------------------------------------------------------------------ build_teacher option conflicts


@pytest.mark.parametrize("spec_kind, options, named", [
    ("clip", {"arch": "resnet8x4"}, "--teacher-arch"),
    ("ckpt", {"pretrained": "openai"}, "--teacher-pretrained"),
    ("ckpt", {"weights": "x.pt"}, "--teacher-weights"),
])
def test_build_teacher_option_conflicts(spec_kind, options, named, classifier_ckpt, clip_model_name, no_network):
    spec = f"clip:{clip_model_name}" if spec_kind == "clip" else f"ckpt:{classifier_ckpt}"
    with pytest.raises(TeacherError) as error:
        build_teacher(spec, **options)
    assert named in assert_one_line(error)
    assert no_network == []


def test_build_teacher_clip_with_both_tag_and_file(clip_model_name, clip_weights_file, no_network):
    with pytest.raises(TeacherError) as error:
        build_teacher(f"clip:{clip_model_name}", pretrained="openai", weights=str(clip_weights_file))
    assert "not both" in assert_one_line(error)
    assert no_network == []


def test_build_teacher_rejects_bad_spec():
    with pytest.raises(TeacherError):
        build_teacher("resnet8x4")


# ------------------------------------------------------------------------------ class embeddings (kd-dlgan, label-distillation)
def test_clip_teacher_class_embeddings_are_the_text_towers_prompts(clip_model_name, clip_weights_file, clip_model,
                                                                   no_network):
    import open_clip

    names = ["airplane", "aquarium_fish", "T-shirt/top"]
    teacher = build_teacher(f"clip:{clip_model_name}", weights=str(clip_weights_file), class_names=names)
    table = teacher.class_embeddings()
    tokens = open_clip.get_tokenizer(clip_model_name)(["a airplane", "a aquarium fish", "a T-shirt/top"])
    with torch.no_grad():
        expected = clip_model.encode_text(tokens)
    torch.testing.assert_close(table.weight, expected, rtol=1e-4, atol=1e-5)  # unnormalised, as KD-DLGAN
    assert table.cosine and table.scale == pytest.approx(float(clip_model.logit_scale.exp()))
    x = images(2)
    image = clip_model.encode_image(F.interpolate(x, size=(224, 224), mode="nearest"))
    zero_shot = table.scale * F.normalize(image, dim=1) @ F.normalize(expected, dim=1).t()
    torch.testing.assert_close(table.logits(teacher(x)), zero_shot, rtol=1e-4, atol=1e-3)
    # the text tower is not kept: the teacher holds the image tower's weights only
    assert sum(p.numel() for p in teacher.parameters()) == sum(p.numel() for p in clip_model.visual.parameters())
    assert no_network == []


def test_clip_teacher_without_class_names_offers_none(clip_teacher):
    with pytest.raises(TeacherError, match="without class names"):
        clip_teacher.class_embeddings()


def test_classifier_teacher_class_embeddings_give_its_logits(classifier_ckpt, classifier):
    teacher = build_teacher(f"ckpt:{classifier_ckpt}")
    x = images(4)
    with torch.no_grad():
        expected = classifier(x)
    torch.testing.assert_close(teacher.class_embeddings().logits(teacher(x)), expected, rtol=1e-4, atol=1e-5)
