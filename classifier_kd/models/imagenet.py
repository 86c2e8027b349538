"""ImageNet and cross-architecture classifiers: torchvision and timm models behind the zoo's seams.

Three kinds of model live here:

* torchvision models under their torchvision names (``resnet18`` ... ``vit_b_16``), built by torchvision;
* ``mobilenet_v1`` (Howard et al. 2017), which torchvision lacks: our own :class:`MobileNetV1`, with the
  module names of mdistiller's ImageNet student (``model.<i>.<j>``, ``fc``) so its files load;
* timm models under ``timm/<timm name>`` (timm is the optional extra ``imagenet``, imported only when such
  a model is built), plus OFA's ``swin_pico`` / ``swin_nano``, which timm itself does not register.

Library models are wrapped by :class:`LibraryClassifier`, which *adopts* the library model's modules,
parameters and buffers as its own: its ``state_dict`` has exactly the library's keys (no ``net.``
prefix), so a torchvision / timm state_dict file loads with ``strict=True``. It adds the zoo's seams
(``forward_features`` = pooled penultimate embedding, ``forward_head`` = the final classifier) without
changing the library's math: ``forward(x) == forward_head(forward_features(x))`` equals the library
model's own forward for the same weights (the tests check this for every family).

Input size. ViT-like models are built for one input size: ``image_size`` (torchvision ViT's
``image_size=``, timm's ``img_size=`` for the models whose pretrained config has ``fixed_input_size``:
vit / deit / mixer / resmlp / swin). ``None`` means the native size (224). CNNs accept any size and
ignore it; their ``model.image_size`` is ``None``. With ``pretrained=True`` timm resamples the position
embeddings to a non-native ``image_size``; torchvision does not, so that combination is a ValueError.

Pretrained weights come from the library's own mechanism (torchvision ``weights="DEFAULT"``, i.e. the
IMAGENET1K weights enum; timm ``pretrained=True``, from the Hugging Face hub). For a ``num_classes``
other than the weights' 1000, the ImageNet weights are loaded and the final Linear is replaced by a fresh
one (torchvision: PyTorch's default Linear init; timm does the same replacement itself, with the model's
own head init). A failed download raises :class:`PretrainedWeightsUnavailable`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from classifier_kd.models.base import Classifier

TIMM_PREFIX = "timm/"
NATIVE_IMAGE_SIZE = 224  # every registered ViT-like model's native input size

_WEIGHTS_HINT = "pass weights=PATH (CLI: --teacher-ckpt / --weights) to a local file"


class PretrainedWeightsUnavailable(RuntimeError):
    """A library's pretrained weights could not be fetched (typically: no network access)."""


def _unavailable(arch: str, err: BaseException) -> PretrainedWeightsUnavailable:
    reason = (str(err).strip().splitlines() or [""])[0][:200]
    reason = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
    return PretrainedWeightsUnavailable(
        f"the pretrained weights of {arch} could not be fetched ({reason}); {_WEIGHTS_HINT}")


def _no_pretrained(arch: str, why: str) -> ValueError:
    return ValueError(f"{arch} has no built-in pretrained weights ({why}); {_WEIGHTS_HINT}")


# ---------------------------------------------------------------------------------------------------
# The wrapper


# The containers nn.Module keeps its state in. LibraryClassifier shares these very dict / set objects with
# the library model, so the two always agree: what ``.to()`` / ``.double()`` put in them (new buffer tensors),
# ``load_state_dict(assign=True)``, ``register_buffer`` and head replacement are seen by both (and
# ``copy.deepcopy`` / pickling keep the sharing). Hooks registered on the library model itself are not adopted.
_ADOPTED = ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules")


