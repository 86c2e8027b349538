"""What both trainers need around the training loop: seeding, checkpoints, torchrun, the run directory, metrics."""
from kd_core.runtime.checkpoint import CheckpointError, load_checkpoint
from kd_core.runtime.checkpoint_save import atomic_save
from kd_core.runtime.distributed import (
    DistributedContext,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    is_main_process,
    resolve_device,
)
from kd_core.runtime.lock import RunLock, RunLocked
from kd_core.runtime.logs import get_logger
from kd_core.runtime.metrics import MetricsLogger, read_metrics
from kd_core.runtime.progress import Progress
from kd_core.runtime.rundir import RunConfigMismatch, prepare_run_dir, validate_run_dir
from kd_core.runtime.seed import capture_rng_state, restore_rng_state, seed_everything, subset_indices

__all__ = [
    "CheckpointError",
    "DistributedContext",
    "MetricsLogger",
    "Progress",
    "RunConfigMismatch",
    "RunLock",
    "RunLocked",
    "all_reduce_mean",
    "atomic_save",
    "barrier",
    "broadcast_object",
    "capture_rng_state",
    "cleanup_distributed",
    "get_logger",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "prepare_run_dir",
    "read_metrics",
    "resolve_device",
    "restore_rng_state",
    "seed_everything",
    "subset_indices",
    "validate_run_dir",
]
