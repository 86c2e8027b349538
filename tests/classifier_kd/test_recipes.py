"""classifier_kd.recipes: each preset expands to the published values, and only to TrainConfig options."""
from __future__ import annotations

import dataclasses

import pytest

import kd_core

from classifier_kd.recipes import method_losses, methods
from classifier_kd.recipes import METHOD_DEFAULTS, RECIPES, method_defaults, recipe_values
from classifier_kd.config import TrainConfig

# Values the recipe hands to the data pipeline and the training target rather than to the loop.
NON_LOOP_KEYS = {"augment", "image_size", "label_smoothing"}


def test_cifar100_recipe_and_its_low_lr_models():
    values = recipe_values("cifar100", "resnet32x4")
    assert {key: values[key] for key in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "milestones",
                                         "lr_decay", "optimizer", "schedule")} == {
        "epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
        "milestones": [150, 180, 210], "lr_decay": 0.1, "optimizer": "sgd", "schedule": "step"}
    assert values["augment"] == "cifar" and values["image_size"] == 32 and values["mixup"] == 0
    for model in ("MobileNetV2", "ShuffleV1", "ShuffleV2"):
        assert recipe_values("cifar100", model)["lr"] == 0.01
    values["milestones"].append(230)  # a fresh copy: overriding never edits the recipe
    assert recipe_values("cifar100", "resnet32x4")["milestones"] == [150, 180, 210]
    with pytest.raises(ValueError, match="unknown recipe 'imagenet-xl'"):
        recipe_values("imagenet-xl", "resnet18")


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_expands_to_config_fields_only(recipe):
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = recipe_values(recipe, "resnet18")
    assert set(values) - NON_LOOP_KEYS <= fields
    TrainConfig(model="m", dataset="d", num_classes=10, out="o",
                **{k: v for k, v in values.items() if k not in NON_LOOP_KEYS})


def test_published_settings_of_the_other_recipes():
    deit = recipe_values("deit", "timm/deit_tiny_patch16_224")
    assert (deit["optimizer"], deit["lr"], deit["weight_decay"], deit["no_decay_1d"], deit["schedule"],
            deit["min_lr"], deit["warmup_epochs"], deit["epochs"], deit["batch_size"]) == \
        ("adamw", 5e-4, 0.05, True, "cosine", 5e-6, 0, 300, 512)
    assert (deit["mixup"], deit["cutmix"], deit["label_smoothing"], deit["clip_grad"]) == (0.8, 1.0, 0.1, None)
    imagenet = recipe_values("imagenet", "resnet18")
    assert (imagenet["lr"], imagenet["batch_size"], imagenet["milestones"], imagenet["weight_decay"]) == \
        (0.2, 512, [30, 60, 90], 1e-4)
    cnn, vit = recipe_values("cross-arch-cnn", "resnet18"), recipe_values("cross-arch-vit", "timm/deit_tiny_patch16_224")
    assert (cnn["lr"], cnn["weight_decay"], cnn["warmup_epochs"], cnn["image_size"], cnn["augment"]) == \
        (0.05, 2e-3, 3, 224, "rrc")
    assert (vit["optimizer"], vit["warmup_epochs"], vit["warmup_lr"], vit["min_lr"], vit["clip_grad"]) == \
        ("adamw", 20, 5e-7, 1e-5, 5.0)


def test_method_defaults_follow_the_authors_code():
    kd = method_defaults("cifar100", "kd")
    assert kd == {"ce_weight": 0.1, "losses": [("kd", 0.9, {"temperature": 4.0})]}
    # logit standardisation: KD weight 9, base temperature 2, CE 0.1 (lsKD --logit-stand)
    assert method_defaults("cifar100", "kd", zscore=True) == {
        "ce_weight": 0.1, "losses": [("kd", 9.0, {"temperature": 2.0, "zscore": True})]}
    dkd = method_defaults("cifar100", "dkd", zscore=True)["losses"][0]
    assert dkd[2]["alpha"] == 9.0 and dkd[2]["beta"] == 72.0 and dkd[2]["temperature"] == 2.0
    assert dkd[2]["warmup_epochs"] == 20
    imagenet_dkd = method_defaults("imagenet", "dkd")["losses"][0][2]
    assert (imagenet_dkd["temperature"], imagenet_dkd["beta"], imagenet_dkd["warmup_epochs"]) == (1.0, 0.5, 1)
    assert method_defaults("imagenet", "kd") == {"ce_weight": 0.5, "losses": [("kd", 0.5, {"temperature": 1.0})]}
    rsd = method_defaults("cross-arch-cnn", "rsd")
    assert rsd["label_smoothing"] == 0.1 and rsd["losses"] == [("rsd", 0.1, {"kappa": 0.01})]
    assert [name for name, _, _ in method_defaults("cifar100", "dcd+kd")["losses"]] == ["kd", "dcd"]
    assert method_defaults("cifar100", "ce")["losses"] == []
    # fresh copies
    method_defaults("cifar100", "kd")["losses"][0][2]["temperature"] = 99
    assert METHOD_DEFAULTS["kd"]["losses"][0][2]["temperature"] == 4.0


