"""kd_core: the loss core shared by the GAN and classifier distillation trainers.

Projectors, teacher-feature normalisers and distillation losses, each built by name::

    import kd_core
    loss = kd_core.build_loss("vkd", student_dim=256, teacher_dim=512, normalizer="whiten")

``kd_core.available()`` lists the names. Each class registers itself where it is defined
(:func:`kd_core.registry.register`); importing the three modules below fills the registry. Run plumbing shared
by both trainers lives in ``kd_core.runtime``.
"""
from kd_core import losses, normalizers, projectors  # noqa: F401  (they register themselves)
from kd_core.registry import available, build_loss, build_normalizer, build_projector, register

__all__ = ["available", "build_loss", "build_normalizer", "build_projector", "register"]
__version__ = "0.1.0"
