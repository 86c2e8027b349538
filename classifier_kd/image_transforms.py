"""The image transforms of the classifiers' datasets: each recipe's training augmentation, and the test transform.

Test transform (:func:`test_transform`)
---------------------------------------
* CIFAR / Fashion-MNIST at 32: only normalised. At a size below 32: resized to ``size``.
* CIFAR / Fashion-MNIST above 32: Resize(int(size / 0.875)) + CenterCrop(size) of the 32x32 image,
  bilinear: timm's eval transform with its default crop_pct 0.875, as the OFA / RSD code evaluates
  CIFAR-100 at 224 (Resize 256 + CenterCrop 224; ``OFAKD train.py`` sets ``data_config['interpolation'] =
  'bilinear'`` for cifar100). OFA takes crop_pct from the student's timm config (0.875 for ResNet18,
  MobileNetV2, ResMLP, Mixer; 0.9 for DeiT, Swin, ViT); 0.875 is used for every model here.
* ImageNet: Resize(int(size * 256 / 224)) + CenterCrop(size), bilinear (Resize 256 + CenterCrop 224 at the
  default size; mdistiller ``mdistiller/dataset/imagenet.py``).

Training augmentations (:data:`AUGMENTATIONS`; ``augment="default"`` is ``cifar`` for the 32x32 datasets and
``imagenet`` for ImageNet, :func:`default_augment`). Sources: /work/shared/reference/losses.md section 2.

* ``none``: the test transform (e.g. for feature extraction on training images).
* ``cifar``: RandomCrop 32 with 4 px of zero padding + horizontal flip on the 32x32 image, then a resize to
  ``size`` if it is not 32 (RepDistiller / mdistiller ``dataset/cifar100.py``). For the 32x32 datasets only.
* ``imagenet``: RandomResizedCrop(size) (scale 0.08-1, ratio 3/4-4/3, bilinear) + horizontal flip
  (mdistiller ``get_imagenet_train_transform``).
* ``three_augment``: DeiT III's "3-Augment" as VkD trains with it (DeiT III, Touvron et al. ECCV 2022;
  ``facebookresearch/deit augment.py new_data_aug_generator``, ``roymiles/VkD augment.py aug_generator``,
  ``--color-jitter`` default 0.3 in ``VkD main_distributed.py``): RandomResizedCrop(size, scale 0.08-1,
  bicubic) + horizontal flip + one of {grayscale (3 channels), solarize (threshold 128), Gaussian blur with
  sigma uniform in (0.1, 2.0)} chosen uniformly + ColorJitter(0.3, 0.3, 0.3). It replaces timm's transform
  there, so no RandAugment and no random erasing.
* ``rrc``: the OFA / RSD CNN-student recipe on CIFAR (``OFAKD configs/cifar/cnn.yaml``: ``color_jitter: 0``,
  no ``aa``, no ``reprob``): timm's RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3) + horizontal flip.
  OFA's ``--train-interpolation`` default ``random`` is kept: each crop is resized bilinear or bicubic
  with probability 1/2 (timm ``RandomResizedCropAndInterpolation``).
* ``rrc_randaug``: the OFA / RSD ViT/MLP-student recipe (``OFAKD configs/cifar/vit_mlp.yaml``: ``aa:
  rand-m9-mstd0.5-inc1``, ``reprob: 0.25``, ``remode`` default ``pixel``, ``color_jitter: 0.4``): ``rrc`` +
  RandAugment (2 ops, magnitude 9; torchvision's, see :func:`_rand_augment` for how it differs from timm's)
  + normalisation + RandomErasing(p=0.25, scale 0.02-1/3, ratio 0.3-3.3, per-pixel normal values).
  No colour jitter: timm's ``transforms_imagenet_train`` adds ColorJitter only when no auto-augment policy
  is set (timm 0.6: ``elif color_jitter is not None``, "color jitter is enabled when not using AA"; timm 1.x:
  ``disable_color_jitter = not (force_color_jitter or '3a' in auto_augment)``), so the config's 0.4 has no
  effect. Mixup / CutMix / label smoothing belong to the trainer, not here.

For CIFAR and Fashion-MNIST at a size above 32 the random crops of ``imagenet``, ``three_augment``, ``rrc``
and ``rrc_randaug`` are taken from the 32x32 image and resized up to ``size``: this is exactly what timm's
loader does in OFA / RSD, which hand the 32x32 PIL images of ``torchvision.datasets.CIFAR100`` to
RandomResizedCrop(224). Fashion-MNIST is first padded to 32x32 RGB (:class:`GreyToRGB32`) in every transform.

Every transform is built from module-level classes (no lambdas), so datasets pickle for DataLoader workers.
Random draws use torch's generator (seeded per worker by the DataLoader).
"""
from __future__ import annotations

import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from classifier_kd.dataset_specs import check_name

__all__ = [
    "AUGMENTATIONS",
    "default_augment",
    "test_transform",
    "train_transform",
]

AUGMENTATIONS = ("none", "cifar", "imagenet", "three_augment", "rrc", "rrc_randaug")

