"""``classifier-kd``: train a teacher, distil a student, evaluate a checkpoint, tabulate runs.

Examples::

    classifier-kd train-teacher --model resnet32x4 --dataset cifar100 --out runs/teachers/resnet32x4
    classifier-kd distill --student resnet8x4 --teacher resnet32x4 \\
        --teacher-ckpt resnet32x4_vanilla/ckpt_epoch_240.pth --method kd --zscore --out runs/kd_ls
    classifier-kd distill --student vkd_deit_tiny --teacher timm/regnety_160.deit_in1k --teacher-pretrained \\
        --dataset imagenet --data-root /data/imagenet --recipe deit --method vkd --out runs/vkd_deit_t
    classifier-kd evaluate runs/kd_ls/checkpoints/best.pt
    classifier-kd table runs/kd_ls runs/teachers/resnet32x4 --out results/table.md
    torchrun --nproc_per_node 4 -m classifier_kd.cli distill ...   # DDP

Bad input (unknown model or method, a fraction outside (0, 1], missing data, an unreadable checkpoint or
one that does not match the named architecture, feature dimensions no projector maps, a run directory
created with other options) is refused with one line on stderr and exit code 2, before any file is written.
Re-running a ``train-teacher`` / ``distill`` command on its ``--out`` directory resumes it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import torch

import kd_core
from classifier_kd.config import OPTIMIZERS, SCHEDULES, RunSetupError, TrainConfig
from classifier_kd.data import (
    AUGMENTATIONS, DATASETS, NUM_CLASSES, DatasetCorrupt, DatasetNotFound, build_datasets, load_split,
    test_transform,
)
from classifier_kd.distiller import Distiller, TeacherError, TeacherInput, load_teacher, parse_loss_spec
from classifier_kd.evaluation import evaluate
from classifier_kd.models import available, create_model
from classifier_kd.models.checkpoint import load_classifier, read_input_spec
from classifier_kd.recipes import RECIPES, distillation_terms, methods, recipe_values, train_config
from classifier_kd.targets import CrossEntropyTarget
from classifier_kd.train import TrainingDiverged, fit
from kd_core.runtime.checkpoint import load_checkpoint
from kd_core.runtime.datasets import DEFAULT_DATA_ROOT
from kd_core.runtime.cli import (OneLineErrorGroup, RunDiverged, checked_data_root, checked_output, divergence_option,
                                 fraction_option, one_line, usage_error)
from kd_core.runtime.distributed import cleanup_distributed, init_distributed
from kd_core.runtime.finite import divergence_message, first_non_finite
from kd_core.runtime.io import replace_block, write_json, write_text
from kd_core.runtime.precision import resolve_precision
from kd_core.runtime.progress import format_duration
from kd_core.runtime.seed import seed_everything
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


def _check_model(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A zoo name, or any ``timm/<name>`` (checked against timm when the model is built)."""
    if value is None or value in available() or value.startswith("timm/"):
        return value
    raise click.BadParameter(f"unknown model {value!r}; available: {', '.join(available())} (or timm/<any timm name>)")


def _init_device(device: str):
    try:
        return init_distributed(device)
    except ValueError as err:
        raise click.BadParameter(one_line(err), param_hint="'--device'") from err


# Options of the training values a recipe sets; None means "the recipe's value".
_OVERRIDES = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "no_decay_1d", "schedule",
              "milestones", "lr_decay", "warmup_epochs", "warmup_lr", "min_lr", "clip_grad", "mixup", "cutmix",
              "label_smoothing", "augment", "image_size")


def _training_options(command):
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


def _expand_recipe(recipe: str, model: str, options: dict) -> tuple[dict, dict]:
    """(recipe's values for ``model``, the values used: the recipe's overridden by the given options)."""
    recipe_defaults = recipe_values(recipe, model)
    used = {key: recipe_defaults.get(key) if options.get(key) is None else options[key] for key in _OVERRIDES}
    return recipe_defaults, used


