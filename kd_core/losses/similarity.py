"""Relational feature losses that compare within-batch similarity structure: SPKD and PKD.

Both compare how the samples of a batch relate to each other in the student's and in the teacher's feature
space, so the two spaces may have different widths and no projector is needed. Features are pooled if they
arrive as maps; the teacher side is detached.

Wiring into a GAN's discriminator (VkD Table 4/5 compares against both, but neither VkD nor the baselines'
papers publish how they were attached to D): this project applies them exactly like VkD's term -- to D's
pooled penultimate feature and the teacher's feature of the same augmented real and fake images, added to the
D loss with the preset's weight (1 by default) -- so that the rows differ only in the loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_core.losses.base import DistillationLoss
from kd_core.losses.feature import paired_features
from kd_core.registry import register


def batch_similarity(features: torch.Tensor) -> torch.Tensor:
    """SPKD's ``G = normalize_rows(Q Qᵀ)`` of ``(B, D)`` features (Tung & Mori 2019, eq. 2-3)."""
    return F.normalize(features @ features.t(), p=2, dim=1)


@register("loss", "spkd")
class SPKDLoss(DistillationLoss):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019): ``‖G_t − G_s‖_F² / B²`` (eq. 4, one layer pair).

    ``G`` is the batch Gram matrix of the pooled features with each row L2-normalised, so the loss is
    invariant to the scale of either feature. Reduction: the paper's squared Frobenius norm over B², which is the
    mean of the squared entries. Weight: the preset's (the paper's CIFAR gamma of 3000 multiplies this per-layer
    term summed over three layer pairs of a classifier; one pooled feature of D is a different setting).
    """

    kind = "feature"
    min_batch_size = 2  # a 1x1 Gram matrix normalises to 1: nothing to compare

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.student_dim, self.teacher_dim = student_dim, teacher_dim  # no parameters: any widths compare

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        student, teacher = paired_features(student_features, teacher_features)
        difference = batch_similarity(teacher) - batch_similarity(student)
        return difference.pow(2).sum() / student.shape[0] ** 2


def cosine_conditional_probabilities(features: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """PKD's ``p_{i|j}``: the cosine kernel ``(cos + 1) / 2`` of every pair, each row divided by its sum.

    As the authors' code (``passalis/probabilistic_kt``, ``nn/pkt.py``) does it: rows are divided by
    ``norm + eps``, and the row sum includes the pair of a sample with itself; the paper's eq. 9 excludes it.
    """
    unit = features / (features.norm(p=2, dim=1, keepdim=True) + eps)
    kernel = (unit @ unit.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


@register("loss", "pkd")
class PKDLoss(DistillationLoss):
    """Probabilistic KD (Passalis & Tefas, ECCV 2018): ``KL(P_t ‖ P_s)`` of the within-batch conditional
    probabilities of the cosine kernel (eq. 9-10), ``mean_{i,j} p^t log((p^t + ε) / (p^s + ε))``.

    Reduction: the mean over the B² entries, as the authors' code; a positive rescaling of the kernel changes
    neither distribution, so neither does the loss. Weight: the preset's.
    """

    kind = "feature"
    min_batch_size = 2

    def __init__(self, student_dim: int, teacher_dim: int, eps: float = 1e-7):
        super().__init__()
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        self.eps = eps

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        student, teacher = paired_features(student_features, teacher_features)
        return kl_of_conditionals(cosine_conditional_probabilities(student, self.eps),
                                  cosine_conditional_probabilities(teacher, self.eps), self.eps)


def kl_of_conditionals(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``mean(p_t · log((p_t + ε) / (p_s + ε)))`` over every entry (the authors' reduction)."""
    return (teacher * torch.log((teacher + eps) / (student + eps))).mean()
