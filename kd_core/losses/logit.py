"""Logit distillation: Hinton's KD, decoupled KD (DKD), and Z-score logit standardisation for both.

All three follow the reductions of the authors' code (mdistiller, logit-standardization-KD):
a KL divergence summed over classes, averaged over the batch ("batchmean"), times T².
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_core.losses.precision import at_least_float32
from kd_core.losses.base import DistillationLoss
from kd_core.registry import register


def zscore_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Standardise each row of logits: mean 0, **unbiased** std 1 (logit standardisation, Sun et al. CVPR 2024).

    Follows the authors' code, ``(z - mean) / (eps + std)`` with ``torch.std`` (divides by K - 1) and
    eps added to the std. The paper's Algorithm 2 uses the population std and no eps; the code is
    what produced the published numbers, so rows have unbiased std 1 (population std sqrt((K-1)/K)).
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (eps + std)


def kl_batchmean(student_log_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) summed over classes and averaged over the batch."""
    return F.kl_div(student_log_probs, teacher_probs, reduction="batchmean")


@register("loss", "kd")
class KDLoss(DistillationLoss):
    """Hinton et al. 2015: ``T² · KL(softmax(t/T) || softmax(s/T))``, batch-mean reduced.

    ``zscore=True`` standardises both logits first (logit standardisation, Sun et al. CVPR 2024, Alg. 2),
    keeping the T² factor as the authors' code does; the paper's CIFAR setting is then T=2 with KD weight 9
    and CE weight 0.1 (a recipe choice, not this module's).
    """

    kind = "logit"

    def __init__(self, temperature: float = 4.0, zscore: bool = False, eps: float = 1e-7):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.zscore = bool(zscore)
        self.eps = eps

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        student_logits, teacher_logits = at_least_float32(student_logits), at_least_float32(teacher_logits)
        if self.zscore:
            student_logits = zscore_logits(student_logits, self.eps)
            teacher_logits = zscore_logits(teacher_logits, self.eps)
        t = self.temperature
        log_p_student = F.log_softmax(student_logits / t, dim=1)
        p_teacher = F.softmax(teacher_logits / t, dim=1)
        return kl_batchmean(log_p_student, p_teacher) * t**2

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, zscore={self.zscore}"


@register("loss", "dkd")
class DKDLoss(DistillationLoss):
    """Decoupled KD (Zhao et al., CVPR 2022): ``warmup · (alpha · TCKD + beta · NCKD)``.

    TCKD is the KL between the binary (target / non-target) distributions, NCKD the KL between the
    distributions over the non-target classes, obtained as in mdistiller by subtracting 1000 from the
    target logit after dividing by T. Both are batch-mean reduced and multiplied by T². Per sample,
    KD = TCKD + (1 - p_target^teacher) · NCKD.

    The warm-up factor is ``min(epoch / warmup_epochs, 1)`` with epochs counted from 1 (mdistiller);
    ``epoch=None`` means fully warmed up. ``zscore=True`` standardises both logits first (logit
    standardisation; the authors' recipe also multiplies alpha and beta by the KD weight 9).
    """

    kind = "logit"

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup_epochs: int = 20,
                 zscore: bool = False, eps: float = 1e-7):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs!r}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.temperature = float(temperature)
        self.warmup_epochs = warmup_epochs
        self.zscore = bool(zscore)
        self.eps = eps

    def warmup_factor(self, epoch: float | None) -> float:
        if epoch is None or self.warmup_epochs == 0:
            return 1.0
        return min(epoch / self.warmup_epochs, 1.0)

    def parts(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(TCKD, NCKD), each batch-mean reduced and times T², before alpha, beta and warm-up."""
        student_logits, teacher_logits = at_least_float32(student_logits), at_least_float32(teacher_logits)
        if self.zscore:
            student_logits = zscore_logits(student_logits, self.eps)
            teacher_logits = zscore_logits(teacher_logits, self.eps)
        t = self.temperature
        target_mask = F.one_hot(targets, student_logits.shape[1]).to(torch.bool)
        p_student = F.softmax(student_logits / t, dim=1)
        p_teacher = F.softmax(teacher_logits / t, dim=1)

        def binary(p: torch.Tensor) -> torch.Tensor:
            target = (p * target_mask).sum(dim=1, keepdim=True)
            return torch.cat([target, (p * ~target_mask).sum(dim=1, keepdim=True)], dim=1)

        tckd = F.kl_div(torch.log(binary(p_student)), binary(p_teacher), reduction="sum") / targets.shape[0]
        log_p_student_nt = F.log_softmax(student_logits / t - 1000.0 * target_mask, dim=1)
        p_teacher_nt = F.softmax(teacher_logits / t - 1000.0 * target_mask, dim=1)
        nckd = F.kl_div(log_p_student_nt, p_teacher_nt, reduction="sum") / targets.shape[0]
        return tckd * t**2, nckd * t**2

    epoch: int | None = None  # the trainer's, from set_epoch

    def set_epoch(self, epoch: int | None) -> None:
        self.epoch = epoch

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                epoch: float | None = None) -> torch.Tensor:
        """``epoch``: the warm-up's epoch; default: the one given to :meth:`set_epoch` (None: fully warmed up)."""
        if targets is None:
            raise ValueError("dkd needs the class targets")
        tckd, nckd = self.parts(student_logits, teacher_logits, targets)
        return self.warmup_factor(epoch if epoch is not None else self.epoch) * (self.alpha * tckd + self.beta * nckd)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
                f"warmup_epochs={self.warmup_epochs}, zscore={self.zscore}")
