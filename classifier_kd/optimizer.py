"""The optimiser of a classifier training run and its learning rate at any point of the run.

:func:`build_optimizer` gives SGD (with momentum) or AdamW over the trainable parameters, with biases and norm
scales exempt from weight decay when ``no_decay_1d`` is set. :func:`learning_rate` is the lr as a function of the
progress in epochs (warm-up, then step or cosine); the loop sets it before every step, so a resumed run needs no
scheduler state.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from classifier_kd.config import TrainConfig

__all__ = ["build_optimizer", "learning_rate"]


def learning_rate(config: TrainConfig, progress: float) -> float:
    """The lr at ``progress`` epochs into the run (``epoch + step / steps_per_epoch``).

    Warm-up: linear from ``warmup_lr`` to ``lr`` over the first ``warmup_epochs``. Then ``step``: ``lr``
    times ``lr_decay`` for every milestone <= the current (0-based) epoch, which is MultiStepLR stepped
    once per epoch, i.e. RepDistiller's "x0.1 at epoch 150". ``cosine``: ``min_lr + (lr - min_lr) *
    (1 + cos(pi * progress / epochs)) / 2``, evaluated at the same progress as during warm-up (timm's
    cosine schedule, whose warm-up replaces the first part of the curve).
    """
    if progress < config.warmup_epochs:
        return config.warmup_lr + (config.lr - config.warmup_lr) * progress / config.warmup_epochs
    if config.schedule == "step":
        passed = sum(1 for milestone in config.milestones if milestone <= math.floor(progress))
        return config.lr * config.lr_decay ** passed
    fraction = min(progress / config.epochs, 1.0)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def _parameter_groups(target: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Trainable parameters, with 1-D ones (biases, norm scales) in a group without weight decay if asked."""
    decay, no_decay = [], []
    for parameter in target.parameters():
        if parameter.requires_grad:
            (no_decay if config.no_decay_1d and parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(target: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _parameter_groups(target, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)  # betas (0.9, 0.999), eps 1e-8: timm's and VkD's