def _datasets(dataset: str, data_root: str, used: dict, data_fraction: float, seed: int, download: bool):
    checked_data_root(data_root, download)  # typed or defaulted: only the default "data" may be missing
    try:
        return build_datasets(dataset, data_root, augment=used["augment"], image_size=used["image_size"],
                              data_fraction=data_fraction, subset_seed=seed, download=download)
    except (DatasetNotFound, DatasetCorrupt, ValueError) as err:
        raise click.UsageError(one_line(err)) from err


def _fit(target, train_set, test_set, config: TrainConfig, spec: dict, ctx) -> dict:
    try:
        return fit(target, train_set, test_set, config, input_spec=spec, ctx=ctx)
    except RunSetupError as err:
        raise click.UsageError(one_line(err)) from err
    except TrainingDiverged as err:  # not bad input: exit code 1
        raise click.ClickException(one_line(err)) from err
    except RunInterrupted as err:  # SIGTERM / SIGINT: the checkpoint is saved and the message logged
        raise SystemExit(err.exit_code) from None


def _report(result: dict) -> None:
    """The result line; then exit code 3 if the run's losses passed --divergence-threshold."""
    click.echo(f"best top-1 {result['best_top1']:.2f} (epoch {result['best_epoch']}), final top-1 "
               f"{result['final_top1']:.2f} top-5 {result['final_top5']:.2f}, {result['wall_time']}; "
               f"best checkpoint {result['best_checkpoint']}")
    if result.get("diverged"):
        raise RunDiverged(f"{divergence_message(result['diverged'], 'epoch')}; result.json records it")


