import pytest
import torch

from kd_core.normalizers import BatchStandardizer, LayerNormNormalizer, Whitener


def correlated(batch: int, dim: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Features with strong correlations, different scales and a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    # a random rotation with scales 0.5..3: strongly correlated, condition number 6 (fine for float32)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64)).Q
    mixing = (rotation * torch.linspace(0.5, 3.0, dim, dtype=torch.float64)) @ rotation.T
    mixing = mixing.to(dtype)
    return torch.randn(batch, dim, generator=g, dtype=dtype) @ mixing * 3.0 + 5.0


def covariance(z: torch.Tensor) -> torch.Tensor:
    centred = z - z.mean(dim=0, keepdim=True)
    return centred.T @ centred / z.shape[0]


def test_layernorm_rows_have_mean_zero_and_unit_population_std():
    z = LayerNormNormalizer()(correlated(8, 32))
    assert torch.allclose(z.mean(dim=1), torch.zeros(8, dtype=z.dtype), atol=1e-6)
    assert torch.allclose(z.std(dim=1, unbiased=False), torch.ones(8, dtype=z.dtype), atol=1e-4)


def test_standardize_columns_have_mean_zero_and_unit_variance():
    z = BatchStandardizer()(correlated(64, 16))
    assert torch.allclose(z.mean(dim=0), torch.zeros(16, dtype=z.dtype), atol=1e-6)
    assert torch.allclose(z.var(dim=0, unbiased=False), torch.ones(16, dtype=z.dtype), atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_whitened_covariance_is_identity_when_batch_exceeds_dim(dtype):
    features = correlated(512, 16, dtype=dtype)
    whitener = Whitener(eps=1e-7)
    assert len(whitener.groups(512, 16)) == 1
    z = whitener(features)
    assert z.dtype == dtype
    assert torch.allclose(covariance(z.double()), torch.eye(16, dtype=torch.float64), atol=1e-4)


def test_zca_is_symmetric_whitening():
    # ZCA's matrix is symmetric positive definite: Sigma^(-1/2), not an arbitrary rotation of it.
    features = correlated(256, 8)
    z = Whitener(eps=0.0)(features)
    centred = features - features.mean(dim=0)
    matrix = torch.linalg.lstsq(centred, z).solution
    assert torch.allclose(matrix, matrix.T, atol=1e-8)
    assert torch.linalg.eigvalsh(matrix).min() > 0


def test_group_whitening_when_batch_smaller_than_dim():
    batch, dim = 32, 512  # a GAN batch of CLIP features
    features = correlated(batch, dim, dtype=torch.float32)
    whitener = Whitener()
    groups = whitener.groups(batch, dim)
    assert all(g.stop - g.start <= batch // 2 for g in groups)
    assert groups[0].start == 0 and groups[-1].stop == dim
    z = whitener(features)
    assert z.shape == features.shape and torch.isfinite(z).all()
    for group in groups:
        size = group.stop - group.start
        assert torch.allclose(covariance(z[:, group].double()), torch.eye(size, dtype=torch.float64), atol=1e-3)


def test_explicit_group_size():
    z = Whitener(group_size=4)(correlated(64, 10))
    for group in (slice(0, 4), slice(4, 8), slice(8, 10)):
        size = group.stop - group.start
        assert torch.allclose(covariance(z[:, group]), torch.eye(size, dtype=z.dtype), atol=1e-4)


def test_whitening_invariant_to_shift_and_positive_scale():
    features = correlated(128, 12)
    whitener = Whitener()
    assert torch.allclose(whitener(features), whitener(4.0 * features - 7.0), atol=1e-8)


def test_whitening_batch_kernel_invariant_to_any_affine_map():
    # Z = Xc Sigma^(-1/2) gives Z Z^T = Xc Sigma^(-1) Xc^T, which no invertible affine map x -> xA + b changes.
    features = correlated(128, 12)
    a = torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    whitener = Whitener(eps=0.0)
    z, z_affine = whitener(features), whitener(features @ a + 2.0)
    assert torch.allclose(z @ z.T, z_affine @ z_affine.T, atol=1e-6)


def test_statistics_take_no_gradient_but_output_is_differentiable():
    features = correlated(64, 6).requires_grad_(True)
    z = Whitener()(features)
    z.sum().backward()
    # With the mean and the whitening matrix W treated as constants, d sum(Xc W) / dX = 1 W^T for every row.
    with torch.no_grad():
        centred = features - features.mean(dim=0)
        w = torch.linalg.lstsq(centred, z).solution
    assert torch.allclose(features.grad, w.sum(dim=1).expand_as(features.grad), atol=1e-8)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_group_size(bad):
    with pytest.raises(ValueError, match="group_size"):
        Whitener(group_size=bad)


def test_batch_of_one_is_refused():
    with pytest.raises(ValueError, match="batch of at least 2"):
        Whitener()(torch.randn(1, 8))
