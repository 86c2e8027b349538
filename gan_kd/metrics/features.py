"""Feature spaces the sample-quality metrics are computed in: uint8 images -> float64 feature rows.

Every metric is only as good as the space it measures in, so each space says what it can see:

* ``label_free``: a **randomly initialised VGG-16** (torchvision's architecture, Kaiming weights from a fixed
  seed), the output of its convolutional trunk at the images' native 32x32 (five 2x2 poolings leave 1x1); by
  default at **half width** (32-64-128-256-256 channels, a 256-d feature), see the cost below. Naeem et al.
  (ICML 2020, §5, "Reliable Fidelity and Diversity Metrics for Generative Models") show that such random
  embeddings rank generators sensibly on data far from ImageNet. It was never trained on any labels, so it
  cannot reward class-separable, prototypical samples as a classifier's space does (Kynkäänniemi et al., ICLR
  2023), and its first convolution mixes the RGB channels with random weights, so it sees colour.
  Why the trunk at 32x32 and not the fully connected ``fc2`` at 224x224: upsampling adds no information and
  costs 49x the FLOPs, and at 32x32 the trunk's last map is 1x1, so ``fc1``/``fc2`` would only be random
  projections of the same 512 numbers. Why half width: the full trunk costs ~0.31 GMAC an image, ~55-65 s for
  10,000 images on one idle core here, which with a ResNet-32's features (~25 s), precision/recall (~9 s) and
  KID (~6 s) breaks the 90-s budget of the whole evaluation; half the channels cost a quarter (~0.08 GMAC, ~14 s).
  The weights are random either way, so width changes no learned prior; ``results/metric_ceilings*.md`` shows
  both widths flag the same planted failures.
* ``classifier``: the pooled penultimate feature of a classifier checkpoint (``ckpt:PATH``), and its head's
  logits for the class-aware scores. Trained on the dataset's own labels: sees labels, and colour only as far
  as training on the data taught it.
* ``inception``: torch-fidelity's Inception-v3 (FID / IS / KID), in :mod:`gan_kd.metrics.fidelity`.

The label-free space is chosen by a spec (``--label-free-features``):

* ``vgg16-half-random`` or ``vgg16-half-random:SEED`` (the default): the random VGG-16 above at half width (seed
  0 by default); ``vgg16-random[:SEED]`` at full width (512-d). Deterministic: the weights are drawn from a private
  generator, so building it never moves the global RNG of a training run.
* ``vgg16-imagenet``: torchvision's ImageNet VGG-16 (``IMAGENET1K_V1``), downloaded once into the torch hub
  cache (needs the internet the first time) and read by the safe loader.
* ``vgg16:PATH``: a local torchvision VGG-16 state dict (``features.*`` keys; the classifier's keys are
  ignored), read by the safe loader; a file that does not fit is one line.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd_core.runtime.checkpoint import CheckpointError, load_weights_file

LABEL_FREE_DEFAULT = "vgg16-half-random"
WIDTHS = {"vgg16-random": 1.0, "vgg16-half-random": 0.5}  # random VGG-16 trunks: spec name -> channel multiplier
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_IMAGENET_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1
FEATURE_BATCH = 250


class FeatureSpaceError(ValueError):
    """A feature space that cannot be built from its spec or file (one-line message)."""


def fingerprint(module: nn.Module) -> str:
    """The first 16 hex digits of the SHA-256 of a module's state (names, shapes and values): two evaluations
    with the same fingerprint measured in the same space."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class FeatureSpace(nn.Module):
    """uint8 ``(N, 3, H, W)`` images -> float64 ``(N, D)`` features, in batches, without gradients.

    ``name`` names the space in tables (``FD (vgg16-half-random:0)``); ``sees_colour`` and ``uses_labels`` say what it
    can and cannot tell apart.
    """

    name: str
    sees_colour: bool
    uses_labels: bool

    def embed(self, images_uint8: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def features(self, images_uint8: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
            raise ValueError(f"feature spaces take uint8 (N, 3, H, W) images, got {images_uint8.dtype} "
                             f"{tuple(images_uint8.shape)}")
        rows = [self.embed(images_uint8[start:start + FEATURE_BATCH].to(device)).double().cpu()
                for start in range(0, images_uint8.shape[0], FEATURE_BATCH)]
        return torch.cat(rows) if rows else torch.zeros(0, 0, dtype=torch.float64)

    def describe(self) -> dict:
        return {"name": self.name, "sees_colour": self.sees_colour, "uses_labels": self.uses_labels,
                "sha256_16": fingerprint(self)}


class VGG16Trunk(FeatureSpace):
    """The convolutional trunk of torchvision's VGG-16 on ImageNet-normalised [0, 1] images; 512-d output."""

    sees_colour = True
    uses_labels = False  # random weights; an ImageNet copy was trained on ImageNet's labels, not this dataset's

    def __init__(self, name: str, trunk: nn.Sequential):
        super().__init__()
        self.name = name
        self.trunk = trunk.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGG16Trunk":
        return super().train(False)  # a fixed feature space

    def embed(self, images_uint8: torch.Tensor) -> torch.Tensor:
        inputs = (images_uint8.float() / 255 - self.mean) / self.std
        if inputs.device.type == "cpu":  # NHWC convolutions: ~0.8x the time on the CPU (make bench)
            self.trunk.to(memory_format=torch.channels_last)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return self.trunk(inputs).mean(dim=(2, 3)).contiguous()  # 1x1 at 32x32; the spatial mean at other sizes


def _vgg16_trunk(width: float = 1.0) -> nn.Sequential:
    """torchvision's VGG-16 conv trunk (configuration "D"), with every layer's channel count times ``width``."""
    from torchvision.models.vgg import cfgs, make_layers  # the trunk only: VGG-16's 120M-parameter head is never built

    return make_layers([v if v == "M" else int(v * width) for v in cfgs["D"]], batch_norm=False)


def random_vgg16(seed: int = 0, width: float = 1.0) -> VGG16Trunk:
    """torchvision's VGG-16 trunk with Kaiming fan-in weights (He et al. 2015) and zero biases, drawn with
    ``seed`` from a private RNG state.

    Fan-in, not torchvision's fan-out: fan-out halves the activations' variance at every layer that widens,
    and after 13 layers the features are ~10x smaller (FD ~1e-3, and KID's kernel ``(x.y / d + 1)^3`` is then 1
    for every pair, so KID reads 0 for anything). Fan-in keeps them of order 1.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trunk = _vgg16_trunk(width)
        for module in trunk:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)
    name = next(name for name, multiplier in WIDTHS.items() if multiplier == width)
    return VGG16Trunk(f"{name}:{seed}", trunk)


def vgg16_from_file(path: str | Path, name: str | None = None) -> VGG16Trunk:
    """A VGG-16 trunk with the weights of a local torchvision VGG-16 state dict (safe loader, strict)."""
    try:
        state = load_weights_file(path, "label-free VGG-16 weights")
    except CheckpointError as error:
        raise FeatureSpaceError(str(error)) from error
    trunk_state = {key[len("features."):]: value for key, value in state.items() if key.startswith("features.")}
    trunk = _vgg16_trunk()
    try:
        trunk.load_state_dict(trunk_state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:200]
        raise FeatureSpaceError(f"label-free VGG-16 weights {path} do not fit torchvision's VGG-16 trunk "
                                f"(features.* keys): {detail}") from error
    return VGG16Trunk(name or f"vgg16:{Path(path).name}", trunk)


def vgg16_imagenet() -> VGG16Trunk:
    """torchvision's ImageNet VGG-16, downloaded once into the torch hub cache and read by the safe loader."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_IMAGENET_URL.rsplit("/", 1)[1]
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(VGG16_IMAGENET_URL, str(cached), progress=False)
        except Exception as error:  # offline, HTTP error, disk: the first line is what matters
            raise FeatureSpaceError(f"could not download torchvision's ImageNet VGG-16 ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
                                    f"use vgg16-half-random or vgg16:PATH") from error
    return vgg16_from_file(cached, name="vgg16-imagenet")


def build_label_free(spec: str = LABEL_FREE_DEFAULT) -> VGG16Trunk:
    """The label-free feature space named by ``spec`` (see the module docstring); one-line errors."""
    path = label_free_file(spec)  # FeatureSpaceError for an unknown spec
    if path is not None:
        return vgg16_from_file(path)
    kind, _, argument = spec.partition(":")
    if kind == "vgg16-imagenet":
        return vgg16_imagenet()
    return random_vgg16(int(argument) if argument else 0, WIDTHS[kind])


class ClassifierSpace(FeatureSpace):
    """A classifier checkpoint's pooled feature (``fd``) and, when it has one, its head (``cls``, intra-class)."""

    sees_colour = True
    uses_labels = True

    def __init__(self, spec: str, arch: str | None = None, with_head: bool = False):
        super().__init__()
        from gan_kd.teacher import build_teacher

        # TeacherError (a ValueError) naming the role: "FD network checkpoint not found: ..."
        self.extractor = build_teacher(spec, arch=arch, preprocessing="native", role="FD network")
        network = self.extractor.network
        self.name = getattr(network, "arch", type(network).__name__)
        self.head = self.extractor.class_embeddings() if with_head else None

    def embed(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.extractor(images_uint8.float() / 127.5 - 1)

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        device = next(self.extractor.parameters()).device
        return self.head.logits(features.to(device=device, dtype=torch.float32)).cpu()


def as_numpy(features: torch.Tensor) -> np.ndarray:
    return features.detach().cpu().double().numpy()


def label_free_file(spec: str) -> Path | None:
    """The file a label-free spec names (``vgg16:PATH``), None for the others; ``FeatureSpaceError`` for an
    unknown spec. Checks the spec without building anything, for the CLIs."""
    kind, _, argument = spec.partition(":")
    if kind in WIDTHS:
        if argument and not argument.lstrip("-").isdigit():
            raise FeatureSpaceError(f"label-free features {spec!r}: the seed of {kind}:SEED must be an integer")
        return None
    if kind == "vgg16-imagenet" and not argument:
        return None
    if kind == "vgg16" and argument:
        return Path(argument)
    raise FeatureSpaceError(f"unknown label-free features {spec!r}; allowed: vgg16-half-random[:SEED], "
                            f"vgg16-random[:SEED], vgg16-imagenet, vgg16:PATH")
