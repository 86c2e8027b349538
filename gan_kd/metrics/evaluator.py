"""Generate once, compute the requested metrics, in the feature space each needs: :class:`Evaluator`.

Protocol (DiffAugment BigGAN-CIFAR, ``shared/reference/gan.md`` §4): ``num_samples`` (10,000) samples of the EMA
generator with uniform random labels, against the **test** split of the dataset. Samples are generated into
memory as uint8 (no image files) with the reference's rounding ``(x * 0.5 + 0.5) * 255 + 0.5``; the generator
samples in train mode, i.e. with batch statistics of its sampling batch of 50, as the reference does (G is
never put in eval mode there), on a copy so the model's running statistics and spectral-norm vectors are left
alone.

The metrics (:data:`METRICS`; ``--metrics`` takes a comma-separated list, ``suite`` = every one that needs no
file): see :mod:`~gan_kd.metrics.features` for the spaces and each metric's module for its paper and ideal.
Everything that can fail (weights, feature networks, data, the training subset) is loaded in the constructor,
so a trainer that builds its evaluator at start-up fails before training; the real sets' features (and
GAN-train's real-data ceiling) are computed there once, kept in memory and filed in :mod:`~gan_kd.metrics.cache`
(``.npy`` / ``.json``, nothing pickled), so that the next evaluation reads them. :meth:`Evaluator.score` scores any uint8 image set
with its labels (how the planted-failure tests and the real-vs-real ceilings use it); calling the evaluator on a
generator samples it and scores the samples.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from gan_kd.data import load_dataset, num_classes
from gan_kd.metrics import cache, checks, classwise, fidelity, manifold
from gan_kd.metrics.features import LABEL_FREE_DEFAULT, ClassifierSpace, build_label_free

SAMPLE_BATCH = 50
MEMORISATION_POOL = 10_000
# name -> (the feature space it needs, what it reports). The one list of metrics: the CLI's choices, the
# checks below and README's table are derived from it.
METRICS: dict[str, tuple[str, str]] = {
    "fid": ("inception", "FID (Inception-v3, torch-fidelity)"),
    "isc": ("inception", "Inception Score (10 splits)"),
    "kid": ("inception", "KID (Inception-v3)"),
    "fd": ("classifier", "FD in the --fd-features classifier's feature space"),
    "cls": ("classifier", "GAN-test accuracy and IS of the --fd-features classifier"),
    "icfd": ("classifier", "intra-class FD in the classifier's space"),
    "fd_vgg": ("label-free", "FD in the label-free space"),
    "kid_vgg": ("label-free", "KID in the label-free space"),
    "prc": ("label-free", "precision and recall (k = 3), label-free space"),
    "dc": ("label-free", "density and coverage (k = 5), label-free space"),
    "icfd_vgg": ("label-free", "intra-class FD in the label-free space"),
    "memo": ("label-free", "memorisation of the training subset (share and nearest-neighbour ratio)"),
    "gan_train": ("pixels", "GAN-train accuracy: a small CNN trained on samples only, on the real test set"),
    "colour": ("pixels", "channel spread (colour on grayscale data)"),
}
SUITE = tuple(name for name, (space, _) in METRICS.items() if space in ("label-free", "pixels"))
ALIASES = {"suite": SUITE}
# The metric that picks the best checkpoint, in this order: FID where computed (the papers' protocol), else the
# label-free FD (trained on no labels, so it cannot reward class-collapsed samples), else the classifier's FD.
SELECTION_ORDER = ("fid", "fd_vgg", "fd")


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"suite,fd"`` -> the metric names, aliases expanded, in :data:`METRICS` order; ``ValueError`` naming the
    unknown ones."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS and m not in ALIASES]
    if unknown or not names:
        raise ValueError(f"{text!r}: unknown metric(s) {', '.join(unknown) or '(none given)'}; allowed: "
                         f"{', '.join([*METRICS, *ALIASES])} (comma-separated)")
    chosen = {m for name in names for m in ALIASES.get(name, (name,))}
    return tuple(m for m in METRICS if m in chosen)


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


class Evaluator:
    """Computes the requested metrics of generated images against a fixed real set; real statistics are reused.

    ``metrics``: names of :data:`METRICS`. ``fd``/``cls``/``icfd`` need ``fd_features="ckpt:PATH"`` (``cls`` and
    ``icfd`` its classifier head too); the label-free ones use ``label_free`` (a spec of
    :func:`~gan_kd.metrics.features.build_label_free`); ``memo`` needs ``train_indices``, the training subset the
    generator was trained on (``data_fraction`` is reported with it). ``gan_train``'s real-data ceiling is
    computed at the first call and reused.
    """

    def __init__(self, *, dataset: str, data_root: str | Path, metrics: tuple[str, ...], num_samples: int = 10_000,
                 inception_weights: str | Path | None = None, fd_features: str | None = None,
                 fd_arch: str | None = None, label_free: str = LABEL_FREE_DEFAULT,
                 train_indices: np.ndarray | None = None, data_fraction: float | None = None,
                 device: torch.device | str = "cpu", seed: int = 0, kid_subset_size: int = 1000,
                 download_inception: bool = True):
        unknown = set(metrics) - set(METRICS)
        if unknown or not metrics:
            raise ValueError(f"unknown metric(s) {', '.join(sorted(unknown)) or '(none given)'}; allowed: {', '.join(METRICS)}")
        self.metrics = tuple(m for m in METRICS if m in metrics)
        spaces = {METRICS[m][0] for m in self.metrics}
        needs_classifier = [m for m in self.metrics if METRICS[m][0] == "classifier"]
        if needs_classifier and not fd_features:
            raise ValueError(f"the {' and '.join(needs_classifier)} metric{'s' if len(needs_classifier) > 1 else ''} "
                             f"need{'' if len(needs_classifier) > 1 else 's'} --fd-features ckpt:PATH")
        if "memo" in self.metrics and train_indices is None:
            raise ValueError("the memo metric needs the training subset the generator was trained on")
        self.num_classes = num_classes(dataset)
        self._check_sample_count(num_samples)
        self.dataset, self.num_samples = dataset, num_samples
        self.device, self.seed = torch.device(device), seed
        self.kid_subset_size = kid_subset_size
        self.data_fraction = data_fraction
        self.inception = None
        self.inception_weights: Path | None = None
        inception_metrics = [m for m in self.metrics if m in fidelity.INCEPTION_LAYERS]
        if inception_metrics:
            self.inception_weights = fidelity.locate_inception_weights(inception_weights, download=download_inception)
            self.inception = fidelity.load_inception(self.inception_weights,
                                                     [fidelity.INCEPTION_LAYERS[m] for m in inception_metrics], self.device)
        self.classifier = None
        if needs_classifier:
            with_head = "cls" in self.metrics
            self.classifier = ClassifierSpace(fd_features, fd_arch, with_head=with_head).to(self.device)
            if with_head and self.classifier.head.num_classes < self.num_classes:
                raise ValueError(f"the cls metric's classifier has {self.classifier.head.num_classes} classes, but "
                                 f"{dataset} has {self.num_classes}: use a classifier of this dataset")
        self.label_free = build_label_free(label_free).to(self.device) if "label-free" in spaces else None
        # the real sets, and their features in every space asked for (computed once)
        self.real, self.real_labels = real_uint8(dataset, data_root, train=False, return_labels=True)
        self.real_inception = self._inception_features(self.real) if self.inception is not None else None
        self.real_fid_statistics = None
        if "fid" in self.metrics:
            from torch_fidelity.metric_fid import fid_featuresdict_to_statistics

            self.real_fid_statistics = fid_featuresdict_to_statistics(self.real_inception, fidelity.INCEPTION_LAYERS["fid"])
        self.real_classifier = cache.features(self.classifier, self.real, self.device) if self.classifier is not None else None
        self.real_label_free = cache.features(self.label_free, self.real, self.device) if self.label_free is not None else None
        self.real_label_free_statistics = (fidelity.fd_statistics(self.real_label_free)
                                           if "fd_vgg" in self.metrics else None)
        self.real_dc_radii = (manifold.kth_neighbour_radii(self.real_label_free) if "dc" in self.metrics else None)
        self.reference_scores: dict[str, float] = {}  # the real test set's own values, where they are not ideal
        if "cls" in self.metrics:
            self.reference_scores = classwise.class_scores(self.classifier.logits(self.real_classifier), self.real_labels)
        if "colour" in self.metrics:  # 0 on grayscale data; CIFAR's own colour otherwise
            self.reference_scores["channel_spread"] = checks.channel_spread(self.real)
        self.train_split: tuple[torch.Tensor, torch.Tensor] | None = None
        if "memo" in self.metrics or "gan_train" in self.metrics:
            self.train_split = real_uint8(dataset, data_root, train=True, return_labels=True)
        self.memorisation_sets = self._memorisation_sets(train_indices) if "memo" in self.metrics else None
        self._gan_train_real: float | None = None

    # ------------------------------------------------------------------ set-up
    def _check_sample_count(self, num_samples: int) -> None:
        """Too few samples for a metric's k or per-class statistics: one line naming the metric and the minimum."""
        minimum = {"any": 2}
        if "prc" in self.metrics:
            minimum["prc"] = manifold.PRC_NEIGHBOURHOOD + 1
        if "dc" in self.metrics:
            minimum["dc"] = manifold.DC_NEIGHBOURHOOD + 1
        for name in ("icfd", "icfd_vgg"):
            if name in self.metrics:
                minimum[name] = 10 * self.num_classes  # so that every class gets >= 2 of the uniform random labels
        if "gan_train" in self.metrics:
            minimum["gan_train"] = classwise.GAN_TRAIN_BATCH // 4
        metric, needed = max(minimum.items(), key=lambda item: item[1])
        if num_samples < needed:
            raise ValueError(f"{num_samples} evaluation samples are too few"
                             f"{'' if metric == 'any' else f' for the {metric} metric'}: it needs at least {needed}")

    def _memorisation_sets(self, train_indices: np.ndarray) -> dict:
        images = self.train_split[0]
        train_indices = np.asarray(train_indices, dtype=np.int64)
        if train_indices.size < 1 or train_indices.min() < 0 or train_indices.max() >= len(images):
            raise ValueError(f"the training subset's indices must lie in [0, {len(images)}) ({self.dataset} train split)")
        outside = np.setdiff1d(np.arange(len(images)), train_indices)
        if outside.size:  # real images the generator never saw: a fixed draw from the rest of the training split
            order = np.random.default_rng(0).permutation(outside.size)[:MEMORISATION_POOL]
            pool_images, pool_name = images[torch.from_numpy(outside[np.sort(order)])], "training images outside the subset"
        else:
            pool_images, pool_name = self.real, "the test split"
        subset = self.label_free.features(images[torch.from_numpy(train_indices)], self.device)
        pool = cache.features(self.label_free, pool_images, self.device)
        return {"subset": subset, "pool": pool, "radii": checks.training_radii(subset, pool),
                "description": f"{len(subset)} training images; {len(pool)} unseen real images ({pool_name})"}

    # ------------------------------------------------------------------ features
    def _inception_features(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        from torch_fidelity.utils import get_featuresdict_from_dataset

        return get_featuresdict_from_dataset(UInt8Images(images_uint8), self.inception, batch_size=64,
                                             cuda=self.device.type == "cuda", save_cpu_ram=True, verbose=False)

    def _inception(self, fake: torch.Tensor) -> dict:
        """torch-fidelity's FID / IS / KID from the features of ``fake`` and the real set (its default options)."""
        from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
        from torch_fidelity.metric_isc import isc_featuresdict_to_metric
        from torch_fidelity.metric_kid import kid_featuresdict_to_metric

        fake_features, layers = self._inception_features(fake), fidelity.INCEPTION_LAYERS
        raw: dict = {}
        if "fid" in self.metrics:
            raw.update(fid_statistics_to_metric(fid_featuresdict_to_statistics(fake_features, layers["fid"]),
                                                self.real_fid_statistics, False))
        if "isc" in self.metrics:
            raw.update(isc_featuresdict_to_metric(fake_features, layers["isc"], verbose=False))
        if "kid" in self.metrics:
            subset = min(self.kid_subset_size, len(fake), len(self.real))
            raw.update(kid_featuresdict_to_metric(fake_features, self.real_inception, layers["kid"],
                                                  kid_subset_size=subset, verbose=False))
        renamed = {"frechet_inception_distance": "fid", "inception_score_mean": "is_mean", "inception_score_std": "is_std",
                   "kernel_inception_distance_mean": "kid_mean", "kernel_inception_distance_std": "kid_std"}
        return {renamed[k]: float(v) for k, v in raw.items() if k in renamed}

    # ------------------------------------------------------------------ scoring
    def score(self, images_uint8: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Every requested metric of ``images_uint8`` (uint8 ``(N, 3, 32, 32)``) generated for ``labels``."""
        if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or len(labels) != len(images_uint8):
            raise ValueError(f"score takes uint8 (N, 3, H, W) images and N labels, got {images_uint8.dtype} "
                             f"{tuple(images_uint8.shape)} and {len(labels)} labels")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"the labels reach {int(labels.max())}, but {self.dataset} has {self.num_classes} classes "
                             f"(0..{self.num_classes - 1}): use a generator of this dataset")
        results: dict[str, float] = {}
        if self.inception is not None:
            results.update(self._inception(images_uint8))
        if self.classifier is not None:
            features = self.classifier.features(images_uint8, self.device)
            if "fd" in self.metrics:
                results["fd"] = fidelity.frechet_distance(features, self.real_classifier)
            if "cls" in self.metrics:
                results.update(classwise.class_scores(self.classifier.logits(features), labels))
            if "icfd" in self.metrics:
                results["icfd"] = classwise.intra_class_fd(features, labels, self.real_classifier, self.real_labels,
                                                           self.num_classes)
        if self.label_free is not None:
            results.update(self._label_free(self.label_free.features(images_uint8, self.device), labels))
        if "gan_train" in self.metrics:
            results["gan_train_acc"] = classwise.gan_train_accuracy(images_uint8, labels, self.real, self.real_labels,
                                                                    self.num_classes, seed=self.seed, device=self.device)
            results["gan_train_real_acc"] = self.gan_train_ceiling(len(images_uint8))
        if "colour" in self.metrics:
            results["channel_spread"] = checks.channel_spread(images_uint8)
        return results

    def _label_free(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        results: dict[str, float] = {}
        real = self.real_label_free
        if "fd_vgg" in self.metrics:
            results["fd_vgg"] = fidelity.frechet_distance_from_statistics(fidelity.fd_statistics(features),
                                                                         self.real_label_free_statistics)
        if "kid_vgg" in self.metrics:
            kid = fidelity.kernel_distance(features, real, self.kid_subset_size)
            results.update({"kid_vgg_mean": kid["mean"], "kid_vgg_std": kid["std"]})
        if "prc" in self.metrics:
            results.update(manifold.precision_recall(features, real))
        if "dc" in self.metrics:
            results.update(manifold.density_coverage(features, real, real_radii=self.real_dc_radii))
        if "icfd_vgg" in self.metrics:
            results["icfd_vgg"] = classwise.intra_class_fd(features, labels, real, self.real_labels, self.num_classes)
        if "memo" in self.metrics:
            sets = self.memorisation_sets
            results.update(checks.memorisation(features, sets["subset"], sets["pool"], sets["radii"]))
        return results

    def gan_train_ceiling(self, count: int) -> float:
        """GAN-train's recipe on ``count`` real training images (a fixed draw), scored on the test set; cached."""
        if self._gan_train_real is None or self._gan_train_real[0] != count:
            images, labels = self.train_split
            index = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
            name = cache.key("gan-train-ceiling", classwise.recipe(), *map(cache.digest, (images[index], labels[index],
                             self.real, self.real_labels)), self.num_classes, self.seed, device=self.device)
            accuracy = cache.cached_number(name, lambda: classwise.gan_train_accuracy(
                images[index], labels[index], self.real, self.real_labels, self.num_classes, seed=self.seed,
                device=self.device))
            self._gan_train_real = (count, accuracy)
        return self._gan_train_real[1]

    def __call__(self, generator: nn.Module, *, num_classes: int, dim_z: int, seed: int | None = None) -> dict:
        fake, labels = generate_uint8(generator, self.num_samples, num_classes=num_classes, dim_z=dim_z,
                                      seed=self.seed if seed is None else seed, device=self.device, return_labels=True)
        return self.score(fake, labels)

    # ------------------------------------------------------------------ naming
    def labels(self) -> dict[str, str]:
        """How a table must name each result key: every FD, KID and score names its feature space."""
        lf = self.label_free.name if self.label_free is not None else None
        clf = self.classifier.name if self.classifier is not None else None
        names = {
            "fid": "FID (Inception-v3, torch-fidelity)", "is_mean": "IS (Inception-v3)", "kid_mean": "KID (Inception-v3)",
            "fd": f"FD ({clf})", "cls_acc": f"GAN-test accuracy ({clf})", "cls_is": f"IS ({clf})",
            "icfd": f"intra-class FD ({clf})", "fd_vgg": f"FD ({lf})", "kid_vgg_mean": f"KID ({lf})",
            "precision": f"precision (k=3, {lf})", "recall": f"recall (k=3, {lf})",
            "density": f"density (k=5, {lf})", "coverage": f"coverage (k=5, {lf})", "icfd_vgg": f"intra-class FD ({lf})",
            "memorised": f"memorised share ({lf})", "nn_ratio": f"nearest train / nearest unseen ({lf})",
            "gan_train_acc": "GAN-train accuracy (SmallCNN)", "gan_train_real_acc": "same CNN trained on real images",
            "channel_spread": "channel spread (0-255)",
        }
        produced = {key for metric in self.metrics for key in RESULT_KEYS[metric]}
        return {key: label for key, label in names.items() if key in produced}

    def describe(self) -> dict:
        """What evaluation.json records of the spaces and reference sets (fingerprints, sizes)."""
        record: dict = {"metrics": list(self.metrics), "real": f"{self.dataset} test split ({len(self.real)} images)"}
        if self.label_free is not None:
            record["label_free"] = self.label_free.describe()
        if self.classifier is not None:
            record["classifier"] = self.classifier.describe()
        if self.memorisation_sets is not None:
            record["memorisation"] = {"sets": self.memorisation_sets["description"], "data_fraction": self.data_fraction}
        return record

    def selection_metric(self) -> str:
        """The result key that picks the best checkpoint (lower is better): see :func:`selection_metric`."""
        return selection_metric(self.metrics)


RESULT_KEYS: dict[str, tuple[str, ...]] = {
    "fid": ("fid",), "isc": ("is_mean", "is_std"), "kid": ("kid_mean", "kid_std"), "fd": ("fd",),
    "cls": ("cls_acc", "cls_is"), "icfd": ("icfd",), "fd_vgg": ("fd_vgg",), "kid_vgg": ("kid_vgg_mean", "kid_vgg_std"),
    "prc": ("precision", "recall"), "dc": ("density", "coverage"), "icfd_vgg": ("icfd_vgg",),
    "memo": ("memorised", "nn_ratio"), "gan_train": ("gan_train_acc", "gan_train_real_acc"), "colour": ("channel_spread",),
}


def selection_metric(metrics: tuple[str, ...]) -> str:
    """The first of :data:`SELECTION_ORDER` among ``metrics``; a ``ValueError`` (naming them) when none is."""
    for metric in SELECTION_ORDER:
        if metric in metrics:
            return metric  # each selectable metric reports one key of its own name
    raise ValueError(f"the best checkpoint is chosen by {', '.join(SELECTION_ORDER)} (the first present), and metrics "
                     f"{','.join(metrics)} have none; add one to --metrics")
