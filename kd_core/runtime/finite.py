"""Finiteness checks for weights and losses: a run must stop, and a file must be refused, at the first NaN/Inf.

Used by both trainers (every optimisation step checks its loss terms), by the teachers (a frozen network with
NaN weights cannot teach) and by the ``evaluate`` / ``sample`` commands (a diverged generator or classifier
is refused instead of scored).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn


def first_non_finite(module: nn.Module) -> str | None:
    """``"<name>: N of M values"`` for the first parameter or buffer of ``module`` holding NaN/Inf, else None."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            return f"{name}: {bad} of {tensor.numel()} values"
    return None


def format_terms(terms: Mapping[str, float | torch.Tensor]) -> str:
    """``"loss_hinge 1.23, loss_kd nan"``: every term by name, for a one-line divergence message."""
    return ", ".join(f"{name} {float(value):.4g}" for name, value in terms.items())


def all_finite(terms: Mapping[str, float | torch.Tensor]) -> bool:
    return all(math.isfinite(float(value)) for value in terms.values())


class TrainingDiverged(RuntimeError):
    """A loss (or a teacher's output) stopped being finite; the message says where, and which checkpoint is good."""


def all_ranks_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """``flag`` and-ed over every rank (itself without a process group), so all ranks take the same branch."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)