class LibraryClassifier(Classifier):
    """A torchvision / timm classifier with the zoo's seams; its state_dict keys are the library's.

    ``features(net, x)`` computes the pooled penultimate embedding with the library model ``net``
    (following the library's own forward), ``head`` names the module ``forward_head`` applies (for
    torchvision's MobileNetV2 the Dropout + Linear ``classifier``), ``linear`` the final ``nn.Linear``.
    The library model itself is kept out of the module tree (so no ``net.`` key prefix); its modules,
    parameters and buffers are this module's own.
    """

    def __init__(self, net: nn.Module, *, features: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 head: str, linear: str, image_size: int | None, library: str):
        super().__init__()
        for attr in _ADOPTED:
            object.__setattr__(self, attr, getattr(net, attr))
        object.__setattr__(self, "_net", net)  # not registered as a submodule: no "net." prefix
        final = self.get_submodule(linear)
        if not isinstance(final, nn.Linear):
            raise TypeError(f"{linear!r} of {type(net).__name__} is a {type(final).__name__}, not nn.Linear")
        self._features = features
        self._head = head
        self.head_weight_key = f"{linear}.weight"
        self.feature_dim = final.in_features
        self.num_classes = final.out_features
        self.image_size = image_size
        self._library = f"{library}.{type(net).__name__}"
        self.train(net.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self._net, x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.get_submodule(self._head)(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def train(self, mode: bool = True) -> LibraryClassifier:
        super().train(mode)
        self._net.training = mode  # the library model's own flag (its submodules are ours, already set)
        return self

    def extra_repr(self) -> str:
        size = f", image_size={self.image_size}" if self.image_size is not None else ""
        return f"library={self._library}, feature_dim={self.feature_dim}, num_classes={self.num_classes}{size}"


def _replace_linear(net: nn.Module, path: str, num_classes: int) -> None:
    """Swap the Linear at ``path`` for a fresh ``num_classes``-way one (PyTorch's default init)."""
    old = net.get_submodule(path)
    parent_path, _, leaf = path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    setattr(parent, leaf, nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype))


# ---------------------------------------------------------------------------------------------------
# torchvision: the embedding of each family, following the class's own forward up to its final Linear


def _tv_resnet(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
    return torch.flatten(net.avgpool(x), 1)


def _tv_mobilenet_v2(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(nn.functional.adaptive_avg_pool2d(net.features(x), (1, 1)), 1)


def _tv_regnet(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.avgpool(net.trunk_output(net.stem(x))).flatten(start_dim=1)


def _tv_convnext(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    norm, flatten = net.classifier[0], net.classifier[1]  # classifier = (LayerNorm2d, Flatten, Linear)
    return flatten(norm(net.avgpool(net.features(x))))


def _tv_swin(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.flatten(net.avgpool(net.permute(net.norm(net.features(x)))))


def _tv_vit(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net._process_input(x)
    x = torch.cat([net.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = net.encoder(x)[:, 0]  # the class token
    for name, layer in net.heads.named_children():  # pre_logits + activation, when the model has them
        if name != "head":
            x = layer(x)
    return x


# family -> (embedding function, module forward_head applies, path of the final Linear)
_TV_FAMILIES: dict[str, tuple[Callable[[nn.Module, torch.Tensor], torch.Tensor], str, str]] = {
    "resnet": (_tv_resnet, "fc", "fc"),
    "mobilenet_v2": (_tv_mobilenet_v2, "classifier", "classifier.1"),  # classifier = (Dropout, Linear)
    "regnet": (_tv_regnet, "fc", "fc"),
    "convnext": (_tv_convnext, "classifier.2", "classifier.2"),
    "swin": (_tv_swin, "head", "head"),
    "vit": (_tv_vit, "heads.head", "heads.head"),
}

TORCHVISION_MODELS: dict[str, str] = {  # torchvision name -> family
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "mobilenet_v2": "mobilenet_v2",
    "regnet_y_16gf": "regnet",
    "convnext_tiny": "convnext",
    "swin_t": "swin",
    "vit_b_16": "vit",
}
_TV_SIZED = {"vit"}  # families whose construction depends on the input size (torchvision's image_size=)


def build_torchvision(name: str, num_classes: int, pretrained: bool = False,
                      image_size: int | None = None) -> LibraryClassifier:
    """torchvision model ``name`` (a key of :data:`TORCHVISION_MODELS`) wrapped with the zoo's seams."""
    from torchvision import models

    family = TORCHVISION_MODELS[name]
    features, head, linear = _TV_FAMILIES[family]
    builder = models.get_model_builder(name)
    sized = family in _TV_SIZED
    kwargs = {"image_size": image_size} if sized and image_size is not None else {}
    if kwargs:
        patch = int(name.rsplit("_", 1)[1])  # vit_b_16: 16 px patches
        if image_size % patch:
            raise ValueError(f"{name}: image_size={image_size} is not a multiple of its patch size {patch}")
    if pretrained:
        if sized and image_size not in (None, NATIVE_IMAGE_SIZE):
            raise ValueError(f"torchvision's pretrained {name} is for {NATIVE_IMAGE_SIZE} px inputs and cannot be "
                             f"built for image_size={image_size}; drop pretrained=True or image_size")
        try:
            net = builder(weights="DEFAULT")  # the IMAGENET1K weights enum; downloads into torch.hub's cache
        except (OSError, RuntimeError) as err:  # URLError / HTTPError / timeouts are OSErrors; bad hash or file
            raise _unavailable(name, err) from err
        if net.get_submodule(linear).out_features != num_classes:
            _replace_linear(net, linear, num_classes)
    else:
        net = builder(weights=None, num_classes=num_classes, **kwargs)
    return LibraryClassifier(net, features=features, head=head, linear=linear,
                             image_size=net.image_size if sized else None, library="torchvision")


# ---------------------------------------------------------------------------------------------------
# MobileNetV1 (not in torchvision)

# (output width, stride) of the 13 depthwise-separable blocks after the 32-channel stride-2 stem
# (Howard et al. 2017, Table 1).
_MV1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
               (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class MobileNetV1(Classifier):
    """MobileNetV1 (Howard et al. 2017): 3x3 stride-2 stem of 32 channels, 13 depthwise-separable blocks
    (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU), global average pool, Linear; 4,231,976
    parameters with 1000 classes.

    Module names follow mdistiller's ImageNet student (``model.0`` stem, ``model.1``-``model.13`` blocks
    with convs at ``.0`` / ``.3`` and BNs at ``.1`` / ``.4``, ``fc``), so its state_dicts load strictly. Its
    ``model.14`` is ``AvgPool2d(7)``; ours is an adaptive average pool, equal at 224 px and valid at any size.
    """

    head_weight_key = "fc.weight"

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [nn.Sequential(*_conv_bn_relu(3, 32, 3, 2))]
        width = 32
        for out_width, stride in _MV1_BLOCKS:
            layers.append(nn.Sequential(*_conv_bn_relu(width, width, 3, stride, groups=width),
                                        *_conv_bn_relu(width, out_width, 1, 1)))
            width = out_width
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)
        self.feature_dim = width
        self.num_classes = num_classes
        self.image_size = None
        from classifier_kd.models.base import init_repdistiller

        init_repdistiller(self)  # He-normal convs, BN (1, 0), PyTorch's default Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model(x), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def mobilenet_v1(num_classes: int, pretrained: bool = False, image_size: int | None = None) -> MobileNetV1:
    if pretrained:
        raise _no_pretrained("mobilenet_v1", "neither torchvision nor timm ships this MobileNetV1")
    return MobileNetV1(num_classes)


# ---------------------------------------------------------------------------------------------------
# timm

TIMM_MODELS = (  # listed by available() as timm/<name>; any other timm.list_models() name is accepted too
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "resmlp_12_224",
    "mixer_b16_224",
    "regnety_160",  # VkD's teacher (3024 features)
    "mobilenetv2_100",
    "resnet18",
    "swin_tiny_patch4_window7_224",
    "vit_small_patch16_224",
    "convnext_tiny",
)

# OFA (Hao et al. 2023) registers these in timm's registry; the kwargs are exactly those of
# Hao840/OFAKD custom_model/swin_transformer.py (commit 18476ce), passed to timm's SwinTransformer
# (OFA used timm 0.6.5: its state_dicts have that version's Swin key layout, not timm 1.x's).
OFA_SWIN_MODELS: dict[str, dict] = {
    "swin_pico_patch4_window7_224": dict(patch_size=4, window_size=7, embed_dim=48, depths=(2, 2, 2, 2),
                                         num_heads=(2, 4, 8, 16)),
    "swin_nano_patch4_window7_224": dict(patch_size=4, window_size=7, embed_dim=64, depths=(2, 2, 2, 2),
                                         num_heads=(2, 4, 8, 16)),
}


def _import_timm(arch: str):
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"model {arch} needs timm: pip install -e .[imagenet]") from err
    return timm


def _timm_fetch_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, RuntimeError]
    try:
        from huggingface_hub import errors as hf_errors
    except ImportError:
        return tuple(errors)
    for name in ("HfHubHTTPError", "EntryNotFoundError", "LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        if isinstance(getattr(hf_errors, name, None), type):
            errors.append(getattr(hf_errors, name))
    return tuple(errors)


def _timm_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.forward_head(net.forward_features(x), pre_logits=True)


def _wrap_timm(net: nn.Module, arch: str, image_size: int | None) -> LibraryClassifier:
    """Wrap a timm model whose forward is ``classifier(forward_head(forward_features(x), pre_logits=True))``."""
    classifier = net.get_classifier() if hasattr(net, "get_classifier") else None
    cfg = getattr(net, "pretrained_cfg", None) or {}
    if not isinstance(classifier, nn.Linear) or isinstance(cfg.get("classifier"), (tuple, list)):
        raise ValueError(f"{arch}: its timm classifier is not a single nn.Linear "
                         f"({type(classifier).__name__}); only such timm models have the zoo's seams")
    linear = next(name for name, module in net.named_modules() if module is classifier)
    return LibraryClassifier(net, features=_timm_features, head=linear, linear=linear,
                             image_size=image_size, library="timm")


def build_timm(timm_name: str, num_classes: int, pretrained: bool = False,
               image_size: int | None = None) -> LibraryClassifier:
    """timm model ``timm_name`` (any ``timm.list_models()`` name, optionally ``name.tag``) with the zoo's seams."""
    arch = TIMM_PREFIX + timm_name
    timm = _import_timm(arch)
    if not timm.is_model(timm_name):
        raise ValueError(f"unknown timm model {arch!r}: timm {timm.__version__} has no architecture "
                         f"{timm_name.partition('.')[0]!r} (see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(timm_name)
    sized = bool(cfg is not None and cfg.fixed_input_size)
    kwargs = {"img_size": image_size} if sized and image_size is not None else {}
    if pretrained:
        if not timm.models.is_model_pretrained(timm_name):
            raise _no_pretrained(arch, f"timm {timm.__version__} has none for it")
        try:
            # timm drops the pretrained classifier when num_classes differs and keeps the fresh head it built;
            # for a non-native img_size it resamples the position embeddings.
            net = timm.create_model(timm_name, pretrained=True, num_classes=num_classes, **kwargs)
        except _timm_fetch_errors() as err:
            raise _unavailable(arch, err) from err
    else:
        net = timm.create_model(timm_name, num_classes=num_classes, **kwargs)
    native = cfg.input_size[-1] if sized else None
    return _wrap_timm(net, arch, image_size=(native if image_size is None else image_size) if sized else None)


def build_ofa_swin(timm_name: str, num_classes: int, pretrained: bool = False,
                   image_size: int | None = None) -> LibraryClassifier:
    """OFA's ``swin_pico`` / ``swin_nano`` (:data:`OFA_SWIN_MODELS`) as timm SwinTransformers."""
    arch = TIMM_PREFIX + timm_name
    _import_timm(arch)
    if pretrained:
        raise _no_pretrained(arch, "OFA trains it from scratch; timm ships no weights for it")
    from timm.models.swin_transformer import SwinTransformer

    size = NATIVE_IMAGE_SIZE if image_size is None else image_size
    net = SwinTransformer(img_size=size, num_classes=num_classes, **OFA_SWIN_MODELS[timm_name])
    return _wrap_timm(net, arch, image_size=size)


def is_timm_name(name: str) -> bool:
    return name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)


def registry() -> dict[str, Callable[..., nn.Module]]:
    """name -> builder(num_classes, pretrained=False, image_size=None) of every model of this module."""
    builders: dict[str, Callable[..., nn.Module]] = {
        name: functools.partial(build_torchvision, name) for name in TORCHVISION_MODELS}
    builders["mobilenet_v1"] = mobilenet_v1
    builders.update({TIMM_PREFIX + name: functools.partial(build_timm, name) for name in TIMM_MODELS})
    builders.update({TIMM_PREFIX + name: functools.partial(build_ofa_swin, name) for name in OFA_SWIN_MODELS})
    from classifier_kd.models.vkd_deit import VKD_DEIT_MODELS, build_vkd_deit

    builders.update({name: functools.partial(build_vkd_deit, name) for name in VKD_DEIT_MODELS})
    return builders
