import math

import pytest
import torch
import torch.nn.functional as F

from kd_core.losses import DCDLoss


def features(batch=16, dim=32, seed=0):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_contrast_is_cross_entropy_over_cosine_matrix():
    loss = DCDLoss(32, 48, embed_dim=16).double()
    student, teacher = features(), features(dim=48, seed=1)
    contrast, _ = loss.parts(student, teacher)
    s = F.normalize(loss.student_head(student), dim=1)
    t = F.normalize(loss.teacher_head(teacher), dim=1)
    expected = F.cross_entropy(s @ t.T * math.e, torch.arange(16))  # scale exp(tau=1) = e, b = 0
    assert torch.allclose(contrast, expected, atol=1e-12)


def test_scale_is_clamped_at_tau_max():
    loss = DCDLoss(8, 8, tau_init=5.0, tau_max=10.0)
    assert loss.scale().item() == pytest.approx(10.0)
    loss(torch.randn(4, 8), torch.randn(4, 8)).backward()
    assert loss.tau.grad.abs().item() == 0.0


def test_consistency_zero_for_identical_features():
    loss = DCDLoss(32, 32).double()
    with torch.no_grad():
        loss.teacher_head.load_state_dict(loss.student_head.state_dict())
    x = features()
    for direction in ("code", "paper"):
        loss.consistency_direction = direction
        _, consistency = loss.parts(x, x)
        assert consistency.abs() < 1e-12


def test_consistency_directions():
    loss = DCDLoss(32, 32).double()
    student, teacher = features(seed=2), features(seed=3)
    logits = loss.logits(student, teacher)
    p_student = F.softmax(logits, dim=1)
    p_teacher = F.softmax(logits, dim=0).T
    kl_t_s = (p_teacher * (p_teacher.log() - p_student.log())).sum(1).mean()
    kl_s_t = (p_student * (p_student.log() - p_teacher.log())).sum(1).mean()
    loss.consistency_direction = "code"
    assert torch.allclose(loss.parts(student, teacher)[1], kl_t_s)
    loss.consistency_direction = "paper"
    assert torch.allclose(loss.parts(student, teacher)[1], kl_s_t)


def test_total_weights_consistency():
    loss = DCDLoss(32, 32, consistency_weight=0.5).double()
    student, teacher = features(seed=4), features(seed=5)
    contrast, consistency = loss.parts(student, teacher)
    assert torch.allclose(loss(student, teacher), contrast + 0.5 * consistency)


def test_temperature_and_bias_are_trainable_parameters():
    loss = DCDLoss(8, 8)
    names = {name for name, p in loss.named_parameters() if p.requires_grad}
    assert {"tau", "bias"} <= names
    loss(torch.randn(6, 8), torch.randn(6, 8)).backward()
    assert loss.tau.grad.abs().item() > 0
    assert loss.bias.grad.abs().item() < 1e-6  # a shared shift of all logits: softmax ignores it
    assert sum(p.numel() for p in loss.parameters()) == 2 * (8 * 128 + 128) + 2


def test_bad_direction():
    with pytest.raises(ValueError, match="code, paper"):
        DCDLoss(4, 4, consistency_direction="both")
