"""The GAN training loop: D steps with the distillation term, a G step, the EMA generator, eval, resume.

One iteration (DiffAugment BigGAN-CIFAR schedule, ``shared/reference/gan.md`` §2):

* ``d_steps`` (4) discriminator steps, each with its own real batch: fake images from G (no grad) and real
  images are concatenated, DiffAugmented per sample, and go through D once. Loss = hinge + LeCam (optional)
  + ``kd_weight`` × distillation. The distillation term (VkD §3.4, §4.3; ARCHITECTURE.md data flow): D's
  pooled features of the augmented fake *and* real images -> kd_core projector -> distance to the normalised
  teacher features of the same augmented images. The teacher batch (fake and real together) is normalised
  jointly, so whitening keeps the difference between real and fake teacher features. The projector belongs
  to the :class:`Critic` and is stepped by D's optimiser, so its gradients flow in every D step (the VkD
  authors' snippet attached it to G, whose parameters are frozen during D steps: gan.md §6).
* one generator step: hinge loss ``-mean(D(aug(G(z, y))))``, no distillation term.
* EMA of G's whole state (parameters and buffers), decay 0.9999, plain copy before ``ema_start``.

The loss terms are defined in :mod:`gan_kd.objectives`, the presets in :mod:`gan_kd.presets`. Every
``log_every`` iterations ``metrics.jsonl`` gets one row of the terms averaged over the window (D's also over
the D steps), each under its own name: ``d/loss_hinge``, ``d/loss_lecam`` (with ``--lecam``), ``d/loss_kd``
(when distilling; before ``kd_weight``), ``d/total`` (what D's optimiser minimised), ``d/logit_real`` and
``d/logit_fake`` (D's mean logit on the augmented real and fake images), ``g/loss_hinge`` and ``g/total``.
A logged ``d/`` or ``g/`` term (``d/kd_ratio`` aside) whose absolute value exceeds ``divergence_threshold``
flags the run as diverged (:func:`kd_core.runtime.finite.first_divergence`): a warning when the row is
logged, ``"diverged"`` in ``result.json``, and ``gan-kd train`` exits with code 3 once the run has finished.

Under torchrun each rank takes ``batch_size / world_size`` of every batch (the global batch stays 50),
G and the critic are DDP-wrapped, rank 0 does all I/O, and per-rank RNG states are saved for resume.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset
from torchvision.utils import save_image

from gan_kd import data as gan_data
from gan_kd.diffaug import diff_augment, parse_policy
from gan_kd.metrics.evaluator import Evaluator, selection_metric
from gan_kd.metrics.features import LABEL_FREE_DEFAULT
from gan_kd.models.biggan import Discriminator, Generator, count_parameters
from gan_kd.objectives import (Critic, LeCamRegularizer, build_distill_loss, discriminator_terms, distillation_ratio,
                               generator_terms, ratio_summary)
from gan_kd.presets import PRESETS, expand_preset  # PRESETS is imported from here too (report, scripts, tests)
from gan_kd.snapshot import CHECKPOINT_FORMAT
from gan_kd.teacher import build_teacher, parse_teacher_spec
import kd_core
from kd_core.runtime.checkpoint import CheckpointError
from kd_core.runtime.checkpoint_save import NonFiniteCheckpoint
from kd_core.runtime.compiling import CompileClock, compile_modules, missing_compiler
from kd_core.runtime.distributed import (DistributedContext, all_reduce_mean, barrier, cleanup_distributed,
                                         init_distributed)
from kd_core.runtime.finite import (DIVERGED_EXIT_CODE, DIVERGENCE_THRESHOLD, TrainingDiverged, all_finite,
                                   all_ranks_true, check_divergence_threshold, divergence_message, first_divergence,
                                   format_terms, run_divergence)
from kd_core.runtime.io import atomic_writer
from kd_core.runtime.precision import PRECISIONS, resolve_precision, slow_precision_warning
from kd_core.runtime.metrics import MetricsLogger, metric_curves
from kd_core.runtime.progress import Progress
from kd_core.runtime.provenance import hardware_summary
from kd_core.runtime.run import Run, load_run
from kd_core.runtime.seed import capture_rng_state, check_fraction, restore_rng_state, seed_everything
from kd_core.runtime.signals import RunInterrupted, interrupted_message

# What a last.pt must hold to be resumed from.
LAST_KEYS = ("format", "iteration", "generator", "critic", "generator_ema", "opt_g", "opt_d", "rng")

# Options added after runs were recorded -> the value those runs had (their config.json lacks the key).
ADDED_KEYS = {"distill_loss": "vkd", "label_free": LABEL_FREE_DEFAULT}

# Options that may change when a run is resumed: they do not change what is being trained.
RESUMABLE_KEYS = ("iterations", "eval_every", "sample_every", "checkpoint_every", "log_every", "device",
                  "num_workers", "threads", "eval_samples", "skip_nonfinite", "precision", "channels_last", "compile",
                  "amp",  # amp: the option --precision replaced; runs that recorded it stay resumable
                  "overfit_probe", "divergence_threshold")

# metrics.jsonl names of the loss terms before they were named per step; a last.pt written then holds its partial
# metrics window under these names, which a resume renames (:func:`rename_legacy_window`).
LEGACY_METRIC_NAMES = {"d_loss": "d/loss_hinge", "lecam": "d/loss_lecam", "kd_loss": "d/loss_kd",
                       "d_real": "d/logit_real", "d_fake": "d/logit_fake", "g_loss": "g/loss_hinge"}
# The progress line: D's and G's totals and the distillation term.
PROGRESS_METRICS = ("d/total", "d/loss_kd", "d/kd_ratio", "g/total")


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


def is_loss_term(name: str) -> bool:
    """Whether a metrics.jsonl name is one of the trainer's logged terms that ``divergence_threshold`` watches."""
    return name.startswith(("d/", "g/")) and name != "d/kd_ratio"  # a ratio is no loss: small hinge, large ratio


