"""Image sets with a known failure planted in them, made from real images: what each metric must flag.

Used by ``scripts/metric_ceilings.py`` (``results/metric_ceilings.md``: every metric's real-vs-real value, the
ceiling to read the study's tables against, and its value on each planted failure) and by the tests.

* ``real``: real training images the generator never saw, with their labels (every metric near its ideal).
* ``collapsed``: one real image per class, repeated with small Gaussian pixel noise (std 8 on 0–255, the
  same in the three channels, so it adds no colour): class-
  conditional mode collapse, the failure a classifier's feature space rewards.
* ``tinted``: the real set with a colour cast (red +30, blue −30): colour on grayscale data.
* ``copies``: the training subset repeated to the sample count: memorisation.
* ``shuffled``: the real set with its labels permuted: samples that do not match their class.
"""
from __future__ import annotations

import torch

PLANTED = ("real", "collapsed", "tinted", "copies", "shuffled")


def planted_sets(real: torch.Tensor, real_labels: torch.Tensor, subset: torch.Tensor, subset_labels: torch.Tensor,
                 num_classes: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{case: (uint8 images, labels)}`` for every case of :data:`PLANTED`, each as large as ``real``.

    ``real``/``real_labels``: real images the generator did not train on; ``subset``/``subset_labels``: the
    ones it trained on. Deterministic for ``seed``.
    """
    rng = torch.Generator().manual_seed(seed)
    count = len(real)
    labels = torch.arange(count) % num_classes
    prototypes = torch.stack([real[(real_labels == c).nonzero()[0, 0]] for c in range(num_classes)])
    noise = torch.randn(count, 1, *real.shape[2:], generator=rng).expand(-1, real.shape[1], -1, -1) * 8  # grey noise
    collapsed = (prototypes[labels].float() + noise).round().clamp(0, 255).to(torch.uint8)
    cast = torch.tensor([30.0, 0.0, -30.0]).view(1, 3, 1, 1)
    tinted = (real.float() + cast).clamp(0, 255).to(torch.uint8)
    repeat = -(-count // len(subset))
    copies, copy_labels = subset.repeat(repeat, 1, 1, 1)[:count], subset_labels.repeat(repeat)[:count]
    shuffled = real_labels[torch.randperm(count, generator=rng)]
    return {"real": (real, real_labels), "collapsed": (collapsed, labels), "tinted": (tinted, real_labels),
            "copies": (copies, copy_labels), "shuffled": (real, shuffled)}
