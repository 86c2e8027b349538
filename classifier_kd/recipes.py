"""Training recipes as named presets: what ``--recipe NAME`` expands to, before command-line overrides.

Each recipe is the published setting of one protocol (``shared/reference/losses.md`` sec. 2, which cites the
authors' code); :func:`recipe_values` returns its optimiser, schedule, batch, augmentation and input size as
a fresh dict of :class:`classifier_kd.config.TrainConfig` fields, and :func:`method_defaults` the loss
weights and options a distillation method uses under it. Every value can be overridden on the command line,
and the run's ``config.json`` records the recipe's expansion next to the values used.

========================  =================================================================================
``cifar100``              RepDistiller / mdistiller / CRD (teachers and students): SGD momentum 0.9, batch
                          64, 240 epochs, lr 0.05 (0.01 for MobileNetV2 / ShuffleV1 / ShuffleV2), x0.1 at
                          epochs 150/180/210, weight decay 5e-4 on every parameter; crop + flip at 32 px.
``imagenet``              mdistiller / lsKD ImageNet CNNs (R34->R18, R50->MV1/MV2): SGD lr 0.2, batch 512,
                          100 epochs, x0.1 at 30/60/90, wd 1e-4; RandomResizedCrop 224 + flip.
``deit``                  VkD's DeiT students: AdamW lr 5e-4, wd 0.05 (none on biases and 1-D parameters),
                          300 epochs, batch 512, cosine per iteration to 5e-6 with no warm-up, no gradient
                          clipping; DeiT III 3-Augment, mixup 0.8, cutmix 1.0, label smoothing 0.1.
``cross-arch-cnn``        OFA / RSD, CNN students on CIFAR-100 upsampled to 224: SGD lr 0.05, wd 2e-3 (none on
                          1-D parameters, timm's default), cosine to 1e-3 with 3 warm-up epochs, 300 epochs,
                          batch 128, label smoothing 0.1, RandomResizedCrop + flip, no colour jitter.
``cross-arch-vit``        OFA / RSD, ViT / MLP students on CIFAR-100 at 224: AdamW lr 5e-4, wd 0.05, cosine to
                          1e-5 after 20 warm-up epochs from 5e-7, gradient clipping at norm 5, 300 epochs,
                          batch 128, RandAugment + random erasing 0.25, mixup 0.8, cutmix 1.0, label
                          smoothing 0.1.
========================  =================================================================================

Batch sizes are **per process**, as the published settings are per GPU (mdistiller's 512 is one
DataParallel process): with ``torchrun --nproc_per_node N`` the global batch is N times ``--batch-size``.
The learning rate is never rescaled with the batch (none of these codebases does). Not implemented: the
weight EMA that OFA/RSD use for ImageNet ViT students (``--model-ema``; off in every recipe above).

Loss weights (:func:`method_defaults`), from losses.md sec. 1:

* ``kd``: CE 0.1 + KD 0.9 at T=4 (mdistiller CIFAR); ``imagenet``: CE 0.5 + KD 0.5 at T=1.
  With ``zscore`` (logit standardisation, Sun et al. CVPR 2024): KD weight 9 and base temperature 2
  (lsKD's ``--logit-stand`` defaults), CE weight 0.1 (1.0 on ImageNet, lsKD's yaml).
* ``dkd``: CE 1 + DKD with alpha 1, beta 8, T=4, 20 warm-up epochs; ``imagenet``: T=1, beta 0.5, warm-up 1
  (R34->R18; pass ``--set dkd.beta=2`` for R50->MV1). With ``zscore``: alpha and beta times 9, T=2.
  Per-pair betas (2 for res56->res20 and res110->res32, 6 for the VGG/WRN pairs) are in the scripts.
* ``fitnet``: CE 1 + feature MSE x 1: ours is the feature-level FitNet of VkD's comparison (a linear regressor
  on the pooled features, kd_core), weighted as VkD's feature term. mdistiller's weight 100 is for its map-level
  hint loss behind a conv + BN + ReLU regressor; on pooled features it diverged in our CPU study (NaN within
  50 steps at lr 0.05).
* ``vkd``: CE 1 + KD at T=1 (weight 1) + VkD (orthogonal projector, layer-norm teacher, smooth-L1, weight 1),
  the loss of the VkD code (``CE + gamma KL + alpha smooth_l1``, gamma = alpha = 1).
* ``dcd``: CE 1 + DCD 1; ``dcd+kd``: CE 1 + KD (T=4) 1 + DCD 1 (DCD README's ``-a 1 -b 1``).
* ``rsd``: CE with label smoothing 0.1 + RSD (kappa 0.01, AAD decoupler) x 0.1, no logit term.
* ``spkd``: CE 1 + SPKD x 3000; ``pkd``: CE 1 + PKD x 30000 (RepDistiller's run_cifar_distill.sh, same reductions).
"""
from __future__ import annotations