_SMALL = ("cifar10", "cifar100", "fashion_mnist")  # stored at 32x32 (Fashion-MNIST once padded)
CIFAR_PADDING = 4  # RandomCrop(32, padding=4)
EVAL_CROP_PCT = 0.875  # timm's DEFAULT_CROP_PCT: the 32x32 datasets above 32 are resized to size / 0.875
IMAGENET_RESIZE_RATIO = 256 / 224  # Resize 256 + CenterCrop 224
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
THREE_AUGMENT_JITTER = 0.3  # VkD / DeiT III --color-jitter default
THREE_AUGMENT_BLUR_SIGMA = (0.1, 2.0)  # DeiT III GaussianBlur radius_min / radius_max
SOLARIZE_THRESHOLD = 128  # PIL ImageOps.solarize's default, as DeiT III calls it
RANDAUG_OPS, RANDAUG_MAGNITUDE = 2, 9  # rand-m9 (2 layers is timm's default)
RANDOM_ERASING_PROB = 0.25  # OFA vit_mlp.yaml reprob


def default_augment(name: str) -> str:
    """What ``augment="default"`` stands for: ``cifar`` for the 32x32 datasets, ``imagenet`` for ImageNet."""
    return "imagenet" if check_name(name) == "imagenet" else "cifar"


def _resolve_augment(name: str, augment: str) -> str:
    if augment == "default":
        return default_augment(name)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; choose one of default, {', '.join(AUGMENTATIONS)}")
    if augment == "cifar" and name not in _SMALL:
        allowed = ", ".join(a for a in AUGMENTATIONS if a != "cifar")
        raise ValueError(f"augment 'cifar' is the 32x32 recipe of {', '.join(_SMALL)}; for {name} choose one "
                         f"of default, {allowed}")
    return augment


# --------------------------------------------------------------------------------------------------------
# Transform building blocks. Module-level classes, not lambdas, so they pickle for DataLoader workers; random
# draws come from torch's generator, which DataLoader seeds per worker and torch.manual_seed controls.


class GreyToRGB32:
    """Fashion-MNIST's 28x28 grey PIL image -> 32x32 RGB: 2 px of black background on every side (its own
    background, as ``gan_kd.data`` pads), grey replicated to the three channels. Every pixel stays exact."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return ImageOps.expand(image.convert("L"), border=2, fill=0).convert("RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class OneOf:
    """Apply one of ``choices``, picked uniformly (torchvision's RandomChoice draws from Python's ``random``)."""

    def __init__(self, choices) -> None:
        self.choices = list(choices)

    def __call__(self, image):
        return self.choices[int(torch.randint(len(self.choices), (1,)))](image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.choices!r})"


class GaussianBlurPIL:
    """PIL ``ImageFilter.GaussianBlur`` with a standard deviation drawn uniformly from ``sigma`` (DeiT III's
    GaussianBlur with p=1: the PIL radius *is* the standard deviation; no kernel size to choose)."""

    def __init__(self, sigma: tuple[float, float] = THREE_AUGMENT_BLUR_SIGMA) -> None:
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, image: Image.Image) -> Image.Image:
        radius = float(torch.empty(1).uniform_(*self.sigma))
        return image.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


class RandomResizedCropRandomInterpolation(transforms.RandomResizedCrop):
    """torchvision's RandomResizedCrop (same crop draw as timm's ``RandomResizedCropAndInterpolation``) with
    timm's ``interpolation='random'``: each crop is resized with one of ``interpolations``, picked uniformly."""

    def __init__(self, size: int, scale=RRC_SCALE, ratio=RRC_RATIO,
                 interpolations=(InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)) -> None:
        super().__init__(size, scale=scale, ratio=ratio)
        self.interpolations = tuple(interpolations)

    def forward(self, image):
        top, left, height, width = self.get_params(image, self.scale, self.ratio)
        mode = self.interpolations[int(torch.randint(len(self.interpolations), (1,)))]
        return TF.resized_crop(image, top, left, height, width, self.size, mode, antialias=True)

    def __repr__(self) -> str:
        modes = ", ".join(m.value for m in self.interpolations)
        return (f"{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolations=({modes}))")


def _base_steps(name: str) -> list:
    """Steps before any crop: the stored PIL image -> PIL RGB (Fashion-MNIST padded to 32x32)."""
    return [GreyToRGB32()] if name == "fashion_mnist" else []


def _to_tensor_normalize(spec: dict) -> list:
    return [transforms.ToTensor(), transforms.Normalize(list(spec["mean"]), list(spec["std"]))]


def _rrc(size: int, interpolation: InterpolationMode) -> transforms.RandomResizedCrop:
    return transforms.RandomResizedCrop(size, scale=RRC_SCALE, ratio=RRC_RATIO, interpolation=interpolation,
                                        antialias=True)


