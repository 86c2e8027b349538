"""What D and G minimise: the critic (D + distillation loss), the hinge losses, LeCam, and their named terms.

One D step minimises (DiffAugment BigGAN-CIFAR, ``shared/reference/gan.md`` §2; VkD §3.4, §4.3)::

    total = loss_hinge + loss_lecam + kd_weight * loss_kd

and one G step ``total = loss_hinge``. :func:`discriminator_terms` and :func:`generator_terms` return these
terms by name, ``total`` being the tensor that is back-propagated. The trainer logs them in ``metrics.jsonl``
as ``d/<term>`` and ``g/<term>`` (see :mod:`gan_kd.train`):

* ``loss_hinge``: the hinge loss (D: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``; G: ``-mean(D(G(z)))``);
* ``loss_lecam`` (D, only when the LeCam weight is > 0): the LeCam term, already multiplied by its weight;
* ``loss_kd`` (D, only when distilling): the distillation distance ``d(P h_D(x), N(T(x)))`` *before*
  ``kd_weight`` (the value logged as ``kd_loss`` before the terms were named);
* ``total``: the sum above.

At every log step the trainer also logs ``d/kd_ratio`` (:func:`distillation_ratio`): ``kd_weight * |loss_kd|``
over ``loss_hinge``, i.e. how large the distillation term that acts is next to D's adversarial loss (issue 25's
calibration rule reads it), and ``result.json`` keeps it at the first evaluation and at the end
(:func:`ratio_summary`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from gan_kd.models.biggan import Discriminator, Generator
import kd_core
from kd_core.runtime.precision import fp32

if TYPE_CHECKING:
    from gan_kd.config import TrainConfig


def discriminator_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` (BigGAN ``losses.py``)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def generator_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean(D(G(z)))``."""
    return -fake_logits.mean()


class LeCamRegularizer:
    """LeCam regulariser (Tseng et al., CVPR 2021), as KD-DLGAN's BigGAN code uses it with weight 0.3.

    Exponential moving averages (decay 0.9) of the batch means of D(real) and D(fake) act as anchors:
    ``reg = mean(relu(D(real) - ema_fake)²) + mean(relu(ema_real - D(fake))²)``. Before ``start``
    iterations the averages simply track the current means, and the term is applied only after ``start``.
    """

    def __init__(self, weight: float, decay: float = 0.9, start: int = 1000):
        self.weight, self.decay, self.start = float(weight), float(decay), int(start)
        self.ema_real = 0.0
        self.ema_fake = 0.0

    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, iteration: int) -> None:
        decay = self.decay if iteration >= self.start else 0.0
        self.ema_real = decay * self.ema_real + (1 - decay) * real_logits.detach().mean().item()
        self.ema_fake = decay * self.ema_fake + (1 - decay) * fake_logits.detach().mean().item()

    def __call__(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, iteration: int) -> torch.Tensor:
        if self.weight == 0 or iteration <= self.start:
            return real_logits.new_zeros(())
        reg = F.relu(real_logits - self.ema_fake).pow(2).mean() + F.relu(self.ema_real - fake_logits).pow(2).mean()
        return self.weight * reg

    def state_dict(self) -> dict:
        return {"ema_real": self.ema_real, "ema_fake": self.ema_fake}

    def load_state_dict(self, state: dict) -> None:
        self.ema_real, self.ema_fake = float(state["ema_real"]), float(state["ema_fake"])


class Critic(nn.Module):
    """D and the distillation loss (projector + normaliser) as one module, so DDP and D's optimiser see both."""

    def __init__(self, discriminator: nn.Module, distill_loss: nn.Module | None):
        super().__init__()
        self.discriminator = discriminator
        self.distill_loss = distill_loss

    def forward(self, images: torch.Tensor, labels: torch.Tensor, teacher_features: torch.Tensor | None = None):
        logits, features = self.discriminator.forward_with_features(images, labels)
        if self.distill_loss is None or teacher_features is None:
            return logits, None
        with fp32(images.device.type):  # projector, normaliser and distance stay in float32 under autocast
            return logits, self.distill_loss(features.float(), teacher_features.float())


