"""Classifier checkpoints: our format, and loading the CIFAR teachers that researchers already have.

Our format (``FORMAT = "classifier_kd/1"``) is one ``torch.save``'d dict::

    {"model": state_dict, "arch": "resnet32x4", "num_classes": 100, "feature_dim": 256,
     "format": "classifier_kd/1", ...extra}   # extra: e.g. epoch, accuracy, dataset

:func:`load_classifier` also reads the layout of RepDistiller / mdistiller teachers
(``<name>_vanilla/ckpt_epoch_240.pth``: ``{"model": state_dict, "epoch": ..., "accuracy": ...,
"optimizer": ...}``) and bare state_dicts; those carry no architecture name, so ``arch`` is required
and the class count is read off the final layer. Files are read with the safe (``weights_only``)
unpickler of :mod:`kd_core.runtime.checkpoint`; ``trusted=True`` lifts that for files you trust.

Input spec. What the model expects as input is stored under the extra ``input_spec``
(``{"size": 32, "mean": [...], "std": [...]}``: images in [0, 1] resized to ``size`` x ``size``, then
``(x - mean) / std``), written by the trainers from ``classifier_kd.data``; :func:`read_input_spec`
reads it back, with the CIFAR-100 normalisation as the answer for files that have none.
:func:`load_classifier` builds models whose construction depends on the input size (ViTs) for the
recorded ``size``, so e.g. a ViT trained on 32 px images reloads.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd_core.runtime.checkpoint import load_checkpoint
from kd_core.runtime.checkpoint_save import atomic_save

FORMAT = "classifier_kd/1"
_RESERVED_KEYS = ("model", "arch", "num_classes", "feature_dim", "format")
_SHOWN_KEYS = 3  # how many offending keys an error message names

# The input of files without an ``input_spec``: RepDistiller / mdistiller / CRD teachers are CIFAR-100
# models at 32x32 normalised with these values (their ``dataset/cifar100.py``; the same numbers as
# ``classifier_kd.dataset_specs.NORMALIZATION["cifar100"]``, which a test checks).
CIFAR100_INPUT_SPEC = {"size": 32, "mean": (0.5071, 0.4867, 0.4408), "std": (0.2675, 0.2565, 0.2761)}


def save_classifier(path: str | os.PathLike, model: nn.Module, arch: str, num_classes: int, **extra: Any) -> None:
    """Write ``model`` in our format, atomically (a crash never leaves a truncated file at ``path``).

    ``extra`` entries (epoch, accuracy, ...) are stored next to the weights; keep them to plain Python
    values, tensors and NumPy scalars so the file stays loadable with the safe unpickler.
    Pass ``input_spec=`` (see the module docstring) so loaders know the model's input; it is checked
    here and stored as plain lists. DataParallel / DDP wrappers are unwrapped; tensors are saved on the CPU.
    """
    clashes = [key for key in _RESERVED_KEYS if key in extra]
    if clashes:
        raise ValueError(f"extra keys {clashes} clash with the checkpoint's own fields {list(_RESERVED_KEYS)}")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    model_classes = getattr(model, "num_classes", num_classes)
    if model_classes != num_classes:
        raise ValueError(f"num_classes={num_classes} but the {arch} model has {model_classes} classes")
    if "input_spec" in extra:
        spec = _check_input_spec(extra["input_spec"], f"input_spec for {path}")
        extra["input_spec"] = {"size": spec["size"], "mean": list(spec["mean"]), "std": list(spec["std"])}
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    atomic_save({"model": state, "arch": arch, "num_classes": int(num_classes),
                 "feature_dim": int(model.feature_dim), "format": FORMAT, **extra}, path)


def load_classifier(
    path: str | os.PathLike,
    arch: str | None = None,
    num_classes: int | None = None,
    map_location: str | torch.device = "cpu",
    *,
    trusted: bool = False,
    image_size: int | None = None,
) -> nn.Module:
    """Build the classifier stored at ``path`` and load its weights with ``strict=True``.

    Reads our format (``arch`` and ``num_classes`` come from the file; if given, they must agree), the
    RepDistiller/mdistiller ``{"model": state_dict, ...}`` layout, or a bare state_dict (both need
    ``arch``; ``num_classes`` defaults to the final layer's output size). A ``module.`` prefix
    (DataParallel) is stripped. The model is returned as built (train mode); call ``.eval()`` as needed.

    ``image_size`` is passed to :func:`~classifier_kd.models.create_model` (it matters for ViT-like models
    only); by default our files' recorded ``input_spec["size"]``, else the model's native size.

    Raises FileNotFoundError for a missing file and a one-line ValueError when the file does not fit
    the architecture (naming the first few missing / unexpected / mis-shaped keys).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    checkpoint = load_checkpoint(path, map_location=map_location, trusted=trusted)

    if "format" in checkpoint:  # ours
        if checkpoint["format"] != FORMAT:
            raise ValueError(f"checkpoint {path} has format {checkpoint['format']!r}; this version reads {FORMAT!r}")
        if arch is not None and arch != checkpoint["arch"]:
            raise ValueError(f"checkpoint {path} holds arch {checkpoint['arch']!r}, but arch {arch!r} was requested")
        if num_classes is not None and num_classes != checkpoint["num_classes"]:
            raise ValueError(f"checkpoint {path} has {checkpoint['num_classes']} classes, "
                             f"but num_classes={num_classes} was requested")
        arch, num_classes, state = checkpoint["arch"], checkpoint["num_classes"], checkpoint["model"]
        if image_size is None and "input_spec" in checkpoint:
            image_size = _check_input_spec(checkpoint["input_spec"], f"checkpoint {path}: input_spec")["size"]
    else:
        if isinstance(checkpoint.get("model"), Mapping):  # RepDistiller / mdistiller teachers
            state = checkpoint["model"]
        elif checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
            state = checkpoint  # a bare state_dict
        else:
            keys = ", ".join(sorted(map(str, checkpoint))[:8])
            raise ValueError(f"checkpoint {path} is neither our format, a {{'model': state_dict}} dict nor a "
                             f"state_dict (top-level keys: {keys})")
        if arch is None:
            raise ValueError(f"checkpoint {path} does not record its architecture; pass arch=NAME")

    state = _strip_prefix(dict(state), "module.")
    if num_classes is None:
        num_classes = _infer_num_classes(arch, state, path)
    from classifier_kd.models import create_model  # here, not at the top: that package imports this module

    model = create_model(arch, num_classes, image_size=image_size)
    _fill_bn_counters(model, state)
    problem = _describe_mismatch(model.state_dict(), state)
    if problem:
        if getattr(model, "image_size", None) is not None and "shape mismatch" in problem:
            problem += (f" (built for {model.image_size} px inputs; pass image_size= the size it was trained at "
                        f"if it differs)")
        raise ValueError(f"checkpoint {path} does not fit {arch} with {num_classes} classes: {problem}")
    model.load_state_dict(state, strict=True)
    if "feature_dim" in checkpoint and checkpoint["feature_dim"] != model.feature_dim:
        raise ValueError(f"checkpoint {path} records feature_dim {checkpoint['feature_dim']}, "
                         f"but {arch} has {model.feature_dim}")
    return model


def read_input_spec(path: str | os.PathLike, *, trusted: bool = False) -> dict:
    """``{"size": int, "mean": tuple, "std": tuple}``: the input the classifier stored at ``path`` expects.

    Our files record it (the ``input_spec`` extra). Files without one -- RepDistiller / mdistiller / CRD
    teachers, bare state_dicts, and ours written before the spec was stored -- get
    :data:`CIFAR100_INPUT_SPEC` (CIFAR-100 normalisation at 32x32): every teacher of that zoo is a
    CIFAR-100 model. Raises FileNotFoundError for a missing file, ``CheckpointError`` (a ValueError) for
    an unreadable one and ValueError for a malformed spec.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    checkpoint = load_checkpoint(path, trusted=trusted)
    if "input_spec" not in checkpoint:
        return dict(CIFAR100_INPUT_SPEC)
    return _check_input_spec(checkpoint["input_spec"], f"checkpoint {path}: input_spec")


def _check_input_spec(spec: Any, what: str) -> dict:
    """``spec`` as ``{"size": int, "mean": tuple, "std": tuple}``, or a one-line ValueError saying what is wrong."""
    if not isinstance(spec, Mapping) or not {"size", "mean", "std"} <= set(spec):
        raise ValueError(f"{what} must be a dict with keys size, mean, std; got {spec!r}")
    try:
        size = int(spec["size"])
        mean = tuple(float(v) for v in spec["mean"])
        std = tuple(float(v) for v in spec["std"])
    except (TypeError, ValueError):
        raise ValueError(f"{what} has non-numeric entries: {dict(spec)!r}") from None
    if size < 1 or size != spec["size"]:
        raise ValueError(f"{what}: size must be a positive integer, got {spec['size']!r}")
    if not mean or len(mean) != len(std) or any(s <= 0 for s in std):
        raise ValueError(f"{what}: mean and std need one entry per channel and positive stds, got {dict(spec)!r}")
    return {"size": size, "mean": mean, "std": std}


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return state


def _infer_num_classes(arch: str, state: Mapping[str, torch.Tensor], path: Path) -> int:
    """Read the class count off the final layer's weight (``head_weight_key`` of the model class)."""
    from classifier_kd.models import create_model

    try:
        with torch.device("meta"):  # builds the module structure without allocating or initialising weights
            probe = create_model(arch, 1)
    except NotImplementedError:  # builders that derive the structure from tensor values (torchvision's RegNet)
        probe = create_model(arch, 1)
    key = getattr(probe, "head_weight_key", None)
    if key is None:
        raise ValueError(f"cannot infer num_classes for {arch}; pass num_classes")
    if key not in state:
        raise ValueError(f"checkpoint {path} has no {key!r} (the final layer of {arch}); "
                         f"is it a {arch} checkpoint? First keys: {', '.join(list(state)[:_SHOWN_KEYS])}")
    return int(state[key].shape[0])


def _fill_bn_counters(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Checkpoints from PyTorch < 0.4.1 lack BatchNorm's ``num_batches_tracked``; it only matters when
    BN momentum is None, so a missing counter is filled with the fresh model's value (0)."""
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value


def _describe_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """'' if ``state`` fits ``expected`` exactly, else a one-line account of the first differences."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mis_shaped = [f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)} expected"
                  for key in expected if key in state and state[key].shape != expected[key].shape]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mis_shaped)):
        if items:
            more = f" (+{len(items) - _SHOWN_KEYS} more)" if len(items) > _SHOWN_KEYS else ""
            parts.append(f"{label}: {', '.join(items[:_SHOWN_KEYS])}{more}")
    return "; ".join(parts)
