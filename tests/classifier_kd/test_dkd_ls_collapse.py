"""scripts/dkd_ls_collapse.py: the replay behind the DKD+LS collapse explanation, on the tiny fake Fashion-MNIST."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from classifier_kd.models import create_model, save_classifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dkd_ls_collapse.py"


def _script():
    spec = importlib.util.spec_from_file_location("dkd_ls_collapse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(zscore: bool) -> dict:
    options = ({"alpha": 9.0, "beta": 72.0, "temperature": 2.0, "warmup_epochs": 1, "zscore": True} if zscore else
               {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 1})
    return {"model": "resnet20", "dataset": "fashion_mnist", "num_classes": 10, "augment": "cifar", "image_size": 32,
            "data_fraction": 1.0, "batch_size": 8, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
            "ce_weight": 1.0, "losses": [{"name": "dkd", "weight": 1.0, "options": options}]}


def test_arms_take_the_recorded_options_and_the_warm_up_factor():
    arms = _script()._arms(_config(False), _config(True))
    assert [(label, options["beta"], factor) for label, options, factor in arms] == [
        ("DKD (as run)", 8.0, 1.0), ("DKD+LS (as run)", 72.0, 1.0), ("DKD+LS, warm-up factor 1/20", 72.0, 0.05)]


def test_replay_starts_from_the_same_student_and_scales_only_the_dkd_term(fashion_system_dir, tmp_path):
    from classifier_kd.dataset_specs import input_spec

    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(5)
    save_classifier(teacher, create_model("resnet20", 10), "resnet20", 10, input_spec=input_spec("fashion_mnist"),
                    dataset="fashion_mnist")
    script, config = _script(), _config(True)
    options = config["losses"][0]["options"]
    full = script.replay(config, options, 1.0, 3, 2, str(tmp_path / "data"), str(teacher))
    scaled = script.replay(config, options, 1 / 20, 3, 2, str(tmp_path / "data"), str(teacher))
    first, first_scaled = full["trace"][0], scaled["trace"][0]
    assert [row["step"] for row in full["trace"]] == [1, 2]
    assert first_scaled["sigma"] == first["sigma"] and first_scaled["ce"] == first["ce"]  # same init and batch
    assert first_scaled["dkd"] == pytest.approx(first["dkd"] / 20, rel=1e-5)
    assert first_scaled["grad_dkd"] == pytest.approx(first["grad_dkd"] / 20, rel=1e-4)
    assert first["grad_ce"] > 0 and 0 < first["mode"] <= 1
    assert full["trace"][1]["sigma"] != scaled["trace"][1]["sigma"]  # the step itself differs
    assert 0 < full["test_mode"] <= 1 and 0 <= full["test_top1"] <= 100
