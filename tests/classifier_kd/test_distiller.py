import pytest
import torch

from classifier_kd.distiller import Distiller, parse_loss_spec
from classifier_kd.recipes import method_losses

METHODS = method_losses()
from classifier_kd.models import create_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def build(method: str) -> Distiller:
    torch.manual_seed(0)
    student = create_model("resnet20", num_classes=10)   # 64-d features
    teacher = create_model("resnet8x4", num_classes=10)  # 256-d features
    teacher.eval()
    losses = [(name, 1.0, {}) for name in METHODS[method]]
    return Distiller(student, teacher if losses else None, losses)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_steps_and_reduces_its_loss_on_a_fixed_batch(method):
    distiller = build(method)
    teacher_before = {k: v.clone() for k, v in (distiller.teacher.state_dict().items() if distiller.teacher else [])}
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    # KD-DLGAN's terms carry its GAN weights (10 each, non-squared L2 and a summed correlation): at SGD lr 0.01 its
    # triplet term overshoots on this batch, so it takes a smaller step
    lr = 0.001 if method == "kd-dlgan" else 0.01
    optimiser = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    distiller.train()
    distiller.set_epoch(40)
    totals = []
    for _ in range(8):
        logits, terms = distiller(images, labels)
        assert logits.shape == (16, 10)
        assert set(terms) == {"loss_ce", *(f"loss_{n}" for n in METHODS[method])}
        total = sum(terms.values())
        assert torch.isfinite(total)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        totals.append(total.item())
    assert totals[-1] < totals[0], totals
    if distiller.teacher is not None:
        assert not distiller.teacher.training
        for name, value in distiller.teacher.state_dict().items():
            assert torch.equal(value, teacher_before[name]), f"teacher {name} changed"
        assert all(not p.requires_grad for p in distiller.teacher.parameters())


def test_extra_parameters_are_optimised_and_counted():
    distiller = build("vkd")
    assert distiller.extra_parameters() == 256 * 64  # the default qr map's 256 x 64 basis (out x in)
    trainable = {id(p) for p in distiller.parameters() if p.requires_grad}
    assert all(id(p) in trainable for p in distiller.losses.parameters())
    assert distiller.model is distiller.student


def test_weights_scale_the_named_terms():
    torch.manual_seed(0)
    student, teacher = create_model("resnet20", 10), create_model("resnet20", 10).eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    one = Distiller(student, teacher, [("kd", 1.0, {"temperature": 4.0})], ce_weight=1.0).eval()
    nine = Distiller(student, teacher, [("kd", 9.0, {"temperature": 4.0})], ce_weight=0.1).eval()
    with torch.no_grad():
        _, a = one(images, labels)
        _, b = nine(images, labels)
    assert torch.allclose(b["loss_kd"], 9 * a["loss_kd"]) and torch.allclose(b["loss_ce"], 0.1 * a["loss_ce"])


def test_dkd_gets_the_epoch_for_its_warm_up():
    torch.manual_seed(0)
    student, teacher = create_model("resnet20", 10), create_model("resnet20", 10).eval()
    distiller = Distiller(student, teacher, [("dkd", 1.0, {"warmup_epochs": 20})]).eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    with torch.no_grad():
        distiller.set_epoch(1)
        early = distiller(images, labels)[1]["loss_dkd"]
        distiller.set_epoch(20)
        full = distiller(images, labels)[1]["loss_dkd"]
    assert torch.allclose(early * 20, full)


def test_feature_dimension_mismatch_without_projector_is_refused():
    student, teacher = create_model("resnet20", 10), create_model("resnet8x4", 10)
    with pytest.raises(ValueError, match="in_dim == out_dim"):
        Distiller(student, teacher, [("vkd", 1.0, {"projector": "identity"})])


@pytest.mark.parametrize("spec,expected", [("kd:0.9", ("kd", 0.9)), ("dcd", ("dcd", 1.0))])
def test_parse_loss_spec(spec, expected):
    assert parse_loss_spec(spec) == expected


@pytest.mark.parametrize("spec,message", [("crd:1", "allowed: kd, dkd"), ("kd:x", "NAME:WEIGHT"), ("kd:-1", ">= 0")])
def test_parse_loss_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_loss_spec(spec)


def test_losses_without_teacher_are_refused():
    with pytest.raises(ValueError, match="need a teacher"):
        Distiller(create_model("resnet20", 10), None, [("kd", 1.0, {})])


def test_teacher_input_converts_normalisation_and_size_exactly():
    from classifier_kd.distiller import TeacherInput

    student_spec = {"size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    teacher_spec = {"size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    raw = torch.rand(2, 3, 32, 32)  # images in [0, 1]
    as_student = (raw - torch.tensor(student_spec["mean"]).view(3, 1, 1)) / torch.tensor(student_spec["std"]).view(3, 1, 1)
    converted = TeacherInput(student_spec, teacher_spec)(as_student)
    resized = torch.nn.functional.interpolate(raw, size=(64, 64), mode="bilinear", antialias=True)
    expected = (resized - torch.tensor(teacher_spec["mean"]).view(3, 1, 1)) / torch.tensor(teacher_spec["std"]).view(3, 1, 1)
    assert converted.shape == (2, 3, 64, 64)
    torch.testing.assert_close(converted, expected, atol=1e-5, rtol=1e-5)  # resizing commutes with the affine map
    assert TeacherInput(student_spec, dict(student_spec)).identity


def test_the_teacher_sees_its_own_input():
    torch.manual_seed(0)
    student, teacher = create_model("resnet20", 10), create_model("resnet8x4", 10).eval()
    spec_s = {"size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    spec_t = {"size": 32, "mean": [0.4] * 3, "std": [0.5] * 3}
    from classifier_kd.distiller import TeacherInput

    distiller = Distiller(student, teacher, [("kd", 1.0, {})], teacher_input=TeacherInput(spec_s, spec_t))
    images = torch.randn(4, 3, 32, 32)
    calls = []
    original = teacher.forward_features
    teacher.forward_features = lambda x: calls.append(x) or original(x)
    distiller(images, torch.arange(4))
    torch.testing.assert_close(calls[0], images * 0.5 + 0.2)  # (x*0.25 + 0.5 - 0.4) / 0.5


def test_label_smoothing_and_mixed_labels():
    torch.manual_seed(0)
    student, teacher = create_model("resnet20", 10), create_model("resnet8x4", 10).eval()
    distiller = Distiller(student, teacher, [("dkd", 1.0, {})], label_smoothing=0.1).eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    soft = torch.nn.functional.one_hot(labels, 10).float() * 0.7 + 0.03  # argmax is the label
    _, hard_terms = distiller(images, labels)
    _, soft_terms = distiller(images, soft)
    torch.testing.assert_close(hard_terms["loss_dkd"], soft_terms["loss_dkd"])  # DKD takes the argmax class
    logits = student(images)
    torch.testing.assert_close(hard_terms["loss_ce"],
                               torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))
    assert "label smoothing 0.1" in distiller.describe() and "1 x dkd" in distiller.describe()
