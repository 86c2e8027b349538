"""``classifier-kd evaluate``: top-1 / top-5 test accuracy of a classifier checkpoint, written to a JSON file."""
from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from classifier_kd.cli_training import init_device
from classifier_kd.data import DatasetCorrupt, DatasetNotFound, load_split
from classifier_kd.dataset_specs import DATASETS, NUM_CLASSES
from classifier_kd.evaluation import evaluate
from classifier_kd.image_transforms import test_transform
from classifier_kd.models import available
from classifier_kd.models.checkpoint import load_classifier, read_input_spec
from kd_core.runtime.checkpoint import load_checkpoint
from kd_core.runtime.datasets import DEFAULT_DATA_ROOT
from kd_core.runtime.cli import checked_data_root, checked_output, one_line
from kd_core.runtime.distributed import cleanup_distributed
from kd_core.runtime.finite import first_non_finite
from kd_core.runtime.io import write_json
from kd_core.runtime.precision import resolve_precision
from kd_core.runtime.progress import format_duration


@click.command("evaluate")
@click.argument("ckpt", type=click.Path(exists=True, dir_okay=False))
@click.option("--dataset", type=click.Choice(DATASETS), default=None,
              help="Test set [default: the one recorded in the checkpoint, else cifar100].")
@click.option("--data-root", type=click.Path(file_okay=False), default=DEFAULT_DATA_ROOT, show_default=True,
              help="Folder holding the dataset in torchvision's layout; only the default may be missing "
                   "(Fashion-MNIST then comes from Debian's copy).")
@click.option("--download", is_flag=True, help="Let torchvision download a missing dataset into --data-root.")
@click.option("--arch", type=click.Choice(available()), default=None,
              help="Architecture, for files that do not record it (RepDistiller/mdistiller teachers, state_dicts).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Evaluation batch size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="DataLoader worker processes.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Autocast precision of the forward pass (auto = bf16/fp16 on CUDA, fp32 on the CPU).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="JSON file for the result [default: <ckpt stem>_eval_<dataset>.json next to CKPT].")
def evaluate_command(ckpt, dataset, data_root, download, arch, batch_size, device, workers, precision, out):
    """Top-1 / top-5 test accuracy of the classifier checkpoint CKPT (ours or RepDistiller's layout)."""
    checked_data_root(data_root, download)
    if out is not None:
        checked_output(out, "result file")
    ctx = init_device(device)
    ckpt = Path(ckpt)
    try:
        resolved_precision = resolve_precision(precision, ctx.device)
    except ValueError as err:
        cleanup_distributed()
        raise click.BadParameter(one_line(err), param_hint="'--precision'") from err
    try:
        try:
            model = load_classifier(ckpt, arch=arch)
            spec = read_input_spec(ckpt)
            stored = load_checkpoint(ckpt)
        except (OSError, ValueError, ImportError) as err:  # a file that cannot be loaded as this classifier
            raise click.BadParameter(one_line(err) or type(err).__name__, param_hint="'CKPT'") from err
        bad = first_non_finite(model)
        if bad is not None:  # a diverged classifier would be scored as if it were a model
            raise click.BadParameter(f"{ckpt} holds non-finite weights ({bad}); it diverged", param_hint="'CKPT'")
        arch = arch or stored["arch"]  # load_classifier succeeded: either given or recorded (our format)
        recorded = stored.get("dataset")
        del stored
        dataset = dataset or (recorded if recorded in DATASETS else "cifar100")
        if model.num_classes != NUM_CLASSES[dataset]:
            raise click.UsageError(f"checkpoint {ckpt} has {model.num_classes} classes but {dataset} has "
                                   f"{NUM_CLASSES[dataset]}; pass the --dataset it was trained on")
        try:
            test_set = load_split(dataset, data_root, train=False, transform=test_transform(dataset, spec),
                                  download=download)
        except (DatasetNotFound, DatasetCorrupt, ValueError) as err:
            raise click.UsageError(one_line(err)) from err
        if out is None:  # named after the dataset, which the checkpoint may have had to tell
            out = checked_output(ckpt.with_name(f"{ckpt.stem}_eval_{dataset}.json"), "result file")
        out = Path(out)

        start = time.monotonic()
        model.to(ctx.device)
        metrics = evaluate(model, test_set, batch_size=batch_size, device=ctx.device, workers=workers,
                           precision=resolved_precision, ctx=ctx)
        wall_time = time.monotonic() - start
    finally:
        cleanup_distributed()
    if not ctx.is_main:
        return
    record = {"checkpoint": str(ckpt), "arch": arch, "dataset": dataset, **metrics,
              "input_spec": {"size": spec["size"], "mean": list(spec["mean"]), "std": list(spec["std"])},
              "device": str(ctx.device), "wall_time_s": round(wall_time, 2), "torch_version": torch.__version__}
    write_json(out, record)
    click.echo(f"{ckpt}: top-1 {metrics['top1']:.2f} top-5 {metrics['top5']:.2f} on {dataset} "
               f"({metrics['images']} test images, {format_duration(wall_time)}); wrote {out}")
