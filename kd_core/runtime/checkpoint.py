"""Crash-safe, verified checkpoint writing and safe loading.

Guarantees of :func:`atomic_save`:

* **No partial files.** The object is written to a hidden temporary file next to the target,
  flushed and fsync'ed, and renamed over the target only once complete (POSIX makes a
  same-filesystem rename atomic; the directory is fsync'ed too). A crash, a full disk or Ctrl-C
  leaves the old file byte-identical and removes the temporary file.
* **No non-finite tensors.** Before any file is created, every floating-point tensor and float
  NumPy array in the object is checked; a NaN/Inf raises :class:`NonFiniteCheckpoint` naming the
  first offending key path (``opt_d.state.3.exp_avg``), so a diverged run never overwrites the last
  good checkpoint.
* **Integrity record.** A dict is stored with an extra ``"integrity"`` entry,
  ``{"algorithm": "sha256", "digest": <hex>}``, a SHA-256 over a canonical walk of every other
  entry (structure, key types and names, scalar values, tensor/array dtypes, shapes and raw bytes).
  :func:`load_checkpoint` recomputes it and raises :class:`CheckpointCorrupt` on a mismatch, so bit
  rot or a tampered file is never silently resumed from; the record is removed from the returned
  dict. Files without a record (external teachers, older runs) load as before. Only plain
  containers (dict, list, tuple), tensors, NumPy arrays and scalars, str, bytes, int, float, bool,
  None and ``pathlib`` paths can be stored in a dict checkpoint; anything else is a ``TypeError``.
* **Rotation.** With ``keep_previous=True`` the file being replaced is kept as
  :func:`previous_path` (``last.pt`` -> ``last.prev.pt``), itself swapped in atomically, so at every
  instant ``path`` exists (old or new). When ``path`` later fails to load (corrupted, truncated),
  the error message says whether the ``.prev`` file is intact and can be moved over it.

Loading is done with ``torch.load(weights_only=True)`` -- the restricted unpickler that cannot run
arbitrary code -- plus an allowlist of the NumPy and ``pathlib`` types our own checkpoints hold
(NumPy RNG state tuples, index arrays, NumPy scalars, paths). Optimizer states, tensors, Python RNG
state and plain containers need nothing extra. Files that need any other code to load are refused
(the CLIs accept no such files). Python callers can pass ``trusted=True`` to use the unrestricted
unpickler, which RUNS CODE FROM THE FILE: only for files whose source you trust (e.g. a pickled
``nn.Module``). :func:`load_weights_file` reads plain weight files (``.safetensors`` or a torch
state dict) with the same safe loader.

Every error raised here for a bad file is a :class:`CheckpointError` (a ``ValueError``) with a
one-line message naming the file.
"""
from __future__ import annotations

import copy
import hashlib
import os
import pickle
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from kd_core.runtime.io import atomic_writer, temp_name

