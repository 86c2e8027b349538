"""kd_core: the loss core shared by the GAN and classifier distillation trainers.

Projectors, teacher-feature normalisers and distillation losses, each built by name::

    import kd_core
    loss = kd_core.build_loss("vkd", student_dim=256, teacher_dim=512, normalizer="whiten")

``kd_core.available()`` lists the names. Run plumbing shared by both trainers lives in ``kd_core.runtime``.
"""
from kd_core.registry import available, build_loss, build_normalizer, build_projector

__all__ = ["available", "build_loss", "build_normalizer", "build_projector"]
__version__ = "0.1.0"
