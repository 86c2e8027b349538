"""Running and resuming the study's runs: train, evaluate, re-score and copy their small files; their state."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from gan_kd.report import EVALUATION_FILE
from gan_kd.snapshot import GENERATOR_FILE
from gan_kd.study.rows import Assets, Regime, evaluate_command, run_name, train_command
from kd_core.runtime.io import write_bytes, write_json
from kd_core.runtime.run import RESULT_FILE

SMALL_FILES = ("config.json", RESULT_FILE, "metrics.jsonl", "metrics.csv")  # csv: older runs


def is_finished(results: Path, name: str) -> bool:
    return (results / name / EVALUATION_FILE).is_file()


def lock_file(runs: Path, name: str) -> Path:
    return Path(runs) / f"{name}.lock"


@contextlib.contextmanager
def claimed(runs: Path, name: str) -> Iterator[bool]:
    """Whether this process holds run ``name``: an exclusive, non-blocking ``flock`` on ``<runs>/<name>.lock``,
    held until the block ends (the kernel drops it when a process dies, so a killed run leaves no stale claim).
    Two processes given the same queue (``run`` started once per core) thus never train one run twice: the
    second one skips the run the first holds and takes the next."""
    Path(runs).mkdir(parents=True, exist_ok=True)
    with open(lock_file(runs, name), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def execute(row: str, regime: Regime, seed: int, *, runs: Path, results: Path, assets: Assets,
            gan_kd: str = "gan-kd", log=print) -> Path | None:
    """Train (or resume), evaluate and copy the small files of one run; skip it if its copy is complete. None
    (and nothing done) when another process holds the run (:func:`claimed`)."""
    name = run_name(row, regime, seed)
    if is_finished(results, name):
        log(f"{name}: finished (skipped)")
        return results / name
    with claimed(runs, name) as mine:
        if not mine:
            log(f"{name}: in progress in another process (skipped)")
            return None
        if is_finished(results, name):  # finished by another process since the check above
            log(f"{name}: finished (skipped)")
            return results / name
        return _train_and_copy(name, row, regime, seed, runs=runs, results=results, assets=assets, gan_kd=gan_kd,
                               log=log)


def _train_and_copy(name: str, row: str, regime: Regime, seed: int, *, runs: Path, results: Path, assets: Assets,
                    gan_kd: str, log) -> Path:
    out = runs / name
    started = time.monotonic()
    for command in (train_command(row, regime, seed, out, assets, gan_kd), evaluate_command(out, regime, assets, gan_kd)):
        call_logged(command, name, runs)
    write_json(results / name / ASSETS_FILE, asset_digests(assets))  # before evaluation.json marks the copy complete
    call_logged([gan_kd, "export", str(out), "--out", str(out / GENERATOR_FILE)], name, runs)
    copy_small_files(out, results / name)
    log(f"{name}: done in {time.monotonic() - started:.0f} s")
    return results / name


def reuse(name: str, sources: list[Path], results: Path, log=print, renamed: tuple[tuple[Path, str], ...] = ()) -> bool:
    """Copy the finished copy of run ``name`` from the first of ``sources`` (other studies' results folders) that
    has one into ``results``, file by file, ``evaluation.json`` last; whether one was found. The same name is the same
    command (row, regime, mode and seed), so another study's finished run is this study's run too. ``renamed``:
    (folder, name) pairs tried after them, copies of the same command under another name (the weight
    calibration's ``<row>@kd<w>`` run at the row's own weight, :func:`gan_kd.study.calibration.same_command`)."""
    if is_finished(results, name):
        return True
    found = reusable_copy(name, sources, renamed)
    if found is None:
        return False
    files = sorted((path for path in found.iterdir() if path.is_file()), key=lambda path: path.name == EVALUATION_FILE)
    for path in files:
        write_bytes(results / name / path.name, path.read_bytes())
    log(f"{name}: the finished copy {found} reused")
    return True


def reusable_copy(name: str, sources: list[Path], renamed: tuple[tuple[Path, str], ...] = ()) -> Path | None:
    """The finished copy :func:`reuse` would take for run ``name`` (the same arguments), or None."""
    for source, source_name in [*((source, name) for source in sources), *renamed]:
        if is_finished(source, source_name):
            return Path(source) / source_name
    return None


def call_logged(command: list[str], name: str, runs: Path) -> None:
    """Run one ``gan-kd`` command of run ``name`` on one thread, appending it and its output to
    ``<runs>/<name>.log``; a ``RuntimeError`` when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(runs / f"{name}.log", "a") as stream:
        stream.write("$ " + " ".join(command) + "\n")
        stream.flush()
        code = subprocess.call(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
    if code:
        raise RuntimeError(f"{name}: `{' '.join(command[:2])}` exited with {code}; see {runs / name}.log")


def has_class_scores(results: Path, name: str) -> bool:
    """Whether a finished copy's evaluation holds the ``cls`` scores (runs evaluated before they existed do not)."""
    evaluation = json.loads((results / name / EVALUATION_FILE).read_text())
    return "cls_acc" in evaluation["metrics"]


def rescore(row: str, regime: Regime, seed: int, *, runs: Path, results: Path, assets: Assets,
            gan_kd: str = "gan-kd", log=print) -> bool:
    """Re-evaluate a finished run whose copy has no class scores with today's :func:`evaluate_command` (FD and
    the ``cls`` scores), and replace its copy's ``evaluation.json`` only if the FD values are bit for bit those
    recorded (same checkpoint, FD network and sample seeds). Needs the run's ``checkpoints/best.pt``.

    Returns whether the copy was updated; raises ``RuntimeError`` when the FD differs or evaluation fails.
    """
    name = run_name(row, regime, seed)
    if not is_finished(results, name) or has_class_scores(results, name):
        return False
    out = runs / name
    if not (out / "checkpoints" / "best.pt").is_file():
        raise RuntimeError(f"{name}: no {out / 'checkpoints' / 'best.pt'} to re-evaluate (checkpoints are not committed)")
    recorded = json.loads((results / name / EVALUATION_FILE).read_text())
    if recorded.get("fd_features") != f"ckpt:{assets.fd_net}" or \
            json.loads((results / name / ASSETS_FILE).read_text()).get("fd_net_sha256") != asset_digests(assets)["fd_net_sha256"]:
        raise RuntimeError(f"{name}: its FD network is not {assets.fd_net} as it is now; re-evaluating would not reproduce its FD")
    before = recorded["metrics"]["fd"]["values"]
    previous = json.loads((out / EVALUATION_FILE).read_text()) if (out / EVALUATION_FILE).is_file() else {}
    # a scored evaluation with the recorded FD already in the run directory (an interrupted rescore's) is reused
    reusable = bool(previous) and "cls_acc" in previous["metrics"] and previous["metrics"]["fd"]["values"] == before
    if not reusable:
        call_logged(evaluate_command(out, regime, assets, gan_kd), name, runs)
    fresh = json.loads((out / EVALUATION_FILE).read_text())
    after = fresh["metrics"]["fd"]["values"]
    if before != after:
        raise RuntimeError(f"{name}: re-evaluated FD {after} differs from the recorded {before}; its copy is left as it was")
    write_bytes(results / name / EVALUATION_FILE, (out / EVALUATION_FILE).read_bytes())
    log(f"{name}: class scores added (FD reproduced: {after})")
    return True


def is_claimed(runs: Path, name: str) -> bool:
    """Whether a process holds run ``name`` now (:func:`claimed`), without taking it."""
    if not lock_file(runs, name).is_file():
        return False
    with claimed(runs, name) as mine:
        return not mine


def run_state(name: str, *, runs: Path, results: Path) -> str:
    """``done`` (its copy is complete), ``partial (iteration N)`` (a run directory whose log reached N),
    ``started`` (a directory without logged iterations) or ``missing``; ``running (...)`` instead of ``partial`` or
    ``started`` while a process holds the run."""
    if is_finished(results, name):
        return "done"
    last = None
    metrics = Path(runs) / name / "metrics.jsonl"
    if metrics.is_file():
        steps = [json.loads(line).get("step") for line in metrics.read_text().splitlines() if line.strip()]
        last = max((step for step in steps if isinstance(step, int)), default=None)
    if is_claimed(runs, name):
        return "running (starting)" if last is None else f"running (iteration {last})"
    if last is not None:
        return f"partial (iteration {last})"
    return "started" if (Path(runs) / name).is_dir() else "missing"


def status_table(regime: Regime, rows: list[str], seeds: list[int], *, runs: Path, results: Path,
                 reusable: Callable[[str, int], Path | None] | None = None) -> str:
    """A markdown grid of :func:`run_state` (row × seed) and how many runs are not done. ``reusable(row, seed)``:
    the finished copy of the same command in another study that ``run`` copies instead of training (shown as
    ``reusable (<its folder>)`` where the run is not done), or None."""
    states = {}
    for row in rows:
        for seed in seeds:
            state = run_state(run_name(row, regime, seed), runs=runs, results=results)
            found = reusable(row, seed) if reusable is not None and state != "done" else None
            states[row, seed] = f"reusable ({found.parent.name})" if found is not None else state
    lines = ["| row | " + " | ".join(f"seed {seed}" for seed in seeds) + " |", "|---|" + "---|" * len(seeds)]
    lines += [f"| {row} | " + " | ".join(states[row, seed] for seed in seeds) + " |" for row in rows]
    done = sum(state == "done" for state in states.values())
    copies = sum(state.startswith("reusable") for state in states.values())
    train = len(states) - done - copies
    lines += ["", f"{done} of {len(states)} runs done; {copies} reusable (copied by `run`, not trained); "
                  f"{train} to train ({regime.tag()})."]
    return "\n".join(lines) + "\n"


ASSETS_FILE = "assets.json"


def asset_digests(assets: Assets) -> dict:
    """SHA-256 of the teacher and FD-network files a run used: the checkpoints are not committed, so this is
    what tells whether runs of different sessions measured FD with the same network."""
    from gan_kd.study.classifiers import sha256

    return {"fd_net_sha256": sha256(assets.fd_net), "teacher_sha256": sha256(assets.teacher)}


def copy_small_files(run_dir: Path, destination: Path) -> None:
    """The committed part of a run; ``evaluation.json`` is written last, so its presence marks a complete copy."""
    for name in (*SMALL_FILES, ASSETS_FILE, "samples/final.png", GENERATOR_FILE):
        source = Path(run_dir) / name
        if source.is_file():
            write_bytes(Path(destination) / source.name, source.read_bytes())
    write_bytes(Path(destination) / EVALUATION_FILE, (Path(run_dir) / EVALUATION_FILE).read_bytes())