def _rand_augment(spec: dict) -> transforms.RandAugment:
    """torchvision's RandAugment standing in for timm's ``rand-m9-mstd0.5-inc1`` (OFA's ``--aa``).

    Same: 2 ops per image, magnitude 9 on timm's 0-10 scale (``num_magnitude_bins=11``, so magnitude 9 is
    9/10 of each op's range, as timm's ``_LEVEL_DENOM = 10``; torchvision's default 31 bins would make it
    9/30), the same maximum shear 0.3, translation 0.45 of the side, rotation 30 degrees, enhance factor
    1 +- 0.9 and solarize threshold (26 at m9); geometric ops fill with the dataset mean (timm's ``img_mean``).
    Differs: timm applies each op with probability 0.5 (here always), draws ops with replacement from its
    "increasing" set (AutoContrast, Equalize, Invert, Rotate, Posterize, Solarize, SolarizeAdd, Color,
    Contrast, Brightness, Sharpness, ShearX/Y, TranslateX/Y; here Identity instead of Invert and SolarizeAdd),
    adds Gaussian noise of std 0.5 to the magnitude (``mstd0.5``; here fixed), posterizes to 1 bit at m9
    (here 4 bits) and resizes randomly bilinear or bicubic (here bilinear).
    """
    fill = [min(255, round(255 * m)) for m in spec["mean"]]
    return transforms.RandAugment(num_ops=RANDAUG_OPS, magnitude=RANDAUG_MAGNITUDE, num_magnitude_bins=11,
                                  interpolation=InterpolationMode.BILINEAR, fill=fill)


def train_transform(name: str, spec: dict, augment: str = "default") -> transforms.Compose:
    """The training transform of recipe ``augment`` (one of :data:`AUGMENTATIONS` or ``"default"``) for ``name``
    at ``spec["size"]``: stored PIL image -> normalised float tensor (3, size, size). See the module docstring."""
    augment = _resolve_augment(check_name(name), augment)
    if augment == "none":
        return test_transform(name, spec)
    size = int(spec["size"])
    steps = _base_steps(name)
    if augment == "cifar":
        steps += [transforms.RandomCrop(32, padding=CIFAR_PADDING), transforms.RandomHorizontalFlip()]
        if size != 32:
            steps.append(transforms.Resize((size, size), antialias=True))
        return transforms.Compose(steps + _to_tensor_normalize(spec))
    if augment == "imagenet":
        steps += [_rrc(size, InterpolationMode.BILINEAR), transforms.RandomHorizontalFlip()]
        return transforms.Compose(steps + _to_tensor_normalize(spec))
    if augment == "three_augment":
        # DeiT III / VkD augment.py: RandomResizedCropAndInterpolation(size, scale=(0.08, 1.0),
        # interpolation='bicubic'), RandomHorizontalFlip(), RandomChoice([gray_scale(p=1.0) ->
        # Grayscale(3), Solarization(p=1.0) -> ImageOps.solarize (threshold 128), GaussianBlur(p=1.0) -> PIL
        # radius uniform(0.1, 2.0)]), ColorJitter(cj, cj, cj) with --color-jitter 0.3, ToTensor, Normalize.
        steps += [
            _rrc(size, InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
            OneOf([transforms.Grayscale(num_output_channels=3),
                   transforms.RandomSolarize(SOLARIZE_THRESHOLD, p=1.0),
                   GaussianBlurPIL(THREE_AUGMENT_BLUR_SIGMA)]),
            transforms.ColorJitter(THREE_AUGMENT_JITTER, THREE_AUGMENT_JITTER, THREE_AUGMENT_JITTER),
        ]
        return transforms.Compose(steps + _to_tensor_normalize(spec))
    # rrc / rrc_randaug: timm's transforms_imagenet_train as OFA / RSD call it (train.py create_loader).
    steps += [RandomResizedCropRandomInterpolation(size), transforms.RandomHorizontalFlip()]
    if augment == "rrc":
        return transforms.Compose(steps + _to_tensor_normalize(spec))
    steps.append(_rand_augment(spec))
    steps += _to_tensor_normalize(spec)
    # timm RandomErasing(0.25, mode='pixel', max_count=1): after normalisation, a box of 2%-1/3 of the area
    # with log-uniform aspect 0.3-3.3 filled with N(0, 1) per pixel; torchvision's value="random" is the same.
    steps.append(transforms.RandomErasing(p=RANDOM_ERASING_PROB, scale=(0.02, 1 / 3), ratio=(0.3, 1 / 0.3),
                                          value="random"))
    return transforms.Compose(steps)


def test_transform(name: str, spec: dict) -> transforms.Compose:
    """Test images: resized / centre-cropped to ``spec["size"]`` as the module docstring says, then normalised."""
    size = int(spec["size"])
    steps = _base_steps(check_name(name))
    if name == "imagenet":
        steps += [transforms.Resize(int(size * IMAGENET_RESIZE_RATIO), antialias=True),
                  transforms.CenterCrop(size)]
    elif size > 32:
        steps += [transforms.Resize(int(size / EVAL_CROP_PCT), interpolation=InterpolationMode.BILINEAR,
                                    antialias=True),
                  transforms.CenterCrop(size)]
    elif size < 32:
        steps.append(transforms.Resize((size, size), antialias=True))
    return transforms.Compose(steps + _to_tensor_normalize(spec))
