"""CIFAR ResNets of the KD benchmarks (RepDistiller / CRD / mdistiller).

Two families, with the module names of RepDistiller so that its teacher checkpoints load with
``strict=True``:

* :class:`CifarResNet` — the 3-stage ResNet of He et al. (2016, §4.2) with basic blocks: resnet20/32/56/110
  (widths 16-16-32-64) and the 4x wider resnet8x4 / resnet32x4 (stem 32, stages 64-128-256).
  Projection shortcuts (1x1 conv + BN, named ``downsample``) wherever the shape changes.
* :class:`CifarBottleneckResNet` — ``ResNet50`` for CIFAR: the ImageNet bottleneck layout with a 3x3
  stride-1 stem and no max-pool, stages 256-512-1024-2048, shortcuts named ``shortcut``, head ``linear``.

Parameter counts with 100 classes: resnet8x4 1,233,540; resnet32x4 7,433,860; resnet20 278,324;
resnet32 472,756; resnet56 861,620; resnet110 1,736,564; ResNet50 23,705,252.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from classifier_kd.models.base import CifarClassifier, init_repdistiller



class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the (projected) input, then ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNet(CifarClassifier):
    """3-stage CIFAR ResNet with ``(depth - 2) / 6`` basic blocks per stage.

    ``widths = (stem, stage1, stage2, stage3)``; stages 2 and 3 halve the resolution.
    """

    head_weight_key = "fc.weight"

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.num_classes = num_classes
        self.feature_dim = widths[3]
        self._in_channels = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_stage(widths[1], blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(widths[2], blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(widths[3], blocks_per_stage, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        init_repdistiller(self)

    def _make_stage(self, channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_channels != channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        blocks = [BasicBlock(self._in_channels, channels, stride, downsample)]
        blocks += [BasicBlock(channels, channels) for _ in range(num_blocks - 1)]
        self._in_channels = channels
        return nn.Sequential(*blocks)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, each with BN; ReLU after the residual sum."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()  # identity; an empty Sequential, as in RepDistiller
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarBottleneckResNet(CifarClassifier):
    """ImageNet-style bottleneck ResNet adapted to 32x32: 3x3 stride-1 stem, no max-pool, 4 stages."""

    head_weight_key = "linear.weight"
    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, blocks_per_stage: tuple[int, int, int, int], num_classes: int = 100) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = 512 * Bottleneck.expansion
        self._in_channels = 64
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_stage(64, blocks_per_stage[0], stride=1)
        self.layer2 = self._make_stage(128, blocks_per_stage[1], stride=2)
        self.layer3 = self._make_stage(256, blocks_per_stage[2], stride=2)
        self.layer4 = self._make_stage(512, blocks_per_stage[3], stride=2)
        self.linear = nn.Linear(self.feature_dim, num_classes)
        init_repdistiller(self)

    def _make_stage(self, channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = []
        for block_stride in [stride] + [1] * (num_blocks - 1):
            blocks.append(Bottleneck(self._in_channels, channels, block_stride))
            self._in_channels = channels * Bottleneck.expansion
        return nn.Sequential(*blocks)


def resnet20(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(20, (16, 16, 32, 64), num_classes)


def resnet32(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(32, (16, 16, 32, 64), num_classes)


def resnet56(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(56, (16, 16, 32, 64), num_classes)


def resnet110(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(110, (16, 16, 32, 64), num_classes)


def resnet8x4(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(8, (32, 64, 128, 256), num_classes)


def resnet32x4(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(32, (32, 64, 128, 256), num_classes)


def resnet50(num_classes: int = 100) -> CifarBottleneckResNet:
    """The CIFAR ``ResNet50`` of the KD benchmarks (3, 4, 6, 3 bottleneck blocks)."""
    return CifarBottleneckResNet((3, 4, 6, 3), num_classes)
