"""The seams every model shares (:class:`Classifier`), and those of the CIFAR zoo (:class:`CifarClassifier`).

A model lists its maps in ``forward_stages`` (stem first; FitNet's hint is index 2) and names its final
layer in ``head_weight_key``; this base class derives the rest:
``forward_features`` = global average of the last map after ``pre_pool`` (identity unless the architecture
has a last conv/BN/ReLU that only serves the head), ``forward_head`` = the final layer,
``forward`` = head of features. Global average pooling equals RepDistiller's fixed-size pools on 32x32 inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.losses.classes import ClassEmbeddings


class Classifier(nn.Module):
    """What every model of the zoo offers the trainers, and the distillation seams with their defaults.

    Subclasses define ``forward_features`` (pooled penultimate features, ``feature_dim`` wide) and
    ``forward_head`` (features -> logits). The defaults below are what a plain classifier distils with; a
    model with a distillation head (VkD's DeiT) overrides both.
    """

    feature_dim: int
    num_classes: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def distill_feature_dim(self) -> int:
        """Width of the feature that feature losses see (``forward_distill``'s first output)."""
        return self.feature_dim

    def forward_distill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(distilled features, logits for cross-entropy, logits for the logit losses)."""
        features = self.forward_features(x)
        logits = self.forward_head(features)
        return features, logits, logits

    def class_embeddings(self) -> ClassEmbeddings:
        """The final linear layer (named by ``head_weight_key``) as class embeddings: its scores are the logits.

        What a classifier teacher offers the losses that need the teacher's classes (KD-DLGAN's correlation
        term, label distillation) in place of CLIP's text embeddings.
        """
        key = getattr(self, "head_weight_key", None)
        layer = self.get_submodule(key.rsplit(".", 1)[0]) if key else None
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"{type(self).__name__} has no linear head named by head_weight_key ({key!r})")
        return ClassEmbeddings(layer.weight, layer.bias)


class CifarClassifier(Classifier):
    head_weight_key: str  # state-dict key of the final layer's weight, e.g. "fc.weight"
    stage_names: tuple[str, ...] = ("layer1", "layer2", "layer3")  # for the default forward_stages

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stem output and each stage's output (FitNet's hint is index 2).

        The default is the ResNet / ShuffleNetV1 layout: ``relu(bn1(conv1(x)))``, then the modules named in
        ``stage_names`` in turn. Models laid out otherwise override it.
        """
        maps = [F.relu(self.bn1(self.conv1(x)))]
        for name in self.stage_names:
            maps.append(getattr(self, name)(maps[-1]))
        return maps

    def pre_pool(self, last_map: torch.Tensor) -> torch.Tensor:
        return last_map

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_pool(self.forward_stages(x)[-1]).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.get_submodule(self.head_weight_key.rsplit(".", 1)[0])(features)


def init_repdistiller(model: nn.Module, linear: str = "default") -> None:
    """The zoo's initialisation (RepDistiller's, shared by every family).

    Convs: He-normal with fan_out (std sqrt(2 / (k*k*out))), bias zero where there is one; BatchNorm:
    scale 1, shift 0. ``linear``: ``default`` keeps PyTorch's init (ResNets), ``zero_bias`` zeroes the bias
    (WRN), ``normal`` draws the weight from N(0, 0.01) and zeroes the bias (VGG, MobileNetV2).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear != "default":
            if linear == "normal":
                nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
