"""scripts/demo.py (``make demo``): the smoke chain on fixture Fashion-MNIST files, and its skip-if-done re-run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from kd_core.runtime.datasets import copy_fashion_mnist

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "scripts" / "demo.py"


def run_demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO), *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # about a minute on the 2-core development machine
def test_smoke_demo_runs_the_whole_chain_then_skips_it(fashion_mnist_raw_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert copy_fashion_mnist(data, system_dir=fashion_mnist_raw_dir) is not None  # 60 train / 20 test images
    out = tmp_path / "demo"
    args = ("--smoke", "--out", str(out), "--data-root", str(data), "--fraction", "1")
    first = run_demo(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "training the teacher (resnet20) and the evaluator (mobilenet_v2)" in first.stdout
    assert "training the GANs side by side: da, vkd-whiten" in first.stdout
    assert "[vkd-whiten] it 6/6" in first.stdout  # progress is relayed

    teacher = json.loads((out / "teacher" / "config.json").read_text())
    evaluator = json.loads((out / "evaluator" / "config.json").read_text())
    assert (teacher["model"], teacher["seed"]) != (evaluator["model"], evaluator["seed"])
    table = {}
    for preset in ("da", "vkd-whiten"):
        run = out / f"gan_{preset}"
        config = json.loads((run / "config.json").read_text())
        assert config["preset"] == preset and config["seed"] == 0 and config["iterations"] == 6
        assert config["fd_features"] == f"ckpt:{out / 'evaluator' / 'checkpoints' / 'best.pt'}"
        assert config["teacher"] == (None if preset == "da" else f"ckpt:{out / 'teacher' / 'checkpoints' / 'best.pt'}")
        result = json.loads((run / "evaluation.json").read_text())
        table[preset] = result["metrics"]["fd"]["mean"]
        assert 0 <= result["metrics"]["cls_acc"]["mean"] <= 1 and result["labels"]["cls_acc"].startswith("GAN-test")
        assert Image.open(run / "samples" / "final.png").size[0] > 0
    assert Image.open(out / "fd_vs_iteration.png").size == (770, 462)
    lines = [line.split() for line in first.stdout.splitlines() if line.split()[:1] in (["da"], ["vkd-whiten"])]
    assert {words[0]: float(words[1]) for words in lines} == pytest.approx(table, abs=0.006)
    assert "GAN-test acc" in first.stdout and "(the evaluator on the real test set: accuracy" in first.stdout

    second = run_demo(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "training" not in second.stdout and "evaluating" not in second.stdout
    assert "vkd-whiten" in second.stdout and "fd_vs_iteration.png" in second.stdout


def test_demo_without_fashion_mnist_says_how_to_supply_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import demo
    finally:
        sys.path.remove(str(REPO / "scripts"))
    monkeypatch.setattr(demo, "locate_fashion_mnist", lambda root, train: (_ for _ in ()).throw(demo.DatasetNotFound("x")))
    monkeypatch.setattr(demo.os, "geteuid", lambda: 1000)  # not root: no apt-get

    def offline(root, train, download=False):
        raise demo.DatasetNotFound("download failed")

    monkeypatch.setattr(demo, "load_fashion_mnist", offline)
    with pytest.raises(SystemExit) as stop:
        demo.ensure_fashion_mnist(tmp_path)
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "FashionMNIST/raw/" in error and "dataset-fashion-mnist" in error
