"""The GAN checkpoint format and loading the EMA generator from a run directory (for evaluate and sample)."""
from __future__ import annotations

from pathlib import Path

from gan_kd.models.biggan import Generator
from kd_core.runtime.checkpoint import CheckpointError, load_checkpoint
from kd_core.runtime.finite import first_non_finite

CHECKPOINT_FORMAT = "gan_kd/1"
CHECKPOINTS = ("best", "last")


def checkpoint_path(run_dir: str | Path, which: str) -> Path:
    if which not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {which!r}; allowed: {', '.join(CHECKPOINTS)}")
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def load_ema_generator(run_dir: str | Path, which: str = "best") -> tuple[Generator, dict, int]:
    """``(generator_ema, config, iteration)`` from ``RUN_DIR/checkpoints/{best,last}.pt``.

    Raises :class:`CheckpointError` (one line) when the file is missing, not ours, or does not fit.
    """
    path = checkpoint_path(run_dir, which)
    # "n_classes" keeps its old name (the class count, ``num_classes`` in the code): the checkpoint format is fixed.
    state = load_checkpoint(path, required_keys=("format", "config", "n_classes", "generator_ema", "iteration"))
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    config = state["config"]
    generator = Generator(num_classes=state["n_classes"], g_ch=config["g_ch"], dim_z=config["dim_z"],
                          spectral_norm=config["spectral_norm"])
    try:
        generator.load_state_dict(state["generator_ema"])
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not fit a BigGAN generator: {str(error).splitlines()[0]}") from error
    bad = first_non_finite(generator)
    if bad is not None:  # a diverged generator would be scored as if it were a model
        raise CheckpointError(f"checkpoint {path} holds a generator with non-finite weights ({bad}); "
                              f"it diverged and cannot be evaluated or sampled")
    return generator, config, int(state["iteration"])
