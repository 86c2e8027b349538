"""DCD: discriminative and consistent distillation (Giakoumoglou & Stathaki, 2024)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.losses.precision import at_least_float32

from kd_core.losses.feature import pool_features
from kd_core.losses.base import DistillationLoss
from kd_core.registry import check_dim, register

CONSISTENCY_DIRECTIONS = ("code", "paper")


@register("loss", "dcd")
class DCDLoss(DistillationLoss):
    """In-batch contrast between student and teacher embeddings plus a KL consistency term.

    Both pooled features go through a linear head to ``embed_dim`` (128) and are L2-normalised; the logits
    are ``l_ij = cos(s_i, t_j) · clamp(exp(tau), max=tau_max) + b`` (DCD eq. 8, clamp on the multiplier as
    in the authors' code). The loss is ``CE(l, diag) + consistency_weight · L_consist`` (DCD eq. 2–3),
    with consistency weight alpha = 0.5 in the paper.

    Consistency (DCD eq. 4–6): the student distribution p^S_i is row i of softmax over the rows of l;
    the teacher-anchored p^T_i is column i of l, softmaxed over the column (eq. 5).

    * ``consistency_direction="code"`` (default): ``KL(p^T || p^S)``, the authors' ``kl_div(log_softmax(l, 1),
      softmax(l, 0).T)``; the released code is the only implementation there is.
    * ``"paper"``: ``KL(p^S || p^T)`` as eq. 6 is written.

    tau (init 1, so the scale starts at e) and b (init 0) are parameters of this module and are trained
    with the student. The authors' released script never adds them to the optimiser, so there the scale
    stays at e. Note that b shifts every logit equally and the softmaxes ignore it: its gradient is
    exactly zero, and tau's gradient is zero once exp(tau) exceeds tau_max.
    """

    kind = "feature"

    def __init__(self, student_dim: int, teacher_dim: int, embed_dim: int = 128, tau_init: float = 1.0,
                 tau_max: float = 10.0, consistency_weight: float = 0.5, consistency_direction: str = "code",
                 learn_temperature: bool = True):
        super().__init__()
        check_dim("student_dim", student_dim)
        check_dim("teacher_dim", teacher_dim)
        check_dim("embed_dim", embed_dim)
        if consistency_direction not in CONSISTENCY_DIRECTIONS:
            raise ValueError(f"unknown consistency_direction {consistency_direction!r}; "
                             f"allowed: {', '.join(CONSISTENCY_DIRECTIONS)}")
        if not tau_max > 0:
            raise ValueError(f"tau_max must be > 0, got {tau_max!r}")
        self.student_head = nn.Linear(student_dim, embed_dim)
        self.teacher_head = nn.Linear(teacher_dim, embed_dim)
        self.tau = nn.Parameter(torch.tensor(float(tau_init)), requires_grad=learn_temperature)
        self.bias = nn.Parameter(torch.zeros(()), requires_grad=learn_temperature)
        self.tau_max = float(tau_max)
        self.consistency_weight = float(consistency_weight)
        self.consistency_direction = consistency_direction

    def scale(self) -> torch.Tensor:
        return self.tau.exp().clamp(max=self.tau_max)

    def logits(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """The ``(B, B)`` matrix l_ij between student i and teacher j (DCD eq. 8)."""
        student = F.normalize(self.student_head(at_least_float32(pool_features(student_features))), dim=1)
        teacher = F.normalize(self.teacher_head(at_least_float32(pool_features(teacher_features).detach())), dim=1)
        return student @ teacher.T * self.scale() + self.bias

    def parts(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(contrast, consistency) before weighting."""
        logits = self.logits(student_features, teacher_features)
        targets = torch.arange(logits.shape[0], device=logits.device)
        contrast = F.cross_entropy(logits, targets)
        log_p_student = F.log_softmax(logits, dim=1)
        log_p_teacher = F.log_softmax(logits, dim=0).T
        if self.consistency_direction == "code":
            consistency = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        else:
            consistency = F.kl_div(log_p_teacher, log_p_student, reduction="batchmean", log_target=True)
        return contrast, consistency

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        contrast, consistency = self.parts(student_features, teacher_features)
        return contrast + self.consistency_weight * consistency

    def extra_repr(self) -> str:
        return (f"tau_max={self.tau_max}, consistency_weight={self.consistency_weight}, "
                f"consistency_direction={self.consistency_direction}, initial scale e={math.e:.3f}")
