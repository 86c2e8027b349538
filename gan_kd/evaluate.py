"""Sample-quality metrics straight from a generator: FID / IS / KID (torch-fidelity) and a domain FD.

Protocol (DiffAugment BigGAN-CIFAR, ``shared/reference/gan.md`` §4): 10,000 samples of the EMA generator with
uniform random labels, against the **test** split of the dataset. Samples are generated into memory as uint8
(no image files) with the reference's rounding ``(x * 0.5 + 0.5) * 255 + 0.5``; the generator samples in train
mode, i.e. with batch statistics of its sampling batch of 50, as the reference does (G is never put in eval
mode there), on a copy so the model's running statistics and spectral-norm vectors are left alone.

* ``fid``/``isc``/``kid``: torch-fidelity's Inception-v3 (``inception-v3-compat``) and its metric functions,
  with torch-fidelity's defaults (IS: 10 splits, shuffled with seed 2020; KID: 100 subsets). The weights file
  is never handed to torch-fidelity, which would unpickle it with ``weights_only=False``: it is read by
  ``kd_core``'s safe loader (:func:`~kd_core.runtime.checkpoint.load_weights_file`) and the already-checked
  tensors are given to the extractor. Where the file comes from (:func:`locate_inception_weights`): the
  ``inception_weights`` option, else torch-fidelity's file in the torch hub cache, else a download of it into
  that cache when the network is reachable; otherwise :class:`InceptionUnavailable` says what to pass, before
  any training starts. The real set's features are computed once per :class:`Evaluator` and kept in memory
  (no pickled feature cache on disk).
* ``fd``: a Fréchet distance on the pooled features of a classifier checkpoint (``ckpt:PATH``), for datasets
  and machines without Inception weights. It is **not** FID and is reported as ``FD (<network>)``.
"""
from __future__ import annotations

import copy
import io
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from gan_kd.data import load_dataset
from kd_core.runtime.checkpoint import CheckpointError, load_weights_file

SAMPLE_BATCH = 50
METRICS = ("fid", "isc", "kid", "fd")
INCEPTION_METRICS = ("fid", "isc", "kid")
# torch-fidelity's Inception-v3 (converted from TensorFlow's 2015-12-05 graph) and the layer each metric reads.
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FILENAME = INCEPTION_URL.rsplit("/", 1)[1]
INCEPTION_LAYERS = {"fid": "2048", "kid": "2048", "isc": "logits_unbiased"}


class InceptionUnavailable(ValueError):
    """The Inception-v3 weights cannot be had (no file given, none cached, no network), or do not fit."""


