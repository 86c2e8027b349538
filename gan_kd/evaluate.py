"""Sample-quality metrics straight from a generator: FID / IS / KID (torch-fidelity) and a domain FD.

Protocol (DiffAugment BigGAN-CIFAR, ``shared/reference/gan.md`` §4): 10,000 samples of the EMA generator with
uniform random labels, against the **test** split of the dataset. Samples are generated into memory as uint8
(no image files) with the reference's rounding ``(x * 0.5 + 0.5) * 255 + 0.5``; the generator samples in train
mode, i.e. with batch statistics of its sampling batch of 50, as the reference does (G is never put in eval
mode there), on a copy so the model's running statistics and spectral-norm vectors are left alone.

* ``fid``/``isc``/``kid``: torch-fidelity's Inception-v3 (``inception-v3-compat``). Weights: torch-fidelity's
  default download, or a local file (``inception_weights``) passed as ``feature_extractor_weights_path``.
* ``fd``: a Fréchet distance on the pooled features of a classifier checkpoint (``ckpt:PATH``), for datasets
  and machines without Inception weights. It is **not** FID and is reported as ``FD (<network>)``.
"""
from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from gan_kd.data import load_dataset

SAMPLE_BATCH = 50


class UInt8Images(Dataset):
    """A uint8 ``(N, 3, H, W)`` tensor as the dataset torch-fidelity wants: item = one image tensor."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 with the reference's rounding."""
    return ((images.float() * 0.5 + 0.5) * 255 + 0.5).clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def generate_uint8(generator: nn.Module, num_samples: int, *, n_classes: int, dim_z: int, seed: int = 0,
                   device: torch.device | str = "cpu", batch_size: int = SAMPLE_BATCH) -> torch.Tensor:
    """``num_samples`` uint8 images from ``generator`` with uniform random labels, on the CPU."""
    if num_samples < 1:
        raise ValueError(f"number of samples must be positive, got {num_samples}")
    sampler = copy.deepcopy(generator).to(device).train()
    rng = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        z = torch.randn(n, dim_z, generator=rng)
        labels = torch.randint(0, n_classes, (n,), generator=rng)
        chunks.append(to_uint8(sampler(z.to(device), labels.to(device))).cpu())
    return torch.cat(chunks)


def real_uint8(dataset: str, data_root: str | Path, train: bool = False) -> torch.Tensor:
    """The (test, by default) split as uint8 ``(N, 3, 32, 32)``, un-flipped."""
    data = load_dataset(dataset, data_root, train=train, hflip=False)
    loader = torch.utils.data.DataLoader(data, batch_size=500, shuffle=False)
    return torch.cat([to_uint8(images) for images, _ in loader])


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def frechet_distance(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """``|mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with torch-fidelity's implementation."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats_1 = fid_features_to_statistics(torch.as_tensor(features_1, dtype=torch.float64))
    stats_2 = fid_features_to_statistics(torch.as_tensor(features_2, dtype=torch.float64))
    return float(fid_statistics_to_metric(stats_1, stats_2, False)[KEY_METRIC_FID])


class Evaluator:
    """Computes the requested metrics for a generator against a fixed real set; real statistics are reused.

    ``metrics``: any of ``fid``, ``isc``, ``kid`` (Inception, torch-fidelity) and ``fd`` (needs
    ``fd_features="ckpt:PATH"``). Real features for FD are computed once; torch-fidelity caches the real
    Inception statistics under ``cache_root`` with a key naming the dataset, split and Inception weights.
    """

    def __init__(self, *, dataset: str, data_root: str | Path, metrics: tuple[str, ...], num_samples: int = 10_000,
                 inception_weights: str | Path | None = None, fd_features: str | None = None,
                 fd_arch: str | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 cache_root: str | Path | None = None, kid_subset_size: int = 1000):
        unknown = set(metrics) - {"fid", "isc", "kid", "fd"}
        if unknown or not metrics:
            raise ValueError(f"unknown metric(s) {', '.join(sorted(unknown)) or '(none given)'}; allowed: fid, isc, kid, fd")
        if "fd" in metrics and not fd_features:
            raise ValueError("the fd metric needs --fd-features ckpt:PATH")
        if inception_weights is not None and not Path(inception_weights).is_file():
            raise ValueError(f"Inception weights file not found: {inception_weights}")
        self.dataset, self.metrics, self.num_samples = dataset, tuple(metrics), num_samples
        self.device, self.seed = torch.device(device), seed
        self.inception_weights = None if inception_weights is None else str(inception_weights)
        self.kid_subset_size = kid_subset_size
        self.cache_root = Path(cache_root) if cache_root is not None else Path(data_root) / "fidelity_cache"
        self.real = real_uint8(dataset, data_root, train=False)
        self.fd_extractor = None
        if "fd" in metrics:
            from gan_kd.teacher import build_teacher

            self.fd_extractor = build_teacher(fd_features, arch=fd_arch, preprocessing="native").to(self.device)
            network = self.fd_extractor.network
            self.fd_name = getattr(network, "arch", type(network).__name__)
            self.real_fd_features = self._fd_features(self.real)

    @property
    def fd_label(self) -> str:
        """How a table must name the FD column."""
        return f"FD ({self.fd_name})"

    def _fd_features(self, images_uint8: torch.Tensor) -> np.ndarray:
        features = []
        for start in range(0, images_uint8.shape[0], 250):
            batch = images_uint8[start:start + 250].to(self.device).float() / 127.5 - 1
            features.append(self.fd_extractor(batch).double().cpu())
        return torch.cat(features).numpy()

    def _inception(self, fake: torch.Tensor) -> dict:
        import torch_fidelity

        weights_key = file_digest(self.inception_weights) if self.inception_weights else "default"
        kwargs = dict(
            input1=UInt8Images(fake), input2=UInt8Images(self.real),
            fid="fid" in self.metrics, isc="isc" in self.metrics, kid="kid" in self.metrics,
            cuda=self.device.type == "cuda", verbose=False, save_cpu_ram=True,
            cache_root=str(self.cache_root), input2_cache_name=f"{self.dataset}-test-{len(self.real)}-{weights_key}",
            kid_subset_size=min(self.kid_subset_size, len(fake), len(self.real)),
        )
        if self.inception_weights:
            kwargs["feature_extractor_weights_path"] = self.inception_weights
        raw = torch_fidelity.calculate_metrics(**kwargs)
        renamed = {"frechet_inception_distance": "fid", "inception_score_mean": "is_mean", "inception_score_std": "is_std",
                   "kernel_inception_distance_mean": "kid_mean", "kernel_inception_distance_std": "kid_std"}
        return {renamed[k]: float(v) for k, v in raw.items() if k in renamed}

    def __call__(self, generator: nn.Module, *, n_classes: int, dim_z: int, seed: int | None = None) -> dict:
        fake = generate_uint8(generator, self.num_samples, n_classes=n_classes, dim_z=dim_z,
                              seed=self.seed if seed is None else seed, device=self.device)
        results: dict = {}
        if {"fid", "isc", "kid"} & set(self.metrics):
            results.update(self._inception(fake))
        if self.fd_extractor is not None:
            results["fd"] = frechet_distance(self._fd_features(fake), self.real_fd_features)
        return results

    def selection_metric(self) -> str:
        """The metric that picks the best checkpoint: FID when computed, else FD (lower is better for both)."""
        return "fid" if "fid" in self.metrics else "fd"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and (population, as the reference's ``eval.py --repeat``) standard deviation."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
