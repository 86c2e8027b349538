"""Fréchet distance, KID and IS in any feature space, with torch-fidelity's own functions; Inception-v3 loading.

* FD = ``|mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al. 2017): torch-fidelity's
  ``fid_statistics_to_metric`` on statistics in float64. In Inception-v3's pool features it is FID; in any
  other space it is reported as ``FD (<space>)``.
* KID (Bińkowski et al. 2018, cubic polynomial kernel MMD, 100 subsets): torch-fidelity's
  ``kid_features_to_metric``, subsets capped at the sample counts.
* Inception-v3 (``inception-v3-compat``): the weights file is never handed to torch-fidelity, which would
  unpickle it with ``weights_only=False``; it is read by ``kd_core``'s safe loader
  (:func:`~kd_core.runtime.checkpoint.load_weights_file`) and the already-checked tensors are given to the
  extractor. Where the file comes from (:func:`locate_inception_weights`): the ``inception_weights`` option,
  else torch-fidelity's file in the torch hub cache, else a download of it into that cache when the network
  is reachable; otherwise :class:`InceptionUnavailable` says what to pass, before any training starts.
"""
from __future__ import annotations

import io
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from kd_core.runtime.checkpoint import CheckpointError, load_weights_file

# torch-fidelity's Inception-v3 (converted from TensorFlow's 2015-12-05 graph) and the layer each metric reads.
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FILENAME = INCEPTION_URL.rsplit("/", 1)[1]
INCEPTION_LAYERS = {"fid": "2048", "kid": "2048", "isc": "logits_unbiased"}
KID_SUBSETS = 100


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
              f"--metrics fd_vgg (label-free) or fd --fd-features ckpt:PATH")
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


def fd_statistics(features: np.ndarray | torch.Tensor) -> dict:
    """torch-fidelity's FD statistics (mean, covariance) of feature rows, in float64."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(torch.as_tensor(features, dtype=torch.float64))


def frechet_distance_from_statistics(statistics_1: dict, statistics_2: dict) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric(statistics_1, statistics_2, False)[KEY_METRIC_FID])


def frechet_distance(features_1: np.ndarray | torch.Tensor, features_2: np.ndarray | torch.Tensor) -> float:
    """``|mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with torch-fidelity's implementation."""
    return frechet_distance_from_statistics(fd_statistics(features_1), fd_statistics(features_2))


def kernel_distance(fake: torch.Tensor, real: torch.Tensor, subset_size: int = 1000, seed: int = 2020) -> dict[str, float]:
    """KID's mean and std over :data:`KID_SUBSETS` subsets (torch-fidelity), subsets capped at both counts."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(fake), len(real))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(fake)} and {len(real)}")
    out = kid_features_to_metric(torch.as_tensor(fake, dtype=torch.float64), torch.as_tensor(real, dtype=torch.float64),
                                 kid_subsets=KID_SUBSETS, kid_subset_size=size, rng_seed=seed, verbose=False)
    return {"mean": float(out[KEY_METRIC_KID_MEAN]), "std": float(out[KEY_METRIC_KID_STD])}
