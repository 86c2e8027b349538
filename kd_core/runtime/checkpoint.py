"""Crash-safe checkpoint writing and validated loading.

A run is resumed from ``checkpoints/last.pt``; if the process dies while that file is being
written (pre-emption, OOM kill, full disk), a naive ``torch.save(obj, path)`` leaves a truncated
file and the run cannot be resumed at all. :func:`atomic_save` therefore writes a temporary file
next to the target and renames it over the target only once it is complete and on disk.

Loading is done with ``torch.load(weights_only=True)`` — the restricted unpickler that cannot run
arbitrary code — plus an allowlist of the NumPy and ``pathlib`` types our own checkpoints hold
(NumPy RNG state tuples, index arrays, NumPy scalars, paths). Optimizer states, tensors, Python RNG
state and plain containers need nothing extra. ``trusted=True`` switches to the unrestricted
unpickler and is meant only for files from a trusted source that pickle other objects (e.g. a
whole ``nn.Module``): a checkpoint downloaded as a teacher should not be able to execute code.
"""
from __future__ import annotations

import os
import pickle
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or lacks what the caller needs (one-line message)."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``.

    The object is written to a temporary file in the same directory (so the final ``os.replace``
    is a same-filesystem rename, which POSIX makes atomic), flushed and fsync'ed, then renamed
    onto ``path``. Readers see either the old file or the complete new one. On any failure,
    including ``KeyboardInterrupt``, the temporary file is removed and the old file is untouched.
    Parent directories are created as needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden, unique name: concurrent writers never collide and `ls checkpoints/` stays clean.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 honours the umask, unlike tempfile.mkstemp's 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; without this a power loss can revert the directory entry."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms where directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    required_keys: Iterable[str] = (),
    *,
    trusted: bool = False,
) -> dict:
    """Load a checkpoint dict, raising :class:`CheckpointError` with a one-line reason if it is unusable.

    Checks, in order: the file exists, it is a readable torch file, it holds a ``dict``, and the
    dict has every key in ``required_keys``. See the module docstring for ``trusted``.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}")
    try:
        if trusted:
            obj = torch.load(path, map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(_checkpoint_safe_globals()):
                obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _unsafe_globals(path) if "Weights only load failed" in str(err) else []
        if refused:
            raise CheckpointError(
                f"checkpoint {path} holds objects the safe loader refuses ({', '.join(refused)}); "
                "load it with trusted=True only if you trust its source"
            ) from err
        raise CheckpointError(f"cannot read checkpoint {path}: {_weights_only_reason(err)}") from err
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(err)}") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    missing = [key for key in required_keys if key not in obj]
    if missing:
        keys = sorted(map(str, obj))
        # A bare state_dict has hundreds of keys; a few are enough to recognise it.
        present = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "") if keys else "none"
        raise CheckpointError(
            f"checkpoint {path} lacks required keys: {', '.join(missing)} (present: {present})"
        )
    return obj


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
