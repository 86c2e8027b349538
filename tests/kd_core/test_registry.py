import subprocess
import sys

import pytest
import torch

import kd_core
from kd_core import registry

LOSS_NAMES = kd_core.available()["losses"]
FEATURE_LOSSES = registry.feature_losses()


def test_available_lists_every_name():
    names = kd_core.available()
    assert names["projectors"] == ["orthogonal", "linear", "mlp", "identity", "aad"]
    assert names["normalizers"] == ["none", "layernorm", "standardize", "whiten"]
    assert names["losses"] == ["kd", "dkd", "vkd", "fitnet", "dcd", "rsd", "spkd", "pkd", "kd-dlgan",
                               "label-distillation"]
    assert FEATURE_LOSSES == ["vkd", "fitnet", "dcd", "rsd", "spkd", "pkd", "kd-dlgan",
                              "label-distillation"]  # from each class's ``kind``


def test_available_from_the_command_line():
    out = subprocess.run([sys.executable, "-c", "import kd_core; print(kd_core.available())"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("orthogonal", "whiten", "vkd", "dcd", "rsd", "dkd"):
        assert name in out


@pytest.mark.parametrize("name", kd_core.available()["projectors"])
def test_every_projector_builds_and_backpropagates(name):
    projector = kd_core.build_projector(name, 6, 6 if name == "identity" else 9)
    x = torch.randn(4, 6, requires_grad=True)
    y = projector(x)
    assert y.shape == (4, 6 if name == "identity" else 9)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", kd_core.available()["normalizers"])
def test_every_normalizer_builds(name):
    z = kd_core.build_normalizer(name)(torch.randn(16, 8) * 3 + 1)
    assert z.shape == (16, 8) and torch.isfinite(z).all()


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("zscore", [False, True])
def test_every_loss_builds_runs_and_backpropagates(name, zscore):
    torch.manual_seed(0)
    if name in FEATURE_LOSSES:
        if zscore:
            pytest.skip("zscore is a logit-loss option")
        extra = {}
        if registry.needs_class_embeddings(name):  # the teacher's classes (its head rows, or CLIP's text side)
            from kd_core.losses.classes import ClassEmbeddings

            extra["class_embeddings"] = ClassEmbeddings(torch.randn(10, 20), torch.randn(10))
        loss = kd_core.build_loss(name, student_dim=12, teacher_dim=20, **extra)
        student = torch.randn(16, 12, requires_grad=True)
        value = loss(student, torch.randn(16, 20))
    else:
        loss = kd_core.build_loss(name, zscore=zscore)
        student = torch.randn(16, 10, requires_grad=True)
        value = loss(student, torch.randn(16, 10), torch.randint(0, 10, (16,)))
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    for parameter in loss.parameters():
        if parameter.requires_grad and parameter is not getattr(loss, "bias", None):
            assert parameter.grad is not None, f"{name}: a learnable part got no gradient"


def test_vkd_options_travel_as_nested_dicts():
    loss = kd_core.build_loss("vkd", student_dim=4, teacher_dim=8, normalizer="whiten", distance="mse",
                              projector_options={"orthogonal_map": "cayley"},
                              normalizer_options={"group_size": 2, "eps": 1e-3})
    assert loss.projector.orthogonal_map == "cayley"
    assert loss.normalizer.group_size == 2 and loss.normalizer.eps == 1e-3
    assert loss.distance == "mse"


def test_unknown_names_list_allowed_values():
    with pytest.raises(ValueError, match="kd, dkd, vkd, fitnet, dcd, rsd, spkd, pkd, kd-dlgan, label-distillation"):
        kd_core.build_loss("crd")
    with pytest.raises(ValueError, match="orthogonal, linear, mlp, identity, aad"):
        kd_core.build_projector("conv", 4, 4)
    with pytest.raises(ValueError, match="none, layernorm, standardize, whiten"):
        kd_core.build_normalizer("zca")
    with pytest.raises(ValueError, match="none, layernorm, standardize, whiten"):
        kd_core.build_loss("vkd", student_dim=4, teacher_dim=4, normalizer="batchnorm")


def test_unknown_options_list_accepted_ones():
    with pytest.raises(ValueError, match="temprature.*accepted: temperature"):
        kd_core.build_loss("kd", temprature=2)
    with pytest.raises(ValueError, match="group_size"):  # a whitening option given to layer norm
        kd_core.build_loss("vkd", student_dim=4, teacher_dim=4, normalizer="layernorm",
                           normalizer_options={"group_size": 3})
    with pytest.raises(ValueError, match="unknown option.*orthogonal_map"):  # flat: not the loss's own option
        kd_core.build_loss("vkd", student_dim=4, teacher_dim=4, orthogonal_map="qr")


@pytest.mark.parametrize("dims", [(None, 8), (8, None), (0, 8), (8, -2), (2.5, 8)])
@pytest.mark.parametrize("name", FEATURE_LOSSES)
def test_bad_dims(name, dims):
    with pytest.raises(ValueError, match="student_dim|teacher_dim"):
        kd_core.build_loss(name, student_dim=dims[0], teacher_dim=dims[1])


def test_logit_losses_take_no_dims():
    with pytest.raises(ValueError, match="takes no student_dim"):
        kd_core.build_loss("kd", student_dim=4, teacher_dim=4)


def test_identity_projector_needs_equal_dims():
    with pytest.raises(ValueError, match="in_dim == out_dim"):
        kd_core.build_loss("vkd", student_dim=4, teacher_dim=8, projector="identity")


def test_a_new_loss_is_one_class_and_one_decorator_line():
    """What README's "Adding a method" shows: the class registers itself, and every list follows."""
    from torch import nn

    from kd_core.losses.base import DistillationLoss

    @kd_core.register("loss", "test-cosine")
    class CosineLoss(DistillationLoss):
        kind = "feature"

        def __init__(self, student_dim: int, teacher_dim: int, scale: float = 1.0):
            super().__init__()
            self.projector = kd_core.build_projector("linear", student_dim, teacher_dim)
            self.scale = scale

        def forward(self, student, teacher):
            return self.scale * (1 - nn.functional.cosine_similarity(self.projector(student), teacher).mean())

    try:
        assert "test-cosine" in kd_core.available()["losses"] and "test-cosine" in registry.feature_losses()
        loss = kd_core.build_loss("test-cosine", student_dim=3, teacher_dim=5, scale=2.0)
        assert loss(torch.randn(4, 3), torch.randn(4, 5)).dim() == 0
        with pytest.raises(ValueError, match="registered twice"):
            kd_core.register("loss", "test-cosine")(type("Other", (DistillationLoss,), {"kind": "feature"}))
        with pytest.raises(ValueError, match="must subclass kd_core.losses.base.DistillationLoss and set kind"):
            kd_core.register("loss", "test-kindless")(type("Kindless", (DistillationLoss,), {}))
        with pytest.raises(ValueError, match="must subclass"):
            kd_core.register("loss", "test-plain")(type("Plain", (nn.Module,), {"kind": "logit"}))
    finally:
        registry._TABLES["loss"].pop("test-cosine", None)


@pytest.mark.parametrize("module", ["kd_core.registry", "kd_core.losses.feature", "kd_core.projectors",
                                    "kd_core.normalizers", "kd_core.losses"])
def test_any_module_imports_first_in_a_fresh_interpreter(module):
    """No import cycle: whichever kd_core module is imported first, the registry ends up complete."""
    code = f"import {module}, kd_core; print(sorted(kd_core.available()['losses']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(LOSS_NAMES))
