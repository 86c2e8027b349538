"""Wide ResNets (Zagoruyko & Komodakis, 2016) of the CIFAR KD benchmarks: wrn_40_2, wrn_16_2, wrn_40_1.

Pre-activation blocks (BN-ReLU-conv twice), ``(depth - 4) / 6`` blocks per group, widths
16 -> 16k -> 32k -> 64k, no dropout. Module names follow RepDistiller (``block1.layer.0.bn1``,
``convShortcut``, final ``bn1`` and ``fc``) so that its teacher checkpoints load with ``strict=True``.

Parameter counts with 100 classes: wrn_40_2 2,255,156; wrn_16_2 703,284; wrn_40_1 569,780.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from classifier_kd.models.base import CifarClassifier, init_repdistiller


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 (strided), BN-ReLU-conv3x3, plus the shortcut; no activation after the sum.

    When the width or resolution changes, the shortcut is a 1x1 conv applied to the *activated* input
    (BN-ReLU of x), as in the original WRN code; otherwise it is the raw input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.convShortcut = None
        if in_channels != out_channels:
            self.convShortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(F.relu(self.bn2(out)))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class NetworkBlock(nn.Module):
    """A group of wide blocks; the first one changes width and (maybe) resolution."""

    def __init__(self, num_blocks: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1)
            for i in range(num_blocks)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(CifarClassifier):
    head_weight_key = "fc.weight"

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (16, 22, 28, 40, ...), got {depth}")
        blocks_per_group = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = num_classes
        self.feature_dim = widths[3]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.block1 = NetworkBlock(blocks_per_group, widths[0], widths[1], stride=1)
        self.block2 = NetworkBlock(blocks_per_group, widths[1], widths[2], stride=2)
        self.block3 = NetworkBlock(blocks_per_group, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])  # the final pre-pooling BN, named as in RepDistiller
        self.fc = nn.Linear(widths[3], num_classes)
        init_repdistiller(self, linear="zero_bias")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stem conv output and each group's output, before the final BN-ReLU (FitNet's hint is index 2)."""
        stem = self.conv1(x)
        g1 = self.block1(stem)
        g2 = self.block2(g1)
        g3 = self.block3(g2)
        return [stem, g1, g2, g3]

    def pre_pool(self, last_map: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(last_map))


def wrn_40_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 2, num_classes)


def wrn_16_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 2, num_classes)


def wrn_40_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 1, num_classes)
