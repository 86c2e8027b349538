"""Section 7, the sample-quality metrics: ``Evaluator.score`` on 10,000 samples against its two budgets, with a
per-metric breakdown and the set-up cost, on Debian's Fashion-MNIST or a synthetic one."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.context import Context
from benchmarks.machine import cpu_flags, cpu_kernel_note, cpu_model
from benchmarks.report import fmt, pct, table
from benchmarks.timing import PartTimer, measure, patched

SUITE_METRICS = ("fd", "cls", "icfd", "fd_vgg", "kid_vgg", "prc", "dc", "icfd_vgg", "memo", "colour")
SUITE_BUDGET_S = 90.0       # every metric but GAN-train, 10,000 samples, one core, real features cached
GAN_TRAIN_BUDGET_S = 180.0  # GAN-train accuracy, same conditions
MEMO_FRACTION = 0.005
FEATURES_CLASSIFIER = "classifier features (resnet20)"
FEATURES_LABEL_FREE = "label-free features (random VGG-16 trunk)"
SUITE_PARTS = (FEATURES_CLASSIFIER, "fd", "cls", "icfd", FEATURES_LABEL_FREE, "fd_vgg", "kid_vgg", "prc", "dc",
               "icfd_vgg", "memo", "colour")
GAN_TRAIN_PARTS = ("gan_train: train the SmallCNN on the samples", "gan_train: its accuracy on the real test set",
                   "gan_train: real-data ceiling")
OTHER_PART = "the rest (argument checks, glue)"


def write_synthetic_fashion_mnist(root: Path, n_train: int, n_test: int, seed: int = 28) -> None:
    """A fake Fashion-MNIST in ``<root>/FashionMNIST/raw`` (read before Debian's copy), written as
    ``tests/conftest.py``'s ``fashion_mnist_raw_dir``: gzipped idx files of random 28x28 pixels whose outer
    2-pixel ring is 0 (the real images' black background), every class in every split."""
    import gzip
    import struct

    import numpy as np

    from kd_core.runtime.fashion_mnist import fashion_mnist_raw_dir

    rng = np.random.default_rng(seed)
    folder = fashion_mnist_raw_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 2:-2, 2:-2] = rng.integers(0, 256, size=(n, 24, 24), dtype=np.uint8)
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        blobs = ((f"{prefix}-images-idx3-ubyte", struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()),
                 (f"{prefix}-labels-idx1-ubyte", struct.pack(">II", 2049, n) + labels.tobytes()))
        for name, blob in blobs:
            with gzip.GzipFile(folder / f"{name}.gz", "wb", mtime=0, compresslevel=1) as f:
                f.write(blob)


def metrics_data(ctx: Context) -> tuple[Path, str, bool]:
    """``(data root, description, synthetic?)``: Debian's Fashion-MNIST where it is installed (an empty root
    falls back to it), else (and always with --quick) a synthetic one written into the work directory."""
    from kd_core.runtime.datasets import DatasetNotFound
    from kd_core.runtime.fashion_mnist import locate_fashion_mnist

    sizes = ctx.sizes
    root = ctx.workdir / "data"  # empty: Fashion-MNIST is found in Debian's /usr/share/datasets/fashion-mnist
    root.mkdir(exist_ok=True)
    reason = "--quick"
    if not sizes.metrics_synthetic:
        try:
            found = [locate_fashion_mnist(root, train)[0] for train in (True, False)]
            return root, f"Fashion-MNIST from Debian's package ({found[0].parent})", False
        except DatasetNotFound as error:
            reason = f"Fashion-MNIST not found: {str(error).splitlines()[0][:160]}"
    n_train, n_test = sizes.metrics_synthetic_split
    root = ctx.workdir / "synthetic"
    write_synthetic_fashion_mnist(root, n_train, n_test)
    return root, (f"**a synthetic Fashion-MNIST** ({reason}): {n_train} train and {n_test} test images of random "
                  f"28×28 pixels with a black 2-pixel border, written as `tests/conftest.py`'s fake Fashion-MNIST; "
                  f"the metrics cost what they cost on the real images, their values mean nothing"), True


def section_metrics(ctx: Context) -> list[str]:
    from gan_kd.data import subset_indices
    from gan_kd.metrics import checks, classwise, fidelity, manifold
    from gan_kd.metrics import evaluator as evaluator_module
    from gan_kd.metrics.classwise import GAN_TRAIN_EPOCHS
    from gan_kd.metrics.features import ClassifierSpace, VGG16Trunk

    sizes = ctx.sizes
    n = sizes.metrics_samples
    root, source, synthetic = metrics_data(ctx)
    n_train = sizes.metrics_synthetic_split[0] if synthetic else 60_000  # Fashion-MNIST's training split
    train_indices = subset_indices(n_train, MEMO_FRACTION, 0)
    timer = PartTimer()
    built: list = []  # the suite's evaluator, once built: tells the two intra-class FDs apart

    def icfd_part(fake, fake_labels, real, *args, **kwargs) -> str:
        return "icfd" if built and real is built[0].real_classifier else "icfd_vgg"

    wraps = [(evaluator_module, "real_uint8", "reading the real sets"),
             (evaluator_module.Evaluator, "_memorisation_sets",
              "memo: features of the training subset and of the unseen pool, their radii"),
             (evaluator_module.Evaluator, "gan_train_ceiling", GAN_TRAIN_PARTS[2]),
             (ClassifierSpace, "features", FEATURES_CLASSIFIER), (ClassifierSpace, "logits", "cls"),
             (VGG16Trunk, "features", FEATURES_LABEL_FREE),
             (fidelity, "frechet_distance", "fd"), (fidelity, "fd_statistics", "fd_vgg"),
             (fidelity, "frechet_distance_from_statistics", "fd_vgg"), (fidelity, "kernel_distance", "kid_vgg"),
             (classwise, "class_scores", "cls"), (classwise, "intra_class_fd", icfd_part),
             (manifold, "precision_recall", "prc"), (manifold, "density_coverage", "dc"),
             (manifold, "kth_neighbour_radii", "dc"), (checks, "memorisation", "memo"),
             (checks, "training_radii", "memo"), (checks, "channel_spread", "colour"),
             (classwise, "train_small_classifier", GAN_TRAIN_PARTS[0]), (classwise, "accuracy", GAN_TRAIN_PARTS[1])]
    replacements = [(owner, name, timer.wrap(getattr(owner, name), part)) for owner, name, part in wraps]

    def build(metrics: tuple[str, ...]):
        timer.take()
        start = time.perf_counter()
        evaluator = evaluator_module.Evaluator(dataset="fashion_mnist", data_root=root, metrics=metrics, num_samples=n,
                                               fd_features=ctx.teacher_spec, train_indices=train_indices,
                                               data_fraction=MEMO_FRACTION, device="cpu", seed=0)
        return evaluator, time.perf_counter() - start, timer.take()

    def scorer(evaluator, images, labels, parts: tuple[str, ...]) -> Callable[[], dict]:
        def call() -> dict:
            timer.take()
            start = time.perf_counter()
            evaluator.score(images, labels)
            took = time.perf_counter() - start
            seen = timer.take()
            unknown = set(seen) - set(parts)
            if unknown:
                raise RuntimeError(f"unexpected timed parts {sorted(unknown)} in a score call")
            result = {part: seen.get(part, 0.0) for part in parts}
            result[OTHER_PART] = took - sum(result.values())
            return result

        return call

    with patched(*replacements):
        ctx.log(f"metrics: Evaluator set-up, {len(SUITE_METRICS)} metrics")
        suite, suite_setup, suite_setup_parts = build(SUITE_METRICS)
        built.append(suite)
        ctx.log("metrics: Evaluator set-up, gan_train")
        gan, gan_setup, gan_setup_parts = build(("gan_train",))
        images, labels = suite.train_split[0][:n], suite.train_split[1][:n]
        if len(images) < n:
            raise RuntimeError(f"the training split has {len(images)} images, fewer than the {n} to score")
        ctx.log(f"metrics: first GAN-train call on {n} images (trains the real-data ceiling too)")
        first_call = scorer(gan, images, labels, GAN_TRAIN_PARTS)
        start = time.perf_counter()
        first_parts = first_call()
        first_seconds = time.perf_counter() - start
        warm_n = min(n, sizes.metrics_warm)
        ctx.log(f"metrics: {sizes.metrics_reps} timed score calls of each evaluator on {n} images")
        fns = {"suite": scorer(suite, images, labels, SUITE_PARTS),
               "gan_train": scorer(gan, images, labels, GAN_TRAIN_PARTS)}
        t = measure(fns, sizes.metrics_reps, sizes.warmup,
                    warm={"suite": (lambda: suite.score(images[:warm_n], labels[:warm_n])) if warm_n else (lambda: None),
                          "gan_train": lambda: None})  # warmed up by its first call above
    ctx.metrics = {"n": n, "suite": t["suite"], "gan_train": t["gan_train"], "first_gan_train": first_seconds}

    flags = cpu_flags()
    bf16_flag = "avx512_bf16" in flags
    lines = [f"`gan_kd.metrics.evaluator.Evaluator.score(images, labels)` on {n} uint8 images: the first {n} images of "
             f"the training split and their labels (what is scored does not change the cost). Data: {source}. Two "
             f"evaluators that share nothing, each built once before the timing: `metrics=({', '.join(SUITE_METRICS)})`, "
             f"i.e. every metric but GAN-train (and the Inception ones, which need downloaded weights), and "
             f"`metrics=(gan_train,)`. The constructor reads the real sets and caches the real test set's features in "
             f"every space, the memorisation sets' features and the k-NN radii: that one-off cost is in the set-up "
             f"table and not in the budgets. `fd`, `cls`, `icfd` use `fd_features=ckpt:…`, the resnet20 checkpoint of "
             f"section 1, whose **weights are random (timing only; its scores mean nothing)**; the label-free metrics "
             f"the default `vgg16-random`; `memo` the training subset `gan_kd.data.subset_indices({n_train}, "
             f"{MEMO_FRACTION:g}, 0)` ({len(train_indices)} images). Every call in fp32 on one thread "
             f"(the metrics use no bf16). CPU: {cpu_model()}; avx512_bf16: {'yes' if bf16_flag else 'no'} "
             f"({cpu_kernel_note()}).", ""]
    lines += [f"Timing: {sizes.metrics_reps} timed call(s) of each evaluator on the same {n} images, interleaved, the "
              f"median given; before them, "
              + (f"a warm-up call of the suite on {warm_n} of the images" if warm_n else "no warm-up call of the suite")
              + " and the first GAN-train call (in the set-up table, as it also trains the real-data ceiling).", ""]
    if sizes.quick:
        lines += [f"**--quick: {n} samples, not the budgets' 10,000; these verdicts mean nothing.**", ""]
    reps = sizes.metrics_reps
    rows = []
    for key, label, budget in (("suite", "every metric but GAN-train accuracy", SUITE_BUDGET_S),
                               ("gan_train", "GAN-train accuracy (real-data ceiling cached)", GAN_TRAIN_BUDGET_S)):
        timing = t[key]
        rows.append([f"{label}, {n} samples", str(timing.reps), f"{fmt(timing.median)} s",
                     f"{budget:.0f} s for 10,000 samples", ("**met**" if timing.median <= budget else "**missed**")])
    lines += table(["what", "reps", "median time", "budget", "verdict"], rows)

    lines += [f"Breakdown of the same calls: each part's median over the {reps} repetition(s) (the parts' medians need "
              f"not add up to the total's); a part is the time inside the library functions named, timed by wrapping "
              f"them (the outermost call counts).", ""]
    rows = []
    for key, parts in (("suite", SUITE_PARTS), ("gan_train", GAN_TRAIN_PARTS)):
        timing = t[key]
        for part in (*parts, OTHER_PART):
            seconds = statistics.median(timing.parts[part])
            rate = "—"
            if part in (FEATURES_CLASSIFIER, FEATURES_LABEL_FREE, GAN_TRAIN_PARTS[0]):
                rate = f"{fmt(n / seconds)} images/s" + (f" ({GAN_TRAIN_EPOCHS} epochs)" if part == GAN_TRAIN_PARTS[0]
                                                         else "")
            elif part == GAN_TRAIN_PARTS[1]:
                rate = f"{fmt(len(gan.real) / seconds)} test images/s"
            if part == GAN_TRAIN_PARTS[2]:
                part += " (cached: computed by the first call below)"
            rows.append([key, part, fmt(seconds), pct(seconds / timing.median), rate])
        rows.append([key, "**total**", fmt(timing.median), "100%", f"{fmt(n / timing.median)} images/s"])
    lines += table(["evaluator", "part", "median s", "share", "throughput"], rows)

    def described(parts: dict[str, float]) -> str:
        return "; ".join(f"{name} {fmt(seconds)} s" for name, seconds in sorted(parts.items(), key=lambda i: -i[1]))

    rows = [[f"`Evaluator(metrics=({', '.join(SUITE_METRICS)}))`: real test set ({len(suite.real)} images) and "
             f"training split read, features cached", "1 (a one-off cost)", f"{fmt(suite_setup)} s",
             described(suite_setup_parts)],
            ["`Evaluator(metrics=(gan_train,))`: real sets read", "1 (a one-off cost)", f"{fmt(gan_setup)} s",
             described(gan_setup_parts)],
            [f"first GAN-train call on {n} samples: trains the real-data ceiling on as many real training images too "
             f"(cached for later calls of that count)", "1 (a one-off cost)", f"{fmt(first_seconds)} s",
             described({k: v for k, v in first_parts.items() if v > 0})]]
    lines += table(["set-up", "reps", "time", "parts (seconds, largest first)"], rows)
    return lines

