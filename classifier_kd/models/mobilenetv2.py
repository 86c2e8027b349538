"""MobileNetV2 (Sandler et al., 2018) as used on CIFAR in the KD benchmarks (RepDistiller's ``mobile_half``).

Width multiplier 0.5 and expansion t=6, with RepDistiller's CIFAR layout: a stride-2 3x3 stem
(``conv1``), seven groups of inverted residuals (``blocks.0`` .. ``blocks.6``, each block's layers in
one ``conv`` Sequential — the t=1 group keeps its 1x1 expansion conv), a 1x1 conv to 1280 channels
(``conv2``, not scaled down by the width multiplier), global average pool and ``classifier.0``.
On 32x32 inputs the maps are 16x16 after the stem and 2x2 before pooling.

Parameter count with 100 classes: 812,836.
"""
from __future__ import annotations


import torch
from torch import nn

from classifier_kd.models.base import CifarClassifier, init_repdistiller

# (expansion t, output channels c, repeats n, first stride s) of each group, before the width multiplier;
# t=None means "the model's expansion".
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 linear projection-BN; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(CifarClassifier):
    head_weight_key = "classifier.0.weight"

    def __init__(self, num_classes: int = 100, width_mult: float = 0.5, expand_ratio: int = 6) -> None:
        super().__init__()
        self.num_classes = num_classes
        in_channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, in_channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = int(c * width_mult)
            group = []
            for stride in [s] + [1] * (n - 1):
                group.append(InvertedResidual(in_channels, out_channels, stride, t or expand_ratio))
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*group))
        self.feature_dim = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_channels, self.feature_dim, 1, stride=1)
        self.classifier = nn.Sequential(nn.Linear(self.feature_dim, num_classes))
        init_repdistiller(self, linear="normal")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stem, then the outputs of groups 1, 2, 4 and 6 (RepDistiller's feature taps; FitNet hint = index 2)."""
        stem = self.conv1(x)
        f1 = self.blocks[1](self.blocks[0](stem))
        f2 = self.blocks[2](f1)
        f3 = self.blocks[4](self.blocks[3](f2))
        f4 = self.blocks[6](self.blocks[5](f3))
        return [stem, f1, f2, f3, f4]

    def pre_pool(self, last_map: torch.Tensor) -> torch.Tensor:
        return self.conv2(last_map)


def mobilenetv2(num_classes: int = 100) -> MobileNetV2:
    """RepDistiller's ``mobile_half``: width 0.5, t=6 (registry name ``MobileNetV2``)."""
    return MobileNetV2(num_classes, width_mult=0.5, expand_ratio=6)
