"""Section 5, evaluation: the :mod:`gan_kd.metrics.evaluator` set-up cost and the throughput of generation, FD
features and a whole Evaluator call."""
from __future__ import annotations

import time

import torch

from benchmarks.context import Context
from benchmarks.report import fmt, table
from benchmarks.timing import measure, patched


def section_eval(ctx: Context) -> list[str]:
    from gan_kd.metrics import evaluator as evaluator_module
    from gan_kd.metrics.features import ClassifierSpace
    from gan_kd.models.biggan import Generator

    sizes = ctx.sizes
    root = ctx.workdir / "data"  # empty: Fashion-MNIST is found in Debian's /usr/share/datasets/fashion-mnist
    root.mkdir(exist_ok=True)
    spent: dict[str, float] = {"features": 0.0}
    source: dict[str, object] = {}
    original_real, original_features = evaluator_module.real_uint8, ClassifierSpace.features

    def real_set(*args, return_labels=False, **kwargs):
        start = time.perf_counter()
        images = None
        if not sizes.eval_fake_real:
            try:
                images, labels = original_real(*args, return_labels=True, **kwargs)
                source["text"] = "Fashion-MNIST's test split from Debian's package"
            except Exception as error:  # no data on this machine: an in-memory stand-in, said in the table
                source["text"] = f"a random uint8 set (Fashion-MNIST not found: {str(error).splitlines()[0][:120]})"
        if images is None:
            images = torch.randint(0, 256, (sizes.eval_real or 10_000, 3, 32, 32), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))
            labels = torch.zeros(images.shape[0], dtype=torch.long)
            source.setdefault("text", "a random in-memory uint8 set (--quick)")
        source["total"] = images.shape[0]
        spent["real"] = time.perf_counter() - start
        keep = slice(None, sizes.eval_real)
        return (images[keep], labels[keep]) if return_labels else images[keep]

    def timed_features(self, *args, **kwargs):
        start = time.perf_counter()
        result = original_features(self, *args, **kwargs)
        spent["features"] += time.perf_counter() - start
        return result

    ctx.log("eval: Evaluator set-up")
    with patched((evaluator_module, "real_uint8", real_set), (ClassifierSpace, "features", timed_features)):
        start = time.perf_counter()
        evaluator = evaluator_module.Evaluator(dataset="fashion_mnist", data_root=root, metrics=("fd",),
                                               num_samples=sizes.eval_call_samples, fd_features=ctx.teacher_spec,
                                               device="cpu", seed=0)
        setup = time.perf_counter() - start
    n_real, total = evaluator.real.shape[0], int(source["total"])

    ctx.log("eval: generation and feature throughput")
    generators = {}
    for width in sizes.widths:
        torch.manual_seed(0)
        generators[width] = Generator(num_classes=10, g_ch=width)
    counts = dict(zip(sizes.widths, sizes.eval_generate))
    images = evaluator.real[: sizes.eval_features]
    fns = {f"gen{w}": (lambda w=w: evaluator_module.generate_uint8(generators[w], counts[w], num_classes=10, dim_z=128,
                                                                   seed=0))
           for w in sizes.widths}
    fns["features"] = lambda: evaluator.classifier.features(images, evaluator.device)
    fns["call"] = lambda: evaluator(generators[sizes.widths[0]], num_classes=10, dim_z=128)
    t = measure(fns, ctx.reps_rule(), sizes.warmup)
    feature_rate = sizes.eval_features / t["features"].median
    lines = [f"`gan_kd.metrics.evaluator.Evaluator(metrics=(\"fd\",), fd_features=\"ckpt:…\")` with the random-weight "
             f"resnet20 checkpoint of section 1 as the FD network (`gan_kd.metrics.features.ClassifierSpace`, native "
             f"preprocessing: its input spec); real set: "
             f"{source['text']}, of which the first {n_real} of {total} images are used"
             f"{' (the budget: the whole split would take its feature time × ' + format(total / n_real, '.0f') + ')' if n_real < total else ''}. "
             f"Generators: fresh BigGAN Gs (10 classes) sampled as the Evaluator samples (a train-mode copy, "
             f"batches of {evaluator_module.SAMPLE_BATCH}, uint8 rounding).", ""]
    rows = [[f"Evaluator set-up: read the real set + the FD features of {n_real} images (once per command)",
             "1 (a one-off cost)", f"{fmt(setup * 1e3)} ms (reading {fmt(spent['real'] * 1e3)} ms, features "
             f"{fmt(spent['features'] * 1e3)} ms)", f"{fmt(n_real / spent['features'])} real images/s"]]
    if n_real < total:
        estimate = spent["real"] + total / feature_rate
        rows.append([f"the same with all {total} images: reading + {total} / the feature throughput below",
                     "(derived)", f"≈ {fmt(estimate * 1e3)} ms", "—"])
    for w in sizes.widths:
        timing = t[f"gen{w}"]
        rows.append([f"generator width {w} → uint8 ({counts[w]} samples per call)", str(timing.reps),
                     f"{fmt(timing.ms)} ms", f"{fmt(counts[w] / timing.median)} samples/s"])
    timing = t["features"]
    rows.append([f"FD features, resnet20 ({sizes.eval_features} uint8 images per call)", str(timing.reps),
                 f"{fmt(timing.ms)} ms", f"{fmt(feature_rate)} samples/s"])
    timing = t["call"]
    rows.append([f"Evaluator call: generate {sizes.eval_call_samples} (width {sizes.widths[0]}) + features + FD",
                 str(timing.reps), f"{fmt(timing.ms)} ms", f"{fmt(sizes.eval_call_samples / timing.median)} samples/s"])
    lines += table(["what", "reps", "time", "throughput"], rows)
    return lines

