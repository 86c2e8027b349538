"""RSD: redundancy suppression distillation (Pearson cross-correlation to the identity)."""
from __future__ import annotations

import torch

from kd_core.losses.precision import at_least_float32

from kd_core.losses.feature import pool_features
from kd_core.losses.base import DistillationLoss
from kd_core.registry import build_projector, register


def batch_standardize(features: torch.Tensor, eps: float) -> torch.Tensor:
    """``(x - mean_B) / (std_B + eps)`` per dimension, population std: the RSD authors' code."""
    mean = features.mean(dim=0, keepdim=True)
    std = features.std(dim=0, unbiased=False, keepdim=True)
    return (features - mean) / (std + eps)


@register("loss", "rsd")
class RSDLoss(DistillationLoss):
    """RSD (Redundancy Suppression Distillation): ``sum_i (C_ii - 1)² + kappa · sum_{i != j} C_ij²``.

    ``C = Z_t^T Z_s / B`` is the Pearson cross-correlation between the batch-standardised teacher
    features and the decoupled student features (RSD eq. 4–7). The student goes through the AAD
    decoupler first (``Linear(d_s, 2 d_s) -> BN -> GELU -> Linear(-> d_t)``, ``decoupler="aad"``).

    Reduction: a **sum** over the D² entries, as in the authors' code, which is what their lambda = 0.1
    and kappa = 0.01 were tuned for; the paper's Algorithm 1 takes the mean (D² times smaller).
    """

    kind = "feature"
    min_batch_size = 2  # batch-standardised correlations (and the decoupler's BatchNorm)

    def __init__(self, student_dim: int, teacher_dim: int, kappa: float = 0.01, eps: float = 1e-5,
                 decoupler: str = "aad"):
        super().__init__()
        if kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {kappa!r}")
        self.decoupler = build_projector(decoupler, student_dim, teacher_dim)
        self.kappa = float(kappa)
        self.eps = eps

    def correlation(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        student = self.decoupler(at_least_float32(pool_features(student_features)))
        teacher = at_least_float32(pool_features(teacher_features).detach())
        if student.shape[0] < 2:
            raise ValueError(f"rsd needs a batch of at least 2, got {student.shape[0]}")
        student = batch_standardize(student, self.eps)
        teacher = batch_standardize(teacher, self.eps)
        return teacher.T @ student / student.shape[0]

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        c = self.correlation(student_features, teacher_features)
        on_diagonal = (c.diagonal() - 1).pow(2).sum()
        off_diagonal = c.pow(2).sum() - c.diagonal().pow(2).sum()
        return on_diagonal + self.kappa * off_diagonal

    def extra_repr(self) -> str:
        return f"kappa={self.kappa}"
