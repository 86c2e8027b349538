"""Name -> builder for projectors, normalisers and losses, so that CLIs and scripts build from strings.

Adding a method means one module in ``kd_core/losses/`` and one line in ``LOSSES``.
"""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from kd_core import normalizers, projectors

PROJECTORS: dict[str, Callable[..., nn.Module]] = {
    "orthogonal": projectors.OrthogonalProjector,
    "linear": projectors.LinearProjector,
    "mlp": projectors.MLPProjector,
    "identity": projectors.IdentityProjector,
    "aad": projectors.AADProjector,
}

NORMALIZERS: dict[str, Callable[..., nn.Module]] = {
    "none": normalizers.NoNormalizer,
    "layernorm": normalizers.LayerNormNormalizer,
    "standardize": normalizers.BatchStandardizer,
    "whiten": normalizers.Whitener,
}


def _losses() -> dict[str, Callable[..., nn.Module]]:
    # Imported lazily: the loss modules build their projectors through this registry.
    from kd_core import losses

    return {
        "kd": losses.KDLoss,
        "dkd": losses.DKDLoss,
        "fitnet": losses.FitNetLoss,
        "vkd": losses.VkDLoss,
        "dcd": losses.DCDLoss,
        "rsd": losses.RSDLoss,
    }


LOSS_NAMES = ("kd", "dkd", "fitnet", "vkd", "dcd", "rsd")
# Losses that compare features and need the two dimensions to build their projectors/heads.
FEATURE_LOSSES = ("fitnet", "vkd", "dcd", "rsd")


def available() -> dict[str, list[str]]:
    """Every registered name, by kind: ``{"projectors": [...], "normalizers": [...], "losses": [...]}``."""
    return {"projectors": list(PROJECTORS), "normalizers": list(NORMALIZERS), "losses": list(LOSS_NAMES)}


def _lookup(kind: str, table: dict, name: str) -> Callable[..., nn.Module]:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; allowed: {', '.join(table)}")
    return table[name]


def _build(kind: str, name: str, builder: Callable[..., nn.Module], *args, **options) -> nn.Module:
    """Call ``builder`` after checking option names, so a typo is a ValueError naming the accepted ones."""
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("self", "in_dim", "out_dim", "student_dim", "teacher_dim")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} {name!r} got unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}")
    return builder(*args, **options)


def build_projector(name: str, in_dim: int, out_dim: int, **options) -> nn.Module:
    """A projector ``(B, in_dim) -> (B, out_dim)`` by name; see :mod:`kd_core.projectors`."""
    return _build("projector", name, _lookup("projector", PROJECTORS, name), in_dim, out_dim, **options)


def build_normalizer(name: str, **options) -> nn.Module:
    """A teacher-feature normaliser ``(B, D) -> (B, D)`` by name; see :mod:`kd_core.normalizers`."""
    return _build("normalizer", name, _lookup("normalizer", NORMALIZERS, name), **options)


def build_loss(name: str, student_dim: int | None = None, teacher_dim: int | None = None, **options) -> nn.Module:
    """A distillation loss by name. Feature losses (fitnet, vkd, dcd, rsd) need both dimensions.

    For ``vkd``, projector options (``orthogonal_map``, ``init``, ``hidden_dim``, ``bias``) and
    normaliser options (``eps``, ``group_size``) may be passed flat; they are routed to the right part.
    """
    builder = _lookup("loss", _losses(), name)
    if name not in FEATURE_LOSSES:
        if student_dim is not None or teacher_dim is not None:
            raise ValueError(f"loss {name!r} compares logits and takes no student_dim/teacher_dim")
        return _build("loss", name, builder, **options)
    if student_dim is None or teacher_dim is None:
        raise ValueError(f"loss {name!r} needs student_dim and teacher_dim")
    projectors.check_dim("student_dim", student_dim)
    projectors.check_dim("teacher_dim", teacher_dim)
    if name == "vkd":
        options = _route_vkd_options(options)
    return _build("loss", name, builder, student_dim, teacher_dim, **options)


def _route_vkd_options(options: dict) -> dict:
    options = dict(options)
    projector = options.get("projector", "orthogonal")
    normalizer = options.get("normalizer", "layernorm")
    projector_params = set(inspect.signature(_lookup("projector", PROJECTORS, projector)).parameters) - {"in_dim", "out_dim"}
    normalizer_params = set(inspect.signature(_lookup("normalizer", NORMALIZERS, normalizer)).parameters)
    own = set(inspect.signature(_losses()["vkd"]).parameters)
    projector_options = dict(options.pop("projector_options", None) or {})
    normalizer_options = dict(options.pop("normalizer_options", None) or {})
    for key in list(options):
        if key in own:
            continue
        if key in projector_params:
            projector_options[key] = options.pop(key)
        elif key in normalizer_params:
            normalizer_options[key] = options.pop(key)
    return {**options, "projector_options": projector_options, "normalizer_options": normalizer_options}
