"""Teacher-feature normalisers (VkD §3.4: standardisation for discriminative tasks, whitening for generative ones).

Each maps a ``(B, D)`` batch to a ``(B, D)`` batch. Batch statistics (means, covariances) are computed
from a detached copy, so no gradient flows through them; the teacher features themselves come from a
frozen network under ``no_grad`` anyway. All outputs are on the same scale, unit variance per feature,
so a distance between them and projected student features means the same thing whichever is chosen.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.registry import register


def _check_batch(features: torch.Tensor, minimum: int, who: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"{who} expects (batch, dim) features, got shape {tuple(features.shape)}")
    if features.shape[0] < minimum:
        raise ValueError(f"{who} needs a batch of at least {minimum}, got {features.shape[0]}")


@register("normalizer", "none")
class NoNormalizer(nn.Identity):
    """Leave teacher features as they are (the "DA + KD (CLIP)" row of VkD Table 4)."""


@register("normalizer", "layernorm")
class LayerNormNormalizer(nn.Module):
    """Per-sample standardisation across features: ``layer_norm`` without affine, eps 1e-5.

    This is what the VkD authors' code calls standardisation (``F.layer_norm`` of the pooled teacher
    vector, roymiles/vkd ``engine.py``); every row gets mean 0 and population std 1.
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(features, features.shape[-1:], eps=self.eps)


@register("normalizer", "standardize")
class BatchStandardizer(nn.Module):
    """Per-feature standardisation over the batch: each column gets mean 0 and population variance 1."""

    min_batch_size = 2  # batch statistics; trainers refuse smaller batches before they start

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_batch(features, 2, "standardize")
        stats = features.detach()
        mean = stats.mean(dim=0, keepdim=True)
        var = stats.var(dim=0, unbiased=False, keepdim=True)
        return (features - mean) * torch.rsqrt(var + self.eps)


def zca_whitening_matrix(centred: torch.Tensor, eps: float) -> torch.Tensor:
    """``(Sigma + eps * tr(Sigma)/D * I)^(-1/2)`` for centred ``(B, D)`` data, in float64.

    The shrinkage is relative to the mean eigenvalue, so rescaling the features rescales nothing else:
    the whitened output is exactly invariant to a positive scalar scale and a shift.
    """
    x = centred.to(torch.float64)
    dim = x.shape[1]
    cov = x.T @ x / x.shape[0]
    shrink = eps * cov.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
    cov = cov + shrink * torch.eye(dim, dtype=x.dtype, device=x.device)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    inv_sqrt = eigenvalues.clamp_min(shrink).rsqrt()
    return (eigenvectors * inv_sqrt) @ eigenvectors.T


@register("normalizer", "whiten")
class Whitener(nn.Module):
    """Batch ZCA whitening: the output has identity covariance, ``Z^T Z / B = I`` (VkD §3.4, eq. 6–7).

    ZCA (``Sigma^(-1/2)``, the symmetric square root) is the whitening that moves the features least,
    so whitened features stay aligned with the original ones. Computed in float64, cast back.

    Batch smaller than the dimension: a ``D x D`` covariance estimated from ``B < D`` samples is
    singular, and shrinkage alone then leaves most directions un-whitened and blows up the rest. So the
    features are split into consecutive groups of at most ``group_size`` dimensions and each group is
    whitened on its own (group whitening): each group's covariance is the identity, correlations between
    groups are left alone. ``group_size=None`` (default) picks ``min(D, B // 2)``, i.e. full ZCA when
    the batch has at least two samples per dimension, otherwise groups with two samples per dimension,
    a compromise between decorrelating many features and a stable covariance estimate. With CLIP's
    512-d features and a GAN batch of 50 that means groups of 25 dimensions.

    ``eps`` is the shrinkage relative to the mean eigenvalue of each group's covariance.
    """

    min_batch_size = 2  # a covariance needs two samples

    def __init__(self, eps: float = 1e-5, group_size: int | None = None):
        super().__init__()
        if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1):
            raise ValueError(f"group_size must be a positive integer or None (auto), got {group_size!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.eps = eps
        self.group_size = group_size

    def groups(self, batch: int, dim: int) -> list[slice]:
        """The feature slices whitened together for a batch of this shape."""
        size = self.group_size if self.group_size is not None else max(1, min(dim, batch // 2))
        size = min(size, dim)
        return [slice(start, min(start + size, dim)) for start in range(0, dim, size)]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_batch(features, 2, "whiten")
        wide = features.to(torch.float64)
        centred = wide - wide.detach().mean(dim=0, keepdim=True)
        parts = []
        for group in self.groups(*features.shape):
            matrix = zca_whitening_matrix(centred.detach()[:, group], self.eps)
            parts.append(centred[:, group] @ matrix)
        return torch.cat(parts, dim=1).to(features.dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, group_size={self.group_size or 'auto'}"
