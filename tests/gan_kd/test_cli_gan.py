"""End-to-end `gan-kd` runs on tiny fixture data at tiny width (marked slow: CI runs them)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from classifier_kd.models import create_model
from classifier_kd.models.checkpoint import save_classifier
from gan_kd.cli import main
from gan_kd.data import find_fashion_mnist
from gan_kd.presets import PRESETS

pytestmark = pytest.mark.slow
TINY = ["--g-ch", "4", "--d-ch", "4", "--batch-size", "10", "--d-steps", "2", "--log-every", "1", "--threads", "1"]


@pytest.fixture
def teacher_ckpt(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    save_classifier(path, create_model("resnet20", num_classes=10), "resnet20", 10,
                    input_spec={"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    return path


def run(args, expect=0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows with every value as text (as a CSV reader would give them)."""
    from kd_core.runtime.metrics import read_metrics as rows

    return [{name: str(value) for name, value in row.items()} for row in rows(run_dir)]


@pytest.mark.parametrize("preset", PRESETS)
def test_train_each_preset_then_evaluate_fd_and_sample(preset, cifar10_root, teacher_ckpt, tmp_path):
    out = tmp_path / f"run_{preset}"
    teacher = [] if preset == "da" else ["--teacher", f"ckpt:{teacher_ckpt}"]
    result = run(["train", "--out", out, "--preset", preset, "--data-root", cifar10_root, "--iterations", 4,
                  "--sample-every", 2, "--checkpoint-every", 2, "--eval-every", 2, "--eval-samples", 30, "--metrics", "fd",
                  "--fd-features", f"ckpt:{teacher_ckpt}", *TINY, *teacher])
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == preset and config["distill"] == (preset != "da")
    assert {"package_version", "git_commit"} <= set(config)
    rows = read_metrics(out)
    losses = [r for r in rows if r.get("d/total")]  # every loss term under its own name (gan_kd.objectives)
    assert [int(r["step"]) for r in losses] == [1, 2, 3, 4]
    terms = {"d/loss_hinge", "d/total", "d/logit_real", "d/logit_fake", "g/loss_hinge", "g/total"}
    lecam = PRESETS[preset].get("lecam", 0.0)  # kd-dlgan's 0.3: logged, but zero before iteration 1000
    weight = PRESETS[preset].get("kd_weight", 1.0)  # the calibrated weight (spkd 30, pkd 3000), else 1
    for r in losses:
        assert set(r) - {"step"} == (terms | ({"d/loss_kd", "d/kd_ratio"} if preset != "da" else set())
                                     | ({"d/loss_lecam"} if lecam else set()))
        # no LeCam yet: D's total is the hinge plus the weighted distillation term, averaged over the D steps
        kd = float(r.get("d/loss_kd", 0.0))
        assert float(r.get("d/loss_lecam", 0.0)) == 0.0
        assert float(r["d/total"]) == pytest.approx(float(r["d/loss_hinge"]) + weight * kd, rel=1e-5, abs=1e-6)
        assert float(r["g/total"]) == float(r["g/loss_hinge"])
        if preset != "da":  # the weighted distillation term next to D's adversarial loss
            assert float(r["d/kd_ratio"]) == pytest.approx(weight * abs(kd) / float(r["d/loss_hinge"]), rel=1e-6)
    summary = json.loads((out / "result.json").read_text())
    if preset == "da":
        assert "distillation_ratio" not in summary
    else:  # at the first evaluation (iteration 2) and at the end, with the weight
        ratio = summary["distillation_ratio"]
        assert ratio["kd_weight"] == weight and config["kd_weight"] == weight
        assert ratio["first_eval"] == {"iteration": 2, "ratio": float(losses[1]["d/kd_ratio"])}
        assert ratio["end"] == {"iteration": 4, "ratio": float(losses[3]["d/kd_ratio"])}
    # the progress line: D's total, the distillation term, G's total
    progress = [line for line in result.output.splitlines() if line.startswith("it 4/4")]
    assert progress and "d/total" in progress[0] and "g/total" in progress[0]
    assert ("d/loss_kd" in progress[0]) == (preset != "da")
    assert sum(1 for r in rows if r.get("eval/fd")) == 2
    probes = [r for r in rows if r.get("probe/d_gap")]  # the overfitting probe, at each evaluation
    assert [int(r["step"]) for r in probes] == [2, 4] and all(-1 <= float(r["probe/rt"]) <= 1 for r in probes)
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert (out / "samples" / "iter_000002.png").is_file() and (out / "samples" / "final.png").is_file()
    assert len(torch.load(out / "subset_indices.npy", weights_only=False) if False else
               __import__("numpy").load(out / "subset_indices.npy")) == 100
    assert list(out.glob("events.out.tfevents.*"))

    run(["evaluate", out, "--metrics", "fd", "--fd-features", f"ckpt:{teacher_ckpt}", "--num-samples", 30, "--repeats", 2])
    result = json.loads((out / "evaluation.json").read_text())
    assert json.loads((out / "result.json").read_text())["iterations"] > 0  # the training run's own summary
    fd = result["metrics"]["fd"]
    assert len(fd["values"]) == 2 and fd["std"] >= 0 and all(v > 0 for v in fd["values"])
    assert result["labels"]["fd"] == "FD (resnet20)"
    assert "FID" not in result["labels"]["fd"]

    grid = tmp_path / f"grid_{preset}.png"
    run(["sample", out, "--out", grid, "--rows", 3, "--columns", 4, "--checkpoint", "best"])
    width, height = Image.open(grid).size
    assert width > height  # 4 columns, 3 rows (plus padding)


