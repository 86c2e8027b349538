"""Fixtures shared by the GAN tests: offline stand-ins for the big networks, and a network guard.

The expensive ones are session-scoped and built lazily (only when a test asks for them):

* ``random_inception_weights``: a state dict for torch-fidelity's ``inception-v3-compat`` with random weights
  (``shared/reference/eval-and-teacher.md`` §1). With PyTorch's default init the features die out over the
  94 conv+BN blocks (FID ~1e-16, IS exactly 1), so the convolutions are re-initialised with Kaiming.
* ``clip_model`` / ``clip_weights_file``: a randomly initialised open_clip model of a small registered
  architecture, and its state dict as ``--teacher-weights`` would read it.
* ``classifier_ckpt``: a tiny ``classifier_kd`` checkpoint (resnet8x4, 10 classes) with an ``input_spec``.

``no_network`` makes every connection / DNS attempt raise and records it, so a test can assert that none
was made even when the code under test swallows the error.

``fake_copy`` writes a study run copy with made-up numbers (:func:`write_fake_copy`), for the study's report.
"""
from __future__ import annotations

import csv
import json
import socket
import urllib.request
from pathlib import Path

import pytest
import torch
from torch import nn

CLIP_MODEL = "ViT-S-32-alt"  # smallest registered open_clip ViT (22.6M visual params, 256-d embedding, 224x224)
CLASSIFIER_ARCH = "resnet8x4"
CLASSIFIER_INPUT_SPEC = {"size": 32, "mean": [0.5071, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2762]}


@pytest.fixture(scope="session")
def clip_model_name() -> str:
    return CLIP_MODEL


@pytest.fixture(scope="session")
def classifier_input_spec() -> dict:
    return dict(CLASSIFIER_INPUT_SPEC)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every socket connect / DNS lookup / urlopen raises; returns the list of attempts (should stay empty)."""
    attempts: list[str] = []

    def refuse(what: str):
        def blocked(*args, **kwargs):
            attempts.append(f"{what}{args[1:2] if what == 'connect' else args[:1]}")
            raise OSError(f"network access blocked in tests ({what})")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    return attempts


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch-fidelity Inception-v3 state dict (all 566 tensors) with random, non-vanishing weights."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _KeepRandomInit(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.save({}, path)  # the constructor torch.loads the file before calling load_state_dict
    torch.manual_seed(0)
    extractor = _KeepRandomInit("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    for module in extractor.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    nn.init.normal_(extractor.fc.weight, std=0.1)
    torch.save({key: value.detach().cpu() for key, value in extractor.state_dict().items()}, path)
    return path


@pytest.fixture(scope="session")
def clip_model() -> nn.Module:
    """A random-weight open_clip model (eval mode); the reference the teacher is compared with."""
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model(CLIP_MODEL, pretrained=None, device="cpu").eval().requires_grad_(False)


@pytest.fixture(scope="session")
def clip_preprocess_val():
    """open_clip's own validation transform for CLIP_MODEL (works on batched [0, 1] tensors too)."""
    import open_clip

    _, _, preprocess_val = open_clip.create_model_and_transforms(CLIP_MODEL, pretrained=None, device="cpu")
    return preprocess_val


