"""``classifier-kd train-teacher``: train a classifier with cross-entropy, as a teacher for the distillers."""
from __future__ import annotations

import click

from classifier_kd.cli_training import (build_model, check_model, expand_recipe, init_device, load_datasets,
                                        report_result, run_fit, training_options)
from classifier_kd.recipes import train_config
from classifier_kd.targets import CrossEntropyTarget
from kd_core.runtime.cli import checked_output
from kd_core.runtime.distributed import cleanup_distributed
from kd_core.runtime.seed import seed_everything


@click.command("train-teacher")
@click.option("--model", required=True, callback=check_model,
              help="Architecture (`classifier-kd models` lists them; or timm/<any timm name>).")
@click.option("--pretrained", is_flag=True,
              help="Start from the library's ImageNet weights (torchvision / timm models; fine-tuning).")
@training_options
def train_teacher(model, pretrained, **options):
    """Train a classifier with cross-entropy (a teacher): evaluation every epoch, best/last checkpoints."""
    checked_output(options["out"], "run directory", directory=True)
    ctx = init_device(options["device"])
    try:
        recipe_defaults, used = expand_recipe(options["recipe"], model, options)
        train_set, test_set, spec = load_datasets(options["dataset"], options["data_root"], used,
                                                  options["data_fraction"], options["seed"], options["download"])
        config = train_config(model, options, used, {"pretrained": pretrained, "recipe_values": recipe_defaults,
                                                      "input_spec": spec})
        seed_everything(options["seed"])  # the same initial weights for the same seed
        network = build_model(model, config.num_classes, spec["size"], pretrained)
        result = run_fit(CrossEntropyTarget(network, label_smoothing=used["label_smoothing"]), train_set, test_set,
                         config, spec, ctx)
    finally:
        cleanup_distributed()
    if ctx.is_main:
        report_result(result)