def test_resume_equals_uninterrupted_run(cifar10_root, teacher_ckpt, tmp_path):
    # checkpoints every 2 iterations, metrics rows every 3: the resume at 4 falls inside the row of 4..6
    common = ["--preset", "vkd-whiten", "--teacher", f"ckpt:{teacher_ckpt}", "--data-root", cifar10_root,
              "--checkpoint-every", 2, "--sample-every", 0, *TINY, "--log-every", 3]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(["train", "--out", straight, "--iterations", 6, *common])
    run(["train", "--out", resumed, "--iterations", 4, *common])
    # result.json's training time counts every session of the run, not only the last one: pretend the first
    # session took 1000 s (last.pt rewritten through the project's writer, so its integrity record stays valid)
    from kd_core.runtime.checkpoint_save import atomic_save

    state = torch.load(resumed / "checkpoints" / "last.pt", weights_only=False)
    assert state["wall_time"] > 0
    state.pop("integrity", None)
    atomic_save({**state, "wall_time": 1000.0}, resumed / "checkpoints" / "last.pt")
    result = run(["train", "--out", resumed, "--iterations", 6, *common])
    assert "resuming from" in result.output and "at iteration 4" in result.output
    assert 1000.0 < json.loads((resumed / "result.json").read_text())["wall_time_s"] < 1000.0 + 600
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=False)
    assert a["iteration"] == b["iteration"] == 6
    for key in ("generator", "critic", "generator_ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs after resume"

    # A run killed after its checkpoint at 4 (straight's last.prev.pt) logs the rows of an uninterrupted run
    # (issue 12, item 4): its row at 6 averages iterations 4..6, although it restarted at 5.
    crashed = tmp_path / "crashed"
    shutil.copytree(straight, crashed)
    os.replace(crashed / "checkpoints" / "last.prev.pt", crashed / "checkpoints" / "last.pt")
    result = run(["train", "--out", crashed, "--iterations", 6, *common])
    assert "at iteration 4" in result.output
    assert read_metrics(crashed) == read_metrics(straight)
    assert [int(r["step"]) for r in read_metrics(crashed)] == [3, 6]
    c = torch.load(crashed / "checkpoints" / "last.pt", weights_only=False)
    assert all(torch.equal(value, c["critic"][name]) for name, value in a["critic"].items())


def test_second_process_is_refused_and_a_killed_run_resumes_from_saved_iteration(fashion_mnist_raw_dir, tmp_path):
    root = tmp_path / "data"
    find_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "gan_kd.cli", "train", "--out", str(out), "--preset", "da", "--dataset", "fashion_mnist",
               "--data-root", str(root), "--iterations", "400", "--checkpoint-every", "1", "--sample-every", "0", *TINY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and not (last.is_file() and
                                                    torch.load(last, weights_only=False)["iteration"] >= 3):
            time.sleep(0.5)
        # a second process into the same directory is refused while the first one lives (issue 12, item 3)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        error = [line for line in second.stderr.splitlines() if line.startswith("Error")]
        assert len(error) == 1 and f"in use by another training process (pid {process.pid} " in error[0], second.stderr
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = torch.load(last, weights_only=False)["iteration"]
    assert 3 <= saved < 400
    finish = command[:command.index("--iterations") + 1] + [str(saved + 2)] + command[command.index("--iterations") + 2:]
    done = subprocess.run(finish, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"at iteration {saved}" in done.stderr
    assert torch.load(last, weights_only=False)["iteration"] == saved + 2


@pytest.mark.parametrize("args,message", [
    (["--data-fraction", "0"], "not in (0, 1]"),
    (["--data-fraction", "1.5"], "not in (0, 1]"),
    (["--preset", "kd-dlgan"], "kd-dlgan"),
    (["--preset", "da", "--dataset", "cifar100"], "CIFAR-100 not found"),
    (["--preset", "vkd", "--teacher", "clip:ViT-B-32", "--teacher-weights", "/nonexistent/clip.pt"], "not found"),
    (["--preset", "vkd"], "--teacher"),
    (["--teacher", "ckpt:/nonexistent.pt"], "teacher checkpoint not found: /nonexistent.pt"),
    (["--teacher", "resnet"], "clip:<open_clip model>"),
    (["--diffaug", "flip"], "flip"),
    (["--preset", "da", "--eval-every", "2", "--metrics", "fd"], "--fd-features"),
    (["--preset", "da", "--eval-every", "2", "--metrics", "cls"], "chosen by fid, fd_vgg, fd"),  # nothing to pick best.pt by
    (["--preset", "da", "--metrics", "fd,lpips"], "unknown metric(s) lpips; allowed: fid, isc, kid, fd, cls, icfd, fd_vgg"),
    (["--preset", "da", "--inception-weights", "/nonexistent/inception.pth"], "Inception weights file not found"),
    (["--preset", "da", "--fd-features", "ckpt:/nonexistent.pt"], "--fd-features must be ckpt:PATH"),
])
def test_bad_input_one_line_exit_2_nothing_written(args, message, cifar10_root, tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--data-root", str(cifar10_root), *TINY, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1
    assert not out.exists()


def test_resume_with_other_options_is_refused(cifar10_root, tmp_path):
    out = tmp_path / "run"
    run(["train", "--out", out, "--preset", "da", "--data-root", cifar10_root, "--iterations", 1, *TINY])
    before = sorted(p.name for p in out.rglob("*"))
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--preset", "da", "--data-root", str(cifar10_root),
                                       "--iterations", "2", *TINY, "--lr-d", "1e-3"])
    assert result.exit_code == 2 and "lr_d: 0.0002 -> 0.001" in result.output
    assert sorted(p.name for p in out.rglob("*")) == before


def test_evaluate_and_sample_refuse_bad_run_dirs(tmp_path):
    for command in (["evaluate", str(tmp_path), "--metrics", "fd", "--fd-features", "ckpt:x"], ["sample", str(tmp_path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "evaluation.json").exists()


def test_table_of_evaluated_runs(cifar10_root, teacher_ckpt, tmp_path):
    runs = []
    for preset, seed in (("da", 0), ("da", 1), ("vkd-whiten", 0)):
        out = tmp_path / f"{preset}_{seed}"
        teacher = [] if preset == "da" else ["--teacher", f"ckpt:{teacher_ckpt}"]
        run(["train", "--out", out, "--preset", preset, "--seed", seed, "--data-root", cifar10_root, "--iterations", 2,
             "--sample-every", 0, *TINY, *teacher])
        run(["evaluate", out, "--checkpoint", "last", "--metrics", "fd", "--fd-features", f"ckpt:{teacher_ckpt}",
             "--num-samples", 20])
        runs.append(out)
    table_path = tmp_path / "results" / "table.md"
    run(["table", *runs, "--metric", "fd", "--out", table_path])
    text = table_path.read_text()
    assert "FD (" in text and "FID" not in text
    assert "| DA (baseline) |" in text and "(n=2)" in text and "| DA + VkD w/ whitening |" in text
    assert "(n=1; ±" in text  # a single run reports only its evaluation spread
    assert text.index("DA (baseline)") < text.index("DA + VkD w/ whitening")
    assert f"gan-kd train --out {runs[2]} --preset vkd-whiten" in text and "--seed 1" in text
    result = CliRunner().invoke(main, ["table", str(runs[0]), "--metric", "fid"])
    assert result.exit_code == 2 and "has no 'fid'" in result.output


def test_clip_teacher_from_local_weights_and_inception_evaluation(cifar10_root, clip_model_name, clip_weights_file,
                                                                  random_inception_weights, no_network, tmp_path,
                                                                  monkeypatch):
    """Offline: a random-weight open_clip file as --teacher-weights, then FID/IS/KID with a local Inception file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "clip_run"
    result = run(["train", "--out", out, "--preset", "vkd-whiten", "--teacher", f"clip:{clip_model_name}",
                  "--teacher-weights", clip_weights_file, "--data-root", cifar10_root, "--iterations", 1,
                  "--batch-size", 4, "--d-steps", 1, "--g-ch", 4, "--d-ch", 4, "--sample-every", 0, "--threads", 1])
    assert f"clip:{clip_model_name}" in result.output
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["critic"]
    run(["evaluate", out, "--checkpoint", "last", "--metrics", "fid,isc,kid", "--inception-weights",
         random_inception_weights, "--num-samples", 20])
    metrics = json.loads((out / "evaluation.json").read_text())["metrics"]
    assert {"fid", "is_mean", "kid_mean"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(m["mean"])) for m in metrics.values())
    assert metrics["is_mean"]["mean"] >= 1.0
    assert no_network == []


def test_kd_dlgan_with_a_clip_teacher_encodes_the_datasets_class_prompts(cifar10_root, clip_model_name, clip_model,
                                                                         clip_weights_file, no_network, tmp_path):
    """Offline CLIP text side: the loss's class embeddings are the text tower's "a {class}" for CIFAR-10's names."""
    import open_clip
    from torchvision.datasets import CIFAR10

    from kd_core.runtime.checkpoint import load_checkpoint

    out = tmp_path / "kd_dlgan_clip"
    run(["train", "--out", out, "--preset", "kd-dlgan", "--teacher", f"clip:{clip_model_name}", "--teacher-weights",
         clip_weights_file, "--data-root", cifar10_root, "--iterations", 1, "--batch-size", 4, "--d-steps", 1,
         "--g-ch", 4, "--d-ch", 4, "--sample-every", 0, "--threads", 1])
    critic = load_checkpoint(out / "checkpoints" / "last.pt")["critic"]
    names = CIFAR10(str(cifar10_root), train=True).classes  # read from the fixture's batches.meta
    with torch.no_grad():
        prompts = [f"a {name.replace('_', ' ')}" for name in names]  # the fixture's names are class_0, class_1, ...
        expected = clip_model.encode_text(open_clip.get_tokenizer(clip_model_name)(prompts))
    torch.testing.assert_close(critic["distill_loss.class_embeddings.weight"], expected, rtol=1e-4, atol=1e-5)
    assert no_network == []


# ------------------------------------------------------------------------------ safety (issue 9)


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


def flip_middle(path: Path, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


@pytest.fixture
def finished_run(cifar10_root, tmp_path):
    """A 2-iteration `da` run with a checkpoint every iteration: last.pt (2), last.prev.pt (1), no best.pt."""
    out = tmp_path / "done"
    run(["train", "--out", out, "--preset", "da", "--data-root", cifar10_root, "--iterations", 2,
         "--checkpoint-every", 1, "--sample-every", 0, *TINY])
    return out


def test_every_output_refuses_an_unwritable_path_in_one_line_before_any_work(finished_run, cifar10_root):
    """Issue 28 item 6: /proc takes no new file, not even from root. Every command that writes says so in one line,
    exit 2, naming the option and the role of the file, and touches nothing."""
    cases = {
        "run directory": ["train", "--preset", "da", "--data-root", cifar10_root, "--iterations", 1, *TINY,
                          "--out", "/proc/x"],
        "evaluation file": ["evaluate", finished_run, "--checkpoint", "last", "--metrics", "colour", "--out",
                            "/proc/x/evaluation.json"],
        "generator file": ["export", finished_run, "--checkpoint", "last", "--out", "/proc/x.safetensors"],
        "sample grid": ["sample", finished_run, "--out", "/proc/x.png"],
        "table file": ["table", finished_run, "--out", "/proc/x.md"],
    }
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    for role, args in cases.items():
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 2, (role, result.output)
        line = one_error_line(result)
        assert "'--out'" in line and role in line and "/proc/x" in line, line
        assert "Traceback" not in result.output
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def test_every_file_option_refuses_a_code_running_file(finished_run, malicious_checkpoint, cifar10_root,
                                                       clip_model_name, tmp_path):
    path, marker = malicious_checkpoint
    train = ["train", "--data-root", str(cifar10_root), "--iterations", "1", *TINY]
    cases = {
        "--teacher ckpt:": [*train, "--out", str(tmp_path / "a"), "--preset", "vkd", "--teacher", f"ckpt:{path}"],
        "--teacher-weights": [*train, "--out", str(tmp_path / "b"), "--preset", "vkd", "--teacher",
                              f"clip:{clip_model_name}", "--teacher-weights", str(path)],
        "--fd-features (train)": [*train, "--out", str(tmp_path / "c"), "--preset", "da", "--eval-every", "1",
                                  "--metrics", "fd", "--fd-features", f"ckpt:{path}"],
        "--inception-weights (train)": [*train, "--out", str(tmp_path / "d"), "--preset", "da", "--eval-every", "1",
                                        "--metrics", "fid", "--inception-weights", str(path)],
        "--inception-weights (evaluate)": ["evaluate", str(finished_run), "--checkpoint", "last", "--metrics", "fid",
                                           "--inception-weights", str(path)],
        "--fd-features (evaluate)": ["evaluate", str(finished_run), "--checkpoint", "last", "--metrics", "fd",
                                     "--fd-features", f"ckpt:{path}"],
    }
    for name, args in cases.items():
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (name, result.output)
        assert str(path) in one_error_line(result), name
        assert not marker.exists(), name
    for new_run in "abcd":
        assert not (tmp_path / new_run).exists()
    # A run directory whose checkpoint was replaced: resume, evaluate and sample all refuse it.
    last = finished_run / "checkpoints" / "last.pt"
    last.write_bytes(path.read_bytes())
    for args in ([*train[:-len(TINY) - 2], "--iterations", "3", *TINY, "--out", str(finished_run), "--preset", "da",
                  "--checkpoint-every", "1", "--sample-every", "0"],
                 ["evaluate", str(finished_run), "--checkpoint", "last", "--metrics", "fd", "--fd-features", "ckpt:x"],
                 ["sample", str(finished_run), "--checkpoint", "last"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args[0], result.output)
        assert "safe loader refuses" in one_error_line(result)
        assert not marker.exists()
    assert last.read_bytes() == path.read_bytes()  # the refused file is left for inspection, not overwritten


def test_corrupted_checkpoint_is_refused_and_names_the_intact_previous_one(finished_run, cifar10_root, teacher_ckpt):
    last = finished_run / "checkpoints" / "last.pt"
    previous = finished_run / "checkpoints" / "last.prev.pt"
    assert torch.load(previous, weights_only=False)["iteration"] == 1
    flip_middle(last)
    corrupted = last.read_bytes()
    resume = ["train", "--out", str(finished_run), "--preset", "da", "--data-root", str(cifar10_root),
              "--iterations", "3", "--checkpoint-every", "1", "--sample-every", "0", *TINY]
    for args in (resume, ["evaluate", str(finished_run), "--checkpoint", "last", "--metrics", "fd",
                          "--fd-features", f"ckpt:{teacher_ckpt}", "--num-samples", "10"],
                 ["sample", str(finished_run), "--checkpoint", "last"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        line = one_error_line(result)
        assert str(last) in line and "corrupted" in line and str(previous) in line and "intact" in line
    assert last.read_bytes() == corrupted  # not overwritten by a resumed run
    assert not (finished_run / "evaluation.json").exists()
    # Following the advice resumes from iteration 1.
    previous.replace(last)
    result = run(resume)
    assert "at iteration 1" in result.output


def test_diverging_run_stops_with_exit_1_and_writes_nothing_non_finite(cifar10_root, tmp_path):
    out = tmp_path / "nan"
    # lr 1e20 makes D's weights overflow in the first iteration (today's code logged nan and exited 0).
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--preset", "da", "--data-root", str(cifar10_root),
                                       "--iterations", "5", "--checkpoint-every", "1", "--lr-d", "1e20", *TINY])
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    assert "iteration 1, D step" in line and "d/loss_hinge nan" in line and "no checkpoint was written yet" in line
    assert not (out / "checkpoints").exists() and not (out / "result.json").exists()


def test_skip_nonfinite_budget_then_stop_naming_the_last_good_checkpoint(cifar10_root, tmp_path, monkeypatch):
    """NaN losses at chosen iterations: one is skipped under --skip-nonfinite 1, the second stops the run."""
    from gan_kd import objectives

    hinge = objectives.discriminator_hinge
    calls = []

    def nan_at(real_logits, fake_logits):  # TINY has 2 D steps: calls 5 and 9 are the first of iterations 3 and 5
        calls.append(1)
        value = hinge(real_logits, fake_logits)
        return value * float("nan") if len(calls) in (5, 9) else value

    monkeypatch.setattr(objectives, "discriminator_hinge", nan_at)
    out = tmp_path / "skip"
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--preset", "da", "--data-root", str(cifar10_root),
                                       "--iterations", "6", "--checkpoint-every", "1", "--sample-every", "0",
                                       "--skip-nonfinite", "1", *TINY])
    assert result.exit_code == 1, result.output
    assert "step skipped (1 of 1 allowed)" in result.output
    line = one_error_line(result)
    assert "iteration 5, D step" in line and f"{out / 'checkpoints' / 'last.pt'} (iteration 4)" in line
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["iteration"] == 4 and state["skipped_nonfinite"] == 1
    assert all(torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point())


def test_teacher_with_nan_weights_is_refused_up_front(cifar10_root, tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    teacher = tmp_path / "nan_teacher.pt"
    torch.save({"model": model.state_dict(), "arch": "resnet20", "num_classes": 10, "feature_dim": 64,
                "format": "classifier_kd/1"}, teacher)  # written around save_classifier, which refuses NaN
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--preset", "vkd-whiten", "--data-root",
                                       str(cifar10_root), "--teacher", f"ckpt:{teacher}", *TINY])
    assert result.exit_code == 2, result.output
    assert "non-finite weights (fc.weight: 1 of" in one_error_line(result)
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "500"], "batch size 500 is larger than the"),
    (["--eval-samples", "1"], "eval_samples must be >= 2"),
    (["--threads", "-1"], "threads must be >= 1"),
    (["--preset", "da", "--teacher", "ckpt:x.pt"], "--preset da trains without a teacher, so --teacher would be ignored"),
    (["--preset", "da", "--normalizer", "layernorm"], "--normalizer would be ignored"),
])
def test_bad_values_are_refused_before_anything_is_written(args, message, cifar10_root, tmp_path):
    out = tmp_path / "never"
    base = ["train", "--out", str(out), "--preset", "da", "--data-root", str(cifar10_root), "--iterations", "1", *TINY]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result)
    assert not out.exists()


