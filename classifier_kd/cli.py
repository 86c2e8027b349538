"""``classifier-kd``: train a teacher, evaluate a checkpoint (distillation comes with ``distill``).

Examples::

    classifier-kd train-teacher --model resnet32x4 --dataset cifar100 --out runs/teachers/resnet32x4
    classifier-kd train-teacher --model resnet20 --dataset fashion_mnist --epochs 4 --milestones 2,3 \\
        --batch-size 128 --out runs/teachers/fmnist_resnet20
    classifier-kd evaluate runs/teachers/resnet32x4/checkpoints/best.pt
    classifier-kd evaluate resnet32x4_vanilla/ckpt_epoch_240.pth --arch resnet32x4 --dataset cifar100
    torchrun --nproc_per_node 4 -m classifier_kd.cli train-teacher ...   # DDP

Bad input (unknown model, a fraction outside (0, 1], missing data, an unreadable or mismatching checkpoint,
a run directory created with other options) is refused with one line on stderr and exit code 2, before any
file is written. Re-running a ``train-teacher`` command on its ``--out`` directory resumes it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import torch

from classifier_kd.data import DATASETS, NUM_CLASSES, DatasetCorrupt, DatasetNotFound, build_datasets, load_split, test_transform
from classifier_kd.models import available, create_model
from classifier_kd.models.checkpoint import load_classifier, read_input_spec
from classifier_kd.train import RECIPES, CrossEntropyTarget, RunSetupError, TrainConfig, evaluate, fit, recipe_values
from kd_core.runtime.checkpoint import load_checkpoint
from kd_core.runtime.distributed import cleanup_distributed, init_distributed
from kd_core.runtime.logging import format_duration
from kd_core.runtime.seed import seed_everything


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


class _OneLineError(click.UsageError):
    """Shows only ``Error: <message>`` (no usage block): bad input is reported in one line."""

    def __init__(self, original: click.ClickException) -> None:
        super().__init__(_one_line(original.format_message()), ctx=getattr(original, "ctx", None))
        self.exit_code = original.exit_code

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class _OneLineErrorGroup(click.Group):
    """A click group whose usage errors (its own and its commands') print as one line, exit code 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as err:
            raise _OneLineError(err) from err

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _OneLineError:
            raise
        except click.ClickException as err:
            raise _OneLineError(err) from err


def _parse_milestones(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        milestones = [int(part) for part in value.split(",") if part.strip()] if value.strip() else []
    except ValueError:
        raise click.BadParameter(f"expected comma-separated epochs like 150,180,210, got {value!r}") from None
    if milestones != sorted(set(milestones)) or any(m < 1 for m in milestones):
        raise click.BadParameter(f"milestones must be increasing positive epochs, got {value!r}")
    return milestones


def _init_device(device: str):
    try:
        return init_distributed(device)
    except ValueError as err:
        raise click.BadParameter(_one_line(err), param_hint="'--device'") from err


@click.group(cls=_OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Classifier teachers and distillation on CIFAR-10/100 and Fashion-MNIST."""


@cli.command("train-teacher")
@click.option("--model", required=True, type=click.Choice(available()), help="Architecture (CIFAR zoo names).")
@click.option("--dataset", type=click.Choice(DATASETS), default="cifar100", show_default=True, help="Dataset.")
@click.option("--data-root", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Folder holding the dataset in torchvision's layout (Fashion-MNIST is also found in "
                   "/usr/share/datasets/fashion-mnist).")
@click.option("--download", is_flag=True, help="Let torchvision download a missing dataset into --data-root.")
@click.option("--data-fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Train on this fraction of the training set (seeded subset, as the GAN side; indices saved).")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default="cifar100", show_default=True,
              help="Optimiser and schedule preset: cifar100 = SGD momentum 0.9, batch 64, 240 epochs, lr 0.05 "
                   "(0.01 for MobileNetV2/ShuffleV1/ShuffleV2), x0.1 at 150,180,210, wd 5e-4. The options "
                   "below override single values; config.json records the expansion.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [recipe: 240].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size per process [recipe: 64].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Initial learning rate [recipe: 0.05].")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=None, help="SGD momentum [recipe: 0.9].")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None, help="Weight decay [recipe: 5e-4].")
@click.option("--milestones", callback=_parse_milestones, default=None,
              help="Comma-separated epochs at which the lr is multiplied by --lr-decay [recipe: 150,180,210]; "
                   "scale them with --epochs for short runs.")
@click.option("--lr-decay", type=click.FloatRange(0, 1, min_open=True), default=None, help="Lr factor at each milestone [recipe: 0.1].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for initialisation, data order and the subset.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (under torchrun: auto or cuda).")
@click.option("--amp/--no-amp", default=True, show_default=True, help="float16 autocast + grad scaling on CUDA (ignored on CPU).")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="DataLoader worker processes.")
@click.option("--max-steps-per-epoch", type=click.IntRange(min=1), default=None,
              help="Cap the optimisation steps per epoch (tiny CPU runs and smoke tests).")
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True, help="Steps between progress lines.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run directory; re-run the same command on it to resume (--epochs, --device, --workers may change).")
def train_teacher(model, dataset, data_root, download, data_fraction, recipe, epochs, batch_size, lr, momentum,
                  weight_decay, milestones, lr_decay, seed, device, amp, workers, max_steps_per_epoch, log_every, out):
    """Train a classifier with cross-entropy (a teacher): evaluation every epoch, best/last checkpoints."""
    ctx = _init_device(device)
    try:
        recipe_defaults = recipe_values(recipe, model)
        overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                     "weight_decay": weight_decay, "milestones": milestones, "lr_decay": lr_decay}
        schedule = {key: recipe_defaults[key] if value is None else value for key, value in overrides.items()}
        try:
            train_set, test_set, spec = build_datasets(dataset, data_root, data_fraction=data_fraction,
                                                       subset_seed=seed, download=download)
        except (DatasetNotFound, DatasetCorrupt, ValueError) as err:
            raise click.UsageError(_one_line(err)) from err
        config = TrainConfig(
            model=model, dataset=dataset, num_classes=NUM_CLASSES[dataset], out=out, **schedule,
            seed=seed, device=device, workers=workers, amp=amp, max_steps_per_epoch=max_steps_per_epoch,
            log_every=log_every,
            extra={"data_root": data_root, "download": download, "data_fraction": data_fraction,
                   "recipe": recipe, "recipe_values": recipe_defaults, "input_spec": spec},
        )
        seed_everything(seed)  # the same initial weights for the same seed
        target = CrossEntropyTarget(create_model(model, config.num_classes))
        try:
            result = fit(target, train_set, test_set, config, input_spec=spec, ctx=ctx)
        except RunSetupError as err:
            raise click.UsageError(_one_line(err)) from err
    finally:
        cleanup_distributed()
    if ctx.is_main:
        click.echo(f"best top-1 {result['best_top1']:.2f} (epoch {result['best_epoch']}), final top-1 "
                   f"{result['final_top1']:.2f} top-5 {result['final_top5']:.2f}, {result['wall_time']}; "
                   f"best checkpoint {result['best_checkpoint']}")


@cli.command("evaluate")
@click.argument("ckpt", type=click.Path(exists=True, dir_okay=False))
@click.option("--dataset", type=click.Choice(DATASETS), default=None,
              help="Test set [default: the one recorded in the checkpoint, else cifar100].")
@click.option("--data-root", type=click.Path(file_okay=False), default="data", show_default=True,
              help="Folder holding the dataset in torchvision's layout.")
@click.option("--download", is_flag=True, help="Let torchvision download a missing dataset into --data-root.")
@click.option("--arch", type=click.Choice(available()), default=None,
              help="Architecture, for files that do not record it (RepDistiller/mdistiller teachers, state_dicts).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Evaluation batch size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="DataLoader worker processes.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="JSON file for the result [default: <ckpt stem>_eval_<dataset>.json next to CKPT].")
def evaluate_command(ckpt, dataset, data_root, download, arch, batch_size, device, workers, out):
    """Top-1 / top-5 test accuracy of the classifier checkpoint CKPT (ours or RepDistiller's layout)."""
    ctx = _init_device(device)
    ckpt = Path(ckpt)
    try:
        try:
            model = load_classifier(ckpt, arch=arch)
            spec = read_input_spec(ckpt)
            stored = load_checkpoint(ckpt)
        except Exception as err:  # any file that cannot be loaded as a classifier is a bad argument
            raise click.BadParameter(_one_line(err) or type(err).__name__, param_hint="'CKPT'") from err
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
            raise click.UsageError(_one_line(err)) from err
        out = Path(out) if out is not None else ckpt.with_name(f"{ckpt.stem}_eval_{dataset}.json")

        start = time.monotonic()
        model.to(ctx.device)
        metrics = evaluate(model, test_set, batch_size=batch_size, device=ctx.device, workers=workers,
                           amp=ctx.device.type == "cuda", ctx=ctx)
        wall_time = time.monotonic() - start
    finally:
        cleanup_distributed()
    if not ctx.is_main:
        return
    record = {"checkpoint": str(ckpt), "arch": arch, "dataset": dataset, **metrics,
              "input_spec": {"size": spec["size"], "mean": list(spec["mean"]), "std": list(spec["std"])},
              "device": str(ctx.device), "wall_time_s": round(wall_time, 2), "torch_version": torch.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    click.echo(f"{ckpt}: top-1 {metrics['top1']:.2f} top-5 {metrics['top5']:.2f} on {dataset} "
               f"({metrics['images']} test images, {format_duration(wall_time)}); wrote {out}")


def main() -> None:
    """Console-script entry point (``classifier-kd``)."""
    cli(prog_name="classifier-kd")


if __name__ == "__main__":
    main()
