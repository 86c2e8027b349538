import pytest
import torch

import kd_core
from gan_kd.models.biggan import Discriminator
from gan_kd.objectives import (Critic, LeCamRegularizer, build_distill_loss, discriminator_hinge, discriminator_terms,
                               generator_hinge, generator_terms)
from gan_kd.config import TrainConfig


def test_hinge_losses():
    assert discriminator_hinge(torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])).item() == pytest.approx(0.5 + 0.75)
    assert generator_hinge(torch.tensor([1.0, 3.0])).item() == -2.0


def test_lecam_tracks_then_regularises():
    reg = LeCamRegularizer(weight=0.3, decay=0.9, start=10)
    real, fake = torch.full((4,), 2.0), torch.full((4,), -1.0)
    reg.update(real, fake, iteration=1)
    assert reg.ema_real == 2.0 and reg.ema_fake == -1.0  # copies before start
    assert reg(real, fake, iteration=5) == 0
    value = reg(torch.full((4,), 0.5), torch.full((4,), 1.0), iteration=11)
    # relu(0.5 - (-1))^2 + relu(2 - 1)^2 = 2.25 + 1
    assert value.item() == pytest.approx(0.3 * 3.25)
    reg.update(torch.full((4,), 0.0), fake, iteration=11)
    assert reg.ema_real == pytest.approx(0.9 * 2.0)


def test_critic_without_teacher_features_skips_distillation():
    critic = Critic(Discriminator(d_ch=4), None)
    logits, distill = critic(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert logits.shape == (2, 1) and distill is None


@pytest.mark.parametrize("lecam_weight", [0.0, 0.3])
@pytest.mark.parametrize("distilling", [False, True])
def test_discriminator_terms_are_named_and_total_is_what_the_step_always_minimised(lecam_weight, distilling):
    torch.manual_seed(0)
    real, fake = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    distill = (real[:3] ** 2).mean() if distilling else None
    lecam = LeCamRegularizer(lecam_weight, start=0)
    lecam.update(real, fake, iteration=0)
    terms = discriminator_terms(real, fake, distill, lecam=lecam, kd_weight=0.7, iteration=1)
    expected = ["loss_hinge"] + (["loss_lecam"] if lecam_weight else []) + (["loss_kd"] if distilling else []) + ["total"]
    assert list(terms) == expected
    # the same operations in the same order as before the terms were named: bitwise equal
    hinge = discriminator_hinge(real, fake)
    reg = lecam(real, fake, 1)
    assert torch.equal(terms["total"], hinge + reg + (0.7 * distill if distill is not None else 0.0))
    assert torch.equal(terms["loss_hinge"], hinge)
    if distilling:
        assert terms["loss_kd"] is distill  # logged before kd_weight, as kd_loss was
    if lecam_weight:
        assert torch.equal(terms["loss_lecam"], reg) and terms["loss_lecam"] > 0  # already weighted
    terms["total"].backward()
    assert real.grad is not None and fake.grad is not None


def test_generator_terms_total_is_the_hinge():
    logits = torch.tensor([1.0, -3.0])
    terms = generator_terms(logits)
    assert list(terms) == ["loss_hinge", "total"] and terms["total"] is terms["loss_hinge"]
    assert terms["total"].item() == 1.0


def test_build_distill_loss_passes_projector_and_normaliser_options_nested(monkeypatch):
    calls = []
    build_loss = kd_core.build_loss

    def spy(name, **options):
        calls.append((name, options))
        return build_loss(name, **options)

    monkeypatch.setattr(kd_core, "build_loss", spy)
    config = TrainConfig(teacher="ckpt:unused", projector="orthogonal", orthogonal_map="cayley", normalizer="whiten",
                         whiten_group_size=4)
    loss = build_distill_loss(config, student_dim=16, teacher_dim=8)
    assert loss.projector.orthogonal_map == "cayley" and loss.normalizer.group_size == 4
    assert calls[-1] == ("vkd", {"student_dim": 16, "teacher_dim": 8, "projector": "orthogonal", "normalizer": "whiten",
                                 "distance": "mse", "projector_options": {"orthogonal_map": "cayley"},
                                 "normalizer_options": {"group_size": 4}})
    # options of a part that is not used are not passed to it
    config = TrainConfig(teacher="ckpt:unused", projector="linear", orthogonal_map="cayley", normalizer="none",
                         whiten_group_size=4)
    build_distill_loss(config, student_dim=16, teacher_dim=8)
    assert calls[-1][1]["projector_options"] == {} and calls[-1][1]["normalizer_options"] == {}
    assert build_distill_loss(TrainConfig(distill=False), student_dim=16, teacher_dim=None) is None


def test_distillation_ratio_is_the_weighted_term_over_the_hinge_loss():
    from gan_kd.objectives import distillation_ratio

    assert distillation_ratio({"d/loss_kd": 2.0, "d/loss_hinge": 0.5}, kd_weight=0.1) == {"d/kd_ratio": pytest.approx(0.4)}
    assert distillation_ratio({"d/loss_kd": -3.0, "d/loss_hinge": 1.5}, kd_weight=1.0) == {"d/kd_ratio": 2.0}  # magnitude
    assert distillation_ratio({"d/loss_hinge": 1.0}, kd_weight=1.0) == {}  # no distillation term
    assert distillation_ratio({"d/loss_kd": 1.0, "d/loss_hinge": 0.0}, kd_weight=1.0) == {}  # no ratio to take


def test_ratio_summary_reads_the_first_evaluation_and_the_end():
    from gan_kd.objectives import ratio_summary

    curve = [(50, 3.0), (100, 2.0), (150, 1.0), (200, 0.5)]
    assert ratio_summary(curve, first_eval=100, kd_weight=10.0) == {
        "kd_weight": 10.0, "first_eval": {"iteration": 100, "ratio": 2.0}, "end": {"iteration": 200, "ratio": 0.5}}
    # the last log step at or before the evaluation; the first log step when the evaluation comes before any
    assert ratio_summary(curve, first_eval=120, kd_weight=1.0)["first_eval"] == {"iteration": 100, "ratio": 2.0}
    assert ratio_summary(curve, first_eval=10, kd_weight=1.0)["first_eval"] == {"iteration": 50, "ratio": 3.0}
    assert ratio_summary([], first_eval=100, kd_weight=1.0) is None
