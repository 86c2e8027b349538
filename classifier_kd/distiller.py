"""Student + frozen teacher + weighted ``kd_core`` losses: the target the classifier training loop optimises.

``Distiller.forward(images, labels)`` returns the student's logits and a dict of named, already weighted
loss terms (``loss_ce``, ``loss_kd``, ...), the interface of ``classifier_kd.train.fit`` (mdistiller's
``forward_train`` shape). Logit losses see ``(student_logits, teacher_logits, labels)``, feature losses the
pooled penultimate features ``(student_features, teacher_features)``. A student with ``forward_distill(x) ->
(features, logits, distill_logits)`` (VkD's DeiT, whose dist head takes the KD term and whose distilled
feature is the mean patch token) is used through it: CE on ``logits``, logit losses on ``distill_logits``;
:class:`classifier_kd.models.base.Classifier` gives every other model the one-head default.
The losses' learnable parts (projectors, heads, temperature, decoupler) are parameters of this module and
are optimised with the student.

The teacher sees the student's (augmented) images. When it was trained on another input (its checkpoint's
input spec: another normalisation or size, e.g. an ImageNet-normalised 224 px teacher for a CIFAR student),
:class:`TeacherInput` converts the batch exactly: undo the student's normalisation, resize, apply the
teacher's.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import kd_core
from classifier_kd.targets import TrainTarget

def parse_loss_spec(spec: str) -> tuple[str, float]:
    """``"kd:0.9"`` -> ``("kd", 0.9)``; a bare name has weight 1. Errors name the allowed losses."""
    name, _, weight = spec.partition(":")
    if name not in kd_core.available()["losses"]:
        raise ValueError(f"unknown loss {name!r} in {spec!r}; allowed: {', '.join(kd_core.available()['losses'])}")
    try:
        value = float(weight) if weight else 1.0
    except ValueError:
        raise ValueError(f"bad weight {weight!r} in {spec!r}; expected NAME:WEIGHT, e.g. kd:0.9") from None
    if value < 0:
        raise ValueError(f"loss weight must be >= 0, got {value} in {spec!r}")
    return name, value


class TeacherInput(nn.Module):
    """Student-normalised images -> what the teacher expects (specs: ``{"size", "mean", "std"}``).

    Per-channel affine re-normalisation ``((x * std_s + mean_s) - mean_t) / std_t``, then a bilinear
    (antialiased) resize when the sizes differ. The identity when both specs agree.
    """

    def __init__(self, student_spec: dict, teacher_spec: dict) -> None:
        super().__init__()
        self.size = int(teacher_spec["size"])
        student_mean, student_std = torch.tensor(student_spec["mean"]), torch.tensor(student_spec["std"])
        teacher_mean, teacher_std = torch.tensor(teacher_spec["mean"]), torch.tensor(teacher_spec["std"])
        if student_mean.numel() != teacher_mean.numel():
            raise ValueError(f"student input has {student_mean.numel()} channels, the teacher's "
                             f"{teacher_mean.numel()}")
        self.resize = self.size != int(student_spec["size"])
        self.renormalize = not (torch.equal(student_mean, teacher_mean) and torch.equal(student_std, teacher_std))
        # x_t = x_s * scale + shift, per channel
        self.register_buffer("scale", (student_std / teacher_std).view(-1, 1, 1), persistent=False)
        self.register_buffer("shift", ((student_mean - teacher_mean) / teacher_std).view(-1, 1, 1), persistent=False)

    @property
    def identity(self) -> bool:
        return not (self.resize or self.renormalize)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.renormalize:
            images = images * self.scale.to(images.dtype) + self.shift.to(images.dtype)
        if self.resize:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                   antialias=True)
        return images


class Distiller(TrainTarget):
    """Trains ``student`` with cross-entropy (weight ``ce_weight``) plus ``losses`` against a frozen ``teacher``.

    ``losses``: ``[(name, weight, options), ...]`` built by :func:`kd_core.build_loss`; feature losses get the
    two models' ``feature_dim``. ``teacher=None`` is allowed only without distillation losses (method ``ce``).
    ``label_smoothing`` applies to the cross-entropy term (RSD's recipe uses 0.1); labels may be class
    indices or class probabilities (mixup / cutmix; DKD then takes the most probable class as its target).
    ``teacher_input``: a :class:`TeacherInput` when the teacher expects another input than the student.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None,
                 losses: list[tuple[str, float, dict]] = (), ce_weight: float = 1.0,
                 label_smoothing: float = 0.0, teacher_input: TeacherInput | None = None):
        super().__init__()
        if losses and teacher is None:
            raise ValueError("distillation losses need a teacher")
        self.student = student
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.teacher_input = teacher_input if teacher_input is not None and not teacher_input.identity else None
        self.ce_weight = float(ce_weight)
        self.label_smoothing = float(label_smoothing)
        self.weights: dict[str, float] = {}
        self.losses = nn.ModuleDict()
        for name, weight, options in losses:
            if name in self.losses:
                raise ValueError(f"loss {name!r} given twice")
            dims = {}
            if kd_core.registry.loss_kind(name) == "feature":
                dims = {"student_dim": student.distill_feature_dim, "teacher_dim": teacher.feature_dim}
            if kd_core.registry.needs_class_embeddings(name):  # the teacher's head rows stand for its classes
                options = {**options, "class_embeddings": teacher.class_embeddings()}
            self.losses[name] = kd_core.build_loss(name, **dims, **options)
            self.weights[name] = float(weight)
        self.epoch: int | None = None

    @property
    def model(self) -> nn.Module:
        """What is evaluated and saved: the student."""
        return self.student

    def extra_parameters(self) -> int:
        """Learnable parameters outside the student (projectors, heads, temperatures): reported in the log."""
        return sum(p.numel() for p in self.losses.parameters() if p.requires_grad)

    @property
    def min_batch_size(self) -> int:
        """The smallest batch per process every loss can work with (2 for batch statistics, else 1)."""
        return max([1, *(int(loss.min_batch_size) for loss in self.losses.values())])

    def describe(self) -> str:
        """One line for the log, e.g. ``0.1 x ce + 0.9 x kd``."""
        ce = f"{self.ce_weight:g} x ce" + (f" (label smoothing {self.label_smoothing:g})" if self.label_smoothing else "")
        return " + ".join([ce, *(f"{self.weights[name]:g} x {name}" for name in self.losses)])

    def set_epoch(self, epoch: int) -> None:
        """The 1-based epoch, passed on to every loss (DKD's warm-up uses it)."""
        self.epoch = epoch
        for loss in self.losses.values():
            loss.set_epoch(epoch)

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: its BN statistics never move
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # (features, CE logits, logit-loss logits): one forward for a plain classifier; VkD's DeiT has two heads
        student_features, student_logits, distill_logits = self.student.forward_distill(images)
        terms = {"loss_ce": self.ce_weight * F.cross_entropy(student_logits, labels,
                                                             label_smoothing=self.label_smoothing)}
        if not self.losses:
            return student_logits, terms
        with torch.no_grad():
            teacher_images = self.teacher_input(images) if self.teacher_input is not None else images
            teacher_features = self.teacher.forward_features(teacher_images)
            teacher_logits = self.teacher.forward_head(teacher_features)
        hard_labels = labels if labels.dim() == 1 else labels.argmax(dim=1)
        for name, loss in self.losses.items():
            if loss.kind == "logit":
                value = loss(distill_logits, teacher_logits, hard_labels)
            else:
                value = loss(student_features, teacher_features)
            terms[f"loss_{name}"] = self.weights[name] * value
        return student_logits, terms


