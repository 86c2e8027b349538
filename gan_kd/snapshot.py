"""The GAN checkpoint format, loading the EMA generator (for evaluate and sample), and the small generator file.

A run's ``checkpoints/{best,last}.pt`` hold everything needed to resume; what a study commits is only the
**best EMA generator** as a small ``.safetensors`` file (:func:`export_generator`): the generator's tensors,
with the run's config, the iteration and the class count as JSON metadata. Safetensors holds no code, so
such a file can be shared and re-scored (``gan-kd evaluate FILE.safetensors``) without trusting its author.
"""
from __future__ import annotations

import json
from pathlib import Path

from gan_kd.models.biggan import Generator
from kd_core.runtime.checkpoint import CheckpointError, load_checkpoint
from kd_core.runtime.finite import first_non_finite

CHECKPOINT_FORMAT = "gan_kd/1"
GENERATOR_FORMAT = "gan_kd/generator-1"
CHECKPOINTS = ("best", "last")
GENERATOR_FILE = "generator_ema.safetensors"


def checkpoint_path(run_dir: str | Path, which: str) -> Path:
    if which not in CHECKPOINTS:
        raise ValueError(f"unknown checkpoint {which!r}; allowed: {', '.join(CHECKPOINTS)}")
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def is_generator_file(source: str | Path) -> bool:
    return Path(source).suffix.lower() == ".safetensors"


def _build(state: dict, num_classes: int, config: dict, where: Path) -> Generator:
    generator = Generator(num_classes=num_classes, g_ch=config["g_ch"], dim_z=config["dim_z"],
                          spectral_norm=config["spectral_norm"])
    try:
        generator.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{where} does not fit a BigGAN generator: {str(error).splitlines()[0]}") from error
    bad = first_non_finite(generator)
    if bad is not None:  # a diverged generator would be scored as if it were a model
        raise CheckpointError(f"{where} holds a generator with non-finite weights ({bad}); "
                              f"it diverged and cannot be evaluated or sampled")
    return generator


def load_ema_generator(source: str | Path, which: str = "best") -> tuple[Generator, dict, int]:
    """``(generator_ema, config, iteration)`` from ``RUN_DIR/checkpoints/{best,last}.pt``, or from a generator
    file written by :func:`export_generator` (``source`` ending in ``.safetensors``; ``which`` is then unused).

    Raises :class:`CheckpointError` (one line) when the file is missing, not ours, or does not fit.
    """
    if is_generator_file(source):
        return load_generator_file(source)
    path = checkpoint_path(source, which)
    # "n_classes" keeps its old name (the class count, ``num_classes`` in the code): the checkpoint format is fixed.
    state = load_checkpoint(path, required_keys=("format", "config", "n_classes", "generator_ema", "iteration"))
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {state['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    generator = _build(state["generator_ema"], state["n_classes"], state["config"], Path(f"checkpoint {path}"))
    return generator, state["config"], int(state["iteration"])


def export_generator(run_dir: str | Path, out: str | Path, which: str = "best") -> Path:
    """Write the EMA generator of ``RUN_DIR/checkpoints/<which>.pt`` as a small safetensors file (atomically)."""
    generator, config, iteration = load_ema_generator(run_dir, which)
    return save_generator_file(generator, config, iteration, out, which)


def save_generator_file(generator: Generator, config: dict, iteration: int, out: str | Path, which: str = "best") -> Path:
    """``generator``'s tensors with ``config`` (a run's config.json), the iteration and the class count as metadata,
    as :func:`load_generator_file` reads them (atomically)."""
    from safetensors.torch import save

    from kd_core.runtime.io import write_bytes

    metadata = {"format": GENERATOR_FORMAT, "config": json.dumps(config, sort_keys=True), "iteration": str(iteration),
                "num_classes": str(generator.num_classes), "checkpoint": which}
    tensors = {name: value.detach().cpu().contiguous() for name, value in generator.state_dict().items()}
    return write_bytes(out, save(tensors, metadata=metadata))


def load_generator_file(path: str | Path) -> tuple[Generator, dict, int]:
    """``(generator_ema, config, iteration)`` from a file of :func:`export_generator` (safetensors: no code runs)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"generator file {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # SafetensorError, OSError: not a usable file
        raise CheckpointError(f"cannot read generator file {path}: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from error
    if metadata.get("format") != GENERATOR_FORMAT:
        raise CheckpointError(f"generator file {path} has format {metadata.get('format')!r}, expected {GENERATOR_FORMAT!r} "
                              f"(write it with gan-kd export)")
    try:
        config, iteration, num_classes = json.loads(metadata["config"]), int(metadata["iteration"]), int(metadata["num_classes"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"generator file {path} has unreadable metadata ({error})") from error
    return _build(state, num_classes, config, Path(f"generator file {path}")), config, iteration
