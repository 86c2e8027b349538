"""What a GAN run's checkpoints hold: the Trainer's state written to ``last.pt`` / ``best.pt`` and read back.

``last.pt`` (:func:`training_state`) holds everything a resume needs to continue bit for bit: the models, the EMA
generator, both optimisers, the grad scaler, LeCam's averages, every rank's RNG state, the partial metrics window
and the training seconds so far; :func:`restore_training_state` puts it back into a freshly built
:class:`gan_kd.train.Trainer`. ``best.pt`` (:func:`best_state`) holds only the EMA generator and its metrics.
The format (:data:`gan_kd.snapshot.CHECKPOINT_FORMAT`) is fixed: keys are added, never renamed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch.distributed as dist

from gan_kd.legacy import rename_legacy_window
from gan_kd.snapshot import CHECKPOINT_FORMAT
from kd_core.runtime.checkpoint import CheckpointError
from kd_core.runtime.distributed import DistributedContext, all_reduce_mean, unwrap
from kd_core.runtime.seed import capture_rng_state

if TYPE_CHECKING:
    from gan_kd.train import Trainer

# What a last.pt must hold to be resumed from.
LAST_KEYS = ("format", "iteration", "generator", "critic", "generator_ema", "opt_g", "opt_d", "rng")


def gather_rng_states(context: DistributedContext) -> list:
    state = capture_rng_state()
    if not context.distributed:
        return [state]
    states = [None] * context.world_size
    dist.all_gather_object(states, state)
    return states


def training_state(trainer: "Trainer", iteration: int) -> dict:
    """``last.pt`` of ``trainer`` at ``iteration`` (every rank calls it: the RNG states are all-gathered)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "iteration": iteration,
        "config": trainer.config.to_dict(),
        "n_classes": trainer.num_classes,  # the key keeps its old name: the checkpoint format is fixed
        "generator": unwrap(trainer.generator).state_dict(),
        "critic": unwrap(trainer.critic).state_dict(),
        "generator_ema": trainer.generator_ema.state_dict(),
        "opt_g": trainer.opt_g.state_dict(),
        "opt_d": trainer.opt_d.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "lecam": trainer.lecam.state_dict(),
        "best": trainer.best,
        "skipped_nonfinite": trainer.skipped_nonfinite,
        "rng": gather_rng_states(trainer.context),
        # rows of the current metrics window (their mean over ranks, so a resume under DDP logs the same means)
        "log_window": {"sums": all_reduce_mean(dict(trainer.window_sums)), "count": trainer.window_count},
        # training seconds so far, over every session of the run (result.json's wall_time_s)
        "wall_time": trainer.wall_before + (time.monotonic() - trainer.session_start if trainer.session_start else 0.0),
        # only with --compile, so that an eager run's checkpoints keep their keys
        **({"compile_time": trainer.compile_time} if trainer.config.compile else {}),
    }  # + metrics_offset, added by Run.save_last


def restore_training_state(trainer: "Trainer", state: dict, path: Path) -> None:
    """Load ``state`` (a ``last.pt`` read from ``path``) into ``trainer``, built from the same config."""
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    try:
        trainer.generator.load_state_dict(state["generator"])
        trainer.critic.load_state_dict(state["critic"])
        trainer.generator_ema.load_state_dict(state["generator_ema"])
        trainer.opt_g.load_state_dict(state["opt_g"])
        trainer.opt_d.load_state_dict(state["opt_d"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint {path} does not fit these models: {str(error).splitlines()[0]}") from error
    trainer.scaler.load_state_dict(state.get("scaler", {}))
    trainer.lecam.load_state_dict(state["lecam"])
    trainer.best = state.get("best", {})
    trainer.skipped_nonfinite = int(state.get("skipped_nonfinite", 0))
    trainer.start_iteration = trainer.saved_iteration = int(state["iteration"])
    trainer.wall_before = float(state.get("wall_time", 0.0))  # absent in checkpoints before it was saved
    trainer.compile_time = float(state.get("compile_time", 0.0))
    window = state.get("log_window") or {"sums": {}, "count": 0}  # absent in checkpoints before it was saved
    trainer.window_sums = rename_legacy_window(window["sums"], trainer.config.kd_weight)
    trainer.window_count = int(window["count"])
    states = state["rng"]
    trainer.rng_to_restore = states[trainer.context.rank] if trainer.context.rank < len(states) else None


def best_state(trainer: "Trainer", iteration: int, results: dict) -> dict:
    """``best.pt``: the EMA generator of ``trainer`` at ``iteration`` and its evaluation ``results``."""
    return {"format": CHECKPOINT_FORMAT, "iteration": iteration, "config": trainer.config.to_dict(),
            "n_classes": trainer.num_classes,  # the key keeps its old name: the checkpoint format is fixed
            "generator_ema": trainer.generator_ema.state_dict(), "metrics": results}