import copy
import inspect
from typing import Any

import kd_core
from classifier_kd.config import TrainConfig
from classifier_kd.dataset_specs import NUM_CLASSES

__all__ = ["RECIPES", "METHOD_DEFAULTS", "method_defaults", "recipe_values"]

_COMMON = {  # what a recipe leaves at the plain-SGD defaults
    "optimizer": "sgd", "momentum": 0.9, "no_decay_1d": False, "schedule": "step", "milestones": [],
    "lr_decay": 0.1, "warmup_epochs": 0, "warmup_lr": 0.0, "min_lr": 0.0, "clip_grad": None,
    "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0,
}

RECIPES: dict[str, dict[str, Any]] = {
    "cifar100": {**_COMMON, "epochs": 240, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4,
                 "milestones": [150, 180, 210], "augment": "cifar", "image_size": 32},
    "imagenet": {**_COMMON, "epochs": 100, "batch_size": 512, "lr": 0.2, "weight_decay": 1e-4,
                 "milestones": [30, 60, 90], "augment": "imagenet", "image_size": 224},
    "deit": {**_COMMON, "optimizer": "adamw", "epochs": 300, "batch_size": 512, "lr": 5e-4, "weight_decay": 0.05,
             "no_decay_1d": True, "schedule": "cosine", "min_lr": 5e-6, "augment": "three_augment",
             "image_size": 224, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1},
    # warmup_lr 1e-4: timm 0.6's train.py default, which OFA's CNN configs do not change.
    "cross-arch-cnn": {**_COMMON, "epochs": 300, "batch_size": 128, "lr": 0.05, "weight_decay": 2e-3,
                       "no_decay_1d": True, "schedule": "cosine", "min_lr": 1e-3, "warmup_epochs": 3,
                       "warmup_lr": 1e-4, "label_smoothing": 0.1, "augment": "rrc", "image_size": 224},
    "cross-arch-vit": {**_COMMON, "optimizer": "adamw", "epochs": 300, "batch_size": 128, "lr": 5e-4,
                       "weight_decay": 0.05, "no_decay_1d": True, "schedule": "cosine", "min_lr": 1e-5,
                       "warmup_epochs": 20, "warmup_lr": 5e-7, "clip_grad": 5.0, "label_smoothing": 0.1,
                       "mixup": 0.8, "cutmix": 1.0, "augment": "rrc_randaug", "image_size": 224},
}
_LOW_LR_MODELS = {"cifar100": ("MobileNetV2", "ShuffleV1", "ShuffleV2")}  # lr 0.01 in the CIFAR recipe

