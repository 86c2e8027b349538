"""What the training loop trains: the *training target* seam, and the cross-entropy target that trains a teacher.

A training target is an ``nn.Module`` whose ``forward(images, labels)`` returns ``(logits, {name: loss})`` and
whose ``model`` attribute is the classifier that is evaluated and saved as ``best.pt``. The loop
(:func:`classifier_kd.train.fit`) sums the named losses, logs each, and optimises every parameter of the target
that requires grad. :class:`CrossEntropyTarget` is the teacher-training target; a distiller (student + frozen
teacher + kd_core losses, with ``model`` = the student; :mod:`classifier_kd.distiller`) is another, with no change
to the loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossEntropyTarget", "TrainTarget"]


class TrainTarget(nn.Module):
    """What the loop trains: ``forward(images, labels) -> (logits, {name: weighted loss term})``, and ``model``
    (an attribute or property), the classifier that is evaluated and saved.

    The optional seams have defaults here: ``min_batch_size`` (1), :meth:`extra_parameters` (learnable
    parameters outside ``model``, for the log), :meth:`describe` (one line for the log; None: nothing to say),
    :meth:`set_epoch` (the 1-based epoch, for schedules such as DKD's warm-up).
    """

    min_batch_size: int = 1

    def extra_parameters(self) -> int:
        return 0

    def describe(self) -> str | None:
        return None

    def set_epoch(self, epoch: int) -> None:
        """Nothing to schedule by default."""


class CrossEntropyTarget(TrainTarget):
    """The teacher-training target: ``forward(images, labels) -> (logits, {"loss_ce": cross-entropy})``.

    ``labels`` are class indices or class probabilities (mixup / cutmix); ``label_smoothing`` as in
    ``F.cross_entropy``.
    """

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = float(label_smoothing)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.model(images)
        return logits, {"loss_ce": F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)}
