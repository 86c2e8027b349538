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

Every ``log_every`` iterations ``metrics.jsonl`` gets one row of the terms averaged over the window (D's also over
the D steps), each under its own name (:mod:`gan_kd.objectives`: ``d/loss_hinge``, ``d/loss_kd``, ``d/total``, ...),
with ``d/logit_real`` / ``d/logit_fake`` (D's mean logit on the augmented real and fake images). A logged ``d/`` or
``g/`` term (``d/kd_ratio`` aside) whose absolute value exceeds ``divergence_threshold`` flags the run as diverged
(:func:`kd_core.runtime.finite.first_divergence`): a warning when the row is logged, ``"diverged"`` in
``result.json``, and ``gan-kd train`` exits with code 3 once the run has finished.

This module is the loop; its neighbours hold one job each: the options (:mod:`gan_kd.config`), the D and G steps
(:mod:`gan_kd.steps`), the loss terms (:mod:`gan_kd.objectives`), what ``last.pt`` / ``best.pt`` hold
(:mod:`gan_kd.training_state`), ``result.json`` (:mod:`gan_kd.run_result`), the overfitting probe
(:mod:`gan_kd.probes`), sample grids (:mod:`gan_kd.grids`), what older runs recorded (:mod:`gan_kd.legacy`) and
the presets (:mod:`gan_kd.presets`); the life of the run directory is :class:`kd_core.runtime.run.Run`'s.

Under torchrun each rank takes ``batch_size / world_size`` of every batch (the global batch stays 50),
G and the critic are DDP-wrapped, rank 0 does all I/O, and per-rank RNG states are saved for resume.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset

from gan_kd import data as gan_data, run_result
from gan_kd.config import RESUMABLE_KEYS, TrainConfig, validate_config
from gan_kd.grids import sample_grid
from gan_kd.legacy import ADDED_KEYS
from gan_kd.metrics.evaluator import Evaluator
from gan_kd.models.biggan import count_parameters
from gan_kd.objectives import (LeCamRegularizer, build_models, distillation_ratio, needs_class_embeddings)
from gan_kd.probes import OverfitProbe
from gan_kd.steps import AdversarialSteps, NonFiniteStep
from gan_kd.teacher import build_teacher, parse_teacher_spec
from gan_kd.training_state import LAST_KEYS, best_state, restore_training_state, training_state
from kd_core.runtime.checkpoint_save import NonFiniteCheckpoint
from kd_core.runtime.compiling import CompileClock, compile_modules
from kd_core.runtime.distributed import all_reduce_mean, barrier, cleanup_distributed, init_distributed, unwrap
from kd_core.runtime.finite import (DIVERGED_EXIT_CODE, TrainingDiverged, all_finite, divergence_message, first_divergence, format_terms, run_divergence)
from kd_core.runtime.precision import resolve_precision, slow_precision_warning
from kd_core.runtime.metrics import MetricsLogger
from kd_core.runtime.progress import Progress
from kd_core.runtime.run import Run
from kd_core.runtime.seed import restore_rng_state, seed_everything
from kd_core.runtime.signals import RunInterrupted, interrupted_message

# The progress line: D's and G's totals and the distillation term.
PROGRESS_METRICS = ("d/total", "d/loss_kd", "d/kd_ratio", "g/total")


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


class Trainer(AdversarialSteps):
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
            class_names = gan_data.dataset_class_names(dataset) if needs_class_embeddings(config) and clip else None
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
        self.rng_to_restore = None
        # The loss averages of the metrics row being accumulated (saved in last.pt, so that a resumed run logs
        # the rows an uninterrupted one would), and how far metrics.jsonl had got at the last checkpoint.
        self.window_sums: dict[str, float] = {}
        self.window_count = 0
        if self.run_dir.last is not None:
            restore_training_state(self, self.run_dir.last, self.run_dir.last_path)

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

    # ------------------------------------------------------------------ checkpoints (gan_kd.training_state)
    def _save(self, iteration: int) -> None:
        state = training_state(self, iteration)  # every rank joins the RNG all-gather
        try:
            self.run_dir.save_last(state)  # rank 0 writes
        except NonFiniteCheckpoint as error:  # a step left NaN/Inf weights behind a finite loss
            raise TrainingDiverged(f"iteration {iteration}: the weights are no longer finite ({error}); "
                                   f"{self._last_good()}") from None
        self.saved_iteration = iteration

    def _save_best(self, iteration: int, results: dict) -> None:
        self.run_dir.save_best(best_state(self, iteration, results))

    def _last_good(self) -> str:
        """Which checkpoint a diverged run can be resumed (or inspected) from."""
        if self.saved_iteration is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {self.out / 'checkpoints' / 'last.pt'} (iteration {self.saved_iteration})"

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
            if context.is_main:
                run_result.update_divergence(self.run_dir, self.diverged)
            return self.best

        if context.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.generator = DistributedDataParallel(self.generator, device_ids=ids)
            self.critic = DistributedDataParallel(self.critic, device_ids=ids)
        # Noise differs per rank; restored exactly on resume.
        seed_everything(config.seed + 1000 * context.rank + self.start_iteration)
        if self.rng_to_restore is not None:
            restore_rng_state(self.rng_to_restore)
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
                                              run_result.is_loss_term)
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
            summary = run_result.summary(self, wall_time=self.wall_before + time.monotonic() - self.session_start)
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
        self.diverged = run_divergence(self.out, self.config.divergence_threshold, run_result.is_loss_term)
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
