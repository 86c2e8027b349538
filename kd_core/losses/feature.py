"""Feature distillation through a projector: VkD and our feature-level FitNets."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd_core.losses.precision import at_least_float32
from kd_core.losses.base import DistillationLoss
from kd_core.registry import build_normalizer, build_projector, register

DISTANCES = ("mse", "smooth_l1")


def pool_features(features: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` maps are global-average-pooled to ``(B, C)``; ``(B, D)`` vectors pass through."""
    if features.dim() == 4:
        return features.mean(dim=(2, 3))
    if features.dim() != 2:
        raise ValueError(f"expected (B, D) or (B, C, H, W) features, got shape {tuple(features.shape)}")
    return features


def paired_features(student_features: torch.Tensor, teacher_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides pooled to ``(B, D)`` in at least float32, the teacher detached, after checking that the two
    batches are the same samples' (the relational and head losses compare them sample by sample)."""
    student = at_least_float32(pool_features(student_features))
    teacher = at_least_float32(pool_features(teacher_features).detach())
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"student and teacher batches differ: {student.shape[0]} vs {teacher.shape[0]}")
    return student, teacher


def feature_distance(name: str, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over batch and features of the squared error (``mse``) or smooth-L1 with beta 1."""
    if name == "mse":
        return F.mse_loss(prediction, target)
    if name == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=1.0)
    raise ValueError(f"unknown distance {name!r}; allowed: {', '.join(DISTANCES)}")


@register("loss", "vkd")
class VkDLoss(DistillationLoss):
    """VkD (Miles et al., CVPR 2024): ``d(P z_s, N(z_t))`` with an orthogonal projector P and a teacher normaliser N.

    * ``projector``: default ``orthogonal`` (VkD eq. 5), any projector name of the registry.
    * ``normalizer``: default ``layernorm`` (what the authors' code uses for classification);
      ``whiten`` is the paper's choice for generation (§3.4), ``standardize``, ``none``.
    * ``distance``: default ``smooth_l1`` (beta 1, mean), which the authors' released code uses and
      which produced the published classification numbers; ``mse`` is the paper's L2 loss (and the
      only published formulation for the GAN experiments, whose code was never released).

    Features are pooled if they arrive as maps. The teacher side is detached: the teacher is never trained.
    """

    kind = "feature"

    def __init__(self, student_dim: int, teacher_dim: int, projector: str = "orthogonal", normalizer: str = "layernorm",
                 distance: str = "smooth_l1", projector_options: dict | None = None, normalizer_options: dict | None = None):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; allowed: {', '.join(DISTANCES)}")
        self.projector = build_projector(projector, student_dim, teacher_dim, **(projector_options or {}))
        self.normalizer = build_normalizer(normalizer, **(normalizer_options or {}))
        self.distance = distance

    @property
    def min_batch_size(self) -> int:
        """Samples per batch the loss needs: 2 for normalisers that use batch statistics, else 1."""
        return int(getattr(self.normalizer, "min_batch_size", 1))

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        projected = self.projector(at_least_float32(pool_features(student_features)))
        target = self.normalizer(at_least_float32(pool_features(teacher_features).detach()))
        return feature_distance(self.distance, projected, target.to(projected.dtype))

    def extra_repr(self) -> str:
        return f"distance={self.distance}"


@register("loss", "fitnet")
class FitNetLoss(DistillationLoss):
    """Feature-level FitNets: a linear regressor on the pooled student feature, MSE to the pooled teacher feature.

    The original FitNets (Romero et al., ICLR 2015) regresses an intermediate *hint layer* map with a
    convolutional regressor and trains in two stages; the CIFAR KD zoos (RepDistiller, mdistiller) use
    the stage-2 map, a conv regressor + BN + ReLU and weight 100. Here, as in VkD's comparison, FitNets
    means the same pipeline as VkD with an unconstrained linear projector and no normalisation, on the
    penultimate (pooled) features, so that only the projector differs between the two.
    """

    kind = "feature"

    def __init__(self, student_dim: int, teacher_dim: int, bias: bool = True):
        super().__init__()
        self.projector = build_projector("linear", student_dim, teacher_dim, bias=bias)

    min_batch_size = 1  # no batch statistics

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        projected = self.projector(at_least_float32(pool_features(student_features)))
        return F.mse_loss(projected, at_least_float32(pool_features(teacher_features).detach()))
