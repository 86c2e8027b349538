"""VkD's DeiT student: a DeiT with a convolutional stem and a distillation token that is not learned.

As the VkD authors' ``models/deit.py`` builds it (``shared/reference/losses.md`` sec. 1.1; VkD paper sec. 4,
Table 1):

* stem: 7x7 stride-2 conv, then two 3x3 convs, each followed by BatchNorm + ReLU, 64 channels; then an 8x8
  stride-8 conv to the embedding width: 14 x 14 = 196 patch tokens at 224 px (``image_size / 16`` per side);
* tokens ``[cls, dist, patches]`` with 198 learned position embeddings; the *dist* token is the mean of the
  patch embeddings (before position embeddings), not a parameter;
* the transformer of DeiT (pre-norm blocks, MLP ratio 4, qkv bias, LayerNorm eps 1e-6; timm's ``Block``);
* training: ``head(cls)`` takes the cross-entropy, ``head_dist(dist)`` the KD term, and the feature VkD
  distils is the mean of the 196 patch tokens after the final LayerNorm; evaluation averages the two heads.

The seams: :meth:`forward_distill` gives ``(distilled features, cls logits, dist logits)`` and the
:class:`~classifier_kd.distiller.Distiller` uses it when a student has it, with ``distill_feature_dim``
(the width) as the feature size of its feature losses. ``forward_features`` is the pair ``[cls, dist]``
after the final norm (``feature_dim`` = twice the width) and ``forward_head`` averages the two heads on it,
so ``forward(x) == forward_head(forward_features(x))`` is the evaluation output. drop_path is 0, as in
the authors' training (it is never passed to the model). Needs timm (the ``imagenet`` extra).
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from classifier_kd.models.base import Classifier

STEM_CHANNELS = 64
PATCH = 16  # the stem's total stride: 2 (7x7 conv) x 8 (8x8 projection)
# name -> (width, depth, heads): DeiT-Ti and DeiT-S (Touvron et al. 2021, Table 1)
VKD_DEIT_MODELS = {"vkd_deit_tiny": (192, 12, 3), "vkd_deit_small": (384, 12, 6)}


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True)]


class VkDDeiT(Classifier):
    head_weight_key = "head.weight"

    def __init__(self, num_classes: int, width: int, depth: int, heads: int, image_size: int = 224) -> None:
        super().__init__()
        try:
            from timm.models.vision_transformer import Block
        except ImportError as err:  # pragma: no cover - timm comes with the imagenet extra (and open_clip)
            raise ImportError("VkD's DeiT needs timm: pip install -e .[imagenet]") from err
        if image_size % PATCH:
            raise ValueError(f"image_size must be a multiple of {PATCH} (the stem's stride), got {image_size}")
        self.num_classes, self.width, self.image_size = num_classes, width, image_size
        self.feature_dim = 2 * width  # cls and dist tokens; the distilled feature is `width` wide
        self.stem = nn.Sequential(*_conv_bn_relu(3, STEM_CHANNELS, 7, 2), *_conv_bn_relu(STEM_CHANNELS, STEM_CHANNELS, 3, 1),
                                  *_conv_bn_relu(STEM_CHANNELS, STEM_CHANNELS, 3, 1))
        self.patch_proj = nn.Conv2d(STEM_CHANNELS, width, PATCH // 2, PATCH // 2)
        patches = (image_size // PATCH) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + 2, width))
        norm = functools.partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm)
                                      for _ in range(depth)])
        self.norm = norm(width)
        self.head = nn.Linear(width, num_classes)
        self.head_dist = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """DeiT's: truncated normal (std 0.02) for tokens, position embeddings and linear weights, zero biases."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2 + patches, width)`` after the final norm: cls, dist, then the patch tokens."""
        patches = self.patch_proj(self.stem(x)).flatten(2).transpose(1, 2)
        dist = patches.mean(dim=1, keepdim=True)  # not learned: the mean patch embedding
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), dist, patches], dim=1) + self.pos_embed
        return self.norm(self.blocks(tokens))

    @property
    def distill_feature_dim(self) -> int:
        return self.width

    def forward_distill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean patch token, logits of the cls head, logits of the dist head): what training uses."""
        tokens = self.tokens(x)
        return tokens[:, 2:].mean(dim=1), self.head(tokens[:, 0]), self.head_dist(tokens[:, 1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(x)
        return torch.cat([tokens[:, 0], tokens[:, 1]], dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        cls, dist = features.split(self.width, dim=1)
        return (self.head(cls) + self.head_dist(dist)) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_vkd_deit(name: str, num_classes: int, pretrained: bool = False, image_size: int | None = None) -> VkDDeiT:
    if pretrained:
        raise ValueError(f"{name} has no published weights (VkD trains it from scratch); drop pretrained")
    width, depth, heads = VKD_DEIT_MODELS[name]
    return VkDDeiT(num_classes, width, depth, heads, image_size=image_size or 224)
