"""Losses that train a head of their own on the student's feature: KD-DLGAN and label distillation.

Both are baselines of VkD Table 4/5 (GANs distilled from CLIP at 10% of CIFAR). They need the teacher's class
embeddings (:class:`kd_core.losses.classes.ClassEmbeddings`: CLIP's text embeddings of one prompt per class,
or a classifier teacher's final layer), which the trainer passes as ``class_embeddings`` (the loss class says
so with ``needs_class_embeddings = True``). Their heads are spectral-normalised linear layers with BigGAN's
N(0, 0.02) weight init, like the discriminator they extend, and are trained with the student (in a GAN: by D's
optimiser, since the loss lives in the critic).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.losses.base import DistillationLoss
from kd_core.losses.classes import ClassEmbeddings
from kd_core.losses.feature import paired_features
from kd_core.losses.logit import KDLoss
from kd_core.registry import register

HEAD_INIT_STD = 0.02  # BigGAN's N02 init, as the discriminator these heads extend
SN_EPS = 1e-8  # BigGAN-CIFAR's SN_eps


def spectral_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """``nn.Linear`` with N(0, 0.02) weights and spectral norm (1 power iteration per training forward)."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.normal_(layer.weight, mean=0.0, std=HEAD_INIT_STD)
    return nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=1, eps=SN_EPS)


def _check_class_embeddings(class_embeddings, teacher_dim: int, loss: str) -> ClassEmbeddings:
    if not isinstance(class_embeddings, ClassEmbeddings):
        raise ValueError(f"loss {loss!r} needs class_embeddings (kd_core.losses.classes.ClassEmbeddings): the "
                         f"teacher's text embeddings or classifier weights, got {type(class_embeddings).__name__}")
    if class_embeddings.dim != teacher_dim:
        raise ValueError(f"class embeddings are {class_embeddings.dim}-d but the teacher features are {teacher_dim}-d")
    return class_embeddings


@register("loss", "kd-dlgan")
class KDDLGANLoss(DistillationLoss):
    """KD-DLGAN's discriminator distillation (Cui et al., CVPR 2023), as its official code computes it.

    ``shared/reference/gan.md`` §6 (``cuikaiwen18/KD_DLGAN``: ``BigGAN.py``, ``losses.py``, ``train_fns.py``).
    D's pooled feature ``h`` goes through an extra head of two spectral-normalised linear layers
    ``student_dim -> 1024 -> teacher_dim`` with **no** nonlinearity between them (+787,968 parameters at
    256 -> 1024 -> 512). The batch is two index-paired halves -- in the GAN the fakes and the reals as D sees
    them, ``x_i`` paired with ``G(z)_i`` -- and with ``a_i = T(x_i)``, ``b_i = T(G(z)_i)``, ``H = head(h)``:

    * "reverse triplet" (both pairs pulled, none pushed; non-squared L2 per sample)::

        mean_i ‖a_i − H(x_i)‖ + mean_i ‖a_i − H(G(z)_i)‖ + mean_i ‖b_i − H(G(z)_i)‖ + mean_i ‖b_i − H(x_i)‖

      computed as ``2 · (mean_j ‖t_j − H_j‖ + mean_j ‖t_j − H_{j+B/2}‖)`` over the whole batch (indices mod B;
      with an odd batch the partner is ``j + B // 2``);
    * image-text correlation: ``S = rownorm(H Eᵀ)``, ``S_t = rownorm(t Eᵀ)`` with the class embeddings ``E``;
      the loss is the **sum** over all entries of ``(S − S_t)²``, real and fake halves together.

    ``forward`` returns ``triplet_weight · triplet + correlation_weight · correlation`` (10 and 10 in the
    official code), so the trainer's KD weight stays 1. The official code's third term, the
    "out-of-distribution diversity" loss, compares no-grad CLIP features with a permutation of themselves: it
    has no gradient and only logs a constant, so it is left out. The official code uses CIFAR-10's ten class
    names as prompts even on CIFAR-100; the trainers here give the dataset's own classes.
    """

    kind = "feature"
    min_batch_size = 2  # two halves
    needs_class_embeddings = True

    def __init__(self, student_dim: int, teacher_dim: int, class_embeddings: ClassEmbeddings | None = None,
                 hidden_dim: int = 1024, triplet_weight: float = 10.0, correlation_weight: float = 10.0):
        super().__init__()
        self.class_embeddings = _check_class_embeddings(class_embeddings, teacher_dim, "kd-dlgan")
        if not (isinstance(hidden_dim, int) and hidden_dim >= 1):
            raise ValueError(f"hidden_dim must be a positive integer, got {hidden_dim!r}")
        for name, weight in (("triplet_weight", triplet_weight), ("correlation_weight", correlation_weight)):
            if not weight >= 0:
                raise ValueError(f"{name} must be >= 0, got {weight!r}")
        self.head = nn.Sequential(spectral_linear(student_dim, hidden_dim), spectral_linear(hidden_dim, teacher_dim))
        self.triplet_weight, self.correlation_weight = float(triplet_weight), float(correlation_weight)

    def terms(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two terms before their weights: ``{"triplet": ..., "correlation": ...}``."""
        student, teacher = paired_features(student_features, teacher_features)
        if student.shape[0] < 2:
            raise ValueError(f"kd-dlgan pairs the two halves of a batch: it needs at least 2 samples, got {student.shape[0]}")
        head = self.head(student)
        partner = torch.roll(head, shifts=student.shape[0] // 2, dims=0)  # row j holds H_{j - B//2} = H_{j + B/2}
        triplet = 2 * ((teacher - head).norm(dim=1).mean() + (teacher - partner).norm(dim=1).mean())
        predicted = F.normalize(self.class_embeddings.correlation(head), dim=1)
        target = F.normalize(self.class_embeddings.correlation(teacher), dim=1)
        return {"triplet": triplet, "correlation": (predicted - target).pow(2).sum()}

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        terms = self.terms(student_features, teacher_features)
        return self.triplet_weight * terms["triplet"] + self.correlation_weight * terms["correlation"]

    def extra_repr(self) -> str:
        return f"triplet_weight={self.triplet_weight:g}, correlation_weight={self.correlation_weight:g}"


@register("loss", "label-distillation")
class LabelDistillationLoss(DistillationLoss):
    """Label distillation: a head on the student's feature predicts the teacher's class distribution.

    ``head`` is one spectral-normalised linear layer ``student_dim -> classes``; the target is the teacher's
    temperature-softened class distribution from its class embeddings (CLIP: zero-shot, ``logit_scale ·
    cos(image, text)``; a classifier: its own logits), and the loss is Hinton's ``T² · KL(p_t ‖ p_s)``,
    batch-mean (:class:`kd_core.losses.logit.KDLoss`, temperature 4 as its default). VkD Table 4/5 lists the
    row without saying how it was wired; these choices are this project's: the feature is the one every other
    row distils (D's pooled penultimate feature), the weight is the trainer's KD weight (1), and the reals and
    fakes of the D step are both distilled, as in every other row.
    """

    kind = "feature"
    needs_class_embeddings = True

    def __init__(self, student_dim: int, teacher_dim: int, class_embeddings: ClassEmbeddings | None = None,
                 temperature: float = 4.0):
        super().__init__()
        self.class_embeddings = _check_class_embeddings(class_embeddings, teacher_dim, "label-distillation")
        self.kd = KDLoss(temperature=temperature)
        self.head = spectral_linear(student_dim, self.class_embeddings.num_classes)

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        student, teacher = paired_features(student_features, teacher_features)
        return self.kd(self.head(student), self.class_embeddings.logits(teacher))
