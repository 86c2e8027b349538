"""Classifier model zoo: ``create_model(name, num_classes)`` over a registry of builders.

The CIFAR zoo is the standard one of the KD benchmarks (RepDistiller / CRD / mdistiller), with their
module names, so their teacher checkpoints (``<name>_vanilla/ckpt_epoch_240.pth``) load with
``strict=True`` through ``weights=PATH``. Every model exposes the seams the distillers use:
``forward_features(x)`` (pooled penultimate embedding, ``(B, feature_dim)``), ``forward_head(f)``
(logits), ``forward_stages(x)`` (intermediate maps; FitNet's hint is index 2) and the attributes
``feature_dim`` and ``num_classes``.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from classifier_kd.models.checkpoint import load_classifier, save_classifier
from classifier_kd.models.cifar_resnet import (
    resnet8x4, resnet20, resnet32, resnet32x4, resnet50, resnet56, resnet110,
)
from classifier_kd.models.mobilenetv2 import mobilenetv2
from classifier_kd.models.shufflenet import shufflenet_v1, shufflenet_v2
from classifier_kd.models.vgg import vgg8, vgg13
from classifier_kd.models.wrn import wrn_16_2, wrn_40_1, wrn_40_2

__all__ = ["CIFAR_MODELS", "IMAGENET_MODELS", "available", "create_model", "load_classifier", "save_classifier"]

# name -> builder(num_classes). Names are RepDistiller's, so scripts and checkpoint folders match.
# These have no built-in pretrained weights: teachers are trained with the CIFAR recipe or loaded from a file.
CIFAR_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "ResNet50": resnet50,
    "wrn_40_2": wrn_40_2,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "vgg13": vgg13,
    "vgg8": vgg8,
    "MobileNetV2": mobilenetv2,
    "ShuffleV1": shufflenet_v1,
    "ShuffleV2": shufflenet_v2,
}

# name -> builder(num_classes, pretrained) for ImageNet and cross-architecture models (torchvision, and
# timm as an optional extra). Empty until that zoo is added; builders must return a model with the same
# seams (forward_features / forward_head / feature_dim / num_classes) and a ``head_weight_key`` (state_dict
# key of the final layer's weight), which load_classifier uses to infer num_classes from a file.
IMAGENET_MODELS: dict[str, Callable[[int, bool], nn.Module]] = {}


def available() -> list[str]:
    """Every model name :func:`create_model` accepts, sorted."""
    return sorted({*CIFAR_MODELS, *IMAGENET_MODELS})


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-way head, optionally loading ``weights`` (a checkpoint file).

    ``weights`` accepts our checkpoint format, RepDistiller/mdistiller's ``{"model": state_dict, ...}``
    and a bare state_dict (see :func:`load_classifier`). ``pretrained=True`` asks for a library's
    built-in weights, which only ImageNet models have.
    """
    if name not in CIFAR_MODELS and name not in IMAGENET_MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    if pretrained and weights is not None:
        raise ValueError(f"pass either pretrained=True or weights=PATH for {name!r}, not both")
    if name in CIFAR_MODELS and pretrained:
        raise ValueError(
            f"CIFAR model {name!r} has no built-in pretrained weights; pass weights=PATH to a checkpoint "
            f"(ours, or RepDistiller's {name}_vanilla/ckpt_epoch_240.pth)"
        )
    if weights is not None:
        return load_classifier(weights, arch=name, num_classes=num_classes)
    model = CIFAR_MODELS[name](num_classes) if name in CIFAR_MODELS else IMAGENET_MODELS[name](num_classes, pretrained)
    model.arch = name  # the registry name, e.g. for labelling "FD (resnet32)"
    return model
