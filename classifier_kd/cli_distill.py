"""``classifier-kd distill``: train a student with cross-entropy plus distillation losses against a frozen teacher.

The method's terms under the recipe, or ``--loss NAME:WEIGHT`` terms, with ``--set LOSS.KEY=VALUE`` options
(:func:`classifier_kd.recipes.distillation_terms`); the teacher from a checkpoint or the library's weights.
"""
from __future__ import annotations

from typing import Any

import click

import kd_core
from classifier_kd.cli_training import (build_model, check_model, expand_recipe, init_device, load_datasets,
                                        report_result, run_fit, training_options)
from classifier_kd.dataset_specs import NUM_CLASSES
from classifier_kd.distiller import Distiller, TeacherError, TeacherInput, load_teacher, parse_loss_spec
from classifier_kd.recipes import distillation_terms, methods, train_config
from kd_core.runtime.cli import checked_output, one_line, usage_error
from kd_core.runtime.distributed import cleanup_distributed
from kd_core.runtime.seed import seed_everything


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


@click.command("distill")
@click.option("--student", required=True, callback=check_model, help="Student architecture.")
@click.option("--student-pretrained", is_flag=True, help="Start the student from the library's ImageNet weights.")
@click.option("--teacher", callback=check_model, default=None,
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
@training_options
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
    ctx = init_device(options["device"])
    try:
        recipe_defaults, used = expand_recipe(options["recipe"], student, options)
        if options.get("label_smoothing") is None and terms["label_smoothing"] is not None:
            used["label_smoothing"] = terms["label_smoothing"]  # the method's (RSD: 0.1) over the recipe's
        train_set, test_set, spec = load_datasets(options["dataset"], options["data_root"], used,
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
        student_model = build_model(student, num_classes, spec["size"], student_pretrained)
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
        result = run_fit(target, train_set, test_set, config, spec, ctx)
    finally:
        cleanup_distributed()
    if ctx.is_main:
        report_result(result)
