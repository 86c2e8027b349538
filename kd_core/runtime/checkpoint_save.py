"""Writing checkpoints crash-safely: :func:`atomic_save` and the rotation of ``last.pt`` to ``last.prev.pt``.

Guarantees of :func:`atomic_save`:

* **No partial files.** The object is written to a hidden temporary file next to the target,
  flushed and fsync'ed, and renamed over the target only once complete (POSIX makes a
  same-filesystem rename atomic; the directory is fsync'ed too). A crash, a full disk or Ctrl-C
  leaves the old file byte-identical and removes the temporary file.
* **No non-finite tensors.** Before any file is created, every floating-point tensor and float
  NumPy array in the object is checked; a NaN/Inf raises :class:`NonFiniteCheckpoint` naming the
  first offending key path (``opt_d.state.3.exp_avg``), so a diverged run never overwrites the last
  good checkpoint.
* **Integrity record.** A dict is stored with an extra ``"integrity"`` entry
  (:mod:`kd_core.runtime.checkpoint_integrity`), which :func:`~kd_core.runtime.checkpoint.load_checkpoint`
  checks, so bit rot or a tampered file is never silently resumed from. Only the types listed in
  :mod:`kd_core.runtime.checkpoint` can be stored in a dict checkpoint; anything else is a ``TypeError``.
* **Rotation.** With ``keep_previous=True`` the file being replaced is kept as
  :func:`~kd_core.runtime.checkpoint.previous_path` (``last.pt`` -> ``last.prev.pt``), itself swapped in
  atomically, so at every instant ``path`` exists (old or new). When ``path`` later fails to load (corrupted,
  truncated), the loader's error message says whether the ``.prev`` file is intact and can be moved over it.
"""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from kd_core.runtime.checkpoint import CheckpointError, previous_path
from kd_core.runtime.checkpoint_integrity import ALGORITHM, INTEGRITY_KEY, ContentWalk
from kd_core.runtime.io import atomic_writer, temp_name


class NonFiniteCheckpoint(CheckpointError):
    """Refusal to write a checkpoint holding NaN/Inf tensors (the file at the target is untouched)."""


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
    type outside those listed in :mod:`kd_core.runtime.checkpoint`.
    """
    path = Path(path)
    if isinstance(obj, dict):
        if INTEGRITY_KEY in obj:
            raise ValueError(f"cannot save checkpoint {path}: the key {INTEGRITY_KEY!r} is reserved for the integrity record")
        walk = ContentWalk(hashing=True)
        walk.dict_entries(obj)
        _raise_if_non_finite(walk, path)
        payload = copy.copy(obj)  # top level only; keeps an OrderedDict's metadata
        payload[INTEGRITY_KEY] = {"algorithm": ALGORITHM, "digest": walk.hexdigest()}
    else:
        walk = ContentWalk(hashing=False)
        walk.value(obj, [])
        _raise_if_non_finite(walk, path)
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


def _raise_if_non_finite(walk: ContentWalk, path: Path) -> None:
    if walk.first_bad is None:
        return
    where, bad, total = walk.first_bad
    others = f" (and {walk.bad_tensors - 1} more tensors)" if walk.bad_tensors > 1 else ""
    raise NonFiniteCheckpoint(f"refusing to write checkpoint {path}: {where or '<top level>'} holds {bad} "
                              f"non-finite values (NaN/Inf) of {total}{others}; nothing was written")
