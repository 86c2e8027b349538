"""Name -> class for projectors, normalisers and losses, filled by the classes themselves.

Each class registers itself where it is defined, with one line::

    @register("loss", "vkd")
    class VkDLoss(DistillationLoss):   # kd_core.losses.base: kind, min_batch_size, set_epoch
        kind = "feature"               # "feature" (built with student_dim, teacher_dim) or "logit"
        ...

Everything else is derived from these registrations: :func:`available`, the ``--method`` / ``--loss`` /
``--projector`` / ``--normalizer`` choices of both CLIs, and which losses need feature dimensions. This module
imports nothing from ``kd_core``; ``kd_core/__init__.py`` imports the modules that register (projectors,
normalisers, losses), so importing ``kd_core`` fills the tables before anything is built from them.

Options travel as keyword arguments of the class they belong to; a loss that owns a projector or a
normaliser takes their options as nested dicts (``projector_options``, ``normalizer_options``), e.g.::

    kd_core.build_loss("vkd", student_dim=256, teacher_dim=512, normalizer="whiten",
                       projector_options={"orthogonal_map": "qr"}, normalizer_options={"group_size": 64})
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

KINDS = ("projector", "normalizer", "loss")
LOSS_KINDS = ("feature", "logit")
_TABLES: dict[str, dict[str, type[nn.Module]]] = {kind: {} for kind in KINDS}
# Positional arguments the builders pass themselves (not options a user gives).
_DIMENSIONS = ("self", "in_dim", "out_dim", "student_dim", "teacher_dim")


def register(kind: str, name: str) -> Callable[[type], type]:
    """Class decorator: make ``cls`` buildable as ``name`` of ``kind`` (projector, normalizer or loss)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}")

    def add(cls: type) -> type:
        table = _TABLES[kind]
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice ({table[name].__qualname__} and {cls.__qualname__})")
        if kind == "loss" and (getattr(cls, "kind", None) not in LOSS_KINDS or not hasattr(cls, "set_epoch")):
            raise ValueError(f"loss {name!r}: {cls.__qualname__} must subclass kd_core.losses.base.DistillationLoss "
                             f"and set kind to one of {', '.join(LOSS_KINDS)}")
        table[name] = cls
        return cls

    return add


def names(kind: str) -> list[str]:
    """Registered names of ``kind``, in registration order."""
    return list(_TABLES[kind])


def available() -> dict[str, list[str]]:
    """Every registered name, by kind: ``{"projectors": [...], "normalizers": [...], "losses": [...]}``."""
    return {"projectors": names("projector"), "normalizers": names("normalizer"), "losses": names("loss")}


def lookup(kind: str, name: str) -> type[nn.Module]:
    table = _TABLES[kind]
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; allowed: {', '.join(table)}")
    return table[name]


def loss_kind(name: str) -> str:
    """``"feature"`` for losses that compare features (they need both dimensions), ``"logit"`` otherwise."""
    return lookup("loss", name).kind


def needs_class_embeddings(name: str) -> bool:
    """Whether loss ``name`` is built with the teacher's ``class_embeddings`` (KD-DLGAN, label distillation)."""
    return bool(getattr(lookup("loss", name), "needs_class_embeddings", False))


def feature_losses() -> list[str]:
    return [name for name, cls in _TABLES["loss"].items() if cls.kind == "feature"]


def _build(kind: str, name: str, *args, **options) -> nn.Module:
    """Build ``name`` after checking option names, so a typo is a ValueError naming the accepted ones."""
    builder = lookup(kind, name)
    accepted = [p for p in inspect.signature(builder).parameters if p not in _DIMENSIONS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} {name!r} got unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}")
    return builder(*args, **options)


def check_dim(name: str, value) -> int:
    """A feature dimension must be a positive int (bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def build_projector(name: str, in_dim: int, out_dim: int, **options) -> nn.Module:
    """A projector ``(B, in_dim) -> (B, out_dim)`` by name; see :mod:`kd_core.projectors`."""
    return _build("projector", name, in_dim, out_dim, **options)


def build_normalizer(name: str, **options) -> nn.Module:
    """A teacher-feature normaliser ``(B, D) -> (B, D)`` by name; see :mod:`kd_core.normalizers`."""
    return _build("normalizer", name, **options)


def build_loss(name: str, student_dim: int | None = None, teacher_dim: int | None = None, **options) -> nn.Module:
    """A distillation loss by name, with its own keyword options. Feature losses need both dimensions."""
    if loss_kind(name) == "logit":
        if student_dim is not None or teacher_dim is not None:
            raise ValueError(f"loss {name!r} compares logits and takes no student_dim/teacher_dim")
        return _build("loss", name, **options)
    if student_dim is None or teacher_dim is None:
        raise ValueError(f"loss {name!r} needs student_dim and teacher_dim")
    check_dim("student_dim", student_dim)
    check_dim("teacher_dim", teacher_dim)
    return _build("loss", name, student_dim, teacher_dim, **options)
