"""Accuracy of a classifier on a test set: top-1 / top-5 (percent) and mean cross-entropy, exact under torchrun.

:func:`evaluate` is what the training loop runs every epoch and what ``classifier-kd evaluate`` runs on a
checkpoint; :func:`topk_correct` is the count both it and the loop's training top-1 use.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kd_core.runtime.distributed import DistributedContext, all_reduce_mean
from kd_core.runtime.precision import Precision

__all__ = ["evaluate", "topk_correct"]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> list[float]:
    """How many rows have their label among the top-k logits, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return [float(hits[:, : min(k, logits.shape[1])].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    workers: int = 0,
    precision: Precision | None = None,
    ctx: DistributedContext | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy of ``model`` on every item of ``dataset``.

    Under torchrun each rank evaluates a disjoint shard (``rank::world_size``, no padding, no duplicate)
    and the counts are combined, so the numbers are exact on any number of ranks. The model is put in
    eval mode and left there.
    """
    device = torch.device(device)
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=range(rank, len(dataset), world),
                        num_workers=workers, pin_memory=device.type == "cuda")
    model.eval()
    totals = {"correct1": 0.0, "correct5": 0.0, "loss_sum": 0.0, "count": 0.0}
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with (precision.autocast() if precision is not None else nullcontext()):
            logits = model(images)
        logits = logits.float()
        correct1, correct5 = topk_correct(logits, labels, (1, 5))
        totals["correct1"] += correct1
        totals["correct5"] += correct5
        totals["loss_sum"] += float(F.cross_entropy(logits, labels, reduction="sum"))
        totals["count"] += len(labels)
    # Means over ranks of the per-rank sums: the world-size factor cancels in every ratio below.
    totals = all_reduce_mean(totals)
    count = max(totals["count"], 1.0)
    return {
        "top1": 100.0 * totals["correct1"] / count,
        "top5": 100.0 * totals["correct5"] / count,
        "loss": totals["loss_sum"] / count,
        "images": round(totals["count"] * world),
    }