# method -> {"ce_weight", ["label_smoothing"], "losses": [(loss name, weight, options)]}: the CIFAR-100
# settings, which the other recipes start from (see _RECIPE_METHODS for what they change).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "ce": {"ce_weight": 1.0, "losses": []},
    "kd": {"ce_weight": 0.1, "losses": [("kd", 0.9, {"temperature": 4.0})]},
    "dkd": {"ce_weight": 1.0, "losses": [("dkd", 1.0, {"alpha": 1.0, "beta": 8.0, "temperature": 4.0,
                                                      "warmup_epochs": 20})]},
    # weight 1, as VkD's feature term: ours is the feature-level FitNet of VkD's comparison (kd_core). mdistiller's
    # 100 belongs to its map-level hint loss behind a conv + BN regressor; on pooled features it diverges.
    "fitnet": {"ce_weight": 1.0, "losses": [("fitnet", 1.0, {})]},
    "vkd": {"ce_weight": 1.0, "losses": [("kd", 1.0, {"temperature": 1.0}), ("vkd", 1.0, {})]},
    "dcd": {"ce_weight": 1.0, "losses": [("dcd", 1.0, {})]},
    "dcd+kd": {"ce_weight": 1.0, "losses": [("kd", 1.0, {"temperature": 4.0}), ("dcd", 1.0, {})]},
    "rsd": {"ce_weight": 1.0, "label_smoothing": 0.1, "losses": [("rsd", 0.1, {"kappa": 0.01})]},
    # RepDistiller's weights (scripts/run_cifar_distill.sh: `--distill similarity -a 0 -b 3000`, `--distill pkt
    # -a 0 -b 30000`, CE weight -r 1), for the same reductions: its SP loss is ‖G_t − G_s‖²_F / B² and its PKT loss
    # the mean over the B² entries, as kd_core's spkd and pkd. No conversion: RepDistiller's SP compares the Gram
    # matrices of the last block's flattened maps (feat[-2]) and ours of the pooled features, but both Grams are
    # row-normalised, so their entries have the same scale whatever the feature; PKT uses the pooled feature (feat[-1])
    # as ours does. At weight 1 these terms are ~1e-4 of the CE and leave the student at plain CE.
    "spkd": {"ce_weight": 1.0, "losses": [("spkd", 3000.0, {})]},
    "pkd": {"ce_weight": 1.0, "losses": [("pkd", 30000.0, {})]},
}
_RECIPE_METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "imagenet": {
        "kd": {"ce_weight": 0.5, "losses": [("kd", 0.5, {"temperature": 1.0})]},
        "dkd": {"ce_weight": 1.0, "losses": [("dkd", 1.0, {"alpha": 1.0, "beta": 0.5, "temperature": 1.0,
                                                          "warmup_epochs": 1})]},
    },
}
# Logit standardisation (lsKD tools/train.py --logit-stand): KD weight 9 at base temperature 2; DKD's
# alpha and beta are multiplied by the KD weight (9) and use the base temperature.
ZSCORE_KD_WEIGHT, ZSCORE_TEMPERATURE = 9.0, 2.0
_ZSCORE_CE_WEIGHT = {"imagenet": 1.0}  # else 0.1 (lsKD cfg); ImageNet: lsKD's yaml sets CE 1.0


