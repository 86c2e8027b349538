import pytest
import torch
import torch.nn.functional as F

from kd_core.losses import DKDLoss, KDLoss, zscore_logits


def logits(batch=8, classes=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, classes, generator=g, dtype=torch.float64) * 3


def test_zscore_rows_mean_zero_unbiased_std_one_over_tau():
    tau = 2.0
    z = zscore_logits(logits()) / tau
    assert torch.allclose(z.mean(dim=1), torch.zeros(8, dtype=z.dtype), atol=1e-12)
    assert torch.allclose(z.std(dim=1), torch.full((8,), 1 / tau, dtype=z.dtype), atol=1e-6)
    # the authors' code divides by the unbiased std, so the population std is sqrt((K-1)/K)/tau
    assert torch.allclose(z.std(dim=1, unbiased=False), torch.full((8,), (99 / 100) ** 0.5 / tau, dtype=z.dtype), atol=1e-6)


def test_standardised_kd_invariant_to_row_scale_and_shift():
    student, teacher = logits(seed=0), logits(seed=1)
    scale = torch.rand(8, 1, dtype=torch.float64) * 5 + 0.1
    shift = torch.randn(8, 1, dtype=torch.float64) * 10
    kd = KDLoss(temperature=2.0, zscore=True)
    reference = kd(student, teacher)
    assert torch.allclose(kd(scale * student + shift, teacher), reference, atol=1e-5)
    assert torch.allclose(kd(student, scale * teacher + shift), reference, atol=1e-5)
    plain = KDLoss(temperature=2.0)
    assert not torch.allclose(plain(scale * student + shift, teacher), plain(student, teacher), atol=1e-2)


@pytest.mark.parametrize("zscore", [False, True])
def test_kd_of_identical_logits_is_zero(zscore):
    z = logits()
    assert KDLoss(zscore=zscore)(z, z).abs() < 1e-6


def test_kd_batchmean_equals_sum_over_batch():
    student, teacher = logits(seed=2), logits(seed=3)
    t = 4.0
    per_element = F.softmax(teacher / t, 1) * (F.log_softmax(teacher / t, 1) - F.log_softmax(student / t, 1))
    expected = per_element.sum() / student.shape[0] * t**2
    assert torch.allclose(KDLoss(temperature=t)(student, teacher), expected, atol=1e-10)
    # 'mean' reduction would be K times smaller: make sure that is not what we compute
    assert not torch.allclose(KDLoss(temperature=t)(student, teacher), expected / 100)


def test_kd_temperature_squared_scaling():
    student, teacher = logits(seed=4), logits(seed=5)
    t = 3.0
    assert torch.allclose(KDLoss(temperature=t)(t * student, t * teacher), t**2 * KDLoss(temperature=1.0)(student, teacher), atol=1e-10)


def test_dkd_per_sample_identity():
    # Per sample: KD = TCKD + (1 - p_gt^teacher) * NCKD (DKD paper eq. 7, at T = 1 and without the T^2 factor)
    student, teacher = logits(batch=1, seed=6), logits(batch=1, seed=7)
    target = torch.tensor([17])
    dkd = DKDLoss(temperature=1.0)
    tckd, nckd = dkd.parts(student, teacher, target)
    kd = KDLoss(temperature=1.0)(student, teacher)
    p_gt = F.softmax(teacher, dim=1)[0, 17]
    assert torch.allclose(kd, tckd + (1 - p_gt) * nckd, atol=1e-12)


def test_dkd_weights_and_warmup():
    student, teacher = logits(seed=8), logits(seed=9)
    targets = torch.arange(8) * 7
    dkd = DKDLoss(alpha=2.0, beta=3.0, temperature=4.0, warmup_epochs=20)
    tckd, nckd = dkd.parts(student, teacher, targets)
    full = 2.0 * tckd + 3.0 * nckd
    assert torch.allclose(dkd(student, teacher, targets, epoch=1), full / 20)
    assert torch.allclose(dkd(student, teacher, targets, epoch=10), full / 2)
    assert torch.allclose(dkd(student, teacher, targets, epoch=40), full)
    assert torch.allclose(dkd(student, teacher, targets), full)


@pytest.mark.parametrize("zscore", [False, True])
def test_dkd_of_identical_logits_is_zero(zscore):
    z = logits()
    assert DKDLoss(zscore=zscore)(z, z, torch.arange(8)).abs() < 1e-6


def test_dkd_zscore_invariant_to_row_scale_and_shift():
    student, teacher, targets = logits(seed=10), logits(seed=11), torch.arange(8)
    dkd = DKDLoss(temperature=2.0, zscore=True)
    assert torch.allclose(dkd(student * 3 + 1, teacher, targets), dkd(student, teacher, targets), atol=1e-5)


def test_kd_gradient_reaches_student_only():
    student = logits(seed=12).requires_grad_(True)
    teacher = logits(seed=13).requires_grad_(True)
    KDLoss()(student, teacher.detach()).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(temperature=0)
