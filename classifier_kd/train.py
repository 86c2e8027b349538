"""The classifier training loop: SGD or AdamW, step or cosine schedule, evaluation every epoch, best/last checkpoints.

One function, :func:`fit`, reads top to bottom: check (nothing written yet) -> run directory -> optimiser
(restored on resume) -> data loaders -> epochs (train, evaluate, log, checkpoint) -> result. The lr is a
function of the progress in epochs (:func:`classifier_kd.optimizer.learning_rate`), set before every step, so a
resumed run needs no scheduler state. Mixup / cutmix, gradient clipping and channels-last are options of the
config; the recipes that set them are in :mod:`classifier_kd.recipes`.

What it trains is a *training target* (:mod:`classifier_kd.targets`): the loop sums the named losses its
``forward(images, labels)`` returns, logs each, optimises every parameter of the target that requires grad, and
evaluates and saves its ``model``.

A run directory holds ``config.json``, ``checkpoints/last.pt`` (everything needed to resume, written
after every epoch), ``checkpoints/best.pt`` (the classifier with the best test top-1, in the
``classifier_kd`` checkpoint format with its input spec), ``metrics.jsonl`` + TensorBoard events (one row
per epoch) and ``result.json``. Re-running the same command on the same directory resumes from
``last.pt``; options listed in :data:`~classifier_kd.config.RESUMABLE_KEYS` may change (e.g. more epochs).

A logged training loss term (``train/loss``, ``train/loss_<term>``, per epoch) whose absolute value exceeds
``divergence_threshold`` flags the run as diverged (:func:`kd_core.runtime.finite.first_divergence`; a NaN/Inf
stops it instead): a warning when the epoch is logged, ``"diverged"`` in ``result.json`` (from ``metrics.jsonl``,
so a resumed run says the same), and the command exits with code 3 once the run has finished.

Under ``torchrun`` every rank trains on its ``DistributedSampler`` shard, the target is wrapped in DDP,
metrics are averaged over ranks and only rank 0 writes files. On CUDA the forward pass runs under
autocast precision of ``precision`` (:mod:`kd_core.runtime.precision`: ``auto`` is bf16 or float16 with a gradient
scaler on CUDA and float32 on the CPU; ``bf16`` works on both).
"""
from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from classifier_kd.config import RESUMABLE_KEYS, RunSetupError, TrainConfig, check_config
from classifier_kd.evaluation import evaluate, topk_correct
from classifier_kd.models.checkpoint import save_classifier
from classifier_kd.optimizer import build_optimizer, learning_rate
from kd_core.runtime.checkpoint import CheckpointError
from kd_core.runtime.compiling import CompileClock, compile_modules
from kd_core.runtime.distributed import DistributedContext, all_reduce_mean, barrier, init_distributed
from kd_core.runtime.finite import (DIVERGED_EXIT_CODE, TrainingDiverged, divergence_message, first_divergence,
                                   first_non_finite, format_terms, run_divergence)
from kd_core.runtime.provenance import hardware_summary
from kd_core.runtime.run import Run
from kd_core.runtime.signals import RunInterrupted, interrupted_message
from kd_core.runtime.io import write_npy
from kd_core.runtime.precision import Precision, slow_precision_warning
from kd_core.runtime.progress import Progress, format_duration
from kd_core.runtime.seed import (SeededBatchSampler, SeededItems, capture_rng_state, restore_rng_state,
                                  seed_everything)

__all__ = [
    "TrainingDiverged",
    "fit",
]

_LAST_KEYS = ("target", "optimizer", "scaler", "epoch", "best_top1", "best_epoch", "rng", "wall_time")


def is_loss_term(name: str) -> bool:
    """Whether a metrics.jsonl name is a training loss term that ``divergence_threshold`` watches."""
    return name == "train/loss" or name.startswith("train/loss_")


