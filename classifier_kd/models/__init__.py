"""Classifier model zoo: ``create_model(name, num_classes)`` over a registry of builders.

The CIFAR zoo is the standard one of the KD benchmarks (RepDistiller / CRD / mdistiller), with their
module names, so their teacher checkpoints (``<name>_vanilla/ckpt_epoch_240.pth``) load with
``strict=True`` through ``weights=PATH``. The ImageNet / cross-architecture zoo (:mod:`.imagenet`) has the
torchvision models under their torchvision names (``resnet18`` ... ``vit_b_16``), ``mobilenet_v1``
(mdistiller's ImageNet student) and timm models as ``timm/<timm name>`` (the optional extra ``imagenet``;
any ``timm.list_models()`` name is accepted, the common ones are listed by :func:`available`); their
state_dict keys are the library's own, so torchvision / timm files load strictly too, and
``pretrained=True`` fetches the library's ImageNet weights.

Every model exposes the seams the distillers use: ``forward_features(x)`` (pooled penultimate
embedding, ``(B, feature_dim)``), ``forward_head(f)`` (logits; ``forward(x) == forward_head(forward_features(x))``)
and the attributes ``feature_dim``, ``num_classes``, ``head_weight_key`` (state_dict key of the final
Linear's weight), ``image_size`` (the input size a ViT-like model was built for, else None) and ``arch``
(the registry name). CIFAR models also have ``forward_stages(x)`` (intermediate maps; FitNet's hint is index 2).
"""
from __future__ import annotations

import numbers
import os
from collections.abc import Callable

from torch import nn

from classifier_kd.models import imagenet
from classifier_kd.models.checkpoint import load_classifier, save_classifier
from classifier_kd.models.cifar_resnet import (
    resnet8x4, resnet20, resnet32, resnet32x4, resnet50, resnet56, resnet110,
)
from classifier_kd.models.imagenet import PretrainedWeightsUnavailable
from classifier_kd.models.mobilenetv2 import mobilenetv2
from classifier_kd.models.shufflenet import shufflenet_v1, shufflenet_v2
from classifier_kd.models.vgg import vgg8, vgg13
from classifier_kd.models.wrn import wrn_16_2, wrn_40_1, wrn_40_2

__all__ = ["CIFAR_MODELS", "IMAGENET_MODELS", "PretrainedWeightsUnavailable", "available", "create_model",
           "load_classifier", "save_classifier"]

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

# name -> builder(num_classes, pretrained=False, image_size=None) for ImageNet and cross-architecture models:
# torchvision, mobilenet_v1, and timm (optional extra) as "timm/<name>". Builders return a model with the same
# seams (forward_features / forward_head / feature_dim / num_classes / image_size) and a ``head_weight_key``
# (state_dict key of the final layer's weight), which load_classifier uses to infer num_classes from a file.
IMAGENET_MODELS: dict[str, Callable[..., nn.Module]] = imagenet.registry()


def available() -> list[str]:
    """Every model name :func:`create_model` accepts, sorted."""
    return sorted({*CIFAR_MODELS, *IMAGENET_MODELS})


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-way head, optionally loading ``weights`` (a checkpoint file).

    ``weights`` accepts our checkpoint format, RepDistiller/mdistiller's ``{"model": state_dict, ...}``
    and a bare state_dict, e.g. a torchvision / timm file (see :func:`load_classifier`). ``pretrained=True``
    asks for a library's built-in ImageNet weights, which only torchvision and timm models have; with
    another ``num_classes`` than 1000 the final Linear is replaced by a fresh one. Without network access
    that raises :class:`PretrainedWeightsUnavailable`.

    ``image_size``: the input size for models built for one (torchvision ``vit_b_16``; timm vit / deit /
    mixer / resmlp / swin); ``None`` means their native 224. Other models accept any input size and ignore
    it. It is stored as ``model.image_size`` (None where it does not apply). With ``weights=`` it
    overrides the size our checkpoint files record in their ``input_spec``.

    ``timm/<name>`` accepts any ``timm.list_models()`` name, beyond those :func:`available` lists.
    """
    known = name in CIFAR_MODELS or name in IMAGENET_MODELS or imagenet.is_timm_name(name)
    if not known:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())} "
                         f"(or timm/<any timm.list_models() name>)")
    if pretrained and weights is not None:
        raise ValueError(f"pass either pretrained=True or weights=PATH for {name!r}, not both")
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
        image_size = int(image_size)
    if name in CIFAR_MODELS and pretrained:
        raise ValueError(
            f"CIFAR model {name!r} has no built-in pretrained weights; pass weights=PATH to a checkpoint "
            f"(ours, or RepDistiller's {name}_vanilla/ckpt_epoch_240.pth)"
        )
    if weights is not None:
        return load_classifier(weights, arch=name, num_classes=num_classes, image_size=image_size)
    if name in CIFAR_MODELS:
        model = CIFAR_MODELS[name](num_classes)
        model.image_size = None  # any input size (global average pooling); kept for a uniform interface
    elif name in IMAGENET_MODELS:
        model = IMAGENET_MODELS[name](num_classes, pretrained, image_size=image_size)
    else:  # timm/<name> beyond the listed ones
        model = imagenet.build_timm(name[len(imagenet.TIMM_PREFIX):], num_classes, pretrained, image_size=image_size)
    model.arch = name  # the registry name, e.g. for labelling "FD (resnet32)"
    return model
