"""classifier_kd.train and the modules it uses (config, optimizer, evaluation, targets): recipes, evaluation, the
loop's files, resume, and the training-target seam."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from classifier_kd.config import RunSetupError, TrainConfig
from classifier_kd.evaluation import evaluate, topk_correct
from classifier_kd.models import create_model, load_classifier, save_classifier
from classifier_kd.models.checkpoint import CIFAR100_INPUT_SPEC, read_input_spec
from classifier_kd.targets import CrossEntropyTarget, TrainTarget
from classifier_kd.train import fit
from kd_core.runtime.checkpoint import load_checkpoint
from kd_core.runtime.metrics import read_metrics

ARCH = "resnet20"  # the smallest CIFAR model (0.27M parameters)
SPEC = {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def tiny_data(n: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randn(n, 3, 32, 32, generator=generator) * 0.5
    images[:, 0] += (labels.float() - 4.5)[:, None, None] / 5  # a learnable signal in the red channel
    return TensorDataset(images, labels)


def config(out: Path, **overrides) -> TrainConfig:
    values = dict(model=ARCH, dataset="cifar10", num_classes=10, out=str(out), epochs=2, batch_size=8,
                  lr=0.05, milestones=[1], seed=0, device="cpu", workers=0, max_steps_per_epoch=3, log_every=2)
    values.update(overrides)
    return TrainConfig(**values)


def run(out: Path, seed: int = 0, **overrides) -> dict:
    torch.manual_seed(seed)
    target = CrossEntropyTarget(create_model(ARCH, 10))
    return fit(target, tiny_data(48, 0), tiny_data(16, 1), config(out, seed=seed, **overrides), input_spec=SPEC)


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows with every value as text (as a CSV reader would give them)."""
    return [{name: str(value) for name, value in row.items()} for row in read_metrics(run_dir)]


