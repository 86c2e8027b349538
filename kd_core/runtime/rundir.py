"""The run directory's options: ``config.json``, written when a run starts and checked whenever it resumes.

The run directory is the unit of reproducibility: ``config.json`` records every option (plus the package
version and git commit, :mod:`kd_core.runtime.provenance`) when the run starts, and resuming with different
options is refused (:func:`validate_run_dir`, :func:`prepare_run_dir`), because a curve that silently changes
learning rate half-way is worse than an error. A directory that holds no progress yet (:data:`PROGRESS_FILES`)
may be taken over by a corrected command. Only rank 0 writes; the helpers take ``is_main`` so other ranks can
call them unconditionally.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kd_core.runtime.io import write_json
from kd_core.runtime.provenance import METADATA_KEYS, run_metadata

CONFIG_FILE = "config.json"


class RunConfigMismatch(ValueError):
    """Resuming a run directory with options that differ from those it was created with."""


def validate_run_dir(
    out: str | os.PathLike, config: Mapping[str, Any], ignore_keys: Iterable[str] = (),
    added_keys: Mapping[str, Any] | None = None,
) -> bool:
    """Check ``config`` against ``out/config.json`` without writing anything.

    Returns True if ``out`` holds a run to resume (its options match), False if there is no
    ``config.json`` yet, or if the options differ but the directory holds no checkpoint and no
    result (a run that failed before saving anything: a corrected command may take it over, and
    :func:`prepare_run_dir` rewrites its ``config.json``). Otherwise raises
    :class:`RunConfigMismatch` naming every differing option with its old and new value; options
    in ``ignore_keys`` (e.g. ``device``, ``iterations``) may change on resume. ``added_keys`` maps options
    introduced after runs were recorded to the value those runs had implicitly: an old ``config.json`` that
    lacks such a key matches when the new value is that one. CLIs call this
    before creating anything.
    """
    out = Path(out)
    config_path = out / CONFIG_FILE
    new = _normalise(config)
    _reject_reserved_keys(new)
    if not config_path.is_file():
        return False
    try:
        old = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {config_path}: {err}") from err
    if not isinstance(old, dict):
        raise ValueError(f"{config_path} does not hold a JSON object")
    skip = set(METADATA_KEYS) | set(ignore_keys)
    missing = object()
    old = {**{key: value for key, value in _normalise(added_keys or {}).items() if key not in old}, **old}
    differences = []
    for key in [*old, *(k for k in new if k not in old)]:
        if key in skip:
            continue
        old_value, new_value = old.get(key, missing), new.get(key, missing)
        if old_value != new_value:
            differences.append(f"{key}: {_show(old_value, missing)} -> {_show(new_value, missing)}")
    if differences and not _holds_progress(out):
        return False  # nothing trained yet: a corrected command may take the directory over
    if differences:
        raise RunConfigMismatch(
            f"run directory {out} was created with different options ({'; '.join(differences)}); "
            "resume with the original options or choose a new output directory"
        )
    return True


PROGRESS_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "result.json", "training.json")


def _holds_progress(out: Path) -> bool:
    """Whether a run directory holds anything a different configuration would contradict."""
    return any((out / name).exists() for name in PROGRESS_FILES)


def prepare_run_dir(
    out: str | os.PathLike,
    config: Mapping[str, Any],
    *,
    ignore_keys: Iterable[str] = (),
    is_main: bool = True,
    added_keys: Mapping[str, Any] | None = None,
) -> Path:
    """Create (or, on resume, validate) a run directory and return its path.

    New run: the main rank creates ``out`` and writes ``config.json`` = the options plus
    ``package_version``, ``git_commit``, ``git_dirty`` and ``created``. Existing run: the options
    are compared as in :func:`validate_run_dir` and ``config.json`` is left as it was, so it keeps
    describing how the run started. Nothing is created when a mismatch is raised, and non-main
    ranks never create anything.
    """
    out = Path(out)
    if validate_run_dir(out, config, ignore_keys, added_keys) or not is_main:
        return out
    record = {**_normalise(config), **run_metadata()}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_FILE, record)
    return out


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options as they will read back from JSON (tuples -> lists, paths -> str), so a
    resumed run compares equal to the file it wrote."""
    return json.loads(json.dumps(dict(config), default=str))


def _reject_reserved_keys(config: Mapping[str, Any]) -> None:
    clash = [key for key in METADATA_KEYS if key in config]
    if clash:
        raise ValueError(f"option names reserved for run metadata: {', '.join(clash)}")


def _show(value: Any, missing: object) -> str:
    return "<absent>" if value is missing else json.dumps(value)
