"""VGG with batch norm for 32x32 inputs, as in the CIFAR KD benchmarks: vgg13 and vgg8.

Five conv blocks (``block0`` .. ``block4``), each a run of conv3x3(+bias)-BN-ReLU whose *last* ReLU is
applied in ``forward`` (so each block's state_dict indices are 0,1 / 3,4 / ...). Max-pools
(``pool0`` .. ``pool2``) after blocks 0-2; ``pool3`` only acts on 64x64 inputs, so on CIFAR
blocks 3 and 4 both run at 4x4. Global average pool, then one linear ``classifier`` (512 -> classes).

Parameter counts with 100 classes: vgg13 9,462,180; vgg8 3,965,028.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from classifier_kd.models.base import CifarClassifier, init_repdistiller

# Output channels of the convs in each of the five blocks.
VGG_CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


def _conv_block(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])  # the block's last ReLU runs in forward, after the stage map is taken


class VGG(CifarClassifier):
    head_weight_key = "classifier.weight"

    def __init__(self, config: tuple[tuple[int, ...], ...], num_classes: int = 100) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = config[4][-1]
        self.block0 = _conv_block(3, config[0])
        self.pool0 = nn.MaxPool2d(2, 2)
        self.block1 = _conv_block(config[0][-1], config[1])
        self.pool1 = nn.MaxPool2d(2, 2)
        self.block2 = _conv_block(config[1][-1], config[2])
        self.pool2 = nn.MaxPool2d(2, 2)
        self.block3 = _conv_block(config[2][-1], config[3])
        self.pool3 = nn.MaxPool2d(2, 2)
        self.block4 = _conv_block(config[3][-1], config[4])
        self.classifier = nn.Linear(config[4][-1], num_classes)
        init_repdistiller(self, linear="normal")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's (activated) output (FitNet's hint is index 2)."""
        input_size = x.shape[2]
        f0 = F.relu(self.block0(x))
        f1 = F.relu(self.block1(self.pool0(f0)))
        f2 = F.relu(self.block2(self.pool1(f1)))
        f3 = F.relu(self.block3(self.pool2(f2)))
        if input_size == 64:  # RepDistiller pools again only for 64x64 inputs
            f3_pooled = self.pool3(f3)
        else:
            f3_pooled = f3
        f4 = F.relu(self.block4(f3_pooled))
        return [f0, f1, f2, f3, f4]


def vgg8(num_classes: int = 100) -> VGG:
    """``vgg8_bn`` of RepDistiller (one conv per block)."""
    return VGG(VGG_CONFIGS["vgg8"], num_classes)


def vgg13(num_classes: int = 100) -> VGG:
    """``vgg13_bn`` of RepDistiller (two convs per block)."""
    return VGG(VGG_CONFIGS["vgg13"], num_classes)