def test_topk_counts():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0], [5.0, 0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    labels = torch.tensor([1, 2, 0])
    # top-5 is capped at the 4 classes there are
    assert topk_correct(logits, labels, (1, 2, 5)) == [1.0, 1.0, 3.0]


class FixedLogits(nn.Module):
    """Returns the logits stored in the image tensor's first row: evaluate() must only count."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, 0, 0, :10]


def test_evaluate_is_exact():
    torch.manual_seed(0)
    images = torch.randn(37, 3, 10, 10)
    labels = torch.randint(0, 10, (37,))
    logits = images[:, 0, 0, :10]
    metrics = evaluate(FixedLogits(), TensorDataset(images, labels), batch_size=8)
    assert metrics["images"] == 37
    assert metrics["top1"] == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())
    top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean().item()
    assert metrics["top5"] == pytest.approx(100 * top5)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_fit_writes_the_run(tmp_path):
    out = tmp_path / "run"
    result = run(out)
    assert result["epochs"] == 2 and 0 <= result["best_top1"] <= 100
    assert json.loads((out / "result.json").read_text()) == result
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["lr"] == 0.05 and config_json["milestones"] == [1] and "git_commit" in config_json
    rows = metric_rows(out)
    assert [row["step"] for row in rows] == ["1", "2"]
    assert [float(row["lr"]) for row in rows] == pytest.approx([0.05, 0.005])  # x0.1 at milestone 1
    assert {"train/loss_ce", "train/top1", "test/top1", "test/top5", "test/loss"} <= set(rows[0])
    assert list(out.glob("events.out.tfevents.*"))

    # best.pt is a classifier checkpoint that load_classifier reads, with the input spec it was given.
    best = out / "checkpoints" / "best.pt"
    model = load_classifier(best).eval()
    assert model.num_classes == 10
    assert read_input_spec(best) == {"size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3}
    assert evaluate(model, tiny_data(16, 1))["top1"] == pytest.approx(result["best_top1"])
    stored = load_checkpoint(best)
    assert stored["epoch"] == result["best_epoch"] and stored["dataset"] == "cifar10"


def test_resume_continues_exactly(tmp_path):
    """1 epoch, then the same command with --epochs 2 == 2 epochs in one go (same weights, one metrics row each)."""
    run(tmp_path / "straight", epochs=2)
    run(tmp_path / "resumed", epochs=1)
    assert [row["step"] for row in metric_rows(tmp_path / "resumed")] == ["1"]
    result = run(tmp_path / "resumed", seed=0, epochs=2)
    assert result["epochs"] == 2
    assert [row["step"] for row in metric_rows(tmp_path / "resumed")] == ["1", "2"]
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["target"]
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["target"]
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6, msg=key)
    # Re-running a finished run changes nothing but re-reports it.
    again = run(tmp_path / "resumed", epochs=2)
    assert again["best_top1"] == result["best_top1"] and len(metric_rows(tmp_path / "resumed")) == 2


def test_setup_errors_write_nothing(tmp_path):
    with pytest.raises(RunSetupError, match="no full batch of 64"):
        run(tmp_path / "big-batch", batch_size=64)
    assert not (tmp_path / "big-batch").exists()

    run(tmp_path / "run", epochs=1)
    def written():  # the lock file records each holder's pid; the run's own files must not change
        return {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.name != ".lock"}

    before = written()
    with pytest.raises(RunSetupError, match=r"lr: 0.05 -> 0.1"):
        run(tmp_path / "run", epochs=1, lr=0.1)
    assert written() == before

    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"truncated")
    with pytest.raises(RunSetupError, match="cannot resume"):
        run(tmp_path / "run", epochs=2)


class ToyDistiller(TrainTarget):
    """What a distiller looks like to the loop: a student (``model``), a frozen teacher, a learnable projector;
    the seams it does not define (extra_parameters, describe, set_epoch) have TrainTarget's defaults."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.model = student
        self.teacher = teacher.eval().requires_grad_(False)
        self.projector = nn.Linear(student.feature_dim, teacher.feature_dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def forward(self, images, labels):
        features = self.model.forward_features(images)
        logits = self.model.forward_head(features)
        with torch.no_grad():
            teacher_features = self.teacher.forward_features(images)
        return logits, {"loss_ce": F.cross_entropy(logits, labels),
                        "loss_feature": F.mse_loss(self.projector(features), teacher_features)}


def test_a_distiller_plugs_into_the_loop(tmp_path):
    torch.manual_seed(0)
    target = ToyDistiller(create_model(ARCH, 10), create_model(ARCH, 10))
    teacher_before = {k: v.clone() for k, v in target.teacher.state_dict().items()}
    projector_before = target.projector.weight.detach().clone()
    fit(target, tiny_data(48, 0), tiny_data(16, 1), config(tmp_path / "kd", epochs=1), input_spec=SPEC)
    for key, value in target.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key  # weights and BN statistics untouched
    assert not torch.equal(target.projector.weight.detach(), projector_before)  # optimised with the student
    row = metric_rows(tmp_path / "kd")[0]
    assert float(row["train/loss"]) == pytest.approx(float(row["train/loss_ce"]) + float(row["train/loss_feature"]))
    assert load_classifier(tmp_path / "kd" / "checkpoints" / "best.pt").num_classes == 10  # the student alone


def test_input_spec_round_trip_and_defaults(tmp_path):
    model = create_model(ARCH, 10)
    save_classifier(tmp_path / "ours.pt", model, ARCH, 10, input_spec={"size": 32, "mean": (0.1, 0.2, 0.3),
                                                                      "std": [0.4, 0.5, 0.6]})
    assert read_input_spec(tmp_path / "ours.pt") == {"size": 32, "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    assert load_checkpoint(tmp_path / "ours.pt")["input_spec"]["mean"] == [0.1, 0.2, 0.3]  # stored as plain lists
    # Files without a spec -- RepDistiller teachers, bare state_dicts, ours without it -- are CIFAR-100 models.
    torch.save({"epoch": 240, "model": model.state_dict()}, tmp_path / "ckpt_epoch_240.pth")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    save_classifier(tmp_path / "no-spec.pt", model, ARCH, 10)
    for name in ("ckpt_epoch_240.pth", "bare.pth", "no-spec.pt"):
        assert read_input_spec(tmp_path / name) == CIFAR100_INPUT_SPEC
    with pytest.raises(ValueError, match="size, mean, std"):
        save_classifier(tmp_path / "bad.pt", model, ARCH, 10, input_spec={"size": 32, "mean": [0.5]})
    with pytest.raises(ValueError, match="positive stds"):
        save_classifier(tmp_path / "bad.pt", model, ARCH, 10, input_spec={"size": 32, "mean": [0.5], "std": [0.0]})
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(FileNotFoundError):
        read_input_spec(tmp_path / "absent.pt")


def test_step_schedule_equals_multistep_lr_stepped_per_epoch():
    from classifier_kd.optimizer import learning_rate

    cfg = config(Path("unused"), epochs=12, lr=0.2, milestones=[3, 7, 9], lr_decay=0.5)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.2)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3, 7, 9], gamma=0.5)
    for epoch in range(12):
        for step_fraction in (0.0, 0.5, 0.99):  # constant within an epoch
            assert learning_rate(cfg, epoch + step_fraction) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()