def _batch_mixer(config: TrainConfig):
    """torchvision's MixUp / CutMix on a batch (one of them per batch when both are on), or None."""
    if config.mixup <= 0 and config.cutmix <= 0:
        return None
    from torchvision.transforms import v2

    mixers = []
    if config.mixup > 0:
        mixers.append(v2.MixUp(alpha=config.mixup, num_classes=config.num_classes))
    if config.cutmix > 0:
        mixers.append(v2.CutMix(alpha=config.cutmix, num_classes=config.num_classes))
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def command_line(world_size: int = 1) -> str:
    """The command that started this process, as a researcher would type it again.

    ``classifier-kd ...`` for the console script; under torchrun (``-m classifier_kd.cli``, where argv[0] is
    the module's path) ``torchrun --nproc_per_node N -m classifier_kd.cli ...``.
    """
    program = Path(sys.argv[0])
    args = " ".join(sys.argv[1:])
    if program.name == "cli.py" and program.parent.name == "classifier_kd":
        launcher = f"torchrun --nproc_per_node {world_size} " if world_size > 1 else "python "
        return f"{launcher}-m classifier_kd.cli {args}".rstrip()
    return f"{program.name} {args}".rstrip()


def _divergence_message(target: nn.Module, train_metrics: dict[str, float], epoch: int, last: Path | None) -> str:
    """One line: the epoch, every term, the likely cause (student or teacher) and the checkpoint that is good."""
    terms = {name[len("train/"):]: value for name, value in train_metrics.items() if name != "train/top1"}
    teacher = getattr(target, "teacher", None)
    bad_teacher = first_non_finite(teacher) if teacher is not None else None
    distill_bad = [name for name, value in terms.items() if name.startswith("loss_") and name != "loss_ce"
                   and not math.isfinite(value)]
    if bad_teacher is not None:
        cause = f"the teacher's weights are not finite ({bad_teacher}); check --teacher-ckpt"
    elif distill_bad and math.isfinite(terms.get("loss_ce", math.nan)):
        cause = (f"the distillation term(s) {', '.join(distill_bad)} are not finite while cross-entropy is: lower "
                 f"their weight or --lr, or check the teacher's outputs")
    else:
        cause = "lower --lr (or the loss weights)"
    where = (f"{last} holds epoch {epoch - 1}" if last is not None and last.is_file()
             else "no checkpoint was written (the run diverged in its first epoch)")
    return f"the training loss diverged in epoch {epoch} ({format_terms(terms)}): {cause}; {where}"


# --------------------------------------------------------------------------------------------------------
# The loop


def fit(
    target: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    config: TrainConfig,
    *,
    input_spec: dict,
    ctx: DistributedContext | None = None,
) -> dict[str, Any]:
    """Train ``target`` (see the module docstring) on ``train_set``, evaluate on ``test_set`` every epoch.

    Returns the run's result (also written to ``result.json``). Raises
    :class:`~classifier_kd.config.RunSetupError` (:func:`~classifier_kd.config.check_config`) -- before
    writing anything -- for a run that cannot start: no full batch per epoch, a run directory created
    with other options or in use by another process (:class:`~kd_core.runtime.lock.RunLock`), an
    unreadable ``last.pt``.
    """
    ctx = ctx if ctx is not None else init_distributed(config.device)
    precision, steps_per_epoch = check_config(target, train_set, config, ctx)
    run = Run(config.out, config.to_dict(), ignore_keys=RESUMABLE_KEYS, ctx=ctx, logger_name="classifier_kd.train")
    try:
        run.open(required_keys=_LAST_KEYS)  # lock, options vs config.json, last.pt read and verified
    except CheckpointError as err:
        raise RunSetupError(f"cannot resume: {err}") from err
    except ValueError as err:  # RunLocked, RunConfigMismatch, OutputNotWritable, a finished run without last.pt
        raise RunSetupError(str(err)) from err
    with run:  # SIGTERM / SIGINT: checkpoint after the current step, then stop; the lock is released however it ends
        return _fit(target, train_set, test_set, config, input_spec=input_spec, ctx=ctx, run=run, precision=precision,
                    steps_per_epoch=steps_per_epoch)


