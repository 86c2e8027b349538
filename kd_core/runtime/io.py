"""Atomic file writes (every file the project writes goes through :func:`atomic_writer`), and checking
that an output location is writable before any work starts.

A reader (a resumed run, a table script, a second rank) must see either the old file or the complete new
one, never half of it: :func:`write_text` writes a hidden temporary file in the same directory, fsyncs it
and renames it over the target. :func:`check_writable_dir` / :func:`check_writable_file` let a command
refuse an unusable ``--out`` in one line *before* training or evaluating, instead of failing at the end.
They do not trust ``os.access`` alone (it says yes to root everywhere, and to file systems that accept no new
file, such as ``/proc``): the directory that would receive the output gets a hidden probe file, created and
removed at once, which is exactly what :func:`atomic_writer` will need to do.
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


class OutputNotWritable(ValueError):
    """An output path that cannot be created or written (one-line message naming it and why)."""


def temp_name(path: Path) -> Path:
    """A hidden, unique name next to ``path``: concurrent writers never collide and listings stay clean."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_directory(directory: Path) -> None:
    """Persist a rename itself; without this a power loss can revert the directory entry."""
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


@contextmanager
def atomic_writer(path: str | os.PathLike, before_replace: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """``with atomic_writer(path) as f: f.write(...)``: the one way this project writes a file.

    Writes go to a hidden temporary file in the same directory, which is flushed, fsynced and renamed over
    ``path`` when the block ends without an exception (``before_replace(path)`` runs just before the rename,
    e.g. to keep the previous file); on an exception, including ``KeyboardInterrupt``, the temporary file is
    removed and ``path`` is left as it was. Parent directories are created. The temporary file is created with
    ``0o666`` minus the umask, as ``open`` would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        if before_replace is not None:
            before_replace(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_writer`). Returns the path."""
    with atomic_writer(path) as stream:
        stream.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; parent directories are created. Returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def replace_block(path: str | os.PathLike, begin: str, end: str, block: str, *, append: bool = False) -> str:
    """Replace the generated block of ``path`` that runs from the line ``begin`` to ``end`` (markers included)
    with ``block`` (which starts with ``begin`` and ends with ``end``), leaving the rest of the file as it is;
    written atomically. Without the markers: append the block when ``append`` (a missing file counts as empty),
    else ValueError (the block's place in a hand-written file is chosen by hand, once). Returns the new text."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() or not append else ""
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + block.rstrip("\n") + tail
    elif append:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block.rstrip("\n") + "\n"
    else:
        raise ValueError(f"{path} has no {begin} ... {end} block to regenerate")
    write_text(path, text)
    return text


def write_npy(path: str | os.PathLike, array: Any) -> Path:
    """``numpy.save`` of ``array`` to ``path``, atomically."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def write_json(path: str | os.PathLike, record: Any) -> Path:
    """``record`` as indented JSON plus a newline, written atomically."""
    return write_text(path, json.dumps(record, indent=2) + "\n")


def check_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Refuse (``OutputNotWritable``) a directory that is a file, lies under a file or cannot be created/written.

    Nothing is left behind: the deepest existing ancestor must be a directory this process may write into, which
    a hidden probe file, created and removed at once, confirms (see the module docstring).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputNotWritable(f"{what} {path} exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputNotWritable(f"{what} {path} is not writable")
        _probe(path, f"{what} {path} is not writable")
        return path
    _check_creatable(path, what)
    return path


def check_writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Refuse a file path that is a directory, or whose directory cannot be created/written (nothing is left)."""
    path = Path(path)
    if path.is_dir():
        raise OutputNotWritable(f"{what} {path} is a directory")
    if path.exists():
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise OutputNotWritable(f"{what} {path} is not writable")
        _probe(path.parent, f"{what} {path} is not writable")  # atomic_writer writes beside it, then renames
        return path
    _check_creatable(path, what)
    return path


def _check_creatable(path: Path, what: str) -> None:
    """The deepest existing ancestor of a missing ``path`` must be a writable directory."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputNotWritable(f"cannot create {what} {path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputNotWritable(f"cannot create {what} {path}: {ancestor} is not writable")
    _probe(ancestor, f"cannot create {what} {path}: {ancestor} does not accept new files")


def _probe(directory: Path, problem: str) -> None:
    """Create and remove a hidden file in ``directory``; ``OutputNotWritable(problem (reason))`` if that fails."""
    probe = temp_name(directory / ".write-probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise OutputNotWritable(f"{problem} ({error.strerror or type(error).__name__})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
