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

import click

from classifier_kd.cli_distill import distill
from classifier_kd.cli_evaluate import evaluate_command
from classifier_kd.cli_report import models_command, table_command
from classifier_kd.cli_teacher import train_teacher
from kd_core.runtime.cli import OneLineErrorGroup


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Classifier teachers and distillation: CIFAR-10/100, ImageNet, Fashion-MNIST; CNN, ViT and MLP models."""


for command in (train_teacher, distill, evaluate_command, models_command, table_command):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point (``classifier-kd``)."""
    cli(prog_name="classifier-kd")


if __name__ == "__main__":
    main()
