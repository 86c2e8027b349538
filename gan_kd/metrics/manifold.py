"""Fidelity and diversity as two numbers each, from k-nearest-neighbour balls around feature rows.

* **Precision / recall** (Kynkäänniemi et al., NeurIPS 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models", k = 3): precision is the share of generated samples inside the union of the
  real samples' k-NN balls; recall the share of real samples inside the generated samples' balls. Computed
  by torch-fidelity's ``prc_features_to_metric`` (its batched variant). Ideal: both 1; a mode-collapsed
  generator keeps precision and loses recall.
* **Density / coverage** (Naeem et al., ICML 2020, "Reliable Fidelity and Diversity Metrics for Generative
  Models", §3, eqs. for density and coverage, k = 5): with ``r_i`` the distance from real sample ``i`` to its
  k-th nearest other real sample,

      density  = 1 / (k M) · Σ_j Σ_i 1[ d(Y_j, X_i) < r_i ]      (M generated samples Y_j)
      coverage = 1 / N     · Σ_i 1[ min_j d(Y_j, X_i) < r_i ]      (N real samples X_i)

  Density counts how many real balls hold each sample (1 in expectation for samples drawn like the real
  data; it is not capped at 1), coverage the share of real balls that hold any sample (ideal 1; robust to
  the real set's outliers, unlike recall). Both with strict ``<``, as the paper's ``prdc`` code.
"""
from __future__ import annotations

import torch

PRC_NEIGHBOURHOOD = 3
DC_NEIGHBOURHOOD = 5
DISTANCE_BATCH = 2000


def _check(fake: torch.Tensor, real: torch.Tensor, k: int, what: str) -> None:
    if fake.dim() != 2 or real.dim() != 2 or fake.shape[1] != real.shape[1]:
        raise ValueError(f"{what} needs two (N, D) feature sets of one width, got {tuple(fake.shape)} and {tuple(real.shape)}")
    if min(len(fake), len(real)) <= k:
        raise ValueError(f"{what} with k = {k} needs more than {k} samples in each set, got {len(fake)} and {len(real)}")


def precision_recall(fake: torch.Tensor, real: torch.Tensor, k: int = PRC_NEIGHBOURHOOD) -> dict[str, float]:
    """Kynkäänniemi et al.'s precision and recall (torch-fidelity's implementation)."""
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    _check(fake, real, k, "precision/recall")
    out = prc_features_to_metric(fake.float(), real.float(), prc_neighborhood=k, prc_batch_size=DISTANCE_BATCH,
                                 save_cpu_ram=True, verbose=False)
    return {"precision": float(out[KEY_METRIC_PRECISION]), "recall": float(out[KEY_METRIC_RECALL])}


def kth_neighbour_radii(real: torch.Tensor, k: int = DC_NEIGHBOURHOOD) -> torch.Tensor:
    """Distance from each row to its k-th nearest *other* row (the row itself, at 0, is skipped)."""
    real = real.float()
    return torch.cat([torch.cdist(chunk, real).kthvalue(k + 1, dim=1).values for chunk in real.split(DISTANCE_BATCH)])


def density_coverage(fake: torch.Tensor, real: torch.Tensor, k: int = DC_NEIGHBOURHOOD,
                     real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """Naeem et al.'s density and coverage; ``real_radii`` (from :func:`kth_neighbour_radii`) may be cached."""
    _check(fake, real, k, "density/coverage")
    fake, real = fake.float(), real.float()  # float32 distances: half the time of float64
    radii = kth_neighbour_radii(real, k) if real_radii is None else real_radii.float()
    inside = torch.zeros(len(real), dtype=torch.float64)       # Σ_j 1[d(Y_j, X_i) < r_i], per real sample i
    nearest = torch.full((len(real),), float("inf"))  # min_j d(Y_j, X_i)
    for chunk in fake.split(DISTANCE_BATCH):
        distances = torch.cdist(chunk, real)
        inside += (distances < radii).double().sum(dim=0)
        nearest = torch.minimum(nearest, distances.min(dim=0).values)
    return {"density": float(inside.sum() / (k * len(fake))), "coverage": float((nearest < radii).double().mean())}
