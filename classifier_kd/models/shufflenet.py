"""ShuffleNet V1 (Zhang et al., 2018) and V2 (Ma et al., 2018) as used on CIFAR in the KD benchmarks.

Both have RepDistiller's CIFAR stem — a *1x1* conv to 24 channels with BN-ReLU at full resolution
(``conv1``, ``bn1``) — then three stages (``layer1`` .. ``layer3``) that each halve the resolution,
global average pooling and a ``linear`` head.

* :class:`ShuffleNetV1` (``ShuffleV1``): groups=3, stage widths 240-480-960, 4-8-4 bottleneck units.
  The first unit of a stage is stride 2 and concatenates an avg-pooled input, so its residual branch
  outputs ``width - in_channels``; the first 1x1 conv of the net is not grouped (24 input channels).
* :class:`ShuffleNetV2` (``ShuffleV2``, net size 1x): stage widths 116-232-464, each stage a
  downsampling unit then 3-7-3 basic units, followed by a 1x1 conv to 1024 (``conv2``, ``bn2``).

Parameter counts with 100 classes: ShuffleV1 949,258; ShuffleV2 1,355,528.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from classifier_kd.models.base import CifarClassifier


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, g*k, H, W) -> view as (N, g, k) channels -> transpose to (N, k, g) -> flatten back."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 reduce-BN-ReLU, channel shuffle, 3x3 depthwise (strided)-BN, grouped 1x1 expand-BN.

    Stride 1: add the input; stride 2: concatenate a 3x3 avg-pooled input. ReLU after either.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid = out_channels // 4
        # The first unit after the 24-channel stem uses an ungrouped 1x1 conv (24 is too thin to split).
        self.first_groups = 1 if in_channels == 24 else groups
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], dim=1))
        return F.relu(out + x)


class ShuffleNetV1(CifarClassifier):
    head_weight_key = "linear.weight"

    def __init__(self, stage_widths: tuple[int, int, int] = (240, 480, 960),
                 stage_blocks: tuple[int, int, int] = (4, 8, 4), groups: int = 3,
                 num_classes: int = 100) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = stage_widths[2]
        self._in_channels = 24
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.layer1 = self._make_stage(stage_widths[0], stage_blocks[0], groups)
        self.layer2 = self._make_stage(stage_widths[1], stage_blocks[1], groups)
        self.layer3 = self._make_stage(stage_widths[2], stage_blocks[2], groups)
        self.linear = nn.Linear(stage_widths[2], num_classes)

    def _make_stage(self, width: int, num_blocks: int, groups: int) -> nn.Sequential:
        # The stride-2 unit concatenates its input, so its residual branch only adds the difference.
        units = [ShuffleV1Unit(self._in_channels, width - self._in_channels, stride=2, groups=groups)]
        units += [ShuffleV1Unit(width, width, stride=1, groups=groups) for _ in range(num_blocks - 1)]
        self._in_channels = width
        return nn.Sequential(*units)


class ShuffleV2BasicUnit(nn.Module):
    """Split channels in half; the second half goes 1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU;
    concatenate with the untouched first half and shuffle with 2 groups."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        kept, branch = x[:, :half], x[:, half:]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([kept, out], dim=1), 2)


class ShuffleV2DownUnit(nn.Module):
    """Two stride-2 branches on the full input, each to half the output width, concatenated and shuffled.

    Left: 3x3 depthwise s2-BN, 1x1-BN-ReLU. Right: 1x1-BN-ReLU, 3x3 depthwise s2-BN, 1x1-BN-ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(CifarClassifier):
    head_weight_key = "linear.weight"

    def __init__(self, stage_widths: tuple[int, int, int] = (116, 232, 464), final_width: int = 1024,
                 stage_blocks: tuple[int, int, int] = (3, 7, 3), num_classes: int = 100) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = final_width
        self._in_channels = 24
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.layer1 = self._make_stage(stage_widths[0], stage_blocks[0])
        self.layer2 = self._make_stage(stage_widths[1], stage_blocks[1])
        self.layer3 = self._make_stage(stage_widths[2], stage_blocks[2])
        self.conv2 = nn.Conv2d(stage_widths[2], final_width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(final_width)
        self.linear = nn.Linear(final_width, num_classes)

    def _make_stage(self, width: int, num_blocks: int) -> nn.Sequential:
        units = [ShuffleV2DownUnit(self._in_channels, width)]
        units += [ShuffleV2BasicUnit(width) for _ in range(num_blocks)]
        self._in_channels = width
        return nn.Sequential(*units)

    def pre_pool(self, last_map: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn2(self.conv2(last_map)))


def shufflenet_v1(num_classes: int = 100) -> ShuffleNetV1:
    """RepDistiller's ``ShuffleV1``."""
    return ShuffleNetV1(num_classes=num_classes)


def shufflenet_v2(num_classes: int = 100) -> ShuffleNetV2:
    """RepDistiller's ``ShuffleV2`` (net size 1x)."""
    return ShuffleNetV2(num_classes=num_classes)