class TeacherError(ValueError):
    """A teacher that cannot be used; ``option`` names the command-line option at fault (or None)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


def load_teacher(arch: str | None, checkpoint: str | None, pretrained: bool = False,
                 image_size: int | None = None) -> tuple[nn.Module, dict]:
    """(frozen-to-be teacher, its input spec): a checkpoint (any layout ``load_classifier`` reads), or the
    library's ImageNet weights of ``arch`` (``pretrained``). :class:`TeacherError` for what cannot teach.

    ``image_size`` replaces the size of the teacher's input spec: for files that record none (their spec
    defaults to CIFAR-100 at 32 px), e.g. RSD's CIFAR-100 teachers, which were fine-tuned at 224 px.
    """
    from classifier_kd.dataset_specs import NUM_CLASSES, input_spec
    from classifier_kd.models import create_model
    from classifier_kd.models.checkpoint import load_classifier, read_input_spec
    from kd_core.runtime.finite import first_non_finite

    if pretrained:
        if arch is None:
            raise TeacherError("--teacher-pretrained needs --teacher NAME")
        spec = input_spec("imagenet", image_size or 224)
        try:
            return create_model(arch, NUM_CLASSES["imagenet"], pretrained=True, image_size=spec["size"]), spec
        except (ValueError, ImportError, RuntimeError) as err:  # unknown timm name, timm missing, weights offline
            raise TeacherError(" ".join(str(err).split())) from err
    if checkpoint is None:
        raise TeacherError("this method needs a teacher: pass --teacher-ckpt PATH (or --teacher NAME "
                           "--teacher-pretrained for the library's ImageNet weights)")
    if not Path(checkpoint).is_file():  # named as the teacher, not as any classifier checkpoint
        raise TeacherError(f"teacher checkpoint not found: {checkpoint}", "--teacher-ckpt")
    try:
        model = load_classifier(checkpoint, arch=arch)
        spec = read_input_spec(checkpoint)
        if image_size is not None:
            spec["size"] = image_size
    except (OSError, ValueError, ImportError) as err:
        message = " ".join(str(err).split()).replace("pass arch=NAME", "pass --teacher NAME")
        raise TeacherError(message, "--teacher-ckpt") from err
    bad = first_non_finite(model)
    if bad is not None:
        raise TeacherError(f"teacher {checkpoint} has non-finite weights ({bad}); it cannot teach", "--teacher-ckpt")
    return model, spec