def recipe_values(recipe: str, model: str) -> dict[str, Any]:
    """The training values ``recipe`` prescribes for ``model`` (a fresh dict; override freely)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}")
    values = copy.deepcopy(RECIPES[recipe])
    if model in _LOW_LR_MODELS.get(recipe, ()):
        values["lr"] = 0.01
    return values


def methods() -> list[str]:
    """Every ``--method``: the compositions above, then each registered loss on its own (weight 1, CE weight 1)."""
    return [*METHOD_DEFAULTS, *(name for name in kd_core.available()["losses"] if name not in METHOD_DEFAULTS)]


def method_losses() -> dict[str, tuple[str, ...]]:
    """method -> the names of its kd_core losses (the table maps a run's ``--loss`` set back to a method)."""
    return {method: tuple(name for name, _, _ in method_defaults("cifar100", method)["losses"]) for method in methods()}


def method_defaults(recipe: str, method: str, zscore: bool = False) -> dict[str, Any]:
    """``{"ce_weight", "label_smoothing" (if the method sets one), "losses": [(name, weight, options)]}``.

    A registered loss without an entry in :data:`METHOD_DEFAULTS` is a method of its own: CE weight 1, the loss
    at weight 1 with its defaults. ``zscore`` switches the ``kd`` / ``dkd`` terms to logit standardisation with
    lsKD's weights; it is an error for a method with neither term.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}")
    if method not in methods():
        raise ValueError(f"unknown method {method!r}; available: {', '.join(methods())}")
    default = METHOD_DEFAULTS.get(method, {"ce_weight": 1.0, "losses": [(method, 1.0, {})]})
    values = copy.deepcopy(_RECIPE_METHODS.get(recipe, {}).get(method, default))
    if zscore:
        values["losses"] = zscore_terms(values["losses"], f"method {method!r}")
        if method == "kd":
            values["ce_weight"] = _ZSCORE_CE_WEIGHT.get(recipe, 0.1)
    return values


def zscore_terms(terms: list[tuple[str, float, dict[str, Any]]], owner: str, keep_weights: bool = False
                 ) -> list[tuple[str, float, dict[str, Any]]]:
    """``terms`` with kd / dkd switched to logit standardisation with lsKD's defaults (others pass through).

    kd gets weight 9 and base temperature 2, dkd alpha and beta x 9 and temperature 2; ``keep_weights`` keeps
    the given weights (terms named on the command line). A ValueError naming ``owner`` when neither is there.
    """
    if not any(name in ("kd", "dkd") for name, _, _ in terms):
        raise ValueError(f"--zscore standardises kd/dkd logits; {owner} has neither")
    switched = []
    for name, weight, options in terms:
        options = dict(options)
        if name == "kd":
            weight = weight if keep_weights else ZSCORE_KD_WEIGHT
            options.update(temperature=ZSCORE_TEMPERATURE, zscore=True)
        elif name == "dkd":
            options.update(alpha=options.get("alpha", 1.0) * ZSCORE_KD_WEIGHT,
                           beta=options.get("beta", 8.0) * ZSCORE_KD_WEIGHT, temperature=ZSCORE_TEMPERATURE, zscore=True)
        switched.append((name, weight, options))
    return switched


def _default_option(loss: str, key: str) -> Any:
    """The default of option ``key`` of registered loss ``loss`` (``None`` when it has none)."""
    parameter = inspect.signature(kd_core.registry.lookup("loss", loss)).parameters.get(key)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def distillation_terms(recipe: str, method: str | None, losses: list[tuple[str, float]] = (), zscore: bool = False,
                       settings: list[tuple[str, str, Any]] = (), ce_weight: float | None = None) -> dict[str, Any]:
    """A run's terms: ``method``'s under ``recipe`` (``None``: the ``losses`` given), then the changes.

    ``losses``: ``[(name, weight)]`` replacing the method's terms, each with the options the recipe gives that
    loss elsewhere (kd: T=4 on CIFAR). ``settings``: ``[(loss, key, value)]`` option changes; a dotted key sets a
    nested option (``vkd``, ``projector_options.orthogonal_map``). Returns ``{"ce_weight", "label_smoothing",
    "losses": [(name, weight, options)]}``; ValueError for anything that does not fit.
    """
    defaults = method_defaults(recipe, method or "ce", zscore=zscore and method is not None)
    terms = defaults["losses"]
    if losses:
        known: dict[str, dict] = {}
        for other in METHOD_DEFAULTS:  # first method that uses a loss gives its options
            for name, _, loss_options in method_defaults(recipe, other)["losses"]:
                known.setdefault(name, loss_options)
        terms = [(name, weight, copy.deepcopy(known.get(name, {}))) for name, weight in losses]
        if zscore:  # standardised options (temperature 2, DKD's alpha/beta x 9), the weights given here
            terms = zscore_terms(terms, "the --loss terms", keep_weights=True)
    names = [name for name, _, _ in terms]
    for loss, key, value in settings:
        if loss not in names:
            raise ValueError(f"--set {loss}.{key}: {loss!r} is not a loss of this run ({', '.join(names) or 'none'})")
        options = terms[names.index(loss)][2]
        *path, last = key.split(".")
        for part in path:
            options = options.setdefault(part, {})
            if not isinstance(options, dict):
                raise ValueError(f"--set {loss}.{key}: {part!r} is not a nested option")
        if value is None and not path and isinstance(_default_option(loss, last), str):
            value = "none"  # vkd.normalizer=none: the registered name "none", not Python's None
        options[last] = value
    return {"ce_weight": defaults["ce_weight"] if ce_weight is None else ce_weight,
            "label_smoothing": defaults.get("label_smoothing"), "losses": terms}


def train_config(model: str, options: dict[str, Any], used: dict[str, Any], extra: dict[str, Any]) -> TrainConfig:
    """The loop's :class:`TrainConfig` from a command's options and the recipe values ``used`` for ``model``;
    ``extra`` is recorded in config.json (and compared on resume) with the data options."""
    loop_values = {key: value for key, value in used.items() if key not in ("label_smoothing", "augment", "image_size")}
    return TrainConfig(
        model=model, dataset=options["dataset"], num_classes=NUM_CLASSES[options["dataset"]], out=options["out"],
        **loop_values, channels_last=options["channels_last"], compile=options.get("compile", False), seed=options["seed"], device=options["device"],
        workers=options["workers"], precision=options["precision"], max_steps_per_epoch=options["max_steps_per_epoch"],
        log_every=options["log_every"], divergence_threshold=options["divergence_threshold"],
        extra={"data_root": options["data_root"], "download": options["download"],
               "data_fraction": options["data_fraction"], "recipe": options["recipe"],
               "label_smoothing": used["label_smoothing"], "augment": used["augment"],
               "image_size": used["image_size"], **extra},
    )
