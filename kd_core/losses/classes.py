"""The teacher's class embeddings: a fixed map from teacher features to one score per class.

Two distillation losses compare predictions over classes rather than features: KD-DLGAN's image-text
correlation term and label distillation. Both need the teacher's view of the classes:

* a CLIP teacher: the text tower's embeddings of one prompt per class (zero-shot CLIP, Radford et al. 2021 §3.1.2:
  logits are ``logit_scale * cos(image, text)``);
* a classifier teacher: the rows (and bias) of its final linear layer, so the scores are exactly its logits.

:class:`ClassEmbeddings` holds either, as buffers (saved with the loss, moved with it, never trained).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassEmbeddings(nn.Module):
    """``(C, D)`` class embeddings of a ``D``-wide teacher feature space, fixed.

    ``cosine=True`` (CLIP): :meth:`logits` is ``scale * cos(feature, embedding)``; otherwise it is the linear
    layer ``feature @ weight.T + bias`` (a classifier's head, ``scale`` unused). :meth:`correlation` is the raw
    ``feature @ weight.T`` (KD-DLGAN's image-text correlation, before its row normalisation).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, cosine: bool = False,
                 scale: float = 1.0):
        super().__init__()
        if weight.dim() != 2 or weight.shape[0] < 1 or weight.shape[1] < 1:
            raise ValueError(f"class embeddings must be a non-empty (classes, dim) matrix, got {tuple(weight.shape)}")
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have one entry per class ({weight.shape[0]}), got {tuple(bias.shape)}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.register_buffer("weight", weight.detach().clone().float())
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())
        self.cosine = bool(cosine)
        self.scale = float(scale)

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def correlation(self, features: torch.Tensor) -> torch.Tensor:
        """``features @ weight.T``: ``(B, D) -> (B, C)``."""
        return features @ self.weight.to(features.dtype).t()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The teacher's class scores for ``(B, D)`` features."""
        weight = self.weight.to(features.dtype)
        if self.cosine:
            return self.scale * F.normalize(features, dim=1) @ F.normalize(weight, dim=1).t()
        bias = None if self.bias is None else self.bias.to(features.dtype)
        return F.linear(features, weight, bias)

    def extra_repr(self) -> str:
        return f"classes={self.num_classes}, dim={self.dim}, cosine={self.cosine}, scale={self.scale:g}"
