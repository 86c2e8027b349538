"""KD-DLGAN and label distillation (kd_core.losses.heads) and the class embeddings they use."""
import math

import pytest
import torch
import torch.nn.functional as F

import kd_core
from kd_core.losses.classes import ClassEmbeddings
from kd_core.losses.heads import KDDLGANLoss, LabelDistillationLoss


def embeddings(classes: int = 10, dim: int = 16, seed: int = 0, **options) -> ClassEmbeddings:
    generator = torch.Generator().manual_seed(seed)
    return ClassEmbeddings(torch.randn(classes, dim, generator=generator),
                           torch.randn(classes, generator=generator) if not options.get("cosine") else None, **options)


def features(batch: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------- class embeddings
def test_linear_class_embeddings_are_the_classifier_logits():
    layer = torch.nn.Linear(16, 10)
    x = features(5, 16, 1)
    table = ClassEmbeddings(layer.weight, layer.bias)
    assert torch.allclose(table.logits(x), layer(x), atol=1e-6)
    assert torch.allclose(table.correlation(x), x @ layer.weight.detach().t(), atol=1e-6)
    assert not list(table.parameters()) and {"weight", "bias"} == set(table.state_dict())  # fixed, saved


def test_cosine_class_embeddings_are_zero_shot_clip_logits():
    table = embeddings(cosine=True, scale=100.0)
    x = features(5, 16, 1)
    expected = torch.stack([torch.stack([100 * F.cosine_similarity(row, text, dim=0) for text in table.weight])
                            for row in x])
    assert torch.allclose(table.logits(x), expected, atol=1e-4)
    assert torch.allclose(table.logits(3 * x), table.logits(x), atol=1e-4)  # scale-free in the image feature


def test_class_embeddings_refuse_bad_shapes():
    with pytest.raises(ValueError, match="matrix"):
        ClassEmbeddings(torch.randn(10))
    with pytest.raises(ValueError, match="one entry per class"):
        ClassEmbeddings(torch.randn(10, 4), torch.randn(9))
    with pytest.raises(ValueError, match="scale"):
        ClassEmbeddings(torch.randn(10, 4), cosine=True, scale=0.0)


# ---------------------------------------------------------------------------------------------------- KD-DLGAN
def test_kd_dlgan_head_adds_the_official_parameter_count():
    """shared/reference/gan.md §6: two SN-Linear layers 256 -> 1024 -> 512 add 787,968 parameters to D."""
    loss = kd_core.build_loss("kd-dlgan", student_dim=256, teacher_dim=512, class_embeddings=embeddings(dim=512))
    assert sum(p.numel() for p in loss.parameters() if p.requires_grad) == 787_968
    assert [type(m).__name__ for m in loss.head] == ["ParametrizedLinear", "ParametrizedLinear"]  # no nonlinearity


def official_kd_dlgan(head: torch.nn.Module, table: ClassEmbeddings, fake_h, real_h, fake_t, real_t):
    """KD-DLGAN's D-step terms written from its code (gan.md §6), with the real and fake halves apart."""
    hr, hf = head(real_h), head(fake_h)
    a, b = real_t, fake_t

    def mean_l2(x, y):
        return torch.stack([torch.sqrt(((xi - yi) ** 2).sum()) for xi, yi in zip(x, y)]).mean()

    triplet = mean_l2(a, hr) + mean_l2(a, hf) + mean_l2(b, hf) + mean_l2(b, hr)  # TripletLoss_reverse, both anchors

    def correlation(student, teacher):  # img_lan_similarity_loss: sum of squares of row-normalised products
        s = student @ table.weight.t()
        t = teacher @ table.weight.t()
        s = s / s.norm(dim=1, keepdim=True)
        t = t / t.norm(dim=1, keepdim=True)
        return ((s - t) ** 2).sum()

    return 10 * triplet + 10 * (correlation(hr, a) + correlation(hf, b))


def test_kd_dlgan_matches_the_official_terms_rederived():
    table = embeddings(dim=12)
    loss = KDDLGANLoss(8, 12, class_embeddings=table).eval()  # eval: the spectral norm does not step between calls
    fake_h, real_h = features(6, 8, 1), features(6, 8, 2)
    fake_t, real_t = features(6, 12, 3), features(6, 12, 4)
    value = loss(torch.cat([fake_h, real_h]), torch.cat([fake_t, real_t]))
    expected = official_kd_dlgan(loss.head, table, fake_h, real_h, fake_t, real_t)
    assert torch.allclose(value, expected, rtol=1e-5)
    # the same pairing whichever half comes first
    swapped = loss(torch.cat([real_h, fake_h]), torch.cat([real_t, fake_t]))
    assert torch.allclose(value, swapped, rtol=1e-5)


def test_kd_dlgan_is_zero_when_the_head_reproduces_the_teacher():
    loss = KDDLGANLoss(8, 12, class_embeddings=embeddings(dim=12)).eval()
    half = features(4, 8, 1)
    student = torch.cat([half, half])  # both halves alike, so each sample's partner has the same teacher feature
    teacher = loss.head(student).detach()
    assert loss(student, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(student, teacher + 0.1).item() > 1.0


def test_kd_dlgan_correlation_ignores_the_scale_of_the_class_embeddings():
    table = embeddings(dim=12)
    loss = KDDLGANLoss(8, 12, class_embeddings=table).eval()
    student, teacher = features(6, 8, 1), features(6, 12, 2)
    before = loss.terms(student, teacher)
    loss.class_embeddings.weight.mul_(7.0)
    after = loss.terms(student, teacher)
    assert torch.allclose(before["correlation"], after["correlation"], rtol=1e-5)
    assert torch.equal(before["triplet"], after["triplet"])


def test_kd_dlgan_gradient_reaches_student_and_head_never_the_teacher():
    loss = KDDLGANLoss(8, 12, class_embeddings=embeddings(dim=12))
    student = features(6, 8, 1).requires_grad_(True)
    teacher = features(6, 12, 2).requires_grad_(True)
    loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.head.parameters())
    assert teacher.grad is None
    assert loss.class_embeddings.weight.grad is None


def test_kd_dlgan_pairs_an_odd_batch_and_refuses_one_sample():
    loss = KDDLGANLoss(8, 12, class_embeddings=embeddings(dim=12))
    assert math.isfinite(loss(features(5, 8, 1), features(5, 12, 2)).item())
    with pytest.raises(ValueError, match="at least 2"):
        loss(features(1, 8, 1), features(1, 12, 2))


def test_head_losses_need_matching_class_embeddings():
    for name in ("kd-dlgan", "label-distillation"):
        assert kd_core.registry.needs_class_embeddings(name)
        with pytest.raises(ValueError, match="needs class_embeddings"):
            kd_core.build_loss(name, student_dim=8, teacher_dim=12)
        with pytest.raises(ValueError, match="16-d but the teacher features are 12-d"):
            kd_core.build_loss(name, student_dim=8, teacher_dim=12, class_embeddings=embeddings(dim=16))
    assert not kd_core.registry.needs_class_embeddings("vkd")


# ------------------------------------------------------------------------------------------ label distillation
def test_label_distillation_matches_hintons_kd_rederived():
    table = embeddings(classes=10, dim=12)
    loss = LabelDistillationLoss(8, 12, class_embeddings=table, temperature=4.0).eval()
    student, teacher = features(7, 8, 1), features(7, 12, 2)
    t = 4.0
    p_teacher = torch.softmax((teacher @ table.weight.t() + table.bias) / t, dim=1)
    log_p_student = torch.log_softmax(loss.head(student) / t, dim=1)
    expected = (p_teacher * (p_teacher.log() - log_p_student)).sum() / student.shape[0] * t * t
    assert torch.allclose(loss(student, teacher), expected, rtol=1e-5)


def test_label_distillation_is_zero_when_the_head_predicts_the_teachers_classes():
    loss = LabelDistillationLoss(12, 12, class_embeddings=embeddings(dim=12)).eval()
    head = loss.head
    loss.class_embeddings = ClassEmbeddings(head.weight.detach(), head.bias.detach())  # the head's own map
    x = features(6, 12, 1)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-5)  # float32 KL of equal distributions, times T²
    assert loss(x, features(6, 12, 2)).item() > 0


def test_label_distillation_gradient_reaches_student_and_head_never_the_teacher():
    loss = LabelDistillationLoss(8, 12, class_embeddings=embeddings(dim=12, cosine=True, scale=100.0))
    student = features(6, 8, 1).requires_grad_(True)
    teacher = features(6, 12, 2).requires_grad_(True)
    loss(student, teacher).backward()
    assert student.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.head.parameters())
    assert teacher.grad is None
