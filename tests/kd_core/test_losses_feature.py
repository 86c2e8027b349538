import pytest
import torch
import torch.nn.functional as F

from kd_core.losses import FitNetLoss, VkDLoss


def test_vkd_zero_iff_projection_matches_normalised_teacher():
    torch.manual_seed(0)
    loss = VkDLoss(6, 6, projector="orthogonal", normalizer="layernorm", distance="mse")
    teacher = torch.randn(10, 6) * 4 + 2
    target = F.layer_norm(teacher, (6,), eps=1e-5)
    # projector starts as the identity, so feeding the normalised teacher back gives exactly zero
    assert loss(target, teacher).abs() < 1e-10
    assert loss(target + 0.1, teacher) > 0


def test_smooth_l1_values():
    loss = VkDLoss(1, 1, projector="identity", normalizer="none", distance="smooth_l1")
    zeros = torch.zeros(1, 1)
    assert torch.isclose(loss(torch.full((1, 1), 0.5), zeros), torch.tensor(0.125))
    assert torch.isclose(loss(torch.full((1, 1), 3.0), zeros), torch.tensor(2.5))


def test_vkd_with_whitening_uses_whitened_teacher():
    torch.manual_seed(0)
    teacher = torch.randn(64, 8) @ torch.randn(8, 8)
    loss = VkDLoss(8, 8, normalizer="whiten", distance="mse")
    whitened = loss.normalizer(teacher)
    assert loss(whitened, teacher).abs() < 1e-10


def test_gradient_reaches_student_and_projector_never_teacher():
    loss = VkDLoss(5, 7, normalizer="whiten", distance="mse")
    student = torch.randn(16, 5, requires_grad=True)
    teacher = torch.randn(16, 7, requires_grad=True)
    loss(student, teacher).backward()
    assert student.grad.abs().sum() > 0
    assert loss.projector.basis.grad.abs().sum() > 0
    assert teacher.grad is None


def test_projector_alone_reduces_vkd_on_fixed_features():
    torch.manual_seed(0)
    rotation = torch.linalg.qr(torch.randn(8, 8)).Q
    if torch.linalg.det(rotation) < 0:  # exp(skew) spans SO(d): rotations, not reflections
        rotation[:, 0] = -rotation[:, 0]
    student = torch.randn(64, 8)
    teacher = student @ rotation.T  # the teacher is an exact rotation of the student
    loss = VkDLoss(8, 8, normalizer="none", distance="mse")
    optimiser = torch.optim.Adam(loss.parameters(), lr=0.05)
    first = loss(student, teacher).item()
    for _ in range(200):
        optimiser.zero_grad()
        value = loss(student, teacher)
        value.backward()
        optimiser.step()
    assert value.item() < 0.05 * first


def test_feature_maps_are_pooled():
    loss = VkDLoss(4, 4, projector="identity", normalizer="none", distance="mse")
    maps = torch.randn(3, 4, 5, 5)
    assert torch.allclose(loss(maps, maps.mean(dim=(2, 3))), torch.tensor(0.0))


def test_fitnet_is_linear_regression_mse():
    loss = FitNetLoss(3, 2)
    student, teacher = torch.randn(8, 3), torch.randn(8, 2)
    expected = F.mse_loss(loss.projector(student), teacher)
    assert torch.allclose(loss(student, teacher), expected)


def test_unknown_distance():
    with pytest.raises(ValueError, match="mse, smooth_l1"):
        VkDLoss(4, 4, distance="l3")