def _build_model(name: str, num_classes: int, image_size: int, pretrained: bool = False):
    try:
        return create_model(name, num_classes, pretrained=pretrained, image_size=image_size)
    except (ValueError, ImportError, RuntimeError) as err:  # unknown timm name, timm missing, weights offline
        raise click.UsageError(one_line(err)) from err


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Classifier teachers and distillation: CIFAR-10/100, ImageNet, Fashion-MNIST; CNN, ViT and MLP models."""


@cli.command("train-teacher")
@click.option("--model", required=True, callback=_check_model,
              help="Architecture (`classifier-kd models` lists them; or timm/<any timm name>).")
@click.option("--pretrained", is_flag=True,
              help="Start from the library's ImageNet weights (torchvision / timm models; fine-tuning).")
@_training_options
def train_teacher(model, pretrained, **options):
    """Train a classifier with cross-entropy (a teacher): evaluation every epoch, best/last checkpoints."""
    checked_output(options["out"], "run directory", directory=True)
    ctx = _init_device(options["device"])
    try:
        recipe_defaults, used = _expand_recipe(options["recipe"], model, options)
        train_set, test_set, spec = _datasets(options["dataset"], options["data_root"], used,
                                              options["data_fraction"], options["seed"], options["download"])
        config = train_config(model, options, used, {"pretrained": pretrained, "recipe_values": recipe_defaults,
                                                      "input_spec": spec})
        seed_everything(options["seed"])  # the same initial weights for the same seed
        network = _build_model(model, config.num_classes, spec["size"], pretrained)
        result = _fit(CrossEntropyTarget(network, label_smoothing=used["label_smoothing"]), train_set, test_set,
                      config, spec, ctx)
    finally:
        cleanup_distributed()
    if ctx.is_main:
        _report(result)


def _parse_loss(ctx, param, values: tuple[str, ...]) -> list[tuple[str, float]]:
    parsed = []
    for value in values:
        try:
            parsed.append(parse_loss_spec(value))
        except ValueError as err:
            raise click.BadParameter(one_line(err)) from err
    names = [name for name, _ in parsed]
    if len(set(names)) != len(names):
        raise click.BadParameter(f"a loss is given twice: {', '.join(values)}")
    return parsed


def _parse_setting(ctx, param, values: tuple[str, ...]) -> list[tuple[str, str, Any]]:
    """``LOSS.KEY=VALUE`` -> (loss, key, value); values read as int, float, true/false/none, else text."""
    parsed = []
    for value in values:
        target, _, raw = value.partition("=")
        loss, _, key = target.partition(".")
        if not raw or not key or not loss:
            raise click.BadParameter(f"expected LOSS.KEY=VALUE (e.g. dkd.beta=2), got {value!r}")
        parsed.append((loss, key, _literal(raw)))
    return parsed


def _literal(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@cli.command("distill")
@click.option("--student", required=True, callback=_check_model, help="Student architecture.")
@click.option("--student-pretrained", is_flag=True, help="Start the student from the library's ImageNet weights.")
@click.option("--teacher", callback=_check_model, default=None,
              help="Teacher architecture; required for files that do not record it (RepDistiller / mdistiller "
                   "teachers, state_dicts), checked against the file otherwise.")
@click.option("--teacher-ckpt", type=click.Path(dir_okay=False), default=None,
              help="Teacher checkpoint: ours (train-teacher's best.pt), RepDistiller's "
                   "<name>_vanilla/ckpt_epoch_240.pth, or a torchvision / timm state_dict.")
@click.option("--teacher-pretrained", is_flag=True, help="Use the library's ImageNet weights for --teacher.")
@click.option("--teacher-image-size", type=click.IntRange(min=8), default=None,
              help="Input size the teacher expects [its checkpoint's input spec; 32 for files without one, 224 with "
                   "--teacher-pretrained]; e.g. 224 for RSD's CIFAR-100 teachers. Images are resized for it.")
@click.option("--method", type=click.Choice(methods()), default=None,
              help="Distillation method with the recipe's weights [kd unless --loss is given].")
@click.option("--loss", "losses", multiple=True, callback=_parse_loss, metavar="NAME:WEIGHT",
              help="A distillation term and its weight, repeatable (e.g. --loss kd:0.9 --loss dcd:1); replaces "
                   "the method's terms. Names: " + ", ".join(kd_core.available()["losses"]) + ".")
@click.option("--zscore", is_flag=True, help="Logit standardisation of the kd / dkd terms, with lsKD's weights.")
@click.option("--ce-weight", type=click.FloatRange(min=0), default=None,
              help="Weight of the cross-entropy term [method].")
@click.option("--set", "settings", multiple=True, callback=_parse_setting, metavar="LOSS.KEY=VALUE",
              help="A loss option, repeatable: e.g. --set kd.temperature=2 --set dkd.beta=2 "
                   "--set vkd.normalizer=whiten --set vkd.projector=linear --set vkd.normalizer=none (the "
                   "normaliser named none; elsewhere none is Python's None).")
@_training_options
def distill(student, student_pretrained, teacher, teacher_ckpt, teacher_pretrained, teacher_image_size, method,
            losses, zscore, ce_weight, settings, **options):
    """Train STUDENT with cross-entropy plus distillation losses against a frozen teacher."""
    checked_output(options["out"], "run directory", directory=True)
    if teacher_ckpt is not None and teacher_pretrained:
        raise click.UsageError("pass either --teacher-ckpt or --teacher-pretrained, not both")
    if method is not None and losses:
        raise click.UsageError("pass either --method or --loss terms, not both")
    teacher_options = {"--teacher": teacher, "--teacher-ckpt": teacher_ckpt, "--teacher-pretrained": teacher_pretrained,
                       "--teacher-image-size": teacher_image_size}
    if method == "ce" and any(teacher_options.values()):  # they would be recorded but never used
        given = [name for name, value in teacher_options.items() if value]
        raise click.UsageError(f"--method ce trains without a teacher, so {', '.join(given)} would be ignored; drop "
                               f"{'it' if len(given) == 1 else 'them'} or choose a distillation method")
    method = method if method is not None else ("custom" if losses else "kd")
    try:
        terms = distillation_terms(options["recipe"], None if method == "custom" else method, losses, zscore,
                                   settings, ce_weight)
    except ValueError as err:
        raise usage_error(err) from err
    ctx = _init_device(options["device"])
    try:
        recipe_defaults, used = _expand_recipe(options["recipe"], student, options)
        if options.get("label_smoothing") is None and terms["label_smoothing"] is not None:
            used["label_smoothing"] = terms["label_smoothing"]  # the method's (RSD: 0.1) over the recipe's
        train_set, test_set, spec = _datasets(options["dataset"], options["data_root"], used,
                                              options["data_fraction"], options["seed"], options["download"])
        num_classes = NUM_CLASSES[options["dataset"]]
        teacher_model, teacher_spec, teacher_name = None, None, None
        if terms["losses"]:
            try:
                teacher_model, teacher_spec = load_teacher(teacher, teacher_ckpt, teacher_pretrained,
                                                           teacher_image_size)
            except TeacherError as err:
                if err.option:
                    raise click.BadParameter(one_line(err), param_hint=f"'{err.option}'") from err
                raise usage_error(err) from err
            teacher_name = teacher_model.arch
            has_logit_term = any(kd_core.registry.loss_kind(name) == "logit" for name, _, _ in terms["losses"])
            if has_logit_term and teacher_model.num_classes != num_classes:
                raise click.UsageError(f"teacher {teacher_name} has {teacher_model.num_classes} classes but "
                                       f"{options['dataset']} has {num_classes}: logit losses compare class scores")
        seed_everything(options["seed"])  # the same student initialisation for the same seed
        student_model = _build_model(student, num_classes, spec["size"], student_pretrained)
        try:
            target = Distiller(student_model, teacher_model, terms["losses"], ce_weight=terms["ce_weight"],
                               label_smoothing=used["label_smoothing"],
                               teacher_input=TeacherInput(spec, teacher_spec) if teacher_model is not None else None)
        except (ValueError, TypeError) as err:  # e.g. feature dimensions that no projector maps
            raise click.UsageError(f"cannot build the {method} distiller for {student} <- {teacher_name}: "
                                   f"{one_line(err)}") from err
        config = train_config(student, options, used, {
            "student_pretrained": student_pretrained, "teacher": teacher_name, "teacher_ckpt": teacher_ckpt,
            "teacher_pretrained": teacher_pretrained, "teacher_input_spec": teacher_spec, "method": method,
            "zscore": zscore, "ce_weight": terms["ce_weight"],
            "losses": [{"name": name, "weight": weight, "options": opts} for name, weight, opts in terms["losses"]],
            "extra_parameters": target.extra_parameters(), "recipe_values": recipe_defaults, "input_spec": spec})
        result = _fit(target, train_set, test_set, config, spec, ctx)
    finally:
        cleanup_distributed()
    if ctx.is_main:
        _report(result)


@cli.command("evaluate")
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
    ctx = _init_device(device)
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


@cli.command("models")
def models_command():
    """List the model names --model / --student / --teacher accept (plus any timm/<name> when timm is installed)."""
    for name in available():
        click.echo(name)


@cli.command("table")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Markdown file to write [default: print to stdout].")
@click.option("--readme", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Also rewrite, in this file, the block between <!-- classifier-claims: OUT --> and "
                   "<!-- /classifier-claims: OUT --> with one line per claim the table tests (needs --out).")
def table_command(run_dirs, out, readme):
    """Markdown table of finished runs: best top-1 (mean ± std over seeds) per teacher-student pair and method,
    the papers' claims it can test (bootstrap verdicts), and each run's command, seed, hardware and wall time."""
    from classifier_kd.report import CLAIMS_BEGIN, CLAIMS_END, build_table, claims_block

    if readme is not None:
        if out is None:
            raise click.UsageError("--readme names its block after the table file: pass --out too")
        text = Path(readme).read_text(encoding="utf-8")
        begin, end = CLAIMS_BEGIN.format(table=out), CLAIMS_END.format(table=out)
        if begin not in text or end not in text:
            raise click.BadParameter(f"{readme} has no {begin} ... {end} block; add the two lines where the "
                                     "claims should go", param_hint="'--readme'")
    if out is not None:
        checked_output(out, "table file")
    if readme is not None:
        checked_output(readme, "README to update", option="--readme")
    try:
        text = build_table([Path(d) for d in run_dirs])
        block = claims_block([Path(d) for d in run_dirs], out) if readme is not None else None
    except (OSError, ValueError, KeyError) as err:
        raise click.UsageError(one_line(err)) from err
    if out is None:
        click.echo(text, nl=False)
        return
    write_text(out, text)
    click.echo(f"wrote {out} ({len(run_dirs)} runs)")
    if block is not None:
        replace_block(readme, begin, end, block)
        click.echo(f"updated the claims of {out} in {readme}")


def main() -> None:
    """Console-script entry point (``classifier-kd``)."""
    cli(prog_name="classifier-kd")


if __name__ == "__main__":
    main()
