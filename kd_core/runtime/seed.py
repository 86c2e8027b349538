"""Seeding, RNG state capture for resume, and deterministic data subsets."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy (legacy global state) and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def capture_rng_state() -> dict:
    """Every RNG state a training loop draws from, in a form ``torch.save`` can store."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored only where CUDA is present."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def subset_indices(n_total: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a data-limited subset, chosen exactly as DiffAugment's BigGAN-CIFAR code does.

    The reference seeds NumPy's legacy generator and draws ``choice(n_total, n, replace=False)``
    (DiffAugment ``datasets.py``; KD-DLGAN uses the same file). Legacy ``choice`` without replacement
    takes a prefix of one permutation, so for one seed the 10% subset is the first half of the 20% one.
    ``fraction == 1`` returns every index in order.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data fraction must be in (0, 1], got {fraction}")
    if n_total <= 0:
        raise ValueError(f"n_total must be positive, got {n_total}")
    if fraction == 1.0:
        return np.arange(n_total)
    n = int(round(fraction * n_total))
    if n < 1:
        raise ValueError(f"data fraction {fraction} of {n_total} items selects no item")
    return np.random.RandomState(seed).choice(n_total, n, replace=False)