def test_unusable_out_and_missing_data_root_are_refused(cifar10_root, tmp_path):
    a_file = tmp_path / "somefile"
    a_file.write_text("x")
    base = ["train", "--preset", "da", "--iterations", "1", *TINY]
    result = CliRunner().invoke(main, [*base, "--data-root", str(cifar10_root), "--out", str(a_file / "run")])
    assert result.exit_code == 2 and "is a file, not a directory" in one_error_line(result)
    missing = tmp_path / "nonexistent"
    result = CliRunner().invoke(main, [*base, "--data-root", str(missing), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and f"{missing} does not exist" in one_error_line(result)
    assert not missing.exists() and not (tmp_path / "r").exists()
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if not os.access(read_only, os.W_OK):  # root may write anywhere
            result = CliRunner().invoke(main, [*base, "--data-root", str(cifar10_root), "--out", str(read_only / "r")])
            assert result.exit_code == 2 and "not writable" in one_error_line(result)
    finally:
        read_only.chmod(0o700)


def test_the_default_data_root_may_be_missing_typed_or_defaulted(fashion_mnist_raw_dir, tmp_path, monkeypatch):
    """Issue 28 item 5: in a working directory without ``data``, `train` with ``--data-root data`` (typed) or
    without --data-root, and `evaluate --data-root data`, read Debian's Fashion-MNIST copy and create nothing
    under ``data``; any other missing root is one line, exit 2, before anything is written."""
    from kd_core.runtime import fashion_mnist as kd_fashion_mnist

    monkeypatch.setattr(kd_fashion_mnist, "SYSTEM_FASHION_MNIST_DIR", fashion_mnist_raw_dir)
    monkeypatch.chdir(tmp_path)
    base = ["train", "--preset", "da", "--dataset", "fashion_mnist", "--iterations", 1, "--sample-every", 0, *TINY]
    for name, root in (("typed", ["--data-root", "data"]), ("defaulted", [])):
        run([*base, *root, "--out", tmp_path / name])
        assert json.loads((tmp_path / name / "result.json").read_text())["iterations"] == 1
        assert len(__import__("numpy").load(tmp_path / name / "subset_indices.npy")) == 60  # the fixture's 60
    run(["evaluate", tmp_path / "typed", "--checkpoint", "last", "--metrics", "colour", "--num-samples", 4,
         "--data-root", "data"])
    assert json.loads((tmp_path / "typed" / "evaluation.json").read_text())["reference"].endswith("(20 images)")
    assert not (tmp_path / "data").exists()

    missing = "/nonexistent/x"
    for command in ([*base, "--out", tmp_path / "never"],
                    ["evaluate", tmp_path / "typed", "--checkpoint", "last", "--metrics", "colour"]):
        result = CliRunner().invoke(main, [str(a) for a in command] + ["--data-root", missing])
        assert result.exit_code == 2 and f"data root {missing} does not exist" in one_error_line(result)
    assert not (tmp_path / "never").exists() and not Path(missing).exists()


def test_a_run_that_saved_nothing_can_be_taken_over_by_a_corrected_command(cifar10_root, tmp_path):
    out = tmp_path / "retry"
    bad = CliRunner().invoke(main, ["train", "--out", str(out), "--preset", "da", "--data-root", str(cifar10_root),
                                    "--iterations", "3", "--lr-d", "1e20", *TINY])
    assert bad.exit_code == 1 and (out / "config.json").is_file() and not (out / "checkpoints").exists()
    run(["train", "--out", out, "--preset", "da", "--data-root", cifar10_root, "--iterations", 1, "--sample-every", 0,
         *TINY])
    assert json.loads((out / "config.json").read_text())["lr_d"] == 2e-4


def test_a_run_whose_losses_explode_but_stay_finite_is_flagged(cifar10_root, tmp_path):
    """Issue 28 item 6: --lr-d/--lr-g 1e6 give finite losses of ~1e8. The run goes to its end, keeps its
    checkpoints, and is flagged: a warning in log.txt, "diverged" in result.json, exit code 3 (one line). A resume
    says the same (from metrics.jsonl); --divergence-threshold 0 turns the check off, also on resume and for a run
    whose config.json predates the option."""
    common = ["train", "--preset", "da", "--data-root", cifar10_root, "--sample-every", 0, "--checkpoint-every", 1,
              *TINY, "--lr-d", "1e6", "--lr-g", "1e6"]
    out = tmp_path / "exploded"
    result = CliRunner().invoke(main, [str(a) for a in [*common, "--iterations", 2, "--out", out]])
    assert result.exit_code == 3, result.output
    line = one_error_line(result)
    assert "the run diverged" in line and "beyond the divergence threshold 10000" in line
    diverged = json.loads((out / "result.json").read_text())["diverged"]
    assert set(diverged) == {"iteration", "term", "value", "threshold"} and diverged["threshold"] == 1e4
    row = next(r for r in read_metrics(out) if int(r["step"]) == diverged["iteration"])
    assert float(row[diverged["term"]]) == diverged["value"] and abs(diverged["value"]) > 1e4
    assert diverged["term"].startswith(("d/", "g/")) and diverged["iteration"] == 1
    log = (out / "log.txt").read_text()
    assert "WARNING" in log and f"{diverged['term']} reached" in log and "the run goes on to iteration 2" in log
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["iteration"] == 2

    # resumed for one more iteration: the same record, from the whole run's metrics.jsonl
    result = CliRunner().invoke(main, [str(a) for a in [*common, "--iterations", 3, "--out", out]])
    assert result.exit_code == 3 and "at iteration 2" in result.output
    assert json.loads((out / "result.json").read_text())["diverged"] == diverged

    off = tmp_path / "off"
    run([*common, "--iterations", 2, "--out", off, "--divergence-threshold", 0])
    assert "diverged" not in json.loads((off / "result.json").read_text())
    assert "the run diverged" not in (off / "log.txt").read_text()
    config = json.loads((off / "config.json").read_text())
    del config["divergence_threshold"]  # a run recorded before the option existed still resumes
    (off / "config.json").write_text(json.dumps(config))
    result = run([*common, "--iterations", 3, "--out", off, "--divergence-threshold", 0])
    assert "at iteration 2" in result.output and "diverged" not in json.loads((off / "result.json").read_text())
    result = CliRunner().invoke(main, [str(a) for a in [*common, "--iterations", 3, "--out", off]])  # the default
    assert result.exit_code == 3 and "nothing to do" in result.output  # the check may be turned on afterwards,
    assert json.loads((off / "result.json").read_text())["diverged"]["threshold"] == 1e4  # and result.json agrees


def test_table_names_what_a_classifier_run_is(tmp_path):
    run_dir = tmp_path / "cls"
    run_dir.mkdir()
    (run_dir / "result.json").write_text(json.dumps({"best_top1": 90.0}))
    (run_dir / "config.json").write_text(json.dumps({"model": "resnet20"}))
    result = CliRunner().invoke(main, ["table", str(run_dir)])
    assert result.exit_code == 2
    assert "is a classifier-kd run" in one_error_line(result) and "classifier-kd table" in result.output


def test_evaluate_offline_without_inception_weights_fails_first(finished_run, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    result = CliRunner().invoke(main, ["evaluate", str(finished_run), "--checkpoint", "last"])  # default fid,isc
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "--inception-weights" in line and "--metrics fd" in line
    assert not (finished_run / "evaluation.json").exists()


def test_train_offline_without_inception_weights_fails_before_training(cifar10_root, tmp_path, monkeypatch,
                                                                       no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "never"
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--preset", "da", "--data-root", str(cifar10_root),
                                       "--eval-every", "1", "--metrics", "fid", *TINY])
    assert result.exit_code == 2 and "--inception-weights" in one_error_line(result)
    assert not out.exists()


def test_evaluate_cls_writes_the_class_scores_and_the_real_sets_reference(finished_run, teacher_ckpt):
    result = CliRunner().invoke(main, ["evaluate", str(finished_run), "--checkpoint", "last", "--metrics", "fd,cls",
                                       "--fd-features", f"ckpt:{teacher_ckpt}", "--num-samples", "20", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((finished_run / "evaluation.json").read_text())
    assert set(evaluation["metrics"]) == {"fd", "cls_acc", "cls_is"}
    assert evaluation["labels"]["cls_acc"] == "GAN-test accuracy (resnet20)" and evaluation["labels"]["cls_is"] == "IS (resnet20)"
    for scores in (*[{k: v for k, v in zip(("cls_acc", "cls_is"), values)}
                     for values in zip(evaluation["metrics"]["cls_acc"]["values"], evaluation["metrics"]["cls_is"]["values"])],
                   evaluation["reference_scores"]):
        assert 0 <= scores["cls_acc"] <= 1 and 1 - 1e-9 <= scores["cls_is"] <= 10 + 1e-9
    assert "GAN-test accuracy (resnet20):" in result.output and "real test set:" in result.output


def test_evaluate_and_sample_refuse_a_non_finite_generator(finished_run, teacher_ckpt):
    last = finished_run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    state.pop("integrity")
    name = next(k for k, v in state["generator_ema"].items() if v.is_floating_point())
    state["generator_ema"][name].view(-1)[0] = float("nan")
    torch.save(state, last)  # around atomic_save, which refuses to write NaN
    for args in (["evaluate", str(finished_run), "--checkpoint", "last", "--metrics", "fd", "--fd-features",
                  f"ckpt:{teacher_ckpt}", "--num-samples", "10"], ["sample", str(finished_run), "--checkpoint", "last"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert f"non-finite weights ({name}: 1 of" in one_error_line(result)
    assert not (finished_run / "evaluation.json").exists() and not (finished_run / "samples" / "last_grid.png").exists()


def _wait_for(condition, process, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not condition():
        time.sleep(0.2)


def test_sigterm_saves_the_current_iteration_and_the_resume_equals_an_uninterrupted_run(fashion_mnist_raw_dir,
                                                                                         tmp_path):
    """Issue 12, item 2: SIGTERM finishes the iteration, saves it, says how to resume and exits 143."""
    from kd_core.runtime.fashion_mnist import copy_fashion_mnist
    from kd_core.runtime.metrics import read_metrics as rows

    root = tmp_path / "data"
    copy_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)

    def command(out, iterations):
        return [sys.executable, "-m", "gan_kd.cli", "train", "--out", str(out), "--preset", "da", "--dataset",
                "fashion_mnist", "--data-root", str(root), "--iterations", str(iterations), "--checkpoint-every", "1000",
                "--sample-every", "0", *TINY, "--log-every", "2"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "stopped"
    process = subprocess.Popen(command(out, 400), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / "metrics.jsonl").is_file() and len(rows(out)) >= 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["iteration"]
    assert 4 <= saved < 400 and f"stopped by SIGTERM at iteration {saved} of 400" in stderr
    assert "run the same command again to resume" in stderr

    final = saved + 3
    done = subprocess.run(command(out, final), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    straight = tmp_path / "straight"
    done = subprocess.run(command(straight, final), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    for key in ("generator", "critic", "generator_ema"):
        assert all(torch.equal(value, b[key][name]) for name, value in a[key].items()), key
    assert rows(out) == rows(straight)


@pytest.mark.parametrize("preset", ["fitnets", "spkd", "pkd", "kd-dlgan", "label-distillation"])
def test_each_baseline_preset_trains_on_fashion_mnist_and_d_trains_its_heads(preset, fashion_mnist_raw_dir,
                                                                             teacher_ckpt, tmp_path):
    """VkD Table 4's baselines (issue 14), end to end through torchvision's FashionMNIST reader: the distillation
    term is finite, and D's optimiser moves the loss's own parameters (KD-DLGAN's and label distillation's heads,
    FitNets' regressor) between two checkpoints."""
    from kd_core.runtime.checkpoint import load_checkpoint, previous_path

    root = tmp_path / "data"
    find_fashion_mnist(root, system_dir=fashion_mnist_raw_dir)
    out = tmp_path / f"run_{preset}"
    run(["train", "--out", out, "--preset", preset, "--dataset", "fashion_mnist", "--data-root", root,
         "--iterations", 3, "--checkpoint-every", 1, "--eval-every", 0, "--sample-every", 0,
         "--teacher", f"ckpt:{teacher_ckpt}", *TINY])
    rows = [r for r in read_metrics(out) if r.get("d/loss_kd")]
    assert len(rows) == 3 and all(torch.isfinite(torch.tensor(float(r["d/loss_kd"]))) for r in rows)
    last = out / "checkpoints" / "last.pt"
    before = load_checkpoint(previous_path(last), map_location="cpu")["critic"]
    after = load_checkpoint(last, map_location="cpu")["critic"]
    learnable = [key for key in after if key.startswith("distill_loss.") and "class_embeddings" not in key
                 and not key.endswith(("_u", "_v"))]
    if preset in ("spkd", "pkd"):
        assert not learnable  # relational losses: nothing of their own to train
    else:
        assert learnable
        assert all(not torch.equal(before[key], after[key]) for key in learnable), learnable
    if preset in ("kd-dlgan", "label-distillation"):  # the teacher's classes (its head rows) travel with the loss
        assert "distill_loss.class_embeddings.weight" in after
