"""Distillation losses, one small module per family; build them by name with :func:`kd_core.build_loss`."""
from kd_core.losses.contrastive import DCDLoss
from kd_core.losses.correlation import RSDLoss
from kd_core.losses.feature import FitNetLoss, VkDLoss
from kd_core.losses.logit import DKDLoss, KDLoss, zscore_logits

__all__ = ["DCDLoss", "DKDLoss", "FitNetLoss", "KDLoss", "RSDLoss", "VkDLoss", "zscore_logits"]
