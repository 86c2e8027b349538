"""Seeding, RNG state capture for resume, and deterministic data subsets."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy (legacy global state) and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def capture_rng_state() -> dict:
    """Every RNG state a training loop draws from, in a form ``torch.save`` can store."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored only where CUDA is present."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def check_fraction(fraction: float) -> float:
    """The one check of a data fraction (CLIs, configs, :func:`subset_indices`): a number in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data fraction {fraction:g} is not in (0, 1]; use e.g. 0.1, 0.2 or 1.0")
    return fraction


def subset_indices(n_total: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a data-limited subset, chosen exactly as DiffAugment's BigGAN-CIFAR code does.

    The reference seeds NumPy's legacy generator and draws ``choice(n_total, n, replace=False)``
    (DiffAugment ``datasets.py``; KD-DLGAN uses the same file). Legacy ``choice`` without replacement
    takes a prefix of one permutation, so for one seed the 10% subset is the first half of the 20% one.
    ``fraction == 1`` returns every index in order.
    """
    check_fraction(fraction)
    if n_total <= 0:
        raise ValueError(f"n_total must be positive, got {n_total}")
    if fraction == 1.0:
        return np.arange(n_total)
    n = int(round(fraction * n_total))
    if n < 1:
        raise ValueError(f"data fraction {fraction} of {n_total} items selects no item")
    return np.random.RandomState(seed).choice(n_total, n, replace=False)


# ------------------------------------------------------------------------------------------------------------
# Data loading that resumes exactly with worker processes.
#
# A DataLoader worker draws its augmentation (random crop, flip) from its own torch RNG, seeded once when the
# worker starts; what it draws for an item depends on every item that worker handled before. A resumed run
# starts new workers, so its augmentations differ from an uninterrupted run's. With these two pieces each
# item's transform is seeded from (run seed, rank, epoch, position in the epoch) instead: the same draws
# whatever the number of workers, whichever batches were skipped, and however often the run was resumed.


def item_seed(*key: int) -> int:
    """A 63-bit seed from integers (``np.random.SeedSequence``: well mixed, stable across versions)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1 << 32, 1], dtype=np.uint64)) >> np.uint64(1))


def seeded_batch(indices, seed: int, rank: int, epoch: int, first_position: int) -> list[tuple[int, int]]:
    """``(item seed, index)`` pairs for one batch whose first item sits at ``first_position`` in the epoch."""
    return [(item_seed(seed, rank, epoch, first_position + j), index) for j, index in enumerate(indices)]


class SeededItems(torch.utils.data.Dataset):
    """``seeded[(seed, index)]`` = ``dataset[index]`` with torch's and Python's RNG seeded by ``seed`` for it.

    The caller's RNG states are restored afterwards (``torch.random.fork_rng``), so this works in the main
    process too. Feed it with :class:`SeededBatchSampler`.
    """

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        seed, index = key
        python_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(python_state)


class SeededBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(item seed, index)`` for :class:`SeededItems`, from a sampler with ``set_epoch`` (e.g.
    ``DistributedSampler``): the epoch's order cut into batches (the last, incomplete one dropped), each item
    seeded from ``(seed, rank, epoch, position in the epoch)``. ``skip_batches`` starts the current epoch
    that many batches in (a resume within an epoch); it applies to one pass only.
    """

    def __init__(self, sampler, batch_size: int, seed: int, rank: int = 0, skip_batches: int = 0):
        self.sampler, self.batch_size, self.seed, self.rank = sampler, batch_size, seed, rank
        self.skip_batches = skip_batches

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size - self.skip_batches

    def __iter__(self):
        epoch = int(getattr(self.sampler, "epoch", 0))
        order = list(self.sampler)
        skip, self.skip_batches = self.skip_batches, 0
        for start in range(skip * self.batch_size, len(order) - self.batch_size + 1, self.batch_size):
            yield seeded_batch(order[start:start + self.batch_size], self.seed, self.rank, epoch, start)
