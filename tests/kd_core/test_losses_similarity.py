"""kd_core.losses.similarity: SPKD (Tung & Mori 2019) and PKD (Passalis & Tefas 2018)."""
from __future__ import annotations

import math

import pytest
import torch

import kd_core
from kd_core.losses.similarity import cosine_conditional_probabilities, kl_of_conditionals


def spkd_by_the_formula(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Tung & Mori eq. 2-4 written out with loops: G = Q Qᵀ, each row / its L2 norm, ‖G_t − G_s‖_F² / B²."""
    b = student.shape[0]

    def gram(q):
        g = [[float(sum(q[i, k] * q[j, k] for k in range(q.shape[1]))) for j in range(b)] for i in range(b)]
        return [[value / math.sqrt(sum(v * v for v in row)) for value in row] for row in g]

    gs, gt = gram(student.double()), gram(teacher.double())
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def pkd_by_the_formula(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> float:
    """Passalis & Tefas eq. 9-10 with the authors' code's choices: K = (cos + 1) / 2 over every pair (self
    included), p_{i|j} row-normalised, mean over entries of p_t log((p_t + ε) / (p_s + ε))."""
    b = student.shape[0]

    def conditionals(x):
        x = x.double()
        unit = [[float(v) / (math.sqrt(sum(float(w) ** 2 for w in row)) + eps) for v in row] for row in x]
        k = [[(sum(a * c for a, c in zip(unit[i], unit[j])) + 1) / 2 for j in range(b)] for i in range(b)]
        return [[value / sum(row) for value in row] for row in k]

    ps, pt = conditionals(student), conditionals(teacher)
    return sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(b) for j in range(b)) / b**2


@pytest.mark.parametrize("name, reference", [("spkd", spkd_by_the_formula), ("pkd", pkd_by_the_formula)])
def test_matches_the_formula_of_the_paper(name, reference):
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 9)
    loss = kd_core.build_loss(name, student_dim=5, teacher_dim=9)
    assert loss(student, teacher).item() == pytest.approx(reference(student, teacher), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("name", ["spkd", "pkd"])
def test_zero_when_the_student_equals_the_teacher_and_positive_otherwise(name):
    torch.manual_seed(1)
    features = torch.randn(8, 12)
    loss = kd_core.build_loss(name, student_dim=12, teacher_dim=12)
    assert loss(features, features).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(torch.randn(8, 12), features).item() > 1e-4


def test_spkd_is_invariant_to_the_scale_of_either_feature():
    torch.manual_seed(2)
    student, teacher = torch.randn(8, 6), torch.randn(8, 10)
    loss = kd_core.build_loss("spkd", student_dim=6, teacher_dim=10)
    base = loss(student, teacher)
    assert torch.allclose(loss(7.5 * student, 0.01 * teacher), base, rtol=1e-5)


def test_pkd_is_invariant_to_a_positive_scaling_of_the_kernel():
    torch.manual_seed(3)
    student, teacher = torch.randn(8, 6), torch.randn(8, 10)
    p_s, p_t = cosine_conditional_probabilities(student), cosine_conditional_probabilities(teacher)

    def from_kernel(kernel):
        return kernel / kernel.sum(dim=1, keepdim=True)

    unit_s = student / student.norm(dim=1, keepdim=True)
    kernel_s = (unit_s @ unit_s.t() + 1) / 2
    assert torch.allclose(from_kernel(3.0 * kernel_s), from_kernel(kernel_s))
    assert torch.allclose(kl_of_conditionals(from_kernel(3.0 * kernel_s), p_t), kl_of_conditionals(p_s, p_t), atol=1e-6)
    # and the loss does not change when a feature is rescaled (the cosine kernel does not see the norm)
    loss = kd_core.build_loss("pkd", student_dim=6, teacher_dim=10)
    assert torch.allclose(loss(4.0 * student, teacher), loss(student, teacher), rtol=1e-5)


@pytest.mark.parametrize("name", ["spkd", "pkd"])
def test_gradient_reaches_the_student_never_the_teacher(name):
    torch.manual_seed(4)
    student = torch.randn(8, 4, 2, 2, requires_grad=True)  # maps are pooled
    teacher = torch.randn(8, 7, requires_grad=True)
    loss = kd_core.build_loss(name, student_dim=4, teacher_dim=7)
    loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    assert loss.kind == "feature" and loss.min_batch_size == 2 and not list(loss.parameters())


@pytest.mark.parametrize("name", ["spkd", "pkd"])
def test_mismatched_batches_are_refused(name):
    loss = kd_core.build_loss(name, student_dim=3, teacher_dim=3)
    with pytest.raises(ValueError, match="batches differ"):
        loss(torch.randn(4, 3), torch.randn(5, 3))
