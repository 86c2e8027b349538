"""The two classifiers the study and ``make demo`` use: the committed files when their hash matches, else trained.

The GAN teacher (ResNet-20, seed 0), whose features D distils, and the FD network (ResNet-32, seed 1), whose
features give the classifier FD and the GAN-test accuracy; the teacher is never the FD network. Both are
committed under ``results/teachers/`` with ``teachers.json`` (each file's SHA-256, the command that made it
and its test accuracy). :func:`ensure_classifiers` uses a committed file only when its SHA-256 is the one
recorded; a classifier whose file is missing or altered is trained with that same command (about 20 minutes
of one core each) into ``runs/teachers/<name>/``, once: a finished run there is reused.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gan_kd.study.rows import Assets

COMMITTED = "results/teachers"  # relative to the checkout
RECORD_FILE = "teachers.json"
RUNS = "runs/teachers"          # where a classifier is trained when its committed file cannot be used


@dataclass(frozen=True)
class Classifier:
    role: str   # the field of :class:`~gan_kd.study.rows.Assets` it fills
    model: str
    seed: int
    file: str   # the committed file; its stem names the run directory it is trained into otherwise

    @property
    def name(self) -> str:
        return Path(self.file).stem


CLASSIFIERS = (Classifier("teacher", "resnet20", 0, "fmnist_resnet20.pt"),
               Classifier("fd_net", "resnet32", 1, "fmnist_resnet32.pt"))
# The recipe of the committed files (teachers.json's commands): 6 epochs of 160 steps of 128 images.
TRAINING = ("--epochs", "6", "--max-steps-per-epoch", "160", "--milestones", "4,5", "--batch-size", "128", "--lr", "0.1")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def committed_record(folder: Path) -> dict:
    """``teachers.json`` of ``folder`` (file name -> its SHA-256, role, command, test accuracy); {} when absent."""
    record = Path(folder) / RECORD_FILE
    return json.loads(record.read_text()) if record.is_file() else {}


def committed_classifier(folder: Path, file: str) -> Path | None:
    """``folder/file`` if it is there and its SHA-256 is the one ``folder/teachers.json`` records, else None."""
    path = Path(folder) / file
    expected = committed_record(folder).get(file, {}).get("sha256")
    return path if expected and path.is_file() and sha256(path) == expected else None


def why_not_committed(folder: Path, file: str) -> str:
    """One phrase: why ``folder/file`` cannot be used (missing, unrecorded, or a hash that does not match)."""
    path = Path(folder) / file
    if not path.is_file():
        return f"{path} is missing"
    if "sha256" not in committed_record(folder).get(file, {}):
        return f"{Path(folder) / RECORD_FILE} records no SHA-256 for {file}"
    return f"{path} does not match its SHA-256 in {RECORD_FILE}"


def train_command(classifier: Classifier, data_root: str, out: Path, classifier_kd: str = "classifier-kd",
                  training: tuple[str, ...] = TRAINING) -> list[str]:
    return [classifier_kd, "train-teacher", "--model", classifier.model, "--dataset", "fashion_mnist",
            "--data-root", str(data_root), *training, "--workers", "0", "--device", "cpu",
            "--seed", str(classifier.seed), "--out", str(out)]


def ensure_classifiers(data_root: str, *, committed: Path | None, runs: Path, classifier_kd: str = "classifier-kd",
                       training: tuple[str, ...] = TRAINING, log=print) -> Assets:
    """The teacher and the FD network: each file in ``committed`` (the checkout's ``results/teachers/``) whose
    SHA-256 matches its record; otherwise the one trained into ``runs/<name>/`` (the checkout's ``runs/teachers/``),
    training it first, on one thread, unless a finished run is there. ``committed=None`` never uses committed
    files (``make demo SMOKE=1`` trains tiny ones with its own ``training`` options)."""
    paths = {}
    for classifier in CLASSIFIERS:
        found = committed_classifier(committed, classifier.file) if committed else None
        if found:
            paths[classifier.role] = str(found)
            continue
        out = Path(runs) / classifier.name
        if not (out / "result.json").is_file():
            reason = f" ({why_not_committed(committed, classifier.file)})" if committed else ""
            log(f"training the {classifier.role} ({classifier.model}, seed {classifier.seed}) into {out}{reason}")
            subprocess.run(train_command(classifier, data_root, out, classifier_kd, training), check=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        paths[classifier.role] = str(out / "checkpoints" / "best.pt")
    return Assets(data_root=data_root, teacher=paths["teacher"], fd_net=paths["fd_net"])
