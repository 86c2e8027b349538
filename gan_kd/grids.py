"""Sample grids: one row per class, the same latents for every generator given the same seed and labels.

The training loop saves :func:`sample_grid` PNGs of the EMA generator; ``gan-kd sample``, the study's figure and
the demo draw from :func:`grid_samples` so that generators are compared on the same latents and labels.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image

from kd_core.runtime.io import atomic_writer


def grid_labels(num_classes: int, rows: int, columns: int) -> torch.Tensor:
    """Labels for a per-class grid: row r shows class r (the first ``rows`` classes)."""
    return torch.arange(min(rows, num_classes)).repeat_interleave(columns)


@torch.no_grad()
def grid_samples(generator: nn.Module, labels: torch.Tensor, dim_z: int, *, seed: int = 0,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Images in [-1, 1] for ``labels``, one batch, latents drawn from ``seed``, from a copy of ``generator`` in
    train mode (batch statistics, as in eval): the same seed and labels give every generator the same latents."""
    z = torch.randn(labels.shape[0], dim_z, generator=torch.Generator().manual_seed(seed))
    sampler = copy.deepcopy(generator).to(device).train()
    return sampler(z.to(device), labels.to(device)).float().cpu()


@torch.no_grad()
def sample_grid(generator: nn.Module, num_classes: int, dim_z: int, path: Path, *, rows: int = 10, columns: int = 10,
                seed: int = 0, device: torch.device | str = "cpu") -> Path:
    """A PNG with one row per class, from a copy of ``generator`` in train mode (batch statistics, as in eval)."""
    images = grid_samples(generator, grid_labels(num_classes, rows, columns), dim_z, seed=seed, device=device)
    with atomic_writer(path) as stream:
        save_image(images, stream, format="png", nrow=columns, normalize=True, value_range=(-1, 1))
    return path
