"""The options of a classifier training run, and their check before anything is written.

:class:`TrainConfig` holds every option (the run's ``config.json``); :data:`RESUMABLE_KEYS` are the ones a resumed
run may change. :func:`check_config` refuses a run that cannot start with a one-line :class:`RunSetupError`, before
the run directory is touched.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from kd_core.runtime.compiling import missing_compiler
from kd_core.runtime.distributed import DistributedContext
from kd_core.runtime.finite import DIVERGENCE_THRESHOLD, check_divergence_threshold
from kd_core.runtime.precision import Precision, resolve_precision

__all__ = [
    "OPTIMIZERS",
    "RESUMABLE_KEYS",
    "SCHEDULES",
    "RunSetupError",
    "TrainConfig",
    "check_config",
]

# Options that may differ when a run directory is resumed: they change where and how fast the run goes,
# or how long it is, not what the finished epochs computed.
RESUMABLE_KEYS = ("epochs", "device", "workers", "download", "data_root", "out", "log_every", "precision", "amp",
                  "compile", "divergence_threshold")

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine")


class RunSetupError(ValueError):
    """A run that cannot start (one-line reason); raised by :func:`~classifier_kd.train.fit` before anything is
    written."""


@dataclass
class TrainConfig:
    """Every option of a training run; ``asdict`` of it is the run's ``config.json`` (plus metadata).

    The defaults are the CIFAR-100 recipe (see :mod:`classifier_kd.recipes` for all of them).
    ``optimizer``: ``sgd`` (with ``momentum``) or ``adamw``; ``no_decay_1d`` exempts biases and other 1-D
    parameters (norm scales) from weight decay, as timm does. ``schedule``: ``step`` (x ``lr_decay`` at each
    epoch in ``milestones``) or ``cosine`` (per iteration, from ``lr`` to ``min_lr`` at the last step); either
    starts with a linear warm-up from ``warmup_lr`` over ``warmup_epochs`` (per iteration) when that is > 0.
    ``clip_grad``: max global gradient norm (None: no clipping). ``mixup`` / ``cutmix``: Beta-distribution
    alphas of batch mixing (0: off; both > 0: one of the two per batch, as timm), which turns the labels the
    target sees into class probabilities. ``channels_last``: NHWC memory format for model and images.
    ``compile``: ``torch.compile`` the training target in place (its checkpoints keep the plain keys); evaluation
    stays eager.
    ``max_steps_per_epoch`` caps the optimisation steps of each epoch (tiny CPU runs, smoke tests);
    ``None`` means the whole training set. ``extra`` holds what the caller wants recorded and compared
    on resume (e.g. the recipe's expansion, the data root, the loss weights); it does not change the loop.
    """

    model: str
    dataset: str
    num_classes: int
    out: str
    epochs: int = 240
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    no_decay_1d: bool = False
    schedule: str = "step"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_decay: float = 0.1
    warmup_epochs: float = 0
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    clip_grad: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    channels_last: bool = False
    compile: bool = False  # torch.compile the training target (model + losses + teacher; kd_core.runtime.compiling)
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    precision: str = "auto"
    max_steps_per_epoch: int | None = None
    log_every: int = 50
    divergence_threshold: float = DIVERGENCE_THRESHOLD  # on |logged train/loss* terms|; 0 = off
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(record.pop("extra"))
        return record


def check_config(target: nn.Module, train_set: Dataset, config: TrainConfig,
                 ctx: DistributedContext) -> tuple[Precision, int]:
    """Everything about the options that can be checked before the run directory is touched."""
    try:
        precision = resolve_precision(config.precision, ctx.device)
    except ValueError as err:
        raise RunSetupError(str(err)) from err
    per_rank = len(train_set) // ctx.world_size
    steps_per_epoch = per_rank // config.batch_size  # drop_last: BN needs more than one image per batch
    if config.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    min_batch = int(target.min_batch_size)
    if config.batch_size < min_batch:
        raise RunSetupError(f"batch size {config.batch_size} per process is too small for these losses, which use "
                            f"batch statistics (whitening / standardisation / correlations); use --batch-size >= "
                            f"{min_batch}")
    if steps_per_epoch < 1:
        raise RunSetupError(f"{len(train_set)} training images over {ctx.world_size} process(es) give no full "
                            f"batch of {config.batch_size}; lower --batch-size")
    if list(config.milestones) != sorted(set(config.milestones)) or any(m < 1 for m in config.milestones):
        raise RunSetupError(f"milestones must be increasing positive epochs, got {config.milestones}")
    if config.optimizer not in OPTIMIZERS:
        raise RunSetupError(f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if config.schedule not in SCHEDULES:
        raise RunSetupError(f"unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if config.compile and missing_compiler():
        raise RunSetupError(missing_compiler())
    if config.warmup_epochs < 0 or config.warmup_epochs > config.epochs:
        raise RunSetupError(f"warmup_epochs must be between 0 and epochs ({config.epochs}), got {config.warmup_epochs}")
    try:
        check_divergence_threshold(config.divergence_threshold)
    except ValueError as err:
        raise RunSetupError(str(err)) from err
    return precision, steps_per_epoch
