"""What the training commands (``train-teacher``, ``distill``) share: their options and the way from them to a run.

:func:`training_options` adds the data, recipe (and its overrides) and run options; :func:`expand_recipe`,
:func:`load_datasets`, :func:`build_model` and :func:`run_fit` turn them into a run, each refusing bad input in one
line (exit code 2, before anything is written); :func:`report_result` prints the result line. :func:`init_device`
starts every command on its device, ``evaluate`` included.
"""
from __future__ import annotations

import click

from classifier_kd.config import OPTIMIZERS, SCHEDULES, RunSetupError, TrainConfig
from classifier_kd.data import DatasetCorrupt, DatasetNotFound, build_datasets
from classifier_kd.dataset_specs import DATASETS
from classifier_kd.image_transforms import AUGMENTATIONS
from classifier_kd.models import available, create_model
from classifier_kd.recipes import RECIPES, recipe_values
from classifier_kd.train import TrainingDiverged, fit
from kd_core.runtime.datasets import DEFAULT_DATA_ROOT
from kd_core.runtime.cli import RunDiverged, checked_data_root, divergence_option, fraction_option, one_line
from kd_core.runtime.distributed import init_distributed
from kd_core.runtime.finite import divergence_message
from kd_core.runtime.signals import RunInterrupted


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


