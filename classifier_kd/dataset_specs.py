"""What each dataset is to a model: its name, class count, normalisation and default input size; the input spec.

:data:`DATASETS` are the names the commands accept, :data:`NUM_CLASSES` their class counts and
:data:`NORMALIZATION` their per-channel mean and std. :func:`input_spec` is what a model trained on a dataset
expects: images in [0, 1] at ``size`` x ``size`` (:func:`default_image_size`: 32 for the 32x32 datasets, 224 for
ImageNet), then ``(x - mean) / std``; the trainers store it in the checkpoint.
"""
from __future__ import annotations

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "NUM_CLASSES",
    "check_name",
    "default_image_size",
    "input_spec",
]

DATASETS = ("cifar10", "cifar100", "fashion_mnist", "imagenet")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10, "imagenet": 1000}

# Per-channel mean and std of the training images in [0, 1]. CIFAR-10/100: the values of the KD codebases
# (RepDistiller, mdistiller, CRD). Fashion-MNIST: the usual 28x28 values (0.2860 / 0.3530, computed over the
# 60k training images), replicated to the 3 channels; the zero-padded 32x32 images have 0.2190 / 0.3318,
# an affine difference the first conv + BN absorb, so the commonly quoted numbers are kept. ImageNet: the
# torchvision / timm constants (IMAGENET_DEFAULT_MEAN / STD).
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "fashion_mnist": ((0.2860,) * 3, (0.3530,) * 3),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def default_image_size(name: str) -> int:
    """The input size ``image_size=None`` stands for: 32 for the 32x32 datasets, 224 for ImageNet."""
    return 224 if check_name(name) == "imagenet" else 32


def input_spec(name: str, image_size: int | None = None) -> dict:
    """What a model trained on ``name`` expects: images in [0, 1], ``size`` x ``size``, then (x - mean) / std."""
    mean, std = NORMALIZATION[check_name(name)]
    size = default_image_size(name) if image_size is None else image_size
    if int(size) != size or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return {"size": int(size), "mean": list(mean), "std": list(std)}
