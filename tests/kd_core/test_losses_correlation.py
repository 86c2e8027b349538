import pytest
import torch

from kd_core.losses import RSDLoss


def whitened(batch=256, dim=8, seed=0):
    """Features with Z^T Z / B = I exactly (after batch standardisation)."""
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(dim=0)
    eigenvalues, eigenvectors = torch.linalg.eigh(x.T @ x / batch)
    return x @ eigenvectors @ torch.diag(eigenvalues.rsqrt()) @ eigenvectors.T


def identity_rsd(kappa=0.01, eps=1e-5):
    return RSDLoss(8, 8, kappa=kappa, eps=eps, decoupler="identity").double()


def test_zero_for_identical_whitened_features():
    z = whitened()
    assert identity_rsd()(z, z) < 1e-8


def test_identical_correlated_features_give_kappa_times_off_diagonal():
    x = whitened() @ torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = identity_rsd(kappa=0.01)
    c = loss.correlation(x, x)
    assert torch.allclose(c.diagonal(), torch.ones(8, dtype=c.dtype), atol=1e-6)
    off = c.pow(2).sum() - c.diagonal().pow(2).sum()
    assert off > 0
    assert torch.allclose(loss(x, x), 0.01 * off, atol=1e-8)


def test_invariant_to_positive_per_dimension_affine_maps():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(64, 8, generator=g, dtype=torch.float64)
    teacher = student + 0.5 * torch.randn(64, 8, generator=g, dtype=torch.float64)
    scale = torch.rand(8, generator=g, dtype=torch.float64) * 4 + 0.2
    shift = torch.randn(8, generator=g, dtype=torch.float64) * 3
    loss = identity_rsd()
    reference = loss(student, teacher)
    assert torch.allclose(loss(student * scale + shift, teacher), reference, atol=1e-4)
    assert torch.allclose(loss(student, teacher * scale + shift), reference, atol=1e-4)


def test_flipping_one_dimension_adds_four():
    z = whitened()
    flipped = z.clone()
    flipped[:, 3] = -flipped[:, 3]
    loss = identity_rsd(eps=0.0)  # the std's eps would make the flipped diagonal -1/(1+eps)^2
    assert torch.allclose(loss(z, flipped) - loss(z, z), torch.tensor(4.0, dtype=torch.float64), atol=1e-6)


def test_sum_reduction_is_dim_squared_times_mean():
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)
    loss = RSDLoss(8, 8, kappa=1.0, decoupler="identity")
    c = loss.correlation(student, teacher)
    mean_form = (c - torch.eye(8)).pow(2).mean()
    assert torch.allclose(loss(student, teacher), 64 * mean_form, rtol=1e-5)


def test_aad_decoupler_is_default_and_trained():
    loss = RSDLoss(16, 24)
    student = torch.randn(32, 16, requires_grad=True)
    loss(student, torch.randn(32, 24)).backward()
    assert student.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss.decoupler.parameters())


def test_batch_of_one_refused():
    with pytest.raises(ValueError, match="batch of at least 2"):
        identity_rsd()(torch.randn(1, 8, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64))
