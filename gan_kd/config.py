"""A GAN run's options: :class:`TrainConfig` (what ``config.json`` records) and :func:`validate_config`.

``gan-kd train`` turns its command line into a :class:`TrainConfig` (presets expanded by
:func:`gan_kd.presets.expand_preset`); :class:`gan_kd.train.Trainer` checks it with :func:`validate_config` before
any file is written, and a resumed run compares it with the recorded one, except the options of
:data:`RESUMABLE_KEYS`, which do not change what is trained.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from gan_kd import data as gan_data
from gan_kd.diffaug import parse_policy
from gan_kd.metrics.evaluator import selection_metric
from gan_kd.metrics.features import LABEL_FREE_DEFAULT
from gan_kd.presets import PRESETS, expand_preset
import kd_core
from kd_core.runtime.compiling import missing_compiler
from kd_core.runtime.finite import DIVERGENCE_THRESHOLD, check_divergence_threshold
from kd_core.runtime.precision import PRECISIONS
from kd_core.runtime.seed import check_fraction

# Options that may change when a run is resumed: they do not change what is being trained.
RESUMABLE_KEYS = ("iterations", "eval_every", "sample_every", "checkpoint_every", "log_every", "device",
                  "num_workers", "threads", "eval_samples", "skip_nonfinite", "precision", "channels_last", "compile",
                  "amp",  # amp: the option --precision replaced; runs that recorded it stay resumable
                  "overfit_probe", "divergence_threshold")


@dataclass
class TrainConfig:
    """Every option of a run; ``config.json`` records it. Defaults are the reference's where it has one."""

    dataset: str = "cifar10"
    data_root: str = "data"
    data_fraction: float = 1.0
    subset_seed: int = 0
    download: bool = False
    preset: str = "vkd-whiten"
    distill: bool = True
    # models (DiffAugment BigGAN-CIFAR config)
    g_ch: int = 64
    d_ch: int = 64
    dim_z: int = 128
    spectral_norm: str = "own"
    # schedule
    iterations: int = 1000
    batch_size: int = 50
    d_steps: int = 4
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.999
    ema_decay: float = 0.9999
    ema_start: int = 1000
    diffaug: str = "translation,cutout"
    lecam: float = 0.0
    # distillation
    teacher: str | None = None
    teacher_pretrained: str | None = None
    teacher_weights: str | None = None
    teacher_arch: str | None = None
    teacher_preprocessing: str = "kd-dlgan"
    teacher_bf16: bool = False
    kd_weight: float = 1.0
    distill_loss: str = "vkd"  # a kd_core feature loss; the options below are vkd's (the projector, normaliser, distance)
    projector: str = "orthogonal"
    orthogonal_map: str = "qr"
    normalizer: str = "whiten"
    whiten_group_size: int | None = None
    distance: str = "mse"
    # evaluation and logging
    eval_every: int = 0
    eval_samples: int = 10_000
    metrics: tuple[str, ...] = ("fid",)
    inception_weights: str | None = None
    fd_features: str | None = None
    fd_arch: str | None = None
    label_free: str = LABEL_FREE_DEFAULT  # the label-free feature space (gan_kd.metrics.features)
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 50
    overfit_probe: int = 500
    skip_nonfinite: int = 0
    divergence_threshold: float = DIVERGENCE_THRESHOLD  # on |logged d/ and g/ terms|; 0 = off (kd_core.runtime.finite)
    # runtime
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False  # torch.compile G, the critic, D and the teacher (kd_core.runtime.compiling)
    threads: int | None = None
    num_workers: int = 0

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record["metrics"] = list(self.metrics)
        return record

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrainConfig":
        """The config of preset ``name`` with ``overrides``, expanded exactly as ``gan-kd train --preset`` does.

        ``TrainConfig.from_preset("vkd", teacher="clip:ViT-B-32", normalizer="layernorm")``: the preset's values,
        the overrides on top, the defaults for the rest (:func:`gan_kd.presets.expand_preset`). Raises
        ``ValueError`` where the CLI refuses, e.g. a teacher option with the teacher-less ``da``.
        """
        return cls(**expand_preset(name, overrides))


def validate_config(config: TrainConfig) -> None:
    """Range checks that need no file; every message names the bad value and what is allowed."""
    if config.dataset not in gan_data.DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; allowed: {', '.join(gan_data.DATASETS)}")
    check_fraction(config.data_fraction)
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; allowed: {', '.join(PRESETS)}")
    if config.distill_loss not in kd_core.registry.feature_losses():
        raise ValueError(f"distill_loss {config.distill_loss!r} is not a feature loss; allowed: "
                         f"{', '.join(kd_core.registry.feature_losses())}")
    if config.compile and missing_compiler():
        raise ValueError(missing_compiler())
    for name in ("iterations", "batch_size", "d_steps", "g_ch", "d_ch", "dim_z", "eval_samples", "log_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    for name in ("eval_every", "sample_every", "checkpoint_every", "ema_start", "num_workers", "skip_nonfinite",
                 "overfit_probe"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    check_divergence_threshold(config.divergence_threshold)
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if config.lecam < 0 or config.kd_weight < 0:
        raise ValueError("lecam and kd_weight must be >= 0")
    parse_policy(config.diffaug)
    if config.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {config.precision!r}; allowed: {', '.join(PRECISIONS)}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads must be >= 1, got {config.threads}")
    if config.eval_every > 0:  # the best checkpoint follows fid or fd: one of them must be computed
        selection_metric(config.metrics)
    if config.eval_samples < 2:
        raise ValueError(f"eval_samples must be >= 2 (a Fréchet distance needs a covariance), got {config.eval_samples}")
    if config.distill and not config.teacher:
        raise ValueError(f"preset {config.preset!r} distils from a teacher: pass --teacher clip:MODEL or ckpt:PATH")
    if not config.distill:
        given = [name for name in ("teacher", "teacher_pretrained", "teacher_weights", "teacher_arch") if getattr(config, name)]
        if given:
            raise ValueError(f"preset {config.preset!r} trains without a teacher, so {', '.join('--' + n.replace('_', '-') for n in given)} "
                             f"would be ignored; drop {'it' if len(given) == 1 else 'them'} or choose a distilling preset")
    if config.inception_weights is not None and not Path(config.inception_weights).is_file():
        raise ValueError(f"Inception weights file not found: {config.inception_weights}")
    if config.teacher_weights is not None and not Path(config.teacher_weights).is_file():
        raise ValueError(f"teacher weights file not found: {config.teacher_weights}")
    if config.fd_features is not None:
        kind, _, path = config.fd_features.partition(":")
        if kind != "ckpt" or not Path(path).is_file():
            raise ValueError(f"--fd-features must be ckpt:PATH of an existing classifier checkpoint, got {config.fd_features!r}")
