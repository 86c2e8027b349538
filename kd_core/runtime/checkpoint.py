"""The project's one safe loader: every checkpoint and weight file a user passes is read here.

Loading is done with ``torch.load(weights_only=True)`` -- the restricted unpickler that cannot run
arbitrary code -- plus an allowlist of the NumPy and ``pathlib`` types our own checkpoints hold
(NumPy RNG state tuples, index arrays, NumPy scalars, paths). Optimizer states, tensors, Python RNG
state and plain containers need nothing extra. Files that need any other code to load are refused
(the CLIs accept no such files). Python callers can pass ``trusted=True`` to use the unrestricted
unpickler, which RUNS CODE FROM THE FILE: only for files whose source you trust (e.g. a pickled
``nn.Module``). :func:`load_weights_file` reads plain weight files (``.safetensors`` or a torch
state dict) with the same safe loader.

A dict checkpoint may hold only plain containers (dict, list, tuple), tensors, NumPy arrays and scalars,
str, bytes, int, float, bool, None and ``pathlib`` paths: what the allowlist accepts, and all that
:func:`~kd_core.runtime.checkpoint_save.atomic_save` (the writer) stores. A file with an integrity record
(:mod:`kd_core.runtime.checkpoint_integrity`) is checked against it, and :class:`CheckpointCorrupt` raised on a
mismatch, so bit rot or a tampered file is never silently resumed from; the record is removed from the returned
dict. Files without a record (external teachers, older runs) load as before. When a checkpoint is damaged,
the error says whether its :func:`previous_path` copy (kept by ``atomic_save(..., keep_previous=True)``) is
intact.

Every error raised here for a bad file is a :class:`CheckpointError` (a ``ValueError``) with a
one-line message naming the file.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kd_core.runtime.checkpoint_integrity import ALGORITHM, INTEGRITY_KEY, digest


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or lacks what the caller needs (one-line message)."""


class CheckpointCorrupt(CheckpointError):
    """A checkpoint whose content does not match the SHA-256 integrity record written with it."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where ``atomic_save(..., keep_previous=True)`` keeps the replaced file: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _checkpoint_safe_globals() -> list:
    """NumPy and pathlib types that ``weights_only`` loading must accept for our checkpoints.

    ``np.random.get_state()`` is a tuple holding a uint32 array; metrics may be NumPy scalars;
    subset indices are int64 arrays. Each dtype class is listed because NumPy >= 1.25 pickles
    arrays with their concrete dtype class (``numpy.dtypes.UInt32DType``, ...). Object arrays
    are left out. Pickles from NumPy 1.x name ``numpy.core.multiarray``, NumPy 2.x
    ``numpy._core.multiarray``; both spellings are accepted.
    """
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    safe: list = [np.ndarray, np.dtype, Path, type(Path())]
    for prefix in ("numpy.core.multiarray", "numpy._core.multiarray"):
        safe.append((multiarray._reconstruct, f"{prefix}._reconstruct"))
        safe.append((multiarray.scalar, f"{prefix}.scalar"))
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes["All"] if code != "O"}
    safe.extend(sorted(dtype_classes, key=lambda cls: cls.__name__))
    return safe


class _Unreadable(CheckpointError):
    """Internal: the file could not be read at all (damaged), as opposed to refused or unsuitable."""


def _torch_load(path: Path, what: str, map_location, trusted: bool) -> Any:
    """``torch.load`` (safe unless ``trusted``) with one-line errors; ``what`` is e.g. ``"checkpoint"``."""
    try:
        if trusted:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _unsafe_globals(path) if "Weights only load failed" in str(err) else []
        if refused:
            raise CheckpointError(
                f"{what} {path} holds objects the safe loader refuses ({', '.join(refused)}); "
                "files that need code to load are not accepted"
            ) from err
        raise _Unreadable(f"cannot read {what} {path}: {_weights_only_reason(err)}") from err
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as err:
        raise _Unreadable(f"cannot read {what} {path}: {_first_line(err)}") from err


def _verify_integrity(obj: dict, path: Path, what: str) -> None:
    """Pop and check the integrity record of ``obj`` (in place); no record: nothing to check."""
    if INTEGRITY_KEY not in obj:
        return
    record = obj.pop(INTEGRITY_KEY)
    if not (isinstance(record, dict) and isinstance(record.get("digest"), str)
            and record.get("algorithm") == ALGORITHM):
        raise CheckpointCorrupt(f"{what} {path} is corrupted (malformed integrity record)")
    try:
        actual = digest(obj)
    except TypeError:  # only a file altered after writing can hold what atomic_save refuses
        actual = None
    if actual != record["digest"]:
        raise CheckpointCorrupt(f"{what} {path} is corrupted (SHA-256 integrity check failed)")


def _load_verified(path: Path, map_location, required_keys: tuple, trusted: bool) -> dict:
    obj = _torch_load(path, "checkpoint", map_location, trusted)
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    _verify_integrity(obj, path, "checkpoint")
    missing = [key for key in required_keys if key not in obj]
    if missing:
        keys = sorted(map(str, obj))
        # A bare state_dict has hundreds of keys; a few are enough to recognise it.
        present = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "") if keys else "none"
        raise CheckpointError(
            f"checkpoint {path} lacks required keys: {', '.join(missing)} (present: {present})"
        )
    return obj


def _previous_hint(path: Path, required_keys: tuple, trusted: bool) -> str | None:
    """What to say about ``path``'s ``.prev`` file once ``path`` itself is damaged (None: there is none)."""
    prev = previous_path(path)
    if not prev.is_file():
        return None
    try:
        _load_verified(prev, "cpu", required_keys, trusted)
    except CheckpointError as err:
        reason = "corrupted" if isinstance(err, CheckpointCorrupt) else "unusable too"
        return f"no intact previous checkpoint exists ({prev} is {reason})"
    return f"the previous checkpoint {prev} is intact: move it over {path} to resume from it"


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    required_keys: Iterable[str] = (),
    *,
    trusted: bool = False,
) -> dict:
    """Load a checkpoint dict, raising :class:`CheckpointError` with a one-line reason if it is unusable.

    Checks, in order: the file exists, it is a readable torch file that the safe loader accepts, it
    holds a ``dict``, its integrity record (if any) matches -- else :class:`CheckpointCorrupt` -- and
    the dict has every key in ``required_keys``. The record is removed from the returned dict, which
    is therefore exactly what was given to :func:`atomic_save`. When the file is corrupted or
    unreadable, the message also says whether its :func:`previous_path` file is intact.

    ``trusted=True`` uses the unrestricted unpickler, which runs code from the file: only for files
    whose source you trust.
    """
    path = Path(path)
    required_keys = tuple(required_keys)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    try:
        return _load_verified(path, map_location, required_keys, trusted)
    except (_Unreadable, CheckpointCorrupt) as err:
        hint = _previous_hint(path, required_keys, trusted)
        message = str(err)
        if isinstance(err, CheckpointCorrupt):
            message += f"; {hint or 'its content changed after it was written'}"
            raise CheckpointCorrupt(message) from err.__cause__
        if hint:
            message += f"; {hint}"
        raise CheckpointError(message) from err.__cause__


