"""`gan-kd` with the whole evaluation: training-time selection by the label-free FD, `export` to safetensors,
`evaluate` of a run directory and of a generator file, and bad input (one line, exit 2, nothing written)."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gan_kd.cli import main

pytestmark = pytest.mark.slow
TINY = ["--g-ch", "4", "--d-ch", "4", "--batch-size", "10", "--d-steps", "1", "--log-every", "1", "--threads", "1"]


def run(args, expect=0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def trained(cifar10_root, tmp_path) -> Path:
    """A 4-iteration `da` run on half of the fixture's 100 images, evaluated with the label-free FD and memo."""
    out = tmp_path / "run"
    run(["train", "--out", out, "--preset", "da", "--data-root", cifar10_root, "--data-fraction", 0.5,
         "--iterations", 4, "--eval-every", 2, "--eval-samples", 20, "--metrics", "fd_vgg,memo,colour",
         "--sample-every", 0, "--checkpoint-every", 2, *TINY])
    return out


def test_training_selects_by_the_label_free_fd_and_records_the_spaces(trained):
    from kd_core.runtime.metrics import read_metrics

    result = json.loads((trained / "result.json").read_text())
    assert result["best"]["metric"] == "fd_vgg"
    assert result["evaluation"]["selected_by"] == "fd_vgg"
    assert result["evaluation"]["label_free"]["name"] == "vgg16-half-random:0"
    assert result["evaluation"]["labels"]["fd_vgg"] == "FD (vgg16-half-random:0)"
    assert "50 training images" in result["evaluation"]["memorisation"]["sets"]
    rows = [r for r in read_metrics(trained) if "eval/fd_vgg" in r]
    assert [r["step"] for r in rows] == [2, 4]
    assert all({"eval/memorised", "eval/nn_ratio", "eval/channel_spread"} <= set(r) for r in rows)
    config = json.loads((trained / "config.json").read_text())
    assert config["label_free"] == "vgg16-half-random" and config["metrics"] == ["fd_vgg", "memo", "colour"]


def test_export_then_evaluate_the_file_equals_evaluating_the_run(trained, cifar10_root, tmp_path):
    generator = tmp_path / "shared" / "g.safetensors"
    generator.parent.mkdir()
    run(["export", trained, "--out", generator])
    assert generator.stat().st_size < 2_000_000
    metrics = "fd_vgg,kid_vgg,prc,dc,memo,colour"
    common = ["--metrics", metrics, "--num-samples", 30, "--data-root", cifar10_root, "--device", "cpu"]
    run(["evaluate", trained, *common])
    run(["evaluate", generator, *common])
    from_run = json.loads((trained / "evaluation.json").read_text())
    from_file = json.loads((generator.parent / "evaluation.json").read_text())
    assert from_file["metrics"] == from_run["metrics"]  # the same generator, samples and training subset
    assert from_file["checkpoint"] == "file" and from_file["iteration"] == from_run["iteration"]
    assert set(from_run["metrics"]) == {"fd_vgg", "kid_vgg_mean", "kid_vgg_std", "precision", "recall", "density",
                                        "coverage", "memorised", "nn_ratio", "channel_spread"}
    assert from_run["labels"]["precision"] == "precision (k=3, vgg16-half-random:0)"
    assert from_run["feature_spaces"]["memorisation"]["data_fraction"] == 0.5


@pytest.mark.parametrize("args, message", [
    (["--metrics", "fd_vgg,fancy"], "unknown metric(s) fancy"),
    (["--metrics", "dc", "--num-samples", 5], "too few for the dc metric: it needs at least 6"),
    (["--metrics", "icfd_vgg", "--num-samples", 50], "too few for the icfd_vgg metric: it needs at least 100"),
    (["--metrics", "fd_vgg", "--label-free-features", "vgg17"], "unknown label-free features 'vgg17'"),
    (["--metrics", "fd_vgg", "--label-free-features", "vgg16:missing.pt"],
     "label-free VGG-16 weights file missing.pt does not exist"),
    (["--metrics", "icfd"], "icfd metric needs --fd-features"),
    # issue 28 item 6: the evaluator's classifier is named as what it is, not as a teacher
    (["--metrics", "fd", "--fd-features", "ckpt:missing.pt"], "FD network checkpoint not found: missing.pt"),
    (["--metrics", "fd", "--fd-features", "missing.pt"], "bad FD network 'missing.pt'"),
])
def test_evaluate_bad_input_one_line_exit_2_nothing_written(trained, args, message):
    result = run(["evaluate", trained, *args], expect=2)
    assert message in one_error_line(result)
    assert not (trained / "evaluation.json").exists()


def test_a_label_free_file_that_does_not_fit_is_one_line(trained, tmp_path):
    import torch
    from torchvision.models import resnet18

    path = tmp_path / "not_vgg.pt"
    torch.save(resnet18().state_dict(), path)
    result = run(["evaluate", trained, "--metrics", "fd_vgg", "--label-free-features", f"vgg16:{path}"], expect=2)
    assert "do not fit torchvision's VGG-16 trunk" in one_error_line(result)
    assert not (trained / "evaluation.json").exists()


def test_export_and_evaluate_refuse_bad_files(trained, tmp_path):
    assert "must end in .safetensors" in one_error_line(run(["export", trained, "--out", tmp_path / "g.pt"], expect=2))
    assert not (tmp_path / "g.pt").exists()
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a safetensors file")
    assert "cannot read generator file" in one_error_line(run(["evaluate", fake, "--metrics", "colour"], expect=2))
    assert "does not exist" in one_error_line(run(["evaluate", tmp_path / "nope.safetensors"], expect=2))
    assert not (tmp_path / "evaluation.json").exists()