def check_model(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A zoo name, or any ``timm/<name>`` (checked against timm when the model is built)."""
    if value is None or value in available() or value.startswith("timm/"):
        return value
    raise click.BadParameter(f"unknown model {value!r}; available: {', '.join(available())} (or timm/<any timm name>)")


def init_device(device: str):
    try:
        return init_distributed(device)
    except ValueError as err:
        raise click.BadParameter(one_line(err), param_hint="'--device'") from err


# Options of the training values a recipe sets; None means "the recipe's value".
_OVERRIDES = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "no_decay_1d", "schedule",
              "milestones", "lr_decay", "warmup_epochs", "warmup_lr", "min_lr", "clip_grad", "mixup", "cutmix",
              "label_smoothing", "augment", "image_size")


def training_options(command):
    """The options train-teacher and distill share: data, recipe and its overrides, run plumbing."""
    options = [
        click.option("--dataset", type=click.Choice(DATASETS), default="cifar100", show_default=True, help="Dataset."),
        click.option("--data-root", type=click.Path(file_okay=False), default=DEFAULT_DATA_ROOT, show_default=True,
                     help="Folder holding the dataset: torchvision's layout for CIFAR / Fashion-MNIST (Fashion-MNIST "
                          "is also found in /usr/share/datasets/fashion-mnist), train/ and val/ class folders for "
                          "ImageNet. Only the default may be missing (Fashion-MNIST then comes from Debian's copy)."),
        click.option("--download", is_flag=True, help="Let torchvision download a missing CIFAR / Fashion-MNIST."),
        click.option("--data-fraction", type=float, default=1.0, show_default=True, callback=fraction_option,
                     help="Train on this fraction of the training set (seeded subset, as the GAN side; indices "
                          "saved)."),
        click.option("--recipe", type=click.Choice(list(RECIPES)), default="cifar100", show_default=True,
                     help="Training preset (see README / classifier_kd.recipes): optimiser, schedule, epochs, "
                          "batch, augmentation, input size and loss weights. The options below override single "
                          "values; config.json records the expansion."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [recipe]."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size per process [recipe]."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="Optimiser [recipe]."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Base learning rate [recipe]."),
        click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="SGD momentum [recipe]."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=None, help="Weight decay [recipe]."),
        click.option("--no-decay-1d/--decay-1d", default=None,
                     help="Exempt biases and other 1-D parameters from weight decay [recipe]."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default=None,
                     help="step (x --lr-decay at --milestones) or cosine (per iteration to --min-lr) [recipe]."),
        click.option("--milestones", callback=_parse_milestones, default=None,
                     help="Comma-separated epochs at which the step schedule multiplies the lr by --lr-decay "
                          "[recipe, e.g. 150,180,210]; scale them with --epochs for short runs."),
        click.option("--lr-decay", type=click.FloatRange(0, 1, min_open=True), default=None,
                     help="Lr factor at each milestone [recipe]."),
        click.option("--warmup-epochs", type=click.FloatRange(min=0), default=None,
                     help="Linear warm-up length in epochs [recipe]."),
        click.option("--warmup-lr", type=click.FloatRange(min=0), default=None,
                     help="Lr at the start of the warm-up [recipe]."),
        click.option("--min-lr", type=click.FloatRange(min=0), default=None,
                     help="Final lr of the cosine schedule [recipe]."),
        click.option("--clip-grad", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Clip the global gradient norm to this value [recipe: off except cross-arch-vit]."),
        click.option("--mixup", type=click.FloatRange(min=0), default=None, help="Mixup alpha, 0 = off [recipe]."),
        click.option("--cutmix", type=click.FloatRange(min=0), default=None, help="CutMix alpha, 0 = off [recipe]."),
        click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Label smoothing of the cross-entropy term [recipe / method]."),
        click.option("--augment", type=click.Choice(AUGMENTATIONS), default=None,
                     help="Training augmentation [recipe]: " + ", ".join(AUGMENTATIONS) + "."),
        click.option("--image-size", type=click.IntRange(min=8), default=None,
                     help="Input size in pixels [recipe: 32 for cifar100, 224 otherwise]; CIFAR is upsampled."),
        click.option("--channels-last", is_flag=True, help="NHWC memory format (faster convolutions on recent GPUs)."),
        click.option("--compile", "compile", is_flag=True,
                     help="torch.compile (inductor) the model, its losses and the teacher: faster steps after a "
                          "one-time compilation (reported apart from the step time); needs a C++ compiler. "
                          "Checkpoints keep the plain weights."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed for initialisation, data order and the subset."),
        click.option("--device", default="auto", show_default=True,
                     help="auto, cpu, cuda or cuda:N (under torchrun: auto or cuda)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True,
                     help="Autocast precision: bf16 (CPU or CUDA), fp16 (CUDA, with grad scaling), fp32; auto = "
                          "bf16/fp16 on CUDA, fp32 on the CPU."),
        click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
                     help="DataLoader worker processes."),
        click.option("--max-steps-per-epoch", type=click.IntRange(min=1), default=None,
                     help="Cap the optimisation steps per epoch (tiny CPU runs and smoke tests)."),
        click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True,
                     help="Steps between progress lines."),
        divergence_option,
        click.option("--out", required=True, type=click.Path(file_okay=False),
                     help="Run directory; re-run the same command on it to resume (--epochs, --device, --workers "
                          "may change)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def expand_recipe(recipe: str, model: str, options: dict) -> tuple[dict, dict]:
    """(recipe's values for ``model``, the values used: the recipe's overridden by the given options)."""
    recipe_defaults = recipe_values(recipe, model)
    used = {key: recipe_defaults.get(key) if options.get(key) is None else options[key] for key in _OVERRIDES}
    return recipe_defaults, used


def load_datasets(dataset: str, data_root: str, used: dict, data_fraction: float, seed: int, download: bool):
    checked_data_root(data_root, download)  # typed or defaulted: only the default "data" may be missing
    try:
        return build_datasets(dataset, data_root, augment=used["augment"], image_size=used["image_size"],
                              data_fraction=data_fraction, subset_seed=seed, download=download)
    except (DatasetNotFound, DatasetCorrupt, ValueError) as err:
        raise click.UsageError(one_line(err)) from err


def run_fit(target, train_set, test_set, config: TrainConfig, spec: dict, ctx) -> dict:
    try:
        return fit(target, train_set, test_set, config, input_spec=spec, ctx=ctx)
    except RunSetupError as err:
        raise click.UsageError(one_line(err)) from err
    except TrainingDiverged as err:  # not bad input: exit code 1
        raise click.ClickException(one_line(err)) from err
    except RunInterrupted as err:  # SIGTERM / SIGINT: the checkpoint is saved and the message logged
        raise SystemExit(err.exit_code) from None


def report_result(result: dict) -> None:
    """The result line; then exit code 3 if the run's losses passed --divergence-threshold."""
    click.echo(f"best top-1 {result['best_top1']:.2f} (epoch {result['best_epoch']}), final top-1 "
               f"{result['final_top1']:.2f} top-5 {result['final_top5']:.2f}, {result['wall_time']}; "
               f"best checkpoint {result['best_checkpoint']}")
    if result.get("diverged"):
        raise RunDiverged(f"{divergence_message(result['diverged'], 'epoch')}; result.json records it")


def build_model(name: str, num_classes: int, image_size: int, pretrained: bool = False):
    try:
        return create_model(name, num_classes, pretrained=pretrained, image_size=image_size)
    except (ValueError, ImportError, RuntimeError) as err:  # unknown timm name, timm missing, weights offline
        raise click.UsageError(one_line(err)) from err
