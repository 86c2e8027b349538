"""Provenance: which code made a run (package version, git commit) and which machine measured a number.

:func:`run_metadata` is what :func:`kd_core.runtime.rundir.prepare_run_dir` adds to a new run's
``config.json`` (the keys in :data:`METADATA_KEYS`, never compared on resume); :func:`hardware_summary` is the
one line naming the CPU/GPU and torch version that results and reports quote.
"""
from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

DISTRIBUTION = "vkd-distill"
# Written next to the options; describe the code, not the run, so never compared on resume.
METADATA_KEYS = ("package_version", "git_commit", "git_dirty", "created")


def run_metadata() -> dict[str, Any]:
    """What code produced a run: package version, git commit (None outside a checkout), time."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = None
    commit, dirty = _git_state()
    return {
        "package_version": version,
        "git_commit": commit,
        "git_dirty": dirty,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _git_state(source_root: Path | None = None) -> tuple[str | None, bool | None]:
    """HEAD commit and whether tracked files differ from it, for the checkout this code lives in.

    Only a checkout whose top level is ``source_root`` (default: the directory holding
    ``kd_core``) counts: an installed copy inside some unrelated repository must not report that
    repository's commit.
    """
    source_root = (source_root or Path(__file__).parents[2]).resolve()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(source_root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != source_root:
        return None, None
    commit = git("rev-parse", "HEAD")
    if commit is None:  # a repository without commits yet
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else status != "")


def hardware_summary(device: Any = None) -> str:
    """One line naming the machine a number was measured on: CPU model and cores, GPU if used, torch version."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    parts = [f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"]
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(torch.device(device)))
    parts.append(f"torch {torch.__version__}")
    return "; ".join(parts)