class NonFiniteStep(Exception):
    """One D or G step whose loss terms (or teacher features) are not finite; its optimiser step is not taken."""


def build_models(config: TrainConfig, num_classes: int, teacher_dim: int | None,
                 class_embeddings: torch.nn.Module | None = None) -> tuple[Generator, Critic]:
    """G and the critic (D + the distillation loss of :func:`gan_kd.objectives.build_distill_loss`), in this order."""
    generator = Generator(num_classes=num_classes, g_ch=config.g_ch, dim_z=config.dim_z, spectral_norm=config.spectral_norm)
    discriminator = Discriminator(num_classes=num_classes, d_ch=config.d_ch, spectral_norm=config.spectral_norm)
    return generator, Critic(discriminator, build_distill_loss(config, discriminator.feature_dim, teacher_dim,
                                                               class_embeddings))


def needs_class_embeddings(config: TrainConfig) -> bool:
    """Whether the distillation loss of ``config`` is built with the teacher's class embeddings."""
    return config.distill and kd_core.registry.needs_class_embeddings(config.distill_loss)


def dataset_class_names(dataset) -> list[str]:
    """The class names of a torchvision dataset (``.classes``), for a CLIP teacher's prompts."""
    names = getattr(dataset, "classes", None)
    if not names:
        raise ValueError(f"{type(dataset).__name__} lists no class names (.classes); a CLIP teacher's class "
                         f"embeddings need them")
    return [str(name) for name in names]


