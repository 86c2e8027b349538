"""A checkpoint's integrity record: one canonical walk over its content gives a SHA-256 digest and a NaN/Inf census.

A dict checkpoint is stored with an extra ``"integrity"`` entry (:data:`INTEGRITY_KEY`),
``{"algorithm": "sha256", "digest": <hex>}``: a SHA-256 over a canonical walk of every other entry (structure,
key types and names, scalar values, tensor/array dtypes, shapes and raw bytes). The same walk counts the
non-finite values of every floating-point tensor and float NumPy array.
:func:`~kd_core.runtime.checkpoint_save.atomic_save` writes the record (and refuses NaN/Inf);
:func:`~kd_core.runtime.checkpoint.load_checkpoint` recomputes it with :func:`digest`. A value outside the types a
checkpoint may hold is a ``TypeError`` naming its key path.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

INTEGRITY_KEY = "integrity"
ALGORITHM = "sha256"
_SCALAR_TYPES = (str, bytes, int, float, bool, type(None))


class ContentWalk:
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
                self.first_bad = (key_path(keys), bad, total)

    def dict_entries(self, mapping: Mapping, keys: list | None = None) -> None:
        keys = [] if keys is None else keys
        self._feed("dict", str(len(mapping)))
        for key, value in mapping.items():
            if type(key) not in _SCALAR_TYPES:
                if self.hash is None:
                    self.value(value, keys + [key])
                    continue
                raise TypeError(f"checkpoint key {key_path(keys + [key])!r} is a {type(key).__name__}; "
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
            raise TypeError(f"checkpoint entry {key_path(keys)!r} is a {type(value).__module__}."
                            f"{type(value).__qualname__}, which checkpoints do not hold (see kd_core.runtime.checkpoint)")

    def _tensor(self, tensor: torch.Tensor, keys: list) -> None:
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type == "meta":
            if self.hash is None:
                return
            raise TypeError(f"checkpoint entry {key_path(keys)!r} is a {tensor.layout} / quantized / meta tensor, "
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


def key_path(keys: list) -> str:
    """``opt_d.state.3.exp_avg``: where in a checkpoint a value is, as error messages name it."""
    return ".".join(str(key) for key in keys)


def digest(mapping: Mapping) -> str:
    """The hex SHA-256 of a dict checkpoint's entries (without the record), as the integrity record holds it."""
    walk = ContentWalk(hashing=True)
    walk.dict_entries(mapping)
    return walk.hexdigest()