INTEGRITY_KEY = "integrity"
_ALGORITHM = "sha256"
_SCALAR_TYPES = (str, bytes, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or lacks what the caller needs (one-line message)."""


class CheckpointCorrupt(CheckpointError):
    """A checkpoint whose content does not match the SHA-256 integrity record written with it."""


class NonFiniteCheckpoint(CheckpointError):
    """Refusal to write a checkpoint holding NaN/Inf tensors (the file at the target is untouched)."""


def previous_path(path: str | os.PathLike) -> Path:
    """Where ``atomic_save(..., keep_previous=True)`` keeps the replaced file: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_save(obj: Any, path: str | os.PathLike, *, keep_previous: bool = False) -> None:
    """``torch.save`` that never leaves a partial file at ``path`` and never writes NaN/Inf tensors.

    The object is checked and, if it is a dict, given an ``"integrity"`` record (see the module
    docstring; the caller's dict is not modified, and a caller key named ``"integrity"`` is a
    ``ValueError``). It is then written to a temporary file in the same directory (so the final
    ``os.replace`` is a same-filesystem rename, which POSIX makes atomic), flushed and fsync'ed,
    then renamed onto ``path``. Readers see either the old file or the complete new one. On any
    failure, including ``KeyboardInterrupt``, the temporary files are removed and the old file is
    untouched. Parent directories are created as needed.

    ``keep_previous=True`` first turns the existing ``path`` into :func:`previous_path` (a hard link
    swapped in with ``os.replace``, or a copy where hard links are unsupported), so ``path`` exists
    at every instant.

    Raises :class:`NonFiniteCheckpoint` (before any file is created) when a floating-point tensor
    or float NumPy array holds NaN/Inf, and ``TypeError`` naming the key path when a dict holds a
    type outside those listed in the module docstring.
    """
    path = Path(path)
    if isinstance(obj, dict):
        if INTEGRITY_KEY in obj:
            raise ValueError(f"cannot save checkpoint {path}: the key {INTEGRITY_KEY!r} is reserved for the integrity record")
        walk = _Walk(hashing=True)
        walk.dict_entries(obj)
        walk.raise_if_non_finite(path)
        payload = copy.copy(obj)  # top level only; keeps an OrderedDict's metadata
        payload[INTEGRITY_KEY] = {"algorithm": _ALGORITHM, "digest": walk.hexdigest()}
    else:
        walk = _Walk(hashing=False)
        walk.value(obj, [])
        walk.raise_if_non_finite(path)
        payload = obj
    with atomic_writer(path, before_replace=_rotate if keep_previous else None) as stream:
        torch.save(payload, stream)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rotate(path: Path) -> None:
    """Make the current ``path`` (if any) the ``.prev`` file atomically, leaving ``path`` itself in place."""
    if not path.exists():
        return
    prev = previous_path(path)
    tmp = temp_name(prev)
    try:
        try:
            os.link(path, tmp)
        except OSError:  # no hard links here (some network / FUSE filesystems): copy instead
            _unlink_quietly(tmp)
            with open(path, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, prev)
    except BaseException:
        _unlink_quietly(tmp)
        raise


class _Walk:
    """One canonical pass over a checkpoint: SHA-256 digest (optional) and the NaN/Inf census.

    Every item is fed as a tag plus length-prefixed content, so different structures cannot
    produce the same byte stream. Tensors are hashed from a CPU, contiguous uint8 view of their
    storage (no copy beyond the device transfer / contiguity that may be needed).
    """

    def __init__(self, hashing: bool):
        self.hash = hashlib.sha256() if hashing else None
        self.first_bad: tuple[str, int, int] | None = None  # key path, bad values, total values
        self.bad_tensors = 0

    def hexdigest(self) -> str:
        return self.hash.hexdigest()

    def _feed(self, tag: str, text: str = "") -> None:
        if self.hash is not None:
            data = text.encode("utf-8", "surrogatepass")
            self.hash.update(tag.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

    def _feed_buffer(self, buffer: memoryview) -> None:
        if self.hash is not None:
            self.hash.update(buffer.nbytes.to_bytes(8, "little"))
            self.hash.update(buffer)

    def _non_finite(self, bad: int, total: int, keys: list) -> None:
        if bad:
            self.bad_tensors += 1
            if self.first_bad is None:
                self.first_bad = (_key_path(keys), bad, total)

    def dict_entries(self, mapping: Mapping, keys: list | None = None) -> None:
        keys = [] if keys is None else keys
        self._feed("dict", str(len(mapping)))
        for key, value in mapping.items():
            if type(key) not in _SCALAR_TYPES:
                if self.hash is None:
                    self.value(value, keys + [key])
                    continue
                raise TypeError(f"checkpoint key {_key_path(keys + [key])!r} is a {type(key).__name__}; "
                                "keys must be str, int, float, bool, bytes or None")
            self._feed("key", f"{type(key).__name__}:{key!r}")
            self.value(value, keys + [key])

    def value(self, value: Any, keys: list) -> None:
        if isinstance(value, torch.Tensor):
            self._tensor(value, keys)
        elif isinstance(value, np.ndarray):
            self._array(value, keys)
        elif isinstance(value, np.generic):  # before float: np.float64 is a float subclass
            if value.dtype.hasobject:
                self._unsupported(value, keys)
                return
            array = np.asarray(value)
            self._feed("npscalar", f"{array.dtype.str}")
            self._feed_buffer(memoryview(array.reshape(-1).view(np.uint8)))
        elif isinstance(value, dict):
            self.dict_entries(value, keys)
        elif isinstance(value, (list, tuple)):
            self._feed(type(value).__name__, str(len(value)))
            for index, item in enumerate(value):
                self.value(item, keys + [index])
        elif type(value) in _SCALAR_TYPES:
            self._feed(type(value).__name__, repr(value))
        elif isinstance(value, PurePath):
            self._feed(type(value).__name__, repr(value))
        else:
            self._unsupported(value, keys)

    def _unsupported(self, value: Any, keys: list) -> None:
        if self.hash is not None:  # the finiteness-only walk of a non-dict object skips foreign leaves
            raise TypeError(f"checkpoint entry {_key_path(keys)!r} is a {type(value).__module__}."
                            f"{type(value).__qualname__}, which checkpoints do not hold (see kd_core.runtime.checkpoint)")

    def _tensor(self, tensor: torch.Tensor, keys: list) -> None:
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type == "meta":
            if self.hash is None:
                return
            raise TypeError(f"checkpoint entry {_key_path(keys)!r} is a {tensor.layout} / quantized / meta tensor, "
                            "which checkpoints do not hold")
        data = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous()
        if data.is_floating_point() or data.is_complex():
            finite = torch.isfinite(data)
            if not bool(finite.all()):
                self._non_finite(int(finite.numel() - finite.sum()), data.numel(), keys)
        self._feed("tensor", f"{data.dtype}{tuple(data.shape)}")
        if self.hash is not None:
            self._feed_buffer(memoryview(data.reshape(-1).view(torch.uint8).numpy()))

    def _array(self, array: np.ndarray, keys: list) -> None:
        if array.dtype.hasobject:
            self._unsupported(array, keys)
            return
        array = np.ascontiguousarray(array)
        if np.issubdtype(array.dtype, np.inexact):
            finite = np.isfinite(array)
            if not finite.all():
                self._non_finite(int(finite.size - np.count_nonzero(finite)), array.size, keys)
        self._feed("ndarray", f"{array.dtype.str}{array.shape}")
        self._feed_buffer(memoryview(array.reshape(-1).view(np.uint8)))

    def raise_if_non_finite(self, path: Path) -> None:
        if self.first_bad is None:
            return
        where, bad, total = self.first_bad
        others = f" (and {self.bad_tensors - 1} more tensors)" if self.bad_tensors > 1 else ""
        raise NonFiniteCheckpoint(f"refusing to write checkpoint {path}: {where or '<top level>'} holds {bad} "
                                  f"non-finite values (NaN/Inf) of {total}{others}; nothing was written")


def _key_path(keys: list) -> str:
    return ".".join(str(key) for key in keys)


def _digest(mapping: Mapping) -> str:
    walk = _Walk(hashing=True)
    walk.dict_entries(mapping)
    return walk.hexdigest()


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
            and record.get("algorithm") == _ALGORITHM):
        raise CheckpointCorrupt(f"{what} {path} is corrupted (malformed integrity record)")
    try:
        actual = _digest(obj)
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
