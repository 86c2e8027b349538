import pytest
import torch

from classifier_kd.distiller import METHODS, Distiller, parse_loss_spec
from classifier_kd.models import create_model


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    optimiser = torch.optim.SGD([p for p in distiller.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
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
    assert distiller.extra_parameters() == 256 * 256  # orthogonal projector generator, d = max(64, 256)
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