def build_distill_loss(config, student_dim: int, teacher_dim: int | None,
                       class_embeddings: nn.Module | None = None) -> nn.Module | None:
    """The ``kd_core`` loss ``config.distill_loss`` (VkD unless a preset says otherwise) of ``config`` (a
    :class:`gan_kd.config.TrainConfig`), or None without distillation.

    ``orthogonal_map`` goes to the projector (when it is the orthogonal one) and ``whiten_group_size`` to the
    normaliser (when it whitens), as ``kd_core.build_loss``'s nested ``projector_options`` / ``normalizer_options``.
    ``class_embeddings`` (the teacher's :meth:`~gan_kd.teacher.FrozenTeacher.class_embeddings`) go to the losses
    that need them (KD-DLGAN, label distillation).
    """
    if not config.distill:
        return None
    if config.distill_loss != "vkd":  # another kd_core feature loss (spkd, pkd, kd-dlgan, ...), with its defaults
        options = {}
        if kd_core.registry.needs_class_embeddings(config.distill_loss):
            if class_embeddings is None:
                raise ValueError(f"the {config.distill_loss} loss needs the teacher's class embeddings")
            options["class_embeddings"] = class_embeddings
        return kd_core.build_loss(config.distill_loss, student_dim=student_dim, teacher_dim=teacher_dim, **options)
    projector_options = {"orthogonal_map": config.orthogonal_map} if config.projector == "orthogonal" else {}
    normalizer_options = ({"group_size": config.whiten_group_size}
                          if config.normalizer == "whiten" and config.whiten_group_size is not None else {})
    return kd_core.build_loss("vkd", student_dim=student_dim, teacher_dim=teacher_dim, projector=config.projector,
                              normalizer=config.normalizer, distance=config.distance,
                              projector_options=projector_options, normalizer_options=normalizer_options)


def build_models(config: "TrainConfig", num_classes: int, teacher_dim: int | None,
                 class_embeddings: torch.nn.Module | None = None) -> tuple[Generator, Critic]:
    """G and the critic (D + the distillation loss of :func:`gan_kd.objectives.build_distill_loss`), in this order."""
    generator = Generator(num_classes=num_classes, g_ch=config.g_ch, dim_z=config.dim_z, spectral_norm=config.spectral_norm)
    discriminator = Discriminator(num_classes=num_classes, d_ch=config.d_ch, spectral_norm=config.spectral_norm)
    return generator, Critic(discriminator, build_distill_loss(config, discriminator.feature_dim, teacher_dim,
                                                               class_embeddings))


def needs_class_embeddings(config: "TrainConfig") -> bool:
    """Whether the distillation loss of ``config`` is built with the teacher's class embeddings."""
    return config.distill and kd_core.registry.needs_class_embeddings(config.distill_loss)


def discriminator_terms(real_logits: torch.Tensor, fake_logits: torch.Tensor, distill: torch.Tensor | None, *,
                        lecam: LeCamRegularizer, kd_weight: float, iteration: int) -> dict[str, torch.Tensor]:
    """The named terms of one D step (module docstring); ``total`` is back-propagated.

    ``distill`` is the critic's distillation distance (None without a teacher). ``lecam`` is not updated here:
    the trainer updates its averages after the optimiser step.
    """
    hinge = discriminator_hinge(real_logits, fake_logits)
    lecam_term = lecam(real_logits, fake_logits, iteration)
    total = hinge + lecam_term + (kd_weight * distill if distill is not None else 0.0)
    terms = {"loss_hinge": hinge}
    if lecam.weight:
        terms["loss_lecam"] = lecam_term
    if distill is not None:
        terms["loss_kd"] = distill
    terms["total"] = total
    return terms


def distillation_ratio(averages: dict[str, float], kd_weight: float) -> dict[str, float]:
    """``{"d/kd_ratio": kd_weight * |d/loss_kd| / d/loss_hinge}`` from one log window's averages; empty without a
    distillation term or when the hinge loss is 0 (D separates every sample by the margin: no ratio to take)."""
    kd, hinge = averages.get("d/loss_kd"), averages.get("d/loss_hinge")
    if kd is None or hinge is None or not hinge > 0:
        return {}
    return {"d/kd_ratio": kd_weight * abs(kd) / hinge}


def ratio_summary(curve: list[tuple[int, float]], first_eval: int, kd_weight: float) -> dict | None:
    """The logged ``d/kd_ratio`` at the first evaluation (the last log step at or before ``first_eval``, or the
    first log step when none is) and at the end, with the weight it was measured at; None without a curve."""
    if not curve:
        return None
    before = [point for point in curve if point[0] <= first_eval]
    first = before[-1] if before else curve[0]
    return {"kd_weight": kd_weight, "first_eval": {"iteration": first[0], "ratio": first[1]},
            "end": {"iteration": curve[-1][0], "ratio": curve[-1][1]}}


def generator_terms(fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The named terms of one G step: the hinge loss, which is also the total (G has no distillation term)."""
    hinge = generator_hinge(fake_logits)
    return {"loss_hinge": hinge, "total": hinge}
