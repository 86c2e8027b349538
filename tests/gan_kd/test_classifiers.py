"""gan_kd.study.classifiers: the committed teacher and FD network, hash-checked, else trained once; the study
script's ``train_classifiers`` is that function on the checkout's folders."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from gan_kd.study import classifiers

REPO = Path(__file__).resolve().parents[2]


def committed(folder: Path, files: dict[str, bytes], recorded: dict[str, str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    record = {name: {"sha256": hashlib.sha256(blob).hexdigest()} for name, blob in files.items()}
    for name, digest in (recorded or {}).items():
        record.setdefault(name, {})["sha256"] = digest
    (folder / classifiers.RECORD_FILE).write_text(json.dumps(record))


def test_a_committed_file_is_used_only_with_the_recorded_hash(tmp_path: Path) -> None:
    committed(tmp_path, {"a.pt": b"a", "b.pt": b"b"}, recorded={"b.pt": "0" * 64})
    assert classifiers.committed_classifier(tmp_path, "a.pt") == tmp_path / "a.pt"
    assert classifiers.committed_classifier(tmp_path, "b.pt") is None
    assert classifiers.why_not_committed(tmp_path, "b.pt") == f"{tmp_path / 'b.pt'} does not match its SHA-256 in teachers.json"
    assert classifiers.committed_classifier(tmp_path, "c.pt") is None
    assert classifiers.why_not_committed(tmp_path, "c.pt") == f"{tmp_path / 'c.pt'} is missing"
    (tmp_path / "d.pt").write_bytes(b"d")  # present but not in teachers.json
    assert classifiers.committed_classifier(tmp_path, "d.pt") is None
    assert "records no SHA-256 for d.pt" in classifiers.why_not_committed(tmp_path, "d.pt")
    assert classifiers.committed_classifier(tmp_path / "nowhere", "a.pt") is None


def test_the_recipe_is_the_one_teachers_json_records() -> None:
    """The fall-back trains with exactly the command that made the committed files (but the output folder)."""
    record = classifiers.committed_record(REPO / classifiers.COMMITTED)
    for classifier in classifiers.CLASSIFIERS:
        command = classifiers.train_command(classifier, "data", Path(classifiers.RUNS) / classifier.name)
        assert " ".join(command) == record[classifier.file]["command"]


def test_the_study_script_delegates_to_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("gan_fmnist_study", REPO / "scripts" / "gan_fmnist_study.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "ROOT", tmp_path)
    calls = []
    monkeypatch.setattr(classifiers, "ensure_classifiers", lambda data_root, **options: calls.append((data_root, options)))
    script.train_classifiers("data")
    (data_root, options), = calls
    assert data_root == "data" and options["committed"] == tmp_path / "results" / "teachers"
    assert options["runs"] == tmp_path / "runs" / "teachers" and options["classifier_kd"].endswith("classifier-kd")