def test_zscore_needs_a_logit_term_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="method 'dcd' has neither"):
        method_defaults("cifar100", "dcd", zscore=True)
    with pytest.raises(ValueError, match="unknown method 'crd'"):
        method_defaults("cifar100", "crd")


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_weights_exactly_the_losses_of_each_method(recipe):
    # every composition, then every registered loss as a method of its own
    assert methods()[:len(METHOD_DEFAULTS)] == list(METHOD_DEFAULTS)
    assert set(methods()) == set(METHOD_DEFAULTS) | set(kd_core.available()["losses"])
    for method, losses in method_losses().items():
        assert tuple(name for name, _, _ in method_defaults(recipe, method)["losses"]) == losses


def test_set_with_a_dotted_key_reaches_a_nested_option():
    from classifier_kd.recipes import distillation_terms

    terms = distillation_terms("cifar100", "vkd", settings=[("vkd", "normalizer", "whiten"),
                                                             ("vkd", "projector_options.orthogonal_map", "cayley")])
    assert terms["losses"][1] == ("vkd", 1.0, {"normalizer": "whiten", "projector_options": {"orthogonal_map": "cayley"}})
    with pytest.raises(ValueError, match="'dkd' is not a loss of this run"):
        distillation_terms("cifar100", "vkd", settings=[("dkd", "beta", 2)])


def test_set_none_for_a_named_option_is_the_name_none():
    """`--set vkd.normalizer=none` (read as Python's None) means the registered normaliser "none": it used to
    reach the registry as None and fail to build; an option whose default is not a name keeps None."""
    from classifier_kd.recipes import distillation_terms
    from kd_core.registry import build_normalizer

    terms = distillation_terms("cifar100", "vkd", settings=[("vkd", "normalizer", None), ("vkd", "projector", "linear")])
    assert terms["losses"][1] == ("vkd", 1.0, {"normalizer": "none", "projector": "linear"})
    loss = kd_core.registry.lookup("loss", "vkd")(64, 64, **terms["losses"][1][2])
    assert type(loss.normalizer) is type(build_normalizer("none"))
    nested = distillation_terms("cifar100", "vkd", settings=[("vkd", "normalizer_options.group_size", None)])
    assert nested["losses"][1][2] == {"normalizer_options": {"group_size": None}}


def test_a_registered_loss_is_a_method_with_no_other_line():
    from kd_core import registry
    from kd_core.losses.base import DistillationLoss

    @kd_core.register("loss", "test-l1")
    class L1Loss(DistillationLoss):
        kind = "logit"

        def forward(self, student, teacher, targets):
            return (student - teacher).abs().mean()

    try:
        assert "test-l1" in methods() and method_losses()["test-l1"] == ("test-l1",)
        assert method_defaults("cifar100", "test-l1") == {"ce_weight": 1.0, "losses": [("test-l1", 1.0, {})]}
    finally:
        registry._TABLES["loss"].pop("test-l1", None)


@pytest.mark.parametrize("method, weight", [("spkd", 3000.0), ("pkd", 30000.0)])
def test_relational_baselines_take_repdistillers_weights(method, weight):
    # RepDistiller's run_cifar_distill.sh: -r 1 (CE) -a 0 (no KD) -b 3000 (SP) / -b 30000 (PKT), same reductions
    for recipe in RECIPES:
        assert method_defaults(recipe, method) == {"ce_weight": 1.0, "losses": [(method, weight, {})]}
    assert method_losses()[method] == (method,)
