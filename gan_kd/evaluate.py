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
* ``cls``: two class-aware scores from the same classifier's head, on the same samples and forward pass as ``fd``
  (:func:`class_scores`): ``cls_acc``, the share of samples the classifier assigns to the class they were
  generated for (the "GAN-test" accuracy of Shmelkov et al., *How good is my GAN?*, ECCV 2018), and ``cls_is``,
  an Inception-Score-like ``exp(E_x KL(p(y|x) || p(y)))`` with the classifier's softmax in place of Inception's
  (one split over all samples). The classifier's values on the real test set (:attr:`Evaluator.reference_scores`)
  are the ceiling to read them against.
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
METRICS = ("fid", "isc", "kid", "fd", "cls")
INCEPTION_METRICS = ("fid", "isc", "kid")
CLASSIFIER_METRICS = ("fd", "cls")  # computed on the --fd-features classifier
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
                   device: torch.device | str = "cpu", batch_size: int = SAMPLE_BATCH,
                   return_labels: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` uint8 images from ``generator`` with uniform random labels, on the CPU (and the labels,
    with ``return_labels``; the images are the same either way)."""
    if num_samples < 1:
        raise ValueError(f"number of samples must be positive, got {num_samples}")
    sampler = copy.deepcopy(generator).to(device).train()
    rng = torch.Generator().manual_seed(seed)
    chunks, all_labels = [], []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        z = torch.randn(n, dim_z, generator=rng)
        labels = torch.randint(0, num_classes, (n,), generator=rng)
        chunks.append(to_uint8(sampler(z.to(device), labels.to(device))).cpu())
        all_labels.append(labels)
    images = torch.cat(chunks)
    return (images, torch.cat(all_labels)) if return_labels else images


def real_uint8(dataset: str, data_root: str | Path, train: bool = False,
               return_labels: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The (test, by default) split as uint8 ``(N, 3, 32, 32)``, un-flipped (and its labels, with ``return_labels``)."""
    data = load_dataset(dataset, data_root, train=train, hflip=False)
    loader = torch.utils.data.DataLoader(data, batch_size=500, shuffle=False)
    batches = [(to_uint8(images), torch.as_tensor(labels)) for images, labels in loader]  # uint8 as they come
    images = torch.cat([images for images, _ in batches])
    return (images, torch.cat([labels for _, labels in batches])) if return_labels else images


def class_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``cls_acc`` (share of rows whose argmax is their label) and ``cls_is`` (``exp(mean_x KL(p(y|x) || p(y)))``,
    ``p(y)`` the mean softmax over the rows) from a classifier's logits, in float64."""
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] < 1:
        raise ValueError(f"class scores need (N, C) logits and N labels, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    log_p = torch.log_softmax(logits.double(), dim=1)
    log_marginal = torch.logsumexp(log_p, dim=0) - np.log(log_p.shape[0])
    kl = (log_p.exp() * (log_p - log_marginal)).sum(dim=1)
    return {"cls_acc": float((logits.argmax(dim=1) == labels.to(logits.device)).double().mean()),
            "cls_is": float(kl.mean().exp())}


def frechet_distance(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """``|mu1 - mu2|² + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with torch-fidelity's implementation."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats_1 = fid_features_to_statistics(torch.as_tensor(features_1, dtype=torch.float64))
    stats_2 = fid_features_to_statistics(torch.as_tensor(features_2, dtype=torch.float64))
    return float(fid_statistics_to_metric(stats_1, stats_2, False)[KEY_METRIC_FID])


class Evaluator:
    """Computes the requested metrics for a generator against a fixed real set; real statistics are reused.

    ``metrics``: any of ``fid``, ``isc``, ``kid`` (Inception, torch-fidelity), ``fd`` and ``cls`` (both need
    ``fd_features="ckpt:PATH"``; ``cls`` needs its classifier head too). Everything that can fail (the weights, the feature network, the data) is
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
        needs_classifier = [m for m in metrics if m in CLASSIFIER_METRICS]
        if needs_classifier and not fd_features:
            raise ValueError(f"the {' and '.join(needs_classifier)} metric{'s' if len(needs_classifier) > 1 else ''} "
                             f"need{'' if len(needs_classifier) > 1 else 's'} --fd-features ckpt:PATH")
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
        self.real, real_labels = real_uint8(dataset, data_root, train=False, return_labels=True)
        self.real_inception_features = self._inception_features(self.real) if self.inception is not None else None
        self.real_fid_statistics = None  # the real set's FID mean and covariance, computed once
        if "fid" in self.metrics:
            from torch_fidelity.metric_fid import fid_featuresdict_to_statistics

            self.real_fid_statistics = fid_featuresdict_to_statistics(self.real_inception_features, INCEPTION_LAYERS["fid"])
        self.fd_extractor = self.class_head = None
        self.reference_scores: dict[str, float] = {}  # the cls scores of the real test set
        if needs_classifier:
            from gan_kd.teacher import build_teacher

            self.fd_extractor = build_teacher(fd_features, arch=fd_arch, preprocessing="native").to(self.device)
            network = self.fd_extractor.network
            self.fd_name = getattr(network, "arch", type(network).__name__)
            if "cls" in self.metrics:
                self.class_head = self.fd_extractor.class_embeddings().to(self.device)  # TeacherError: a ValueError
            self.real_fd_features = self._fd_features(self.real)
            if self.class_head is not None:
                self.reference_scores = self._class_scores(self.real_fd_features, real_labels)

    @property
    def fd_label(self) -> str:
        """How a table must name the FD column."""
        return f"FD ({self.fd_name})"

    def labels(self) -> dict[str, str]:
        """How a table must name each result key of this evaluator's classifier metrics."""
        if self.fd_extractor is None:
            return {}
        labels = {"fd": self.fd_label} if "fd" in self.metrics else {}
        if "cls" in self.metrics:
            labels.update({"cls_acc": f"GAN-test accuracy ({self.fd_name})", "cls_is": f"IS ({self.fd_name})"})
        return labels

    def _class_scores(self, features: np.ndarray, labels: torch.Tensor) -> dict[str, float]:
        if labels.numel() and int(labels.max()) >= self.class_head.num_classes:
            raise ValueError(f"the cls metric's classifier has {self.class_head.num_classes} classes, but the labels "
                             f"reach {int(labels.max())}: use a classifier of this dataset")
        logits = self.class_head.logits(torch.as_tensor(features, dtype=torch.float32, device=self.device))
        return class_scores(logits.cpu(), labels)

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
        fake, labels = generate_uint8(generator, self.num_samples, num_classes=num_classes, dim_z=dim_z,
                                      seed=self.seed if seed is None else seed, device=self.device, return_labels=True)
        results: dict = {}
        if self.inception is not None:
            results.update(self._inception(fake))
        if self.fd_extractor is not None:
            features = self._fd_features(fake)
            if "fd" in self.metrics:
                results["fd"] = frechet_distance(features, self.real_fd_features)
            if self.class_head is not None:
                results.update(self._class_scores(features, labels))
        return results

    def selection_metric(self) -> str:
        """The metric that picks the best checkpoint: FID when computed, else FD (lower is better for both)."""
        return selection_metric(self.metrics)


def selection_metric(metrics: tuple[str, ...]) -> str:
    """``fid`` if among ``metrics``, else ``fd``; a ``ValueError`` (naming both) when neither is."""
    for metric in ("fid", "fd"):
        if metric in metrics:
            return metric
    raise ValueError(f"the best checkpoint is chosen by fid or fd, and metrics {','.join(metrics)} have neither; "
                     f"add one to --metrics")