@pytest.fixture(scope="session")
def clip_weights_file(clip_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``clip_model``'s state dict, written with ``torch.save`` (what --teacher-weights reads)."""
    path = tmp_path_factory.mktemp("clip") / f"{CLIP_MODEL}-random.pt"
    torch.save(clip_model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def classifier_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet8x4 (10 classes) in our checkpoint format, with ``input_spec``; BN running stats are non-trivial."""
    from classifier_kd.models import create_model, save_classifier

    torch.manual_seed(0)
    model = create_model(CLASSIFIER_ARCH, 10)
    # A few train-mode passes move BN's running statistics away from (0, 1), so eval mode and train mode
    # give different features and a teacher left in train mode would be caught.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 0.5 + 0.3)
    path = tmp_path_factory.mktemp("classifier") / f"{CLASSIFIER_ARCH}.pt"
    save_classifier(path, model, CLASSIFIER_ARCH, 10, input_spec=CLASSIFIER_INPUT_SPEC)
    return path


FAKE_REGIME = dict(fraction=0.01, width=8, iterations=300, eval_every=100)  # the study regime of the fake copies


def write_fake_copy(results: Path, row: str, seed: int, fd: float, curve: list[float], gap: list[float],
                    regime=None, scores: tuple[float, float] | None = None, fd_vgg: float | None = None,
                    metrics: dict[str, float] | None = None, kd_weight: float = 1.0,
                    fd_vgg_curve: list[float] | None = None) -> Path:
    """A run copy as ``gan_kd.study.copy_small_files`` leaves it (the numbers are made up for the report's
    plumbing): ``fd`` (and ``fd_vgg``, the ``cls`` ``scores``, any other ``metrics`` by key) as the evaluation's
    means; ``curve`` / ``fd_vgg_curve`` / ``gap`` logged every 100 iterations. ``row`` ``da``/``no-da``: no teacher."""
    from gan_kd import study
    from gan_kd.config import TrainConfig

    regime = regime or study.Regime(**FAKE_REGIME)
    folder = results / study.run_name(row, regime, seed)
    folder.mkdir(parents=True)
    teacherless = study.split_row(row)[0] in study.TEACHERLESS_ROWS
    config = TrainConfig(dataset="fashion_mnist", data_fraction=regime.fraction, g_ch=8, d_ch=8, iterations=300,
                         eval_every=100, eval_samples=2000, ema_decay=0.99, ema_start=100, seed=seed,
                         preset="da" if teacherless else "vkd-whiten", distill=not teacherless, kd_weight=kd_weight,
                         precision="auto" if regime.precision == "fp32" else regime.precision,
                         channels_last=regime.channels_last, compile=regime.compile).to_dict()
    (folder / "config.json").write_text(json.dumps(config))
    best = {"metric": "fd", "iteration": 100 * (curve.index(min(curve)) + 1)} if curve else {}  # as gan-kd train selects
    (folder / "result.json").write_text(json.dumps({"wall_time_s": 600.0 + seed, "best": best}))
    evaluation = {"metrics": {"fd": {"mean": fd, "std": 0.1, "values": [fd - 0.1, fd + 0.1]}}, "labels": {"fd": "FD (resnet32)"},
                  "iteration": 200, "num_samples": 10000, "repeats": 2, "seeds": [0, 1], "hardware": "test CPU"}
    if fd_vgg is not None:
        evaluation["metrics"]["fd_vgg"] = {"mean": fd_vgg, "std": 0.1, "values": [fd_vgg - 0.1, fd_vgg + 0.1]}
    if scores is not None:  # as `gan-kd evaluate --metrics fd,cls` writes them
        for key, value in zip(("cls_acc", "cls_is"), scores):
            evaluation["metrics"][key] = {"mean": value, "std": 0.0, "values": [value, value]}
        evaluation["labels"].update({"cls_acc": "GAN-test accuracy (resnet32)", "cls_is": "IS (resnet32)"})
        evaluation["reference_scores"] = {"cls_acc": 0.9, "cls_is": 9.5}
    for key, value in (metrics or {}).items():
        evaluation["metrics"][key] = {"mean": value, "std": 0.0, "values": [value, value]}
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    fd_vgg_curve = fd_vgg_curve or [""] * len(curve)
    with open(folder / "metrics.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["step", "d_loss", "eval/fd", "eval/fd_vgg", "probe/d_gap", "probe/rt"])
        for i, (value, free, g) in enumerate(zip(curve, fd_vgg_curve, gap)):
            writer.writerow([50 * (2 * i + 1), 1.0, "", "", "", ""])
            writer.writerow([100 * (i + 1), "", value, free, g, 0.5])
    return folder


@pytest.fixture
def fake_copy():
    """:func:`write_fake_copy`."""
    return write_fake_copy
