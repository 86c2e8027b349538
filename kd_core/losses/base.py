"""The base class of every registered loss: what a trainer may ask of any loss, with defaults."""
from __future__ import annotations

from torch import nn


class DistillationLoss(nn.Module):
    """A distillation loss; subclasses set ``kind`` and implement ``forward``.

    * ``kind``: ``"feature"`` -- built with ``(student_dim, teacher_dim)``, called with ``(student_features,
      teacher_features)`` -- or ``"logit"`` -- called with ``(student_logits, teacher_logits, targets)``.
    * ``min_batch_size``: the smallest batch per process it can work with (2 for batch statistics).
    * :meth:`set_epoch`: the trainer's 1-based epoch, for losses with a schedule (DKD's warm-up).
    * ``needs_class_embeddings``: True for losses built with the teacher's ``class_embeddings``
      (:class:`kd_core.losses.classes.ClassEmbeddings`); the trainers pass them (KD-DLGAN, label distillation).
    """

    kind: str = ""
    min_batch_size: int = 1
    needs_class_embeddings: bool = False

    def set_epoch(self, epoch: int | None) -> None:
        """Most losses have no schedule: nothing to do."""
