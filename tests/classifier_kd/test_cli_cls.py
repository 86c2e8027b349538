"""The ``classifier-kd`` CLI: train-teacher -> evaluate -> resume on fixture data, and refusals of bad input."""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from classifier_kd.cli import cli
from classifier_kd.models import create_model, load_classifier, save_classifier
from classifier_kd.models.checkpoint import read_input_spec
from kd_core.runtime.metrics import read_metrics

TINY = ["--model", "resnet8x4", "--batch-size", "16", "--max-steps-per-epoch", "2", "--milestones", "1",
        "--workers", "0", "--device", "cpu", "--log-every", "1"]


def invoke(*args) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_refused(result, *fragments: str) -> None:
    """Exit code 2 and exactly one line on stderr naming the problem; nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""


def steps(run_dir: Path) -> list[str]:
    return [str(row["step"]) for row in read_metrics(run_dir)]


@pytest.mark.slow
def test_train_evaluate_resume(cifar10_root, tmp_path):
    out = tmp_path / "teacher"
    common = ["train-teacher", *TINY, "--dataset", "cifar10", "--data-root", cifar10_root, "--out", out]
    result = invoke(*common, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "best top-1" in result.stdout and "it 2/4" in result.stderr  # progress lines
    for name in ("config.json", "metrics.jsonl", "result.json", "log.txt", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    # The recipe's expansion is recorded next to the values used.
    assert config["recipe"] == "cifar100" and config["recipe_values"]["epochs"] == 240
    assert config["epochs"] == 2 and config["batch_size"] == 16 and config["lr"] == 0.05 and config["weight_decay"] == 5e-4
    trained = json.loads((out / "result.json").read_text())
    assert trained["epochs"] == 2 and steps(out) == ["1", "2"]

    # best.pt is what `gan-kd --teacher ckpt:...` loads.
    best = out / "checkpoints" / "best.pt"
    assert load_classifier(best).num_classes == 10
    assert read_input_spec(best) == {"size": 32, "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}

    result = invoke("evaluate", best, "--data-root", cifar10_root, "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "checkpoints" / "best_eval_cifar10.json").read_text())  # dataset read from best.pt
    assert report["images"] == 20 and report["arch"] == "resnet8x4"
    assert report["top1"] == pytest.approx(trained["best_top1"])
    assert f"top-1 {report['top1']:.2f}" in result.stdout

    # Same command, more epochs: continues from last.pt's epoch; metrics.jsonl gets one new row.
    result = invoke(*common, "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.stderr and "it 5/6" in result.stderr and "it 1/6" not in result.stderr
    assert steps(out) == ["1", "2", "3"]
    assert json.loads((out / "result.json").read_text())["epochs"] == 3

    # Other options on the same directory: refused, nothing touched.
    def written():  # the lock file records each holder's pid; the run's own files must not change
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != ".lock"}

    before = written()
    assert_refused(invoke(*common, "--epochs", "3", "--lr", "0.1"), "lr: 0.05 -> 0.1")
    assert written() == before


@pytest.mark.slow
def test_fashion_mnist_teacher_from_debian_folder(fashion_system_dir, tmp_path):
    out = tmp_path / "fmnist"
    (tmp_path / "empty").mkdir()  # an explicit --data-root must exist; the files come from the Debian folder
    result = invoke("train-teacher", *TINY, "--dataset", "fashion_mnist", "--data-root", tmp_path / "empty",
                    "--epochs", "1", "--data-fraction", "0.5", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(np.load(out / "subset_indices.npy")) == 30  # half of the 60 fixture images
    assert read_input_spec(out / "checkpoints" / "best.pt")["mean"] == (0.2860,) * 3


def test_the_default_data_root_may_be_missing_typed_or_defaulted(fashion_system_dir, tmp_path, monkeypatch):
    """Issue 28 item 5: in a working directory without ``data``, ``--data-root data`` (typed) and no --data-root
    (the default) both read Debian's Fashion-MNIST copy, and nothing is created under ``data``; any other missing
    root is one line, exit 2, for train-teacher, distill and evaluate alike."""
    monkeypatch.chdir(tmp_path)
    for name, root in (("typed", ["--data-root", "data"]), ("defaulted", [])):
        result = invoke("train-teacher", *TINY, "--dataset", "fashion_mnist", *root, "--epochs", "1",
                        "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / name / "result.json").read_text())["epochs"] == 1
    best = tmp_path / "typed" / "checkpoints" / "best.pt"
    result = invoke("evaluate", best, "--data-root", "data", "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert json.loads((best.parent / "best_eval_fashion_mnist.json").read_text())["images"] == 20
    assert not (tmp_path / "data").exists()

    missing = "/nonexistent/x"
    for command in (["train-teacher", *TINY, "--dataset", "fashion_mnist"],
                    ["distill", "--student", "resnet8x4", "--teacher-ckpt", best, "--dataset", "fashion_mnist"]):
        assert_refused(invoke(*command, "--data-root", missing, "--out", tmp_path / "never"),
                       "--data-root", f"data root {missing} does not exist")
    assert_refused(invoke("evaluate", best, "--data-root", missing, "--device", "cpu"),
                   "--data-root", f"data root {missing} does not exist")
    assert not (tmp_path / "never").exists() and not Path(missing).exists()


@pytest.mark.parametrize("args, fragments", [
    (["--model", "resnet9000"], ["--model", "resnet9000"]),
    (["--model", "resnet8x4", "--data-fraction", "0"], ["--data-fraction"]),
    (["--model", "resnet8x4", "--data-fraction", "1.5"], ["--data-fraction"]),
    (["--model", "resnet8x4", "--milestones", "180,150"], ["--milestones", "increasing"]),
    (["--model", "resnet8x4", "--milestones", "a,b"], ["--milestones"]),
    (["--model", "resnet8x4", "--device", "tpu"], ["--device", "tpu"]),
    (["--model", "resnet8x4", "--epochs", "0"], ["--epochs"]),
    (["--model", "resnet8x4", "--recipe", "imagenet-xl"], ["--recipe"]),
])
def test_train_teacher_refuses_bad_options(tmp_path, args, fragments):
    out = tmp_path / "run"
    assert_refused(invoke("train-teacher", *args, "--out", out, "--data-root", tmp_path / "data"), *fragments)
    assert not out.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("dataset, fragment", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                                ("fashion_mnist", "train-images-idx3-ubyte")])
def test_train_teacher_refuses_missing_data(tmp_path, no_system_fashion_mnist, dataset, fragment):
    out = tmp_path / "run"
    (tmp_path / "data").mkdir()
    result = invoke("train-teacher", "--model", "resnet8x4", "--dataset", dataset, "--data-root", tmp_path / "data",
                    "--device", "cpu", "--out", out)
    assert_refused(result, "not found", fragment)
    assert not out.exists()


def test_train_teacher_refuses_batch_larger_than_data(cifar10_root, tmp_path):
    out = tmp_path / "run"
    result = invoke("train-teacher", "--model", "resnet8x4", "--dataset", "cifar10", "--data-root", cifar10_root,
                    "--device", "cpu", "--batch-size", "128", "--out", out)
    assert_refused(result, "no full batch of 128")
    assert not out.exists()


def test_train_teacher_refuses_a_file_as_out(cifar10_root, tmp_path):
    out = tmp_path / "a-file"
    out.write_text("x")
    result = invoke("train-teacher", "--model", "resnet8x4", "--dataset", "cifar10", "--data-root", cifar10_root,
                    "--device", "cpu", "--batch-size", "16", "--out", out)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def cifar10_resnet20(tmp_path) -> Path:
    """A 10-class resnet20 in our format, with the CIFAR-10 input spec and the dataset recorded."""
    torch.manual_seed(0)
    path = tmp_path / "ckpt" / "resnet20.pt"
    spec = {"size": 32, "mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
    save_classifier(path, create_model("resnet20", 10), "resnet20", 10, input_spec=spec, dataset="cifar10")
    return path


def test_evaluate_our_checkpoint_and_a_repdistiller_file(cifar10_root, cifar10_resnet20, tmp_path):
    report_path = tmp_path / "reports" / "eval.json"
    result = invoke("evaluate", cifar10_resnet20, "--data-root", cifar10_root, "--device", "cpu", "--workers", "0",
                    "--out", report_path)
    assert result.exit_code == 0, result.output
    ours = json.loads(report_path.read_text())
    assert ours["dataset"] == "cifar10" and ours["images"] == 20 and ours["arch"] == "resnet20"

    # The same weights in RepDistiller's layout (no arch, no spec: --arch needed, CIFAR-100 spec assumed).
    repdistiller = tmp_path / "resnet20_vanilla" / "ckpt_epoch_240.pth"
    repdistiller.parent.mkdir()
    torch.save({"epoch": 240, "model": load_classifier(cifar10_resnet20).state_dict()}, repdistiller)
    result = invoke("evaluate", repdistiller, "--arch", "resnet20", "--dataset", "cifar10", "--data-root",
                    cifar10_root, "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.output
    theirs = json.loads((repdistiller.parent / "ckpt_epoch_240_eval_cifar10.json").read_text())
    assert theirs["input_spec"]["mean"] == [0.5071, 0.4867, 0.4408]


def test_evaluate_refuses_bad_checkpoints(cifar10_root, cifar10_resnet20, tmp_path):
    base = ["--data-root", cifar10_root, "--device", "cpu"]
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert_refused(invoke("evaluate", garbage, *base), "CKPT", "garbage.pt")
    assert_refused(invoke("evaluate", tmp_path / "absent.pt", *base), "absent.pt")
    assert_refused(invoke("evaluate", cifar10_resnet20, "--arch", "resnet8x4", *base), "resnet8x4")
    assert_refused(invoke("evaluate", cifar10_resnet20, "--dataset", "cifar100", *base), "10 classes", "cifar100")
    bare = tmp_path / "bare.pth"
    torch.save(create_model("resnet20", 10).state_dict(), bare)
    assert_refused(invoke("evaluate", bare, *base), "arch")
    assert not list(tmp_path.rglob("*.json"))


def test_every_option_has_help():
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{command.name} {param.opts} has no help text"


# ---------------------------------------------------------------------------------------------------------
# distill

DISTILL = ["--student", "resnet8x4", "--dataset", "cifar10", "--batch-size", "8", "--max-steps-per-epoch", "2",
           "--epochs", "1", "--milestones", "1", "--workers", "0", "--device", "cpu", "--log-every", "1"]


def distill(cifar10_root, teacher: Path, out: Path, *args) -> Result:
    return invoke("distill", *DISTILL, "--data-root", cifar10_root, "--teacher-ckpt", teacher, "--out", out, *args)


@pytest.mark.slow
def test_train_teacher_distill_evaluate(cifar10_root, tmp_path):
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    result = invoke("train-teacher", *TINY, "--dataset", "cifar10", "--data-root", cifar10_root, "--epochs", "1",
                    "--out", teacher_dir)
    assert result.exit_code == 0, result.output
    teacher = teacher_dir / "checkpoints" / "best.pt"

    # resnet8x4 (256-d features) teaches resnet20 (64-d) through VkD's orthogonal projector.
    result = invoke("distill", *DISTILL[2:], "--student", "resnet20", "--teacher-ckpt", teacher, "--method", "vkd",
                    "--data-root", cifar10_root, "--epochs", "2", "--out", student_dir)
    assert result.exit_code == 0, result.output
    assert "best top-1" in result.stdout
    log = (student_dir / "log.txt").read_text()
    # The log names the terms and counts what distillation adds: the orthogonal 64 -> 256 projector, whose
    # default qr map stores a 256 x 64 basis.
    assert "1 x ce + 1 x kd + 1 x vkd" in log
    config = json.loads((student_dir / "config.json").read_text())
    assert config["teacher"] == "resnet8x4" and config["method"] == "vkd" and config["extra_parameters"] == 256 * 64
    assert f"{256 * 64} extra trainable parameters" in log
    assert [term["name"] for term in config["losses"]] == ["kd", "vkd"]
    assert config["losses"][0]["options"] == {"temperature": 1.0}
    assert config["recipe_values"]["lr"] == 0.05 and config["epochs"] == 2
    distilled = json.loads((student_dir / "result.json").read_text())
    assert distilled["extra_parameters"] == 256 * 64 and distilled["model"] == "resnet20"
    assert steps(student_dir) == ["1", "2"]
    assert {"train/loss_ce", "train/loss_kd", "train/loss_vkd"} <= set(read_metrics(student_dir)[0])

    # best.pt is the student alone, in our format: evaluate reads it.
    best = student_dir / "checkpoints" / "best.pt"
    assert load_classifier(best).arch == "resnet20"
    result = invoke("evaluate", best, "--data-root", cifar10_root, "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.output
    report = json.loads((student_dir / "checkpoints" / "best_eval_cifar10.json").read_text())
    assert report["top1"] == pytest.approx(distilled["best_top1"])

    # The same command resumes; a different method on the same directory is refused.
    result = invoke("distill", *DISTILL[2:], "--student", "resnet20", "--teacher-ckpt", teacher, "--method", "vkd",
                    "--data-root", cifar10_root, "--epochs", "3", "--out", student_dir)
    assert result.exit_code == 0 and "resuming from" in result.stderr, result.output
    assert_refused(invoke("distill", *DISTILL[2:], "--student", "resnet20", "--teacher-ckpt", teacher,
                          "--method", "kd", "--data-root", cifar10_root, "--epochs", "3", "--out", student_dir),
                   "method")


@pytest.mark.parametrize("args, expected", [
    (["--method", "kd", "--zscore"], {"ce_weight": 0.1, "losses": [("kd", 9.0, {"temperature": 2.0, "zscore": True})]}),
    (["--method", "dkd", "--set", "dkd.beta=2"],
     {"ce_weight": 1.0, "losses": [("dkd", 1.0, {"alpha": 1.0, "beta": 2, "temperature": 4.0, "warmup_epochs": 20})]}),
    (["--loss", "kd:0.5", "--loss", "dcd:2", "--ce-weight", "0.3"],
     {"ce_weight": 0.3, "losses": [("kd", 0.5, {"temperature": 4.0}), ("dcd", 2.0, {})]}),
    (["--loss", "kd:0.5", "--zscore"],  # the weight given on the command line is kept
     {"ce_weight": 1.0, "losses": [("kd", 0.5, {"temperature": 2.0, "zscore": True})]}),
    (["--method", "rsd"], {"ce_weight": 1.0, "label_smoothing": 0.1, "losses": [("rsd", 0.1, {"kappa": 0.01})]}),
    (["--method", "vkd", "--set", "vkd.normalizer=none"],  # the normaliser named "none", not Python's None
     {"ce_weight": 1.0, "losses": [("kd", 1.0, {"temperature": 1.0}), ("vkd", 1.0, {"normalizer": "none"})]}),
])
def test_distill_records_the_expanded_terms(cifar10_root, cifar10_resnet20, tmp_path, args, expected):
    out = tmp_path / "run"
    result = distill(cifar10_root, cifar10_resnet20, out, *args)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["ce_weight"] == expected["ce_weight"]
    assert [(t["name"], t["weight"], t["options"]) for t in config["losses"]] == expected["losses"]
    assert config["label_smoothing"] == expected.get("label_smoothing", 0.0)
    assert config["teacher"] == ("resnet20" if expected["losses"] else None)


@pytest.mark.parametrize("args, fragments", [
    (["--method", "crd"], ["--method", "crd"]),
    (["--student", "resnet9000"], ["--student", "resnet9000"]),
    (["--loss", "kd:abc"], ["--loss", "abc"]),
    (["--loss", "mystery:1"], ["--loss", "mystery"]),
    (["--method", "kd", "--loss", "kd:1"], ["--method", "--loss"]),
    (["--method", "dcd", "--zscore"], ["zscore", "dcd"]),
    (["--loss", "dcd:1", "--zscore"], ["zscore", "the --loss terms has neither"]),
    (["--method", "kd", "--set", "dkd.beta=2"], ["dkd", "not a loss of this run"]),
    (["--method", "kd", "--set", "beta"], ["LOSS.KEY=VALUE"]),
    (["--teacher", "resnet8x4"], ["--teacher-ckpt", "resnet20", "resnet8x4"]),  # file holds another arch
    (["--method", "vkd", "--set", "vkd.projector=identity", "--student", "resnet8x4"], ["cannot build", "vkd"]),
    (["--method", "kd", "--dataset", "cifar100"], ["10 classes", "cifar100"]),
    (["--method", "ce"], ["--method ce trains without a teacher", "--teacher-ckpt would be ignored"]),
    (["--method", "vkd", "--set", "vkd.normalizer=whiten", "--batch-size", "1"], ["batch size 1", "--batch-size >= 2"]),
])
def test_distill_refuses_bad_input(cifar10_root, cifar100_root, cifar10_resnet20, tmp_path, args, fragments):
    out = tmp_path / "run"
    root = cifar100_root if "cifar100" in args else cifar10_root
    command = ["distill", *DISTILL, "--data-root", root, "--teacher-ckpt", cifar10_resnet20, "--out", out]
    # later options win in click: the case's own --student / --dataset override DISTILL's
    assert_refused(invoke(*command, *args), *fragments)
    assert not out.exists()


def test_distill_teacher_checkpoint_errors(cifar10_root, cifar10_resnet20, tmp_path):
    out = tmp_path / "run"
    repdistiller = tmp_path / "resnet20_vanilla" / "ckpt_epoch_240.pth"
    repdistiller.parent.mkdir()
    torch.save({"epoch": 240, "model": load_classifier(cifar10_resnet20).state_dict()}, repdistiller)
    # A RepDistiller file records no architecture: --teacher is needed, and must fit the weights.
    assert_refused(distill(cifar10_root, repdistiller, out), "--teacher NAME")
    assert_refused(distill(cifar10_root, repdistiller, out, "--teacher", "resnet32"), "--teacher-ckpt", "resnet32")
    assert_refused(distill(cifar10_root, tmp_path / "absent.pt", out), "'--teacher-ckpt'",
                   f"teacher checkpoint not found: {tmp_path / 'absent.pt'}")
    assert_refused(invoke("distill", *DISTILL, "--data-root", cifar10_root, "--out", out), "--teacher-ckpt")
    assert not out.exists()
    result = distill(cifar10_root, repdistiller, out, "--teacher", "resnet20")  # with the name it loads
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["teacher_input_spec"]["mean"] == [0.5071, 0.4867, 0.4408]


def test_teacher_image_size_resizes_the_teachers_input(cifar10_root, cifar10_resnet20, tmp_path):
    out = tmp_path / "run"
    result = distill(cifar10_root, cifar10_resnet20, out, "--teacher-image-size", "48")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["teacher_input_spec"]["size"] == 48 and config["input_spec"]["size"] == 32


def test_distill_method_ce_needs_no_teacher(cifar10_root, tmp_path):
    out = tmp_path / "run"
    result = invoke("distill", *DISTILL, "--data-root", cifar10_root, "--method", "ce", "--out", out)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["losses"] == [] and config["teacher"] is None and config["teacher_ckpt"] is None


# ---------------------------------------------------------------------------------------------------------
# safety (issue 9): untrusted files, corruption, divergence, validation before writing


def flip_middle(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_code_running_files_are_refused_everywhere(cifar10_root, cifar10_resnet20, malicious_checkpoint, tmp_path):
    path, marker = malicious_checkpoint
    assert_refused(distill(cifar10_root, path, tmp_path / "a"), "safe loader refuses", str(path))
    assert_refused(invoke("evaluate", path, "--data-root", cifar10_root, "--device", "cpu"), "safe loader refuses")
    out = tmp_path / "b"
    assert distill(cifar10_root, cifar10_resnet20, out).exit_code == 0
    (out / "checkpoints" / "last.pt").write_bytes(path.read_bytes())
    assert_refused(distill(cifar10_root, cifar10_resnet20, out, "--epochs", "2"), "safe loader refuses")
    assert not marker.exists() and not (tmp_path / "a").exists()


def test_corrupted_checkpoints_are_refused_naming_the_intact_previous_one(cifar10_root, cifar10_resnet20, tmp_path):
    out = tmp_path / "run"
    assert distill(cifar10_root, cifar10_resnet20, out, "--epochs", "2", "--milestones", "2").exit_code == 0
    last, previous = out / "checkpoints" / "last.pt", out / "checkpoints" / "last.prev.pt"
    assert torch.load(previous, weights_only=False)["epoch"] == 1
    flip_middle(last)
    corrupted = last.read_bytes()
    assert_refused(distill(cifar10_root, cifar10_resnet20, out, "--epochs", "3", "--milestones", "2"),
                   str(last), "corrupted", str(previous), "intact")
    assert last.read_bytes() == corrupted
    best = out / "checkpoints" / "best.pt"
    flip_middle(best)
    assert_refused(invoke("evaluate", best, "--data-root", cifar10_root, "--device", "cpu", "--workers", "0"),
                   str(best), "corrupted")
    assert not list(best.parent.glob("*.json"))


def test_nan_teacher_and_nan_checkpoints_are_refused(cifar10_root, cifar10_resnet20, tmp_path):
    state = torch.load(cifar10_resnet20, weights_only=False)
    state.pop("integrity")
    state["model"]["fc.weight"][0, 0] = float("nan")
    nan_file = tmp_path / "nan.pt"
    torch.save(state, nan_file)  # written around save_classifier, which refuses NaN weights
    assert_refused(distill(cifar10_root, nan_file, tmp_path / "run"), "--teacher-ckpt", "non-finite weights",
                   "fc.weight")
    assert_refused(invoke("evaluate", nan_file, "--data-root", cifar10_root, "--device", "cpu"), "non-finite weights")
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob("*.json"))


def test_divergence_in_the_first_epoch_says_no_checkpoint_exists(cifar10_root, tmp_path):
    out = tmp_path / "run"
    result = invoke("train-teacher", *TINY, "--dataset", "cifar10", "--data-root", cifar10_root, "--epochs", "1",
                    "--lr", "1e30", "--out", out)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "diverged in epoch 1" in line and "no checkpoint was written" in line and "lower --lr" in line
    assert not (out / "checkpoints").exists()


def test_a_run_past_the_divergence_threshold_is_flagged_and_the_check_can_be_turned_off(cifar10_root, tmp_path):
    """Issue 28 item 6: a training loss term past --divergence-threshold (here 0.5, below the ~2.3 cross-entropy of
    10 classes) flags the finished run: a warning in log.txt, "diverged" in result.json, exit code 3 in one line,
    checkpoints kept. A resume with --divergence-threshold 0 (off) finishes with exit code 0 and no record."""
    out = tmp_path / "run"
    base = ["train-teacher", *TINY, "--dataset", "cifar10", "--data-root", cifar10_root, "--out", out]
    result = invoke(*base, "--epochs", "1", "--divergence-threshold", "0.5")
    assert result.exit_code == 3, (result.output, result.exception)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: the run diverged: train/loss reached") and "at epoch 1" in line
    assert "best top-1" in result.stdout  # the result is reported first
    diverged = json.loads((out / "result.json").read_text())["diverged"]
    loss = read_metrics(out)[0]["train/loss"]
    assert diverged == {"epoch": 1, "term": "train/loss", "value": loss, "threshold": 0.5} and loss > 0.5
    assert "WARNING" in (out / "log.txt").read_text() and (out / "checkpoints" / "best.pt").is_file()

    result = invoke(*base, "--epochs", "2", "--divergence-threshold", "0")
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.stderr and "diverged" not in json.loads((out / "result.json").read_text())


def test_outputs_and_data_root_are_checked_before_any_work(cifar10_root, cifar10_resnet20, tmp_path):
    a_file = tmp_path / "somefile"
    a_file.write_text("x")
    assert_refused(invoke("evaluate", cifar10_resnet20, "--data-root", cifar10_root, "--device", "cpu",
                          "--out", a_file / "eval.json"), "--out", "is a file, not a directory")
    missing = tmp_path / "nonexistent"
    assert_refused(invoke("train-teacher", *TINY, "--dataset", "cifar10", "--data-root", missing, "--out",
                          tmp_path / "run"), "--data-root", f"{missing} does not exist")
    assert not missing.exists() and not (tmp_path / "run").exists()
    assert_refused(invoke("train-teacher", *TINY, "--dataset", "cifar10", "--data-root", cifar10_root, "--out",
                          a_file / "run"), "is a file, not a directory")


def test_every_output_refuses_an_unwritable_path_in_one_line_before_any_work(cifar10_root, cifar10_resnet20, tmp_path):
    """Issue 28 item 6: /proc takes no new file, not even from root. Every command that writes says so in one line,
    exit 2, naming --out and the role of the file, before loading data or models, and writes nothing."""
    run_dir = tmp_path / "finished"
    run_dir.mkdir()
    (run_dir / "result.json").write_text("{}")
    data = ["--dataset", "cifar10", "--data-root", cifar10_root]
    cases = [
        ("run directory", ["train-teacher", *TINY, *data, "--out", "/proc/x"]),
        ("run directory", ["train-teacher", *TINY, *data, "--out", "/proc/x/deeper"]),
        ("run directory", ["distill", *TINY[2:], *data, "--student", "resnet8x4", "--teacher-ckpt", cifar10_resnet20,
                           "--out", "/proc/x"]),
        ("result file", ["evaluate", cifar10_resnet20, "--data-root", cifar10_root, "--device", "cpu",
                         "--out", "/proc/x.json"]),
        ("table file", ["table", run_dir, "--out", "/proc/x.md"]),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for role, args in cases:
        assert_refused(invoke(*args), "'--out'", role, "/proc/x")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and list(run_dir.iterdir()) == [run_dir / "result.json"]


@pytest.mark.slow
def test_second_process_is_refused_and_a_killed_run_resumes(fashion_mnist_raw_dir, tmp_path):
    """One process per run directory (issue 12, item 3); the lock of a SIGKILLed run does not block its resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from kd_core.runtime.fashion_mnist import copy_fashion_mnist

    root = tmp_path / "data"  # a subprocess sees neither monkeypatches nor the fixture's system folder: copy the files
    copy_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)
    out = tmp_path / "teacher"
    command = [sys.executable, "-m", "classifier_kd.cli", "train-teacher", "--model", "resnet8x4", "--batch-size", "16",
               "--max-steps-per-epoch", "2", "--milestones", "1", "--workers", "0", "--device", "cpu",
               "--dataset", "fashion_mnist", "--data-root", str(root), "--out", str(out), "--epochs", "500"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and len(steps(out) if (out / "metrics.jsonl").is_file() else []) < 2:
            time.sleep(0.3)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        error = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(error) == 1 and f"in use by another training process (pid {process.pid} " in error[0], second.stderr
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = len(steps(out))
    assert 2 <= done < 500
    resumed = invoke(*command[command.index("train-teacher"):-1], str(done + 1))
    assert resumed.exit_code == 0, resumed.output
    assert steps(out) == [str(i) for i in range(1, done + 2)]


@pytest.mark.slow
def test_sigint_mid_epoch_saves_the_step_and_the_resume_equals_an_uninterrupted_run(fashion_mnist_raw_dir, tmp_path):
    """Issue 12, item 2: Ctrl-C finishes the step, saves the point in the epoch, exits 130; the resume is exact."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from kd_core.runtime.fashion_mnist import copy_fashion_mnist

    root = tmp_path / "data"
    copy_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)

    def command(out):
        return [sys.executable, "-m", "classifier_kd.cli", "train-teacher", "--model", "resnet8x4", "--batch-size", "4",
                "--milestones", "2", "--workers", "0", "--device", "cpu", "--log-every", "1", "--dataset",
                "fashion_mnist", "--data-root", str(root), "--out", str(out), "--epochs", "3"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "stopped"
    process = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not (
            (out / "log.txt").is_file() and "epoch 1/3" in (out / "log.txt").read_text()):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] >= 1 and 1 <= state["step"] <= 15, (state["epoch"], state["step"])
    assert f"stopped by SIGINT in epoch {state['epoch'] + 1} after step {state['step']} of 15" in stderr

    done = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    straight = tmp_path / "straight"
    done = subprocess.run(command(straight), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert all(torch.equal(value, b["target"][name]) for name, value in a["target"].items())

    def logged(run_dir):  # the epoch rows, without their wall times
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in read_metrics(run_dir)]

    assert logged(out) == logged(straight)
