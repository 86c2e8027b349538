"""kd_core.runtime.provenance: the package version and git state a run records."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kd_core.runtime import provenance
from kd_core.runtime.rundir import prepare_run_dir

CONFIG = {"dataset": "cifar10", "lr": 2e-4}


def test_package_version_comes_from_the_distribution(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance.metadata, "version", lambda name: {"vkd-distill": "9.9.9"}[name])
    prepare_run_dir(tmp_path / "run", CONFIG)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["package_version"] == "9.9.9"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_state_of_the_checkout_holding_the_code(tmp_path):
    repo = tmp_path / "repo"
    (repo / "kd_core").mkdir(parents=True)
    _git(repo, "init", "-q")
    assert provenance._git_state(repo) == (None, None)  # no commit yet
    (repo / "kd_core" / "a.py").write_text("x = 1\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "init")
    head = _git(repo, "rev-parse", "HEAD")
    assert provenance._git_state(repo) == (head, False)
    (repo / "kd_core" / "a.py").write_text("x = 2\n")
    assert provenance._git_state(repo) == (head, True)
    # code installed below an unrelated repository's top level is not that repository's commit
    assert provenance._git_state(repo / "kd_core") == (None, None)
    assert provenance._git_state(tmp_path) == (None, None)  # not a checkout at all