def cached_inception_path() -> Path:
    """Where torch-fidelity's own download puts the weights: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def _reachable(url: str, timeout: float = 5.0) -> bool:
    host = urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def locate_inception_weights(path: str | Path | None = None, *, download: bool = True) -> Path:
    """The Inception weights file to use: ``path``, else the torch hub cache, else a fresh download into it.

    Raises :class:`InceptionUnavailable` (one line, saying what to pass instead) when none of them works.
    """
    if path is not None:
        if not Path(path).is_file():
            raise InceptionUnavailable(f"Inception weights file not found: {path}")
        return Path(path)
    cached = cached_inception_path()
    if cached.is_file():
        return cached
    advice = (f"pass --inception-weights FILE (a copy of torch-fidelity's {INCEPTION_FILENAME}) or use "
              f"--metrics fd --fd-features ckpt:PATH")
    if not download or not _reachable(INCEPTION_URL):
        raise InceptionUnavailable(f"FID/IS/KID need torch-fidelity's Inception-v3 weights: none at {cached} and "
                                   f"{urlparse(INCEPTION_URL).hostname} is unreachable; {advice}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(INCEPTION_URL, str(cached), progress=False)
    except Exception as error:  # urllib / HTTP / disk errors: the message is what matters
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InceptionUnavailable(f"could not download the Inception-v3 weights ({first_line}); {advice}") from error
    return cached


def load_inception(path: str | Path, layers: list[str], device: torch.device | str = "cpu") -> nn.Module:
    """torch-fidelity's Inception-v3 feature extractor with the weights of ``path``, read by the safe loader.

    torch-fidelity's constructor ``torch.load``s whatever it is given with ``weights_only=False``; it is given
    an in-memory copy of the tensors the safe loader already accepted, never the user's file.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        state = load_weights_file(path, "Inception weights")
    except CheckpointError as error:
        raise InceptionUnavailable(str(error)) from error
    buffer = io.BytesIO()
    torch.save({str(key): value for key, value in state.items()}, buffer)
    buffer.seek(0)
    try:
        extractor = FeatureExtractorInceptionV3("inception-v3-compat", sorted(set(layers)),
                                                feature_extractor_weights_path=buffer)
    except RuntimeError as error:  # load_state_dict(strict=True): missing / unexpected / mis-shaped keys
        detail = " ".join(str(error).split())[:300]
        raise InceptionUnavailable(f"Inception weights {path} do not fit torch-fidelity's Inception-v3: {detail}") from error
    return extractor.to(device).eval().requires_grad_(False)


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
def generate_uint8(generator: nn.Module, num_samples: int, *, num_classes: int, dim_z: int, seed: int = 0,
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
        labels = torch.randint(0, num_classes, (n,), generator=rng)
        chunks.append(to_uint8(sampler(z.to(device), labels.to(device))).cpu())
    return torch.cat(chunks)


def real_uint8(dataset: str, data_root: str | Path, train: bool = False) -> torch.Tensor:
    """The (test, by default) split as uint8 ``(N, 3, 32, 32)``, un-flipped."""
    data = load_dataset(dataset, data_root, train=train, hflip=False)
    loader = torch.utils.data.DataLoader(data, batch_size=500, shuffle=False)
    return torch.cat([to_uint8(images) for images, _ in loader])


def frechet_distance(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """``|mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with torch-fidelity's implementation."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats_1 = fid_features_to_statistics(torch.as_tensor(features_1, dtype=torch.float64))
    stats_2 = fid_features_to_statistics(torch.as_tensor(features_2, dtype=torch.float64))
    return float(fid_statistics_to_metric(stats_1, stats_2, False)[KEY_METRIC_FID])


class Evaluator:
    """Computes the requested metrics for a generator against a fixed real set; real statistics are reused.

    ``metrics``: any of ``fid``, ``isc``, ``kid`` (Inception, torch-fidelity) and ``fd`` (needs
    ``fd_features="ckpt:PATH"``). Everything that can fail (the weights, the feature network, the data) is
    loaded here, so a trainer that builds its evaluator at start-up fails before training; the real set's
    features are computed once, here too.
    """

    def __init__(self, *, dataset: str, data_root: str | Path, metrics: tuple[str, ...], num_samples: int = 10_000,
                 inception_weights: str | Path | None = None, fd_features: str | None = None,
                 fd_arch: str | None = None, device: torch.device | str = "cpu", seed: int = 0,
                 kid_subset_size: int = 1000, download_inception: bool = True):
        unknown = set(metrics) - set(METRICS)
        if unknown or not metrics:
            raise ValueError(f"unknown metric(s) {', '.join(sorted(unknown)) or '(none given)'}; allowed: {', '.join(METRICS)}")
        if "fd" in metrics and not fd_features:
            raise ValueError("the fd metric needs --fd-features ckpt:PATH")
        if num_samples < 2:
            raise ValueError(f"the number of evaluation samples must be >= 2 (a Fréchet distance needs a covariance), got {num_samples}")
        self.dataset, self.metrics, self.num_samples = dataset, tuple(metrics), num_samples
        self.device, self.seed = torch.device(device), seed
        self.kid_subset_size = kid_subset_size
        self.inception = None
        self.inception_weights: Path | None = None
        inception_metrics = [m for m in self.metrics if m in INCEPTION_METRICS]
        if inception_metrics:
            self.inception_weights = locate_inception_weights(inception_weights, download=download_inception)
            self.inception = load_inception(self.inception_weights, [INCEPTION_LAYERS[m] for m in inception_metrics],
                                            self.device)
        self.real = real_uint8(dataset, data_root, train=False)
        self.real_inception_features = self._inception_features(self.real) if self.inception is not None else None
        self.real_fid_statistics = None  # the real set's FID mean and covariance, computed once
        if "fid" in self.metrics:
            from torch_fidelity.metric_fid import fid_featuresdict_to_statistics

            self.real_fid_statistics = fid_featuresdict_to_statistics(self.real_inception_features, INCEPTION_LAYERS["fid"])
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

    def _inception_features(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        from torch_fidelity.utils import get_featuresdict_from_dataset

        return get_featuresdict_from_dataset(UInt8Images(images_uint8), self.inception, batch_size=64,
                                             cuda=self.device.type == "cuda", save_cpu_ram=True, verbose=False)

    def _inception(self, fake: torch.Tensor) -> dict:
        """torch-fidelity's FID / IS / KID from the features of ``fake`` and the real set (its default options)."""
        from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
        from torch_fidelity.metric_isc import isc_featuresdict_to_metric
        from torch_fidelity.metric_kid import kid_featuresdict_to_metric

        fake_features, real_features = self._inception_features(fake), self.real_inception_features
        raw: dict = {}
        if "fid" in self.metrics:
            layer = INCEPTION_LAYERS["fid"]
            raw.update(fid_statistics_to_metric(fid_featuresdict_to_statistics(fake_features, layer),
                                                self.real_fid_statistics, False))
        if "isc" in self.metrics:
            raw.update(isc_featuresdict_to_metric(fake_features, INCEPTION_LAYERS["isc"], verbose=False))
        if "kid" in self.metrics:
            subset = min(self.kid_subset_size, len(fake), len(self.real))
            raw.update(kid_featuresdict_to_metric(fake_features, real_features, INCEPTION_LAYERS["kid"],
                                                  kid_subset_size=subset, verbose=False))
        renamed = {"frechet_inception_distance": "fid", "inception_score_mean": "is_mean", "inception_score_std": "is_std",
                   "kernel_inception_distance_mean": "kid_mean", "kernel_inception_distance_std": "kid_std"}
        return {renamed[k]: float(v) for k, v in raw.items() if k in renamed}

    def __call__(self, generator: nn.Module, *, num_classes: int, dim_z: int, seed: int | None = None) -> dict:
        fake = generate_uint8(generator, self.num_samples, num_classes=num_classes, dim_z=dim_z,
                              seed=self.seed if seed is None else seed, device=self.device)
        results: dict = {}
        if self.inception is not None:
            results.update(self._inception(fake))
        if self.fd_extractor is not None:
            results["fd"] = frechet_distance(self._fd_features(fake), self.real_fd_features)
        return results

    def selection_metric(self) -> str:
        """The metric that picks the best checkpoint: FID when computed, else FD (lower is better for both)."""
        return "fid" if "fid" in self.metrics else "fd"
