"""Distillation losses, one small module per family; each registers itself (``@register("loss", NAME)``).

Build them by name with :func:`kd_core.build_loss`; the import order below is the order ``available()`` lists.
"""
from kd_core.losses.logit import DKDLoss, KDLoss, zscore_logits
from kd_core.losses.feature import FitNetLoss, VkDLoss
from kd_core.losses.contrastive import DCDLoss
from kd_core.losses.correlation import RSDLoss
from kd_core.losses.similarity import PKDLoss, SPKDLoss
from kd_core.losses.heads import KDDLGANLoss, LabelDistillationLoss
from kd_core.losses.classes import ClassEmbeddings

__all__ = ["ClassEmbeddings", "DCDLoss", "DKDLoss", "FitNetLoss", "KDDLGANLoss", "KDLoss", "LabelDistillationLoss",
           "PKDLoss", "RSDLoss", "SPKDLoss", "VkDLoss", "zscore_logits"]
