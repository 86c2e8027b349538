"""Two failures no distribution distance names: copying the training images, and colour on grayscale data.

* **Memorisation.** A generator trained on a few hundred images can reproduce them. In the label-free
  feature space, with ``S`` the training subset the generator was trained on and ``P`` a pool of real images it
  never saw (training images outside the subset; the test split when the subset is the whole training split):
  a generated sample ``g`` is *memorised* when it lies closer to its nearest training image ``t`` than ``t``
  lies to any other real image (of ``S`` or ``P``):  ``d(g, t) < min_{x in S ∪ P, x ≠ t} d(t, x)``. The
  share of such samples is ``memorised``: 1 for a copy of the training set, and for unseen real images not 0 but
  up to about ``|S| / (|P| + 1)`` (an unseen image beats all ``|P|`` pool images as ``t``'s nearest neighbour by
  chance): 0.021 at the study's 300 training images and 10,000 unseen ones (``results/metric_ceilings.md``). Read
  it against that real-vs-real value at the same fraction; where the subset outnumbers the pool (large
  fractions) it loses its power. Beside it, ``nn_ratio`` is the median over samples of ``d(g, S') / d(g, U)``, with
  ``U`` and ``S'`` equally large sets of unseen and of training images (``S' = S`` unless the pool is smaller)
  (1: no closer to the training images than to unseen ones; well below 1: copying), the
  measure of ``shared/reference/regime-probe.md`` in a feature space instead of pixels. Both are reported with the
  fraction of the data the generator was trained on: they mean more at 0.5% than at 100%.
* **Channel spread.** The generator keeps three output channels on grayscale data (as on CIFAR), so colour is
  possible and is a defect there: ``channel_spread`` is the mean over pixels of ``(|R-G| + |G-B| + |R-B|) / 3``
  on the 0–255 scale (0 for every grayscale image).
"""
from __future__ import annotations

import torch

DISTANCE_BATCH = 2000


def channel_spread(images_uint8: torch.Tensor) -> float:
    """Mean over pixels of the mean absolute difference between the RGB channels, 0–255 scale."""
    if images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"channel spread needs (N, 3, H, W) images, got {tuple(images_uint8.shape)}")
    total = 0.0
    for chunk in images_uint8.split(1000):
        x = chunk.double()
        total += float(((x[:, 0] - x[:, 1]).abs() + (x[:, 1] - x[:, 2]).abs() + (x[:, 0] - x[:, 2]).abs()).sum() / 3)
    return total / (images_uint8.shape[0] * images_uint8.shape[2] * images_uint8.shape[3])


def _nearest(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to, and index of, each query's nearest key."""
    distances, indices = [], []
    for chunk in queries.double().split(DISTANCE_BATCH):
        d = torch.cdist(chunk, keys.double())
        value, index = d.min(dim=1)
        distances.append(value)
        indices.append(index)
    return torch.cat(distances), torch.cat(indices)


def training_radii(subset: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """For each training image, the distance to its nearest other real image (of the subset or the pool)."""
    to_pool, _ = _nearest(subset, pool)
    if len(subset) < 2:
        return to_pool
    within = []
    for start in range(0, len(subset), DISTANCE_BATCH):
        d = torch.cdist(subset[start:start + DISTANCE_BATCH].double(), subset.double())
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = float("inf")  # not itself
        within.append(d.min(dim=1).values)
    return torch.minimum(to_pool, torch.cat(within))


def memorisation(fake: torch.Tensor, subset: torch.Tensor, pool: torch.Tensor,
                 radii: torch.Tensor | None = None) -> dict[str, float]:
    """``memorised`` and ``nn_ratio`` of generated features ``fake`` (see the module docstring).

    ``subset``: features of the training images; ``pool``: of unseen real images; ``radii`` may be cached from
    :func:`training_radii`. ``nn_ratio`` compares equally large sets: when the pool is smaller than the subset,
    a fixed random part of the subset as large as the pool stands for it (the ratio is then blind to copies of the
    training images left out, and says so by being near 1 for them).
    """
    if len(subset) < 1 or len(pool) < 1 or len(fake) < 1:
        raise ValueError(f"memorisation needs samples, training images and unseen images, got {len(fake)}, "
                         f"{len(subset)} and {len(pool)}")
    radii = training_radii(subset, pool) if radii is None else radii
    to_train, nearest = _nearest(fake, subset)
    size = min(len(subset), len(pool))
    part = subset if size == len(subset) else subset[torch.randperm(len(subset), generator=torch.Generator().manual_seed(0))[:size]]
    to_part = to_train if size == len(subset) else _nearest(fake, part)[0]
    to_unseen, _ = _nearest(fake, pool[:size])
    ratio = to_part / to_unseen.clamp_min(1e-12)
    return {"memorised": float((to_train < radii[nearest]).double().mean()), "nn_ratio": float(ratio.median())}
