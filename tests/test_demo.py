"""scripts/demo.py (``make demo``): the smoke chain on fixture Fashion-MNIST files and its skip-if-done re-run; the
committed-classifier path; the table, its study context and its generated sentence."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gan_kd import study
from gan_kd.study import classifiers
from kd_core.runtime.fashion_mnist import copy_fashion_mnist
from kd_core.runtime.precision import cpu_has_native_bf16
from kd_core.stats import bootstrap_mean_ci

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "scripts" / "demo.py"


def import_demo():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import demo
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return demo


def run_demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DEMO), *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def table_of(stdout: str) -> list[list[str]]:
    """The printed markdown table: its header and rows as lists of stripped cells (the separator left out)."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


@pytest.mark.slow  # about two minutes on the 2-core development machine
def test_smoke_demo_runs_the_whole_chain_then_skips_it(fashion_mnist_raw_dir: Path, tmp_path: Path) -> None:
    demo = import_demo()
    data = tmp_path / "data"
    assert copy_fashion_mnist(data, system_dir=fashion_mnist_raw_dir) is not None  # 60 train / 20 test images
    out = tmp_path / "demo"
    args = ("--smoke", "--out", str(out), "--data-root", str(data), "--fraction", "1")
    first = run_demo(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # smoke: two tiny classifiers trained through gan_kd.study.classifiers, never the committed files
    assert "training the teacher (resnet20, seed 0)" in first.stdout and "training the fd_net (resnet32, seed 1)" in first.stdout
    assert "results/teachers" not in first.stdout.split("training the GANs")[0]
    assert "training the GANs side by side: da, vkd-whiten" in first.stdout
    assert "[vkd-whiten] 2026" not in first.stdout and "[vkd-whiten] iteration 6: fd " in first.stdout  # relayed

    fd_net = out / "classifiers" / "fmnist_resnet32" / "checkpoints" / "best.pt"
    teacher = out / "classifiers" / "fmnist_resnet20" / "checkpoints" / "best.pt"
    regime = demo.demo_regime(True, 1.0, None, "auto")
    assert regime.precision == ("bf16" if cpu_has_native_bf16() else "fp32") and regime.channels_last
    results = {}
    for row in demo.GANS:
        run = out / study.run_name(row, regime, 0)
        config = json.loads((run / "config.json").read_text())
        assert config["preset"] == row and config["seed"] == 0 and config["iterations"] == 6
        assert (config["g_ch"], config["batch_size"], config["ema_decay"]) == (4, 10, 0.99)
        assert config["metrics"] == ["fd", "fd_vgg"]  # the label-free FD picks the best checkpoint
        assert config["precision"] == regime.precision and config["channels_last"]
        assert config["fd_features"] == f"ckpt:{fd_net}"
        assert config["teacher"] == (None if row == "da" else f"ckpt:{teacher}")
        results[row] = json.loads((run / "evaluation.json").read_text())
        assert set(results[row]["metrics"]) >= {"fd", "fd_vgg", "cls_acc", "precision", "recall", "density", "coverage",
                                                "memorised"}

    # the picture comes first in the listing: both rows' samples above their FD curves
    listing = first.stdout.split("outputs in")[1].splitlines()[1:]
    assert listing[0].split()[0] == str(out / "demo.png")
    picture = Image.open(out / "demo.png")
    assert picture.mode in ("RGB", "RGBA") and picture.size[0] > 900 and picture.size[1] > 900

    # the table: this run's two values beside the study's mean [95% CI] for the same rows
    table = table_of(first.stdout)
    assert table[0] == ["metric", "da", "vkd-whiten", "study da: mean [95% CI]", "study vkd-whiten: mean [95% CI]"]
    rows = {cells[0]: cells[1:] for cells in table[1:]}
    labels = results["da"]["labels"]
    assert list(rows) == [f"{labels[key]} {demo.DIRECTIONS[key]}" for key, _ in demo.TABLE_ROWS] + ["best checkpoint (iteration)"]
    fd = rows[f"{labels['fd']} ↓"]
    assert [float(v) for v in fd[:2]] == pytest.approx([results[row]["metrics"]["fd"]["mean"] for row in demo.GANS], abs=0.006)
    copies = study.load_runs(demo.STUDY_RESULTS)
    seeds = {row: [r for r in copies if r["row"] == row] for row in demo.GANS}  # the committed study's state
    for row, cell in zip(demo.GANS, fd[2:]):
        values = [r["result"]["metrics"]["fd"]["mean"] for r in seeds[row]]
        if len(values) == 1:  # a row the study has one seed of yet: no interval
            assert cell == f"{values[0]:.2f} (1 seed)"
        else:
            low, high = bootstrap_mean_ci(values)
            assert cell == f"{sum(values) / len(values):.2f} [{low:.2f}, {high:.2f}]"
    for key in ("fd_vgg", "precision", "memorised"):  # metrics the study's copies may not have
        cells = rows[f"{labels[key]} {demo.DIRECTIONS[key]}"][2:]
        for row, cell in zip(demo.GANS, cells):
            assert (cell == "—") == (not any(key in r["result"]["metrics"] for r in copies if r["row"] == row))
    context = next(line for line in first.stdout.splitlines() if line.startswith("This run:"))
    config = seeds["da"][0]["config"]
    assert (f"The study's columns: {study.len_subset(config)} training images and {config['iterations']} iterations "
            f"(fraction {config['data_fraction']:g}, width {config['g_ch']}, batch {config['batch_size']}; "
            f"results/runs/gan_fmnist: {len(seeds['da'])} seeds of da, {len(seeds['vkd-whiten'])} seeds of vkd-whiten, "
            "best checkpoints scored on 10,000 samples × 2).") in context
    sentence = next(line for line in first.stdout.splitlines() if line.startswith("This demo shows"))
    difference = results["vkd-whiten"]["metrics"]["fd"]["mean"] - results["da"]["metrics"]["fd"]["mean"]
    assert f"vkd-whiten − da is {difference:+.2f} classifier FD here" in sentence
    assert "after 6 iterations on 60 images, one seed each" in sentence
    spread = min(map(len, seeds.values())) >= 2  # a seed spread needs 2 seeds of each row
    assert ("seed-to-seed spread of" in sentence) == spread
    assert ("too few seeds of these rows" in sentence) == (not spread)
    assert table_of((out / "table.md").read_text()) == table and sentence in (out / "table.md").read_text()

    second = run_demo(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "training the" not in second.stdout and "evaluating" not in second.stdout
    assert table_of(second.stdout) == table and "demo.png" in second.stdout


def tiny_classifier_files(folder: Path, mismatched: str | None) -> dict[str, Path]:
    """A results/teachers/ stand-in: two small files and a teachers.json with their SHA-256 (``mismatched``'s
    recorded hash wrong)."""
    folder.mkdir(parents=True)
    record, paths = {}, {}
    for classifier in classifiers.CLASSIFIERS:
        path = folder / classifier.file
        path.write_bytes(f"weights of {classifier.model}".encode())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        record[classifier.file] = {"sha256": "0" * 64 if classifier.file == mismatched else digest,
                                   "test_top1": 90.0 + classifier.seed}
        paths[classifier.role] = path
    (folder / classifiers.RECORD_FILE).write_text(json.dumps(record))
    return paths


def fake_training(trained: list[list[str]]):
    """Stands in for `classifier-kd train-teacher`: records the command, leaves a finished run."""
    def run(command, check, env):
        trained.append(command)
        out = Path(command[command.index("--out") + 1])
        (out / "checkpoints").mkdir(parents=True)
        (out / "checkpoints" / "best.pt").write_bytes(b"trained")
        (out / "result.json").write_text(json.dumps({"best_top1": 12.5}))
    return run


@pytest.mark.parametrize("mismatched", [None, "fmnist_resnet32.pt"])
def test_full_demo_uses_committed_classifiers_and_trains_one_whose_hash_does_not_match(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mismatched: str | None) -> None:
    demo = import_demo()
    monkeypatch.setattr(demo, "ROOT", tmp_path)  # the checkout: results/teachers/ and runs/teachers/ below it
    files = tiny_classifier_files(tmp_path / classifiers.COMMITTED, mismatched)
    trained: list[list[str]] = []
    monkeypatch.setattr(classifiers.subprocess, "run", fake_training(trained))
    said: list[str] = []
    monkeypatch.setattr(demo, "say", said.append)

    assets = demo.ensure_classifiers(tmp_path / "data", tmp_path / "demo", smoke=False)
    assert assets.teacher == str(files["teacher"])
    if mismatched is None:
        assert trained == [] and assets.fd_net == str(files["fd_net"])
        assert "test top-1 91.00%" in demo.describe_classifier(classifiers.CLASSIFIERS[1], Path(assets.fd_net))
        return
    run = tmp_path / classifiers.RUNS / "fmnist_resnet32"
    assert assets.fd_net == str(run / "checkpoints" / "best.pt")
    assert len(trained) == 1 and trained[0][trained[0].index("--model") + 1] == "resnet32"
    assert trained[0][trained[0].index("--seed") + 1] == "1" and "--max-steps-per-epoch" in trained[0]
    assert said == [f"training the fd_net (resnet32, seed 1) into {run} "
                    f"({files['fd_net']} does not match its SHA-256 in teachers.json)"]
    assert "test top-1 12.50%" in demo.describe_classifier(classifiers.CLASSIFIERS[1], Path(assets.fd_net))
    demo.ensure_classifiers(tmp_path / "data", tmp_path / "demo", smoke=False)
    assert len(trained) == 1  # the run trained once is reused


def fake_run(row: str, seed: int, metrics: dict[str, float], iteration: int = 1000) -> dict:
    """A run as gan_kd.study.load_runs reads it (only what the table uses)."""
    return {"row": row, "config": {"seed": seed}, "result": {
        "iteration": iteration, "metrics": {key: {"mean": value} for key, value in metrics.items()}}}


def test_table_puts_this_run_beside_the_study_and_the_sentence_follows_the_numbers() -> None:
    demo = import_demo()
    labels = {"fd_vgg": "FD (vgg)", "fd": "FD (resnet32)", "cls_acc": "GAN-test accuracy (resnet32)"}
    results = {"da": {"labels": labels, "iteration": 400, "metrics": {"fd": {"mean": 12.0}, "fd_vgg": {"mean": 4.0},
                                                                        "cls_acc": {"mean": 0.5}}},
               "vkd-whiten": {"labels": labels, "iteration": 300, "metrics": {"fd": {"mean": 12.5}, "fd_vgg": {"mean": 4.5},
                                                                                "cls_acc": {"mean": 0.25}}}}
    context = {"da": [fake_run("da", s, {"fd": v, "cls_acc": 0.3}) for s, v in enumerate((10.0, 11.0, 12.0))],
               "vkd-whiten": [fake_run("vkd-whiten", 0, {"fd": 9.0})]}
    table = demo.table_lines(results, context)
    rows = {line.split(" | ")[0].strip("| ").strip(): [c.strip() for c in line.strip(" |").split(" | ")[1:]]
            for line in table[2:]}
    low, high = bootstrap_mean_ci([10.0, 11.0, 12.0])
    assert rows["FD (resnet32) ↓"] == ["12.00", "12.50", f"11.00 [{low:.2f}, {high:.2f}]", "9.00 (1 seed)"]
    assert rows["FD (vgg) ↓"] == ["4.00", "4.50", "—", "—"]
    assert rows["GAN-test accuracy (resnet32) ↑"][:3] == ["50.0%", "25.0%", "30.0% [30.0%, 30.0%]"]
    assert rows["precision ↑"] == ["—"] * 4  # neither this run nor the study has it
    assert rows["best checkpoint (iteration)"] == ["400", "300", "1000 [1000, 1000]", "1000 (1 seed)"]

    # one study seed of vkd-whiten: no seed spread to compare with
    sentence = demo.reading(results, context, 450, 60, "300 training images")
    assert sentence.startswith("This demo shows both rows training end to end and their samples after 450 iterations "
                               "on 60 images, one seed each; it does not show which row is better: vkd-whiten − da is "
                               "+0.50 classifier FD here (+0.50 label-free)")
    assert sentence.endswith("the study has too few seeds of these rows to give a seed spread to compare it with.")
    context["vkd-whiten"] += [fake_run("vkd-whiten", 1, {"fd": 10.0}), fake_run("vkd-whiten", 2, {"fd": 11.0})]
    inside = demo.reading(results, context, 450, 60, "300 training images")
    assert "+0.50 classifier FD here (+0.50 label-free), inside the study's seed-to-seed spread of 1.00 (the larger " \
           "std of the two rows over 3 and 3 seeds, at 300 training images); over the study's seeds the difference is -1.00" in inside
    results["vkd-whiten"]["metrics"]["fd"]["mean"] = 14.0
    outside = demo.reading(results, context, 450, 60, "300 training images")
    assert "+2.00 classifier FD here" in outside and "larger than the study's seed-to-seed spread of 1.00" in outside
    assert "but one seed at another regime is no test of it" in outside


def test_demo_without_fashion_mnist_says_how_to_supply_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    demo = import_demo()
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


def test_demo_regime_takes_bf16_where_the_cpu_has_it_and_the_iterations_of_its_precision(monkeypatch) -> None:
    demo = import_demo()
    import kd_core.runtime.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    native = demo.demo_regime(False, None, None, "auto")
    assert (native.precision, native.iterations, native.eval_every) == ("bf16", demo.ITERATIONS["bf16"],
                                                                        demo.ITERATIONS["bf16"] // demo.EVALUATIONS)
    assert native.channels_last and (native.fraction, native.width, native.batch_size) == (0.001, 8, 16)
    assert demo.demo_regime(False, None, None, "fp32").iterations == demo.ITERATIONS["fp32"]
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    fallback = demo.demo_regime(False, None, None, "auto")
    assert (fallback.precision, fallback.iterations, fallback.eval_every) == ("fp32", demo.ITERATIONS["fp32"],
                                                                              demo.ITERATIONS["fp32"] // demo.EVALUATIONS)
    longer = demo.demo_regime(False, 0.0025, 1000, "auto")  # explicit values win; another run name
    assert (longer.iterations, longer.eval_every, longer.fraction) == (1000, 250, 0.0025)
    assert study.run_name("da", longer, 0) != study.run_name("da", fallback, 0)
    smoke = demo.demo_regime(True, None, None, "bf16")
    assert (smoke.precision, smoke.iterations, smoke.eval_every) == ("bf16", demo.SMOKE.iterations, demo.SMOKE.eval_every)