def rename_legacy_window(sums: dict[str, float], kd_weight: float) -> dict[str, float]:
    """A metrics window saved under :data:`LEGACY_METRIC_NAMES`, in today's names (totals rebuilt from the terms).

    The window holds sums over iterations of per-iteration values, so the totals are the same sums of the terms.
    """
    if not set(sums) & set(LEGACY_METRIC_NAMES):
        return dict(sums)
    renamed = {LEGACY_METRIC_NAMES.get(name, name): value for name, value in sums.items()}
    if "d/loss_hinge" in renamed and "d/total" not in renamed:
        renamed["d/total"] = (renamed["d/loss_hinge"] + renamed.get("d/loss_lecam", 0.0)
                              + kd_weight * renamed.get("d/loss_kd", 0.0))
    if "g/loss_hinge" in renamed and "g/total" not in renamed:
        renamed["g/total"] = renamed["g/loss_hinge"]
    return renamed


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` over the whole state dict (integer buffers copied)."""
    model_state = model.state_dict()
    for name, value in ema.state_dict().items():
        source = model_state[name]
        if value.dtype.is_floating_point and decay > 0:
            value.mul_(decay).add_(source, alpha=1 - decay)
        else:
            value.copy_(source)


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


class OverfitProbe:
    """D's mean logit on fixed training reals vs held-out reals: the discriminator-overfitting signal.

    Karras et al., "Training Generative Adversarial Networks with Limited Data" (ADA, NeurIPS 2020, §3 and
    eq. 1): as D overfits, its outputs on the training reals rise while those on held-out reals of the same
    distribution fall, and ``r_t = E[sign(D_train)]`` approaches 1. Here both sets are fixed at start-up:
    the first ``n`` images of the training subset and the first ``n`` of the test split, un-flipped and not
    augmented (ADA computes ``r_t`` on D's augmented training batches). D runs in eval mode under
    ``no_grad``, so the spectral-norm vectors are not updated and no random number is drawn: probing does
    not change training. Logged per evaluation as ``probe/d_train``, ``probe/d_heldout``, ``probe/d_gap``
    (train − held-out) and ``probe/rt``.
    """

    def __init__(self, dataset: str, data_root: str, indices, n: int):
        train = gan_data.load_dataset(dataset, data_root, train=True, hflip=False)
        heldout = gan_data.load_dataset(dataset, data_root, train=False, hflip=False)
        self.sets = {"train": self._stack(Subset(train, [int(i) for i in indices[:n]])),
                     "heldout": self._stack(Subset(heldout, range(min(n, len(heldout)))))}

    @staticmethod
    def _stack(data) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*(data[i] for i in range(len(data))))
        return torch.stack(images), torch.as_tensor(labels)

    @torch.no_grad()
    def __call__(self, discriminator: nn.Module, device: torch.device, memory_format=torch.contiguous_format,
                 batch_size: int = 100) -> dict[str, float]:
        was_training = discriminator.training
        discriminator.eval()
        try:
            logits = {}
            for name, (images, labels) in self.sets.items():
                logits[name] = torch.cat([
                    discriminator(images[i:i + batch_size].to(device).contiguous(memory_format=memory_format),
                                  labels[i:i + batch_size].to(device)).float().flatten().cpu()
                    for i in range(0, images.shape[0], batch_size)])
        finally:
            discriminator.train(was_training)
        train, heldout = logits["train"].mean().item(), logits["heldout"].mean().item()
        return {"probe/d_train": train, "probe/d_heldout": heldout, "probe/d_gap": train - heldout,
                "probe/rt": logits["train"].sign().mean().item()}


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


def gather_rng_states(context: DistributedContext) -> list:
    state = capture_rng_state()
    if not context.distributed:
        return [state]
    states = [None] * context.world_size
    dist.all_gather_object(states, state)
    return states


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


class Trainer:
    """Builds everything from a config (checking it before any file is written), then runs the loop."""

    def __init__(self, config: TrainConfig, out: str | Path):
        validate_config(config)
        self.config, self.out = config, Path(out)
        self.context = init_distributed(config.device)
        self.device = self.context.device
        if config.threads:
            torch.set_num_threads(config.threads)
        world = self.context.world_size
        if config.batch_size % world:
            raise ValueError(f"batch size {config.batch_size} is not divisible by the {world} processes")
        self.local_batch = config.batch_size // world
        self.precision = resolve_precision(config.precision, self.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        # The run directory: locked (one process per run, from the option check to the end; Trainer.close
        # releases it), options checked against config.json, last.pt read and verified. Nothing is written yet.
        self.run_dir = Run(self.out, config.to_dict(), ignore_keys=RESUMABLE_KEYS, added_keys=ADDED_KEYS,
                           ctx=self.context, logger_name="gan_kd.train")
        self.run_dir.open(required_keys=LAST_KEYS, map_location=self.device)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run directory (also done at the end of :meth:`run`)."""
        self.run_dir.close()

    def _setup(self) -> None:
        config = self.config
        world = self.context.world_size

        seed_everything(config.seed)  # same initial weights on every rank (DDP also broadcasts them)
        dataset = gan_data.load_dataset(config.dataset, config.data_root, train=True, download=config.download, hflip=True)
        self.indices = gan_data.subset_indices(len(dataset), config.data_fraction, config.subset_seed)
        self.train_set = Subset(dataset, self.indices.tolist())
        if gan_data.batches_per_epoch(len(self.train_set), self.local_batch, world) < 1:
            raise ValueError(f"batch size {config.batch_size} is larger than the {len(self.train_set)} training images "
                             f"({config.dataset}, fraction {config.data_fraction:g})"
                             f"{f' over {world} processes' if world > 1 else ''}; lower --batch-size")
        self.num_classes = gan_data.num_classes(config.dataset)
        self.teacher = None
        if config.distill:
            # a CLIP teacher encodes the class names as prompts; a classifier teacher brings its own head rows
            clip = parse_teacher_spec(config.teacher)[0] == "clip"
            class_names = dataset_class_names(dataset) if needs_class_embeddings(config) and clip else None
            self.teacher = build_teacher(config.teacher, pretrained=config.teacher_pretrained, weights=config.teacher_weights,
                                         arch=config.teacher_arch, preprocessing=config.teacher_preprocessing,
                                         bf16=config.teacher_bf16 or self.precision.name == "bf16",
                                         class_names=class_names)
            self.teacher.to(self.device, memory_format=self.memory_format)
        self.build_training_state()
        self.evaluator = None
        if config.eval_every > 0 and self.context.is_main:
            self.evaluator = Evaluator(dataset=config.dataset, data_root=config.data_root, metrics=config.metrics,
                                       num_samples=config.eval_samples, inception_weights=config.inception_weights,
                                       fd_features=config.fd_features, fd_arch=config.fd_arch,
                                       label_free=config.label_free, train_indices=self.indices,
                                       data_fraction=config.data_fraction, device=self.device, seed=config.seed)
        self.probe = None
        if config.eval_every > 0 and config.overfit_probe > 0 and self.context.is_main:
            self.probe = OverfitProbe(config.dataset, config.data_root, self.indices, config.overfit_probe)
        self.start_iteration = 0
        self.saved_iteration: int | None = None  # the iteration last.pt holds, for divergence messages
        self.skipped_nonfinite = 0
        self.wall_before, self.session_start = 0.0, None  # training seconds of earlier sessions; this one's start
        self.compile_time = 0.0  # --compile: seconds spent compiling, over every session (part of the wall time)
        self.diverged: dict | None = None  # result.json's "diverged", set at the end (from metrics.jsonl)
        self.best: dict = {}
        self._rng_to_restore = None
        # The loss averages of the metrics row being accumulated (saved in last.pt, so that a resumed run logs
        # the rows an uninterrupted one would), and how far metrics.jsonl had got at the last checkpoint.
        self.window_sums: dict[str, float] = {}
        self.window_count = 0
        if self.run_dir.last is not None:
            self._load(self.run_dir.last, self.run_dir.last_path)

    def build_training_state(self) -> None:
        """G, the critic (D + distillation loss), the EMA generator, both optimisers, LeCam and the grad scaler.

        Needs ``config``, ``num_classes``, ``teacher``, ``device``, ``precision`` and ``memory_format``; the weights are
        drawn from the global RNG (seeded by the caller). ``benchmarks.gan_trainer`` (``make bench``) uses it to time
        the real steps.
        """
        config = self.config
        class_embeddings = self.teacher.class_embeddings() if needs_class_embeddings(config) else None
        self.generator, self.critic = build_models(config, self.num_classes, self.teacher.feature_dim if self.teacher else None,
                                                   class_embeddings)
        self.generator.to(self.device, memory_format=self.memory_format)
        self.critic.to(self.device, memory_format=self.memory_format)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)  # before compiling: stays eager
        if config.compile:  # in place: the state_dict keys stay the plain modules' (checkpoints load anywhere)
            compile_modules(self.generator, self.critic, self.critic.discriminator, self.teacher)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas, eps=1e-8)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=config.lr_d, betas=betas, eps=1e-8)
        self.lecam = LeCamRegularizer(config.lecam)
        self.scaler = self.precision.grad_scaler()

    # ------------------------------------------------------------------ state
    def _state(self, iteration: int) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": iteration,
            "config": self.config.to_dict(),
            "n_classes": self.num_classes,  # the key keeps its old name: the checkpoint format is fixed
            "generator": unwrap(self.generator).state_dict(),
            "critic": unwrap(self.critic).state_dict(),
            "generator_ema": self.generator_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "lecam": self.lecam.state_dict(),
            "best": self.best,
            "skipped_nonfinite": self.skipped_nonfinite,
            "rng": gather_rng_states(self.context),
            # rows of the current metrics window (their mean over ranks, so a resume under DDP logs the same means)
            "log_window": {"sums": all_reduce_mean(dict(self.window_sums)), "count": self.window_count},
            # training seconds so far, over every session of the run (result.json's wall_time_s)
            "wall_time": self.wall_before + (time.monotonic() - self.session_start if self.session_start else 0.0),
            # only with --compile, so that an eager run's checkpoints keep their keys
            **({"compile_time": self.compile_time} if self.config.compile else {}),
        }  # + metrics_offset, added by Run.save_last

    def _load(self, state: dict, path: Path) -> None:
        if state["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {state['format']!r}, expected {CHECKPOINT_FORMAT!r}")
        try:
            self.generator.load_state_dict(state["generator"])
            self.critic.load_state_dict(state["critic"])
            self.generator_ema.load_state_dict(state["generator_ema"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"checkpoint {path} does not fit these models: {str(error).splitlines()[0]}") from error
        self.scaler.load_state_dict(state.get("scaler", {}))
        self.lecam.load_state_dict(state["lecam"])
        self.best = state.get("best", {})
        self.skipped_nonfinite = int(state.get("skipped_nonfinite", 0))
        self.start_iteration = self.saved_iteration = int(state["iteration"])
        self.wall_before = float(state.get("wall_time", 0.0))  # absent in checkpoints before it was saved
        self.compile_time = float(state.get("compile_time", 0.0))
        window = state.get("log_window") or {"sums": {}, "count": 0}  # absent in checkpoints before it was saved
        self.window_sums = rename_legacy_window(window["sums"], self.config.kd_weight)
        self.window_count = int(window["count"])
        states = state["rng"]
        self._rng_to_restore = states[self.context.rank] if self.context.rank < len(states) else None

    def _save(self, iteration: int) -> None:
        state = self._state(iteration)  # every rank joins the RNG all-gather
        try:
            self.run_dir.save_last(state)  # rank 0 writes
        except NonFiniteCheckpoint as error:  # a step left NaN/Inf weights behind a finite loss
            raise TrainingDiverged(f"iteration {iteration}: the weights are no longer finite ({error}); "
                                   f"{self._last_good()}") from None
        self.saved_iteration = iteration

    def _save_best(self, iteration: int, results: dict) -> None:
        self.run_dir.save_best({"format": CHECKPOINT_FORMAT, "iteration": iteration, "config": self.config.to_dict(),
                                "n_classes": self.num_classes,  # the key keeps its old name: the checkpoint format is fixed
                                "generator_ema": self.generator_ema.state_dict(),
                                "metrics": results})

    # ------------------------------------------------------------------ steps
    def _noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.config.dim_z, device=self.device)
        labels = torch.randint(0, self.num_classes, (n,), device=self.device)
        return z, labels

    def _autocast(self):
        return self.precision.autocast()

    def _last_good(self) -> str:
        """Which checkpoint a diverged run can be resumed (or inspected) from."""
        if self.saved_iteration is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {self.out / 'checkpoints' / 'last.pt'} (iteration {self.saved_iteration})"

    def _require_finite(self, step: str, iteration: int, terms: dict, cause) -> None:
        """Raise :class:`NonFiniteStep` on every rank when any rank's ``terms`` are not finite.

        ``cause`` is the explanation, or a function giving it, called only when a term is not finite.
        """
        if not all_ranks_true(all_finite(terms), self.device):
            reason = cause() if callable(cause) else cause
            raise NonFiniteStep(f"iteration {iteration}, {step}: non-finite {format_terms(terms)} ({reason})")

    def discriminator_step(self, real: torch.Tensor, real_labels: torch.Tensor, iteration: int) -> dict:
        """One D step; returns its terms, detached, as logged: ``d/<term>`` of
        :func:`gan_kd.objectives.discriminator_terms` (``d/total`` was back-propagated), ``d/logit_real`` and
        ``d/logit_fake``. Raises :class:`NonFiniteStep` (the optimiser step not taken) when one is not finite."""
        config = self.config
        z, fake_labels = self._noise(real.shape[0])
        with torch.no_grad(), self._autocast():
            fake = self.generator(z, fake_labels).float()
        images = diff_augment(torch.cat([fake, real]), config.diffaug)
        labels = torch.cat([fake_labels, real_labels])
        teacher_features = None
        if self.teacher is not None:
            teacher_features = self.teacher(images)
            # Checked before the normaliser: whitening NaN features fails inside the eigendecomposition.
            self._require_finite("D step", iteration, {"teacher_features": teacher_features.abs().sum()},
                                 lambda: "G's images are not finite: G diverged; lower --lr-g"
                                 if not bool(torch.isfinite(fake).all()) else
                                 "the teacher gives non-finite features for finite images; check the teacher")
        with self._autocast():
            logits, distill = self.critic(images, labels, teacher_features)
        logits = logits.float()
        fake_logits, real_logits = logits[: fake.shape[0]], logits[fake.shape[0]:]
        losses = discriminator_terms(real_logits, fake_logits, distill, lecam=self.lecam, kd_weight=config.kd_weight,
                                     iteration=iteration)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        terms = {f"d/{name}": value.detach() for name, value in losses.items()}
        terms["d/logit_real"] = real_logits.detach().mean()
        terms["d/logit_fake"] = fake_logits.detach().mean()
        # After backward, so that every DDP rank has reduced its gradients; the step is not taken.
        self._require_finite("D step", iteration, terms, "D diverged; lower --lr-d or --kd-weight")
        self.scaler.step(self.opt_d)
        self.scaler.update()
        self.lecam.update(real_logits, fake_logits, iteration)
        return terms

    def generator_step(self, iteration: int) -> dict:
        """One G step; returns ``g/<term>`` of :func:`gan_kd.objectives.generator_terms`, detached."""
        z, labels = self._noise(self.local_batch)
        with self._autocast():
            fake = self.generator(z, labels)
            logits = unwrap(self.critic).discriminator(diff_augment(fake.float(), self.config.diffaug), labels)
        losses = generator_terms(logits.float())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        terms = {f"g/{name}": value.detach() for name, value in losses.items()}
        self._require_finite("G step", iteration, terms, "G or D diverged; lower --lr-g / --lr-d")
        self.scaler.step(self.opt_g)
        self.scaler.update()
        return terms

    def _skip_or_stop(self, error: "NonFiniteStep", logger) -> None:
        """Use one of ``--skip-nonfinite``'s skips for a bad step, or stop the run (exit 1) naming what is left."""
        if self.skipped_nonfinite < self.config.skip_nonfinite:
            self.skipped_nonfinite += 1
            logger.warning("%s; step skipped (%d of %d allowed)", error, self.skipped_nonfinite, self.config.skip_nonfinite)
            return
        allowed = (f"after {self.skipped_nonfinite} skipped step(s) (--skip-nonfinite {self.config.skip_nonfinite})"
                   if self.config.skip_nonfinite else "(--skip-nonfinite N skips up to N such steps)")
        message = f"training stopped at {error} {allowed}; {self._last_good()}"
        logger.error(message)
        raise TrainingDiverged(message)

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        """Train to ``config.iterations`` (resuming from ``last.pt``); returns the best evaluation record."""
        with self.run_dir:  # SIGTERM / SIGINT: checkpoint at the end of the iteration, then stop; always released
            self.stops = self.run_dir.stops
            return self._run()

    def _run(self) -> dict:
        config, context = self.config, self.context
        out = self.out
        logger = self.run_dir.start(self.start_iteration)  # metrics.jsonl cut back to last.pt
        metrics_log = self.run_dir.metrics
        if context.is_main:
            gan_data.save_indices(out, self.indices)
        logger.info("G parameters: %s; D parameters: %s; distillation parameters: %s",
                    f"{count_parameters(self.generator):,}", f"{count_parameters(self.critic.discriminator):,}",
                    f"{count_parameters(self.critic.distill_loss) if self.critic.distill_loss else 0:,}")
        warning = slow_precision_warning(self.precision)
        if warning:
            logger.warning(warning)
        logger.info("data: %s, %d of %d training images (fraction %g, subset seed %d); teacher: %s; preset %s",
                    config.dataset, len(self.train_set), len(self.train_set.dataset), config.data_fraction,
                    config.subset_seed, self.teacher.description if self.teacher else "none", config.preset)
        if self.start_iteration:
            logger.info("resuming from %s at iteration %d", out / "checkpoints" / "last.pt", self.start_iteration)
        if self.start_iteration >= config.iterations:
            logger.info("nothing to do: the run already has %d iterations", self.start_iteration)
            self._flag_divergence(logger)  # with this threshold; result.json and the exit code agree
            if context.is_main and self.run_dir.result_path.is_file():
                summary = load_run(out, finished=False)["result"]
                if summary.get("diverged") != self.diverged:
                    summary.pop("diverged", None)
                    self.run_dir.finish({**summary, **({"diverged": self.diverged} if self.diverged else {})})
            return self.best

        if context.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.generator = DistributedDataParallel(self.generator, device_ids=ids)
            self.critic = DistributedDataParallel(self.critic, device_ids=ids)
        # Noise differs per rank; restored exactly on resume.
        seed_everything(config.seed + 1000 * context.rank + self.start_iteration)
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
        loader = gan_data.infinite_loader(self.train_set, self.local_batch, seed=config.seed, rank=context.rank,
                                          world_size=context.world_size, num_workers=config.num_workers,
                                          skip_batches=self.start_iteration * config.d_steps,
                                          pin_memory=self.device.type == "cuda")
        progress = Progress(config.iterations, start=self.start_iteration, every=config.log_every,
                            bar=None if context.is_main else False)
        self.session_start = time.monotonic()
        compile_clock = CompileClock() if config.compile else None
        running = self.window_sums  # filled in place: last.pt saves it
        interrupted = None
        warned_divergence = False
        for iteration in range(self.start_iteration + 1, config.iterations + 1):
            self.generator.requires_grad_(False)
            self.critic.requires_grad_(True)
            for _ in range(config.d_steps):
                real, real_labels = next(loader)
                try:
                    real = real.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
                    terms = self.discriminator_step(real, real_labels.to(self.device, non_blocking=True), iteration)
                except NonFiniteStep as error:
                    self._skip_or_stop(error, logger)
                    terms = {}
                for name, value in terms.items():  # D terms are averaged over the D steps
                    running[name] = running.get(name, 0.0) + float(value) / config.d_steps
            self.critic.requires_grad_(False)
            self.generator.requires_grad_(True)
            try:
                g_terms = self.generator_step(iteration)
            except NonFiniteStep as error:
                self._skip_or_stop(error, logger)
                g_terms = {}
            for name, value in g_terms.items():
                running[name] = running.get(name, 0.0) + float(value)
            ema_update(self.generator_ema, unwrap(self.generator), 0.0 if iteration < config.ema_start else config.ema_decay)

            if compile_clock is not None:  # compiled on the first calls (and on new shapes): not iteration time
                spent = compile_clock.lap()
                if spent:
                    self.compile_time += spent
                    progress.exclude(spent, "compile")
            self.window_count += 1
            if iteration % config.log_every == 0 or iteration == config.iterations:
                count = self.window_count
                averages = all_reduce_mean({name: total / count for name, total in running.items()})
                averages.update(distillation_ratio(averages, config.kd_weight))
                metrics_log.log(iteration, averages)
                if not warned_divergence:  # said once a session, when it happens; the run goes on
                    passed = first_divergence([{"step": iteration, **averages}], config.divergence_threshold,
                                              is_loss_term)
                    if passed is not None:
                        logger.warning("%s; the run goes on to iteration %d, then exits with code %d",
                                       divergence_message(passed), config.iterations, DIVERGED_EXIT_CODE)
                        warned_divergence = True
                if context.is_main:
                    progress.update(iteration, **{k: averages[k] for k in PROGRESS_METRICS if k in averages})
                running.clear()
                self.window_count = 0
            if context.is_main and config.sample_every and iteration % config.sample_every == 0:
                sample_grid(self.generator_ema, self.num_classes, config.dim_z, out / "samples" / f"iter_{iteration:06d}.png",
                            device=self.device)
            last = iteration == config.iterations
            if config.eval_every and (iteration % config.eval_every == 0 or last):
                self._evaluate(iteration, metrics_log, logger)
            if (config.checkpoint_every and iteration % config.checkpoint_every == 0) or last:
                self._save(iteration)
            signum = self.stops.should_stop(self.device)
            if signum:
                if self.saved_iteration != iteration:
                    self._save(iteration)
                message = interrupted_message(signum, f"at iteration {iteration} of {config.iterations}",
                                              out / "checkpoints" / "last.pt")
                logger.warning(message)
                interrupted = RunInterrupted(message, signum)
                break
        progress.close()
        if interrupted is not None:
            raise interrupted
        if context.is_main:
            sample_grid(self.generator_ema, self.num_classes, config.dim_z, out / "samples" / "final.png", device=self.device)
            summary = {"iterations": config.iterations, "best": self.best, "wall_time_s": round(self.wall_before + time.monotonic() - self.session_start, 1),
                       "resumed_from": self.start_iteration, "world_size": context.world_size, "device": str(self.device),
                       "hardware": hardware_summary(self.device)}
            if config.compile:  # included in wall_time_s
                summary["compile_s"] = round(self.compile_time, 1)
            ratio = ratio_summary(metric_curves(out).get("d/kd_ratio", []), config.eval_every or config.log_every,
                                  config.kd_weight)
            if ratio is not None:  # the distillation term next to D's adversarial loss (issue 25's calibration)
                summary["distillation_ratio"] = ratio
            if self.evaluator is not None:  # how each metric's number was measured, and what names it in a table
                summary["evaluation"] = {**self.evaluator.describe(), "labels": self.evaluator.labels(),
                                         "selected_by": self.evaluator.selection_metric()}
            if self._flag_divergence(logger):
                summary["diverged"] = self.diverged
            self.run_dir.finish(summary)
            logger.info("done: %d iterations; best %s", config.iterations, self.best or "not evaluated")
        barrier()
        return self.best

    def _flag_divergence(self, logger) -> bool:
        """Rank 0: the first logged term of the whole run past ``divergence_threshold`` (metrics.jsonl, so a resumed
        run says what an uninterrupted one would) into ``self.diverged``, with a warning; True if there is one."""
        if not self.context.is_main:
            return False
        self.diverged = run_divergence(self.out, self.config.divergence_threshold, is_loss_term)
        if self.diverged is not None:
            logger.warning("%s; recorded in result.json (\"diverged\"), exit code %d", divergence_message(self.diverged),
                           DIVERGED_EXIT_CODE)
        return self.diverged is not None

    def _evaluate(self, iteration: int, metrics_log: MetricsLogger, logger) -> None:
        if self.probe is not None:
            metrics_log.log(iteration, self.probe(unwrap(self.critic).discriminator, self.device, self.memory_format))
        if self.evaluator is not None:
            results = self.evaluator(self.generator_ema, num_classes=self.num_classes, dim_z=self.config.dim_z)
            metrics_log.log(iteration, {f"eval/{k}": v for k, v in results.items()})
            key = self.evaluator.selection_metric()
            if not all_finite(results):  # a NaN generator must never become best.pt
                message = (f"iteration {iteration}: the EMA generator's metrics are not finite ({format_terms(results)}); "
                           f"{self._last_good()}")
                logger.error(message)
                raise TrainingDiverged(message)
            logger.info("iteration %d: %s", iteration, ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
            if not self.best or results[key] < self.best["value"]:
                self.best = {"metric": key, "value": results[key], "iteration": iteration, "all": results}
                self._save_best(iteration, results)
        barrier()


def train(config: TrainConfig, out: str | Path) -> dict:
    """Train (or resume) a run in ``out``; returns the best evaluation record (empty if never evaluated)."""
    trainer = Trainer(config, out)
    try:
        return trainer.run()  # releases the run directory however it ends
    finally:
        cleanup_distributed()
