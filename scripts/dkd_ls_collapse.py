#!/usr/bin/env python
"""Why DKD + logit standardisation can collapse in the CPU classifier study (issue 11) -> results/cls_fmnist_dkd_ls.md.

Replays the first training steps of the recorded DKD and DKD+LS runs of ``scripts/cls_fmnist.sh`` (their
``config.json``: the same student, teacher, data subset, optimiser and loss options) and, at every step, measures
on the batch, before the optimiser step:

* ``σ``: the mean (over the batch) unbiased std of the student's raw logits; logit standardisation divides by it;
* ``|∇ DKD| / |∇ CE|``: the norms of the two terms' gradients with respect to the student's parameters;
* ``mode``: the share of the batch predicted as the batch's most common class (1.0: one output for every image).

Three arms, each from the same initialisation and batches: DKD as recorded (α 1, β 8, T 4), DKD+LS as recorded
(α 9, β 72, T 2 on Z-scored logits) and DKD+LS with the first-epoch warm-up factor of the paper-scale recipe
(1/20: mdistiller's ``min(epoch / 20, 1)`` at epoch 1), which the CPU script's ``--set dkd.warmup_epochs=1``
turns into 1. After the steps, ``test mode`` is the same share on 1,000 test images in eval mode.

    python scripts/dkd_ls_collapse.py --seeds 0,1,2 --steps 93

Every number in the output comes from this replay; nothing is typed by hand. The replay does not reproduce a
run's exact batch order (the trainer's loader has its own generator), so it shows the mechanism, not the
particular run.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import click
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier_kd.data import build_datasets  # noqa: E402
from classifier_kd.distiller import Distiller, TeacherInput, load_teacher  # noqa: E402
from classifier_kd.models import create_model  # noqa: E402
from kd_core.runtime.cli import data_root_option  # noqa: E402
from kd_core.runtime.provenance import hardware_summary  # noqa: E402
from kd_core.runtime.seed import seed_everything  # noqa: E402

RUNS = ROOT / "results" / "runs" / "cls_fmnist"


def _arms(dkd_config: dict, ls_config: dict) -> list[tuple[str, dict, float]]:
    """(label, dkd options, warm-up factor at epoch 1) for the three arms."""
    dkd = dict(dkd_config["losses"][0]["options"])
    ls = dict(ls_config["losses"][0]["options"])
    return [("DKD (as run)", dkd, min(1 / dkd["warmup_epochs"], 1.0)),
            ("DKD+LS (as run)", ls, min(1 / ls["warmup_epochs"], 1.0)),
            ("DKD+LS, warm-up factor 1/20", ls, 1 / 20)]


def _grad_norm(value: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))


def _mode_share(logits: torch.Tensor) -> float:
    predicted = logits.argmax(dim=1)
    return float(predicted.bincount().max()) / len(predicted)


def replay(config: dict, options: dict, factor: float, seed: int, steps: int, data_root: str, teacher_ckpt: str) -> dict:
    """The first ``steps`` SGD steps of CE + factor·DKD(options) as ``config`` records them; the per-step trace."""
    train_set, test_set, spec = build_datasets(config["dataset"], data_root, augment=config["augment"],
                                               image_size=config["image_size"], data_fraction=config["data_fraction"],
                                               subset_seed=seed)
    teacher, teacher_spec = load_teacher(None, teacher_ckpt)
    seed_everything(seed)
    student = create_model(config["model"], config["num_classes"], image_size=spec["size"])
    options = {k: v for k, v in options.items() if k != "warmup_epochs"}  # the factor is applied below
    target = Distiller(student, teacher, [("dkd", factor, options)], ce_weight=config["ce_weight"],
                       teacher_input=TeacherInput(spec, teacher_spec))
    target.train()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config["lr"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    loader = DataLoader(train_set, batch_size=config["batch_size"], shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    trace = []
    batches = iter(loader)
    for step in range(1, steps + 1):
        try:
            images, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, labels = next(batches)
        logits, terms = target(images, labels)
        sigma = float(logits.detach().std(dim=1).mean())
        grad_ce = _grad_norm(terms["loss_ce"], params)
        grad_dkd = _grad_norm(terms["loss_dkd"], params)
        trace.append({"step": step, "sigma": sigma, "ce": float(terms["loss_ce"].detach()), "dkd": float(terms["loss_dkd"].detach()),
                      "grad_ce": grad_ce, "grad_dkd": grad_dkd, "mode": _mode_share(logits.detach())})
        optimizer.zero_grad(set_to_none=True)
        (terms["loss_ce"] + terms["loss_dkd"]).backward()
        optimizer.step()
    student.eval()
    count = min(1000, len(test_set))
    test_images = torch.stack([test_set[i][0] for i in range(count)])
    with torch.no_grad():
        test_logits = student(test_images)
    test_labels = torch.tensor([int(test_set[i][1]) for i in range(count)])
    return {"trace": trace, "test_mode": _mode_share(test_logits),
            "test_top1": float((test_logits.argmax(1) == test_labels).float().mean()) * 100,
            "test_sigma": float(test_logits.std(dim=1).mean())}


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.3e}"


@click.command()
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated student seeds.")
@click.option("--steps", type=click.IntRange(min=1), default=93, show_default=True,
              help="Steps per arm (93 = one epoch of the CPU study).")
@click.option("--data-root", default="data", show_default=True, callback=data_root_option,
              help="Fashion-MNIST root; the default may be missing (Debian's copy is read then).")
@click.option("--teacher-ckpt", default=None, help="Default: the recorded runs' teacher checkpoint.")
@click.option("--out", default="results/cls_fmnist_dkd_ls.md", show_default=True)
def main(seeds, steps, data_root, teacher_ckpt, out):
    """Replay the first steps of DKD and DKD+LS and write what happens to the student's logits."""
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        raise click.BadParameter(f"{seeds!r} is not a comma-separated list of integers", param_hint="'--seeds'")
    configs = {}
    for name in ("dkd", "dkd-zscore"):
        path = RUNS / f"resnet32_resnet20_{name}_seed0" / "config.json"
        if not path.is_file():
            raise click.UsageError(f"{path} is missing: run scripts/cls_fmnist.sh first")
        configs[name] = json.loads(path.read_text())
    teacher_ckpt = teacher_ckpt or configs["dkd-zscore"]["teacher_ckpt"]
    if not Path(teacher_ckpt).is_file():
        raise click.BadParameter(f"{teacher_ckpt} does not exist (train it with scripts/cls_fmnist.sh)",
                                 param_hint="'--teacher-ckpt'")
    torch.set_num_threads(1)
    arms = _arms(configs["dkd"], configs["dkd-zscore"])
    shown = sorted({1, 2, 3, 5, 10, 20, 50, steps} & set(range(1, steps + 1)))
    lines = ["# Why DKD + logit standardisation collapses in the CPU classifier study", "",
             f"Generated by `python scripts/dkd_ls_collapse.py --seeds {seeds} --steps {steps}` (a replay of the first "
             "steps of the recorded runs' configurations; see the script's docstring). Hardware: "
             f"{hardware_summary('cpu')}.", ""]
    summary = []
    started = time.monotonic()
    for seed in seed_list:
        lines += [f"## Student seed {seed}", "",
                  "| arm | step | σ (student logits) | CE | weighted DKD | ‖∇DKD‖ / ‖∇CE‖ | mode share |",
                  "|---|---|---|---|---|---|---|"]
        for label, options, factor in arms:
            config = configs["dkd-zscore" if options.get("zscore") else "dkd"]
            click.echo(f"seed {seed}: {label}", err=True)
            result = replay(config, options, factor, seed, steps, data_root, teacher_ckpt)
            for row in result["trace"]:
                if row["step"] in shown:
                    lines.append(f"| {label} | {row['step']} | {_fmt(row['sigma'])} | {_fmt(row['ce'])} | "
                                 f"{_fmt(row['dkd'])} | {_fmt(row['grad_dkd'] / max(row['grad_ce'], 1e-12))} | "
                                 f"{row['mode']:.2f} |")
            first = result["trace"][0]
            summary.append((seed, label, first["grad_dkd"] / max(first["grad_ce"], 1e-12),
                            max(r["ce"] for r in result["trace"]), result))
        lines.append("")
    lines += ["## After the replayed steps (1,000 test images, eval mode)", "",
              "| seed | arm | ‖∇DKD‖/‖∇CE‖ at step 1 | largest batch CE | test top-1 (%) | test σ | test mode share |",
              "|---|---|---|---|---|---|---|"]
    for seed, label, ratio, worst_ce, result in summary:
        lines.append(f"| {seed} | {label} | {_fmt(ratio)} | {_fmt(worst_ce)} | {result['test_top1']:.1f} | "
                     f"{_fmt(result['test_sigma'])} | {result['test_mode']:.2f} |")
    ratios = {label: statistics.median(r for _, lab, r, _, _ in summary if lab == label) for label, _, _ in arms}
    lines += ["", "Median ‖∇DKD‖/‖∇CE‖ at the first step over the seeds: " +
              "; ".join(f"{label} {_fmt(value)}" for label, value in ratios.items()) + ".",
              "", f"Replay wall time: {time.monotonic() - started:.0f} s.", ""]
    Path(out).write_text("\n".join(lines))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
