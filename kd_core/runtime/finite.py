"""Finiteness checks for weights and losses: a run must stop, and a file must be refused, at the first NaN/Inf.

Used by both trainers (every optimisation step checks its loss terms), by the teachers (a frozen network with
NaN weights cannot teach) and by the ``evaluate`` / ``sample`` commands (a diverged generator or classifier
is refused instead of scored).

A run can also diverge with finite losses (``--lr-d 1e6`` gives GAN losses of ~1e8). Both trainers flag it
rather than stop: :func:`first_divergence` finds the first logged loss term whose absolute value exceeds
``--divergence-threshold`` (:data:`DIVERGENCE_THRESHOLD`; 0 turns the check off), the run logs a warning when
that row is logged, goes on to its end, records ``"diverged"`` in ``result.json`` and its command exits with
:data:`DIVERGED_EXIT_CODE`. The record is computed from ``metrics.jsonl`` at the end, so a resumed run reports
what an uninterrupted one would. The default is far above healthy runs: in this project's recorded runs the
largest |logged loss term| is ~330 (KD-DLGAN's distillation term at weight 1 early on; GAN hinge terms and D's
logits stay below ~5, classifier terms below ~40).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

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


DIVERGENCE_THRESHOLD = 1e4  # on |a logged loss term|; see the module docstring for what healthy runs reach
DIVERGED_EXIT_CODE = 3  # a run that finished but whose losses passed the threshold (1: stopped at NaN/Inf)


def check_divergence_threshold(value: float) -> float:
    """``value`` if it is a usable threshold (>= 0; 0 = off), else a one-line ValueError."""
    if math.isnan(value) or value < 0:
        raise ValueError(f"divergence_threshold must be >= 0 (0 turns the check off), got {value}")
    return float(value)


def first_divergence(rows: Iterable[Mapping[str, float]], threshold: float, watched: Callable[[str], bool],
                     unit: str = "iteration") -> dict | None:
    """The first logged term past ``threshold``: ``{unit: step, "term", "value", "threshold"}``, else None.

    ``rows`` are metrics rows (``{"step": n, name: value, ...}``, in order); only the names ``watched`` accepts
    count, and only finite values (a NaN/Inf stops a run by itself). A threshold of 0 turns the check off.
    """
    if not threshold:
        return None
    for row in rows:
        for name, value in row.items():
            if name == "step" or not watched(name) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value) and abs(value) > threshold:
                return {unit: int(row["step"]), "term": name, "value": float(value), "threshold": float(threshold)}
    return None


def run_divergence(run_dir, threshold: float, watched: Callable[[str], bool], unit: str = "iteration") -> dict | None:
    """:func:`first_divergence` over everything a run directory's ``metrics.jsonl`` holds (None without one)."""
    from kd_core.runtime.metrics import read_metrics

    try:
        rows = read_metrics(run_dir)
    except FileNotFoundError:
        return None
    return first_divergence(rows, threshold, watched, unit)


def divergence_message(record: Mapping, unit: str = "iteration") -> str:
    """One line for the log and the exit message of a :func:`first_divergence` record."""
    return (f"the run diverged: {record['term']} reached {record['value']:.4g} at {unit} {record[unit]}, beyond "
            f"the divergence threshold {record['threshold']:g} on |loss terms| (--divergence-threshold 0 turns the "
            f"check off)")