def load_weights_file(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Read a plain weight file (e.g. Inception or CLIP weights) safely, as a name -> tensor dict on the CPU.

    ``.safetensors`` files go through :func:`safetensors.torch.load_file`; anything else through
    the same safe ``torch.load(weights_only=True)`` + allowlist as :func:`load_checkpoint` (no code
    from the file is ever run). A top-level ``"state_dict"`` entry is unwrapped. ``what`` names the
    file in errors (``"Inception weights"``). Raises a one-line :class:`CheckpointError` when the file
    is missing, unreadable, refused, not a non-empty mapping of str -> tensor, or holds NaN/Inf.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} {'is not a file' if path.exists() else 'does not exist'}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(path, device="cpu")
        except Exception as err:  # SafetensorError, OSError, ...: all mean "not a usable file"
            raise CheckpointError(f"cannot read {what} {path}: {_first_line(err)}") from err
    else:
        obj = _torch_load(path, what, "cpu", trusted=False)
        if isinstance(obj, dict):
            _verify_integrity(obj, path, what)
            if "state_dict" in obj:
                obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what} {path} holds a {type(obj).__name__}, expected a mapping of parameter names to tensors")
    if not obj:
        raise CheckpointError(f"{what} {path} holds no tensors")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{what} {path} has a {type(key).__name__} key {key!r}, expected parameter names (str)")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{what} {path} maps {key!r} to a {type(value).__name__}, expected a tensor")
        if (value.is_floating_point() or value.is_complex()) and value.layout == torch.strided:
            finite = torch.isfinite(value)
            if not bool(finite.all()):
                raise CheckpointError(f"{what} {path} holds {int(finite.numel() - finite.sum())} non-finite values in {key}")
    return obj if isinstance(obj, dict) else dict(obj)


def _unsafe_globals(path: Path) -> list[str]:
    """Names of the globals that made the safe loader refuse ``path`` (empty if it was not that)."""
    try:
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # the names are a courtesy; never mask the original problem
        return []


def _weights_only_reason(err: pickle.UnpicklingError) -> str:
    """The one informative line of torch's multi-paragraph weights-only error."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    for line in str(err).splitlines():
        line = line.strip()
        if line and not line.startswith(boilerplate):
            return line
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {line}" if line else type(err).__name__