def test_cosine_schedule_with_warmup():
    from classifier_kd.optimizer import learning_rate

    cfg = config(Path("unused"), epochs=10, lr=1.0, schedule="cosine", min_lr=0.1, warmup_epochs=2, warmup_lr=0.0)
    assert learning_rate(cfg, 0.0) == 0.0
    assert learning_rate(cfg, 1.0) == pytest.approx(0.5)  # half-way through the linear warm-up
    assert learning_rate(cfg, 5.0) == pytest.approx(0.1 + 0.9 * 0.5)  # cos(pi/2) = 0: mid-point of the curve
    assert learning_rate(cfg, 10.0) == pytest.approx(0.1)
    values = [learning_rate(cfg, 2 + i * 0.1) for i in range(81)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # decreasing after the warm-up


def test_no_decay_on_one_dimensional_parameters():
    from classifier_kd.optimizer import build_optimizer

    target = CrossEntropyTarget(create_model(ARCH, 10))
    optimizer = build_optimizer(target, config(Path("unused"), optimizer="adamw", no_decay_1d=True,
                                               weight_decay=0.05))
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, exempt = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in exempt["params"])
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(target.parameters()))
    single = build_optimizer(target, config(Path("unused")))  # the CIFAR recipe: decay on everything
    assert len(single.param_groups) == 1 and isinstance(single, torch.optim.SGD)


def test_adamw_cosine_mixup_clipping_channels_last_run(tmp_path):
    result = run(tmp_path / "run", optimizer="adamw", lr=1e-3, weight_decay=0.05, no_decay_1d=True,
                 schedule="cosine", warmup_epochs=1, warmup_lr=1e-5, min_lr=1e-5, milestones=[],
                 mixup=0.8, cutmix=1.0, clip_grad=5.0, channels_last=True)
    assert result["epochs"] == 2 and 0.0 <= result["final_top1"] <= 100.0
    rows = metric_rows(tmp_path / "run")
    assert [float(row["lr"]) for row in rows] == pytest.approx([1e-5, 1e-3 * 0.5 + 1e-5 * 0.5], rel=1e-6)
    assert all(torch.isfinite(torch.tensor(float(row["train/loss"]))) for row in rows)


def test_label_smoothing_and_soft_labels_in_the_cross_entropy_target():
    torch.manual_seed(0)
    model = create_model(ARCH, 10).eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    smooth = CrossEntropyTarget(model, label_smoothing=0.1)(images, labels)[1]["loss_ce"]
    logits = model(images)
    soft = torch.full((4, 10), 0.01)
    soft[torch.arange(4), labels] += 0.9
    assert smooth.item() == pytest.approx(F.cross_entropy(logits, soft).item(), rel=1e-5)
    assert CrossEntropyTarget(model)(images, soft)[1]["loss_ce"].item() == pytest.approx(smooth.item(), rel=1e-5)


class _DivergesInEpoch2(CrossEntropyTarget):
    """Cross-entropy that turns into NaN from the second epoch on (set_epoch is 1-based)."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(self, images, labels):
        logits, terms = super().forward(images, labels)
        if self.epoch >= 2:
            terms["loss_ce"] = terms["loss_ce"] * float("nan")
        return logits, terms


def test_a_diverged_loss_stops_the_run_and_keeps_the_last_good_epoch(tmp_path):
    from classifier_kd.train import TrainingDiverged

    torch.manual_seed(0)
    target = _DivergesInEpoch2(create_model(ARCH, 10))
    with pytest.raises(TrainingDiverged, match="diverged in epoch 2.*lower --lr"):
        fit(target, tiny_data(48, 0), tiny_data(16, 1), config(tmp_path / "run", epochs=3), input_spec=SPEC)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["epoch"] == 1
    assert not (tmp_path / "run" / "result.json").exists()
    assert len(metric_rows(tmp_path / "run")) == 1


@pytest.mark.slow
def test_a_compiled_run_resumes_exactly_and_its_weights_are_the_plain_keys(tmp_path):
    """``compile=True`` (issue 26): 1 epoch then resumed to 2 == 2 epochs in one go, bit for bit, in compiled mode;
    the checkpoints hold the plain model's keys and the step time excludes the compilation (result.json)."""
    from kd_core.runtime.compiling import missing_compiler

    if missing_compiler():
        pytest.skip("no C++ compiler for inductor")
    result = run(tmp_path / "straight", epochs=2, compile=True)
    assert 0 < result["compile_s"] <= result["wall_time_s"]
    run(tmp_path / "resumed", epochs=1, compile=True)
    run(tmp_path / "resumed", epochs=2, compile=True)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["target"]
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["target"]
    assert not any("_orig_mod" in key for key in straight)
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    create_model(ARCH, num_classes=10).load_state_dict({k[len("model."):]: v for k, v in straight.items()
                                                          if k.startswith("model.")})