def _resumed_epoch_loader(loader: DataLoader, sampler: DistributedSampler, done_steps: int) -> DataLoader:
    """The rest of an epoch that a signal interrupted after ``done_steps`` steps: the same order, minus those.

    Its own ``generator``: creating a DataLoader iterator draws a seed from it, and the global RNG, restored
    from the checkpoint, must go on exactly where the interrupted epoch left it.
    """
    rest = list(sampler)[done_steps * loader.batch_size:]
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=rest, drop_last=True,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory, generator=torch.Generator())


def _fit(target: nn.Module, train_set: Dataset, test_set: Dataset, config: TrainConfig, *, input_spec: dict,
         ctx: DistributedContext, run: Run, precision: Precision, steps_per_epoch: int) -> dict[str, Any]:
    device, is_main = ctx.device, ctx.is_main
    run_dir, stops, state = run.out, run.stops, run.last

    # ---- 1. Run directory (config.json, log.txt, metrics.jsonl cut back to last.pt), subset indices.
    log = run.start(state["epoch"] if state is not None else 0)
    metrics = run.metrics
    if is_main and isinstance(train_set, Subset):
        write_npy(run_dir / "subset_indices.npy", np.asarray(train_set.indices, dtype=np.int64))
    # Model init happens before fit() (seeded by the caller); this seeds augmentation and dropout, per rank.
    seed_everything(config.seed + ctx.rank)

    # ---- 2. Optimiser and schedule, restored from last.pt on resume.
    target.to(device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    if config.channels_last:
        target.to(memory_format=torch.channels_last)
    if config.compile:  # in place: target.model stays callable eagerly (evaluation) and the keys stay plain
        compile_modules(target)
    parameters = [p for p in target.parameters() if p.requires_grad]
    optimizer = build_optimizer(target, config)
    mixer = _batch_mixer(config)
    scaler = precision.grad_scaler()
    start_epoch, best_top1, best_epoch, wall_before = 0, -math.inf, 0, 0.0
    start_step, resumed_sums = 0, {}
    if state is not None:
        target.load_state_dict(state["target"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_top1, best_epoch = state["epoch"], state["best_top1"], state["best_epoch"]
        # a checkpoint saved at a signal, mid-epoch: the steps of epoch start_epoch + 1 done and their loss sums
        start_step, resumed_sums = int(state.get("step", 0)), dict(state.get("epoch_sums", {}))
        wall_before = state["wall_time"]
        restore_rng_state(state["rng"])
        log.info("resuming from %s at epoch %d (best top-1 %.2f at epoch %d)",
                 run.last_path, start_epoch, best_top1, best_epoch)
    trainable = sum(p.numel() for p in parameters)
    warning = slow_precision_warning(precision)
    if warning:
        log.warning(warning)
    log.info("%s on %s: %d trainable parameters, %d training images, %d steps/epoch, device %s x%d%s",
             config.model, config.dataset, trainable, len(train_set), steps_per_epoch, device,
             ctx.world_size, f", {precision.name} autocast" if precision.dtype is not None else "")
    extra_parameters = target.extra_parameters()
    description = target.describe()
    if description:  # a distiller: which losses, and what they add to the student
        log.info("distillation: %s; %d extra trainable parameters (projectors, heads, temperatures) on top of "
                 "the student's %d", description, extra_parameters, trainable - extra_parameters)
    log.info("%s lr %g, weight decay %g%s, %s schedule%s%s", config.optimizer, config.lr, config.weight_decay,
             " (not on 1-D parameters)" if config.no_decay_1d else "", config.schedule,
             f", {config.warmup_epochs:g} warm-up epochs" if config.warmup_epochs else "",
             f", mixup {config.mixup:g} / cutmix {config.cutmix:g}" if mixer is not None else "")
    if config.schedule == "step" and config.milestones and config.milestones[0] >= config.epochs:
        log.warning("no lr milestone (%s) falls within %d epochs: the lr stays %g; pass --milestones",
                    config.milestones, config.epochs, config.lr)
    network = target
    if ctx.distributed:
        network = nn.parallel.DistributedDataParallel(
            target, device_ids=[device.index] if device.type == "cuda" else None)

    # ---- 3. Data. The sampler's order depends only on (seed, epoch, rank), so a resumed epoch sees
    # exactly the batches an uninterrupted run would have.
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    if config.workers > 0:
        # Worker processes: each item's augmentation is seeded from (seed, rank, epoch, position in the epoch)
        # (kd_core.runtime.seed.SeededItems), so a resumed run draws what an uninterrupted one does. The
        # loader's own generator keeps its worker-seed draws off the global RNG (mixup, dropout).
        train_loader = DataLoader(SeededItems(train_set),
                                  batch_sampler=SeededBatchSampler(sampler, config.batch_size, config.seed, ctx.rank),
                                  num_workers=config.workers, pin_memory=device.type == "cuda", persistent_workers=True,
                                  generator=torch.Generator().manual_seed(config.seed))
    else:
        train_loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                                  num_workers=0, pin_memory=device.type == "cuda")

    # ---- 4. Epochs: train, evaluate, log, checkpoint.
    progress = Progress(total=config.epochs * steps_per_epoch, start=start_epoch * steps_per_epoch + start_step,
                        every=config.log_every, bar=None if is_main else False)
    session_start = time.monotonic()
    compile_clock = CompileClock() if config.compile else None
    compile_time = float(state.get("compile_time", 0.0)) if state is not None else 0.0
    test_metrics: dict[str, float] = {}
    warned_divergence = False

    def last_state(epochs_done: int, **position) -> dict:
        """What last.pt holds: everything to resume after ``epochs_done`` epochs (plus ``position`` inside the
        next one, when a signal stopped the run mid-epoch)."""
        return {"target": target.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epochs_done, **position, "best_top1": best_top1, "best_epoch": best_epoch,
                "rng": capture_rng_state(), "wall_time": wall_before + time.monotonic() - session_start,
                **({"compile_time": compile_time} if config.compile else {})}

    for epoch in range(start_epoch, config.epochs):
        epoch_start = time.monotonic()
        sampler.set_epoch(epoch)
        target.set_epoch(epoch + 1)  # 1-based, for warm-ups such as DKD's (mdistiller counts from 1)
        target.train()
        epoch_lr = learning_rate(config, epoch)  # logged: the lr at the start of the epoch
        first_step = start_step if epoch == start_epoch else 0
        sums: dict[str, float] = defaultdict(float, resumed_sums if first_step else {})
        loader = train_loader
        if first_step and isinstance(train_loader.batch_sampler, SeededBatchSampler):
            train_loader.batch_sampler.skip_batches = first_step  # the rest of the interrupted epoch
        elif first_step:
            loader = _resumed_epoch_loader(train_loader, sampler, first_step)
        for step, (images, labels) in enumerate(loader, start=first_step):
            if step >= steps_per_epoch:
                break
            lr = learning_rate(config, epoch + step / steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            images = images.contiguous(memory_format=memory_format)
            hard_labels = labels
            if mixer is not None:
                images, labels = mixer(images, labels)  # labels become class probabilities
            with precision.autocast():
                logits, losses = network(images, labels)
                loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(parameters, config.clip_grad)
            scaler.step(optimizer)
            scaler.update()

            sums["loss"] += loss.item()
            for name, value in losses.items():
                sums[name] += value.item()
            sums["top1"] += 100.0 * topk_correct(logits.detach().float(), hard_labels, (1,))[0] / len(hard_labels)
            if compile_clock is not None:  # compiled on the first steps (and new shapes): not step time
                spent = compile_clock.lap()
                if spent:
                    compile_time += spent
                    progress.exclude(spent, "compile")
            if is_main:
                progress.update(epoch * steps_per_epoch + step + 1, loss=sums["loss"] / (step + 1), lr=lr)
            signum = stops.should_stop(device)
            if signum:  # SIGTERM / SIGINT: save this point of the epoch (rank 0), then stop every rank
                if is_main:
                    run.save_last(last_state(epoch, step=step + 1, epoch_sums=dict(sums)))
                barrier()
                message = interrupted_message(signum,
                                              f"in epoch {epoch + 1} after step {step + 1} of {steps_per_epoch}",
                                              run.last_path)
                log.warning(message)
                progress.close()
                raise RunInterrupted(message, signum)

        train_metrics = all_reduce_mean({f"train/{name}": total / steps_per_epoch for name, total in sums.items()})
        if not all(math.isfinite(value) for value in train_metrics.values()):  # the same answer on every rank
            message = _divergence_message(target, train_metrics, epoch + 1, run.last_path if epoch > 0 else None)
            log.error(message)
            raise TrainingDiverged(message)
        test_metrics = evaluate(target.model, test_set, batch_size=max(config.batch_size, 256), device=device,
                                workers=config.workers, precision=precision, ctx=ctx)
        is_best = test_metrics["top1"] > best_top1
        if is_best:
            best_top1, best_epoch = test_metrics["top1"], epoch + 1
        epoch_time = time.monotonic() - epoch_start
        log.info("epoch %d/%d | loss %.4f | train top-1 %.2f | test top-1 %.2f top-5 %.2f%s | lr %g | %s",
                 epoch + 1, config.epochs, train_metrics["train/loss"], train_metrics["train/top1"],
                 test_metrics["top1"], test_metrics["top5"], " (best)" if is_best else "", epoch_lr,
                 format_duration(epoch_time))
        if is_main:
            metrics.log(epoch + 1, {"lr": epoch_lr, **train_metrics, "test/top1": test_metrics["top1"],
                                    "test/top5": test_metrics["top5"], "test/loss": test_metrics["loss"],
                                    "epoch_time_s": epoch_time})
            passed = first_divergence([{"step": epoch + 1, **train_metrics}], config.divergence_threshold,
                                      is_loss_term, "epoch")
            if passed is not None and not warned_divergence:  # said once a session, when it happens; the run goes on
                log.warning("%s; the run goes on to epoch %d, then exits with code %d",
                            divergence_message(passed, "epoch"), config.epochs, DIVERGED_EXIT_CODE)
                warned_divergence = True
            if is_best:
                save_classifier(run.best_path, target.model, config.model, config.num_classes,
                                input_spec=input_spec, dataset=config.dataset, epoch=epoch + 1,
                                top1=test_metrics["top1"], top5=test_metrics["top5"])
            # last.pt after best.pt: a crash in between redoes this epoch instead of losing a best.
            run.save_last(last_state(epoch + 1))
        barrier()
    progress.close()

    # ---- 5. Result. A resume of a finished run only re-reports it (final accuracy re-evaluated).
    if not test_metrics:
        test_metrics = evaluate(target.model, test_set, batch_size=max(config.batch_size, 256), device=device,
                                workers=config.workers, precision=precision, ctx=ctx)
    wall_time = wall_before + time.monotonic() - session_start
    result = {
        "model": config.model,
        "dataset": config.dataset,
        "best_top1": best_top1,
        "best_epoch": best_epoch,
        "final_top1": test_metrics["top1"],
        "final_top5": test_metrics["top5"],
        "epochs": max(config.epochs, start_epoch),
        "trainable_parameters": trainable,
        "extra_parameters": extra_parameters,
        "wall_time_s": round(wall_time, 1),
        "wall_time": format_duration(wall_time),
        **({"compile_s": round(compile_time, 1)} if config.compile else {}),  # part of wall_time_s
        "best_checkpoint": str(run.best_path),
        "command": command_line(ctx.world_size),
        "hardware": hardware_summary(device),
        "device": str(device),
        "world_size": ctx.world_size,
        "torch_version": torch.__version__,
        "config": config.to_dict(),
    }
    # the whole run's metrics.jsonl (cut back to last.pt on resume): what an uninterrupted run would say
    diverged = run_divergence(run_dir, config.divergence_threshold, is_loss_term, "epoch") if is_main else None
    if diverged is not None:
        result["diverged"] = diverged
        log.warning("%s; recorded in result.json (\"diverged\"), exit code %d", divergence_message(diverged, "epoch"),
                    DIVERGED_EXIT_CODE)
    run.finish(result)
    if is_main:
        log.info("done: best top-1 %.2f (epoch %d), final top-1 %.2f, %s", best_top1, best_epoch,
                 test_metrics["top1"], format_duration(wall_time))
    barrier()
    return result
