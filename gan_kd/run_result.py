"""The end of a GAN run: what ``result.json`` says besides the best checkpoint, and which terms count as diverging.

:func:`summary` is the record :class:`gan_kd.train.Trainer` writes when training finishes (wall time, hardware,
the distillation-to-adversarial ratio of issue 25's calibration, how the evaluation measured); ``"diverged"`` is
added by the trainer from :func:`kd_core.runtime.finite.run_divergence` over the terms :func:`is_loss_term`
names, and :func:`update_divergence` keeps it in step when a finished run is called again with another threshold.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from gan_kd.objectives import ratio_summary
from kd_core.runtime.metrics import metric_curves
from kd_core.runtime.provenance import hardware_summary
from kd_core.runtime.run import Run, load_run

if TYPE_CHECKING:
    from gan_kd.train import Trainer


def is_loss_term(name: str) -> bool:
    """Whether a metrics.jsonl name is one of the trainer's logged terms that ``divergence_threshold`` watches."""
    return name.startswith(("d/", "g/")) and name != "d/kd_ratio"  # a ratio is no loss: small hinge, large ratio


def summary(trainer: "Trainer", wall_time: float) -> dict:
    """``result.json`` of a run that trained to its last iteration (``"diverged"`` aside): ``wall_time`` is its
    training seconds over every session."""
    config, context = trainer.config, trainer.context
    record = {"iterations": config.iterations, "best": trainer.best, "wall_time_s": round(wall_time, 1),
              "resumed_from": trainer.start_iteration, "world_size": context.world_size, "device": str(trainer.device),
              "hardware": hardware_summary(trainer.device)}
    if config.compile:  # included in wall_time_s
        record["compile_s"] = round(trainer.compile_time, 1)
    ratio = ratio_summary(metric_curves(trainer.out).get("d/kd_ratio", []), config.eval_every or config.log_every,
                          config.kd_weight)
    if ratio is not None:  # the distillation term next to D's adversarial loss (issue 25's calibration)
        record["distillation_ratio"] = ratio
    if trainer.evaluator is not None:  # how each metric's number was measured, and what names it in a table
        record["evaluation"] = {**trainer.evaluator.describe(), "labels": trainer.evaluator.labels(),
                                "selected_by": trainer.evaluator.selection_metric()}
    return record


def update_divergence(run_dir: Run, diverged: dict | None) -> None:
    """Rewrite the ``"diverged"`` of a finished run's ``result.json`` (if it has one) when it differs from
    ``diverged``, the verdict under this call's threshold, so that the file and the exit code agree."""
    if not run_dir.result_path.is_file():
        return
    record = load_run(run_dir.out, finished=False)["result"]
    if record.get("diverged") != diverged:
        record.pop("diverged", None)
        run_dir.finish({**record, **({"diverged": diverged} if diverged else {})})
