#!/usr/bin/env python
"""`make demo`: the GAN study's two flagship rows, offline, end to end, in under 10 minutes on a 2-core CPU.

1. Fashion-MNIST: an existing copy (``--data-root`` or Debian's folder), else ``apt-get install
   dataset-fashion-mnist`` when root, else torchvision's download when online; otherwise one line saying how
   to supply the files.
2. The study's two classifiers, committed under ``results/teachers/`` (``gan_kd.study.classifiers``): the
   **teacher** (ResNet-20, seed 0) whose features D distils, and the **FD network** (ResNet-32, seed 1) whose
   features give the classifier FD and the GAN-test accuracy. Used when their SHA-256 matches
   ``teachers.json``; otherwise trained first (about 20 minutes each), once.
3. ``da`` and ``vkd-whiten`` (VkD: orthogonal projector, whitened teacher features) side by side, one thread
   each, in the study's regime (``gan_kd.study.train_command``) at 60 training images, same seed, channels_last, in
   bf16 where the CPU has native bf16 (:data:`ITERATIONS`), logging the label-free and the classifier FD at
   :data:`EVALUATIONS` points; the label-free FD picks the best checkpoint.
4. Both best checkpoints scored by a fast subset of the evaluation suite (:data:`EVALUATION_METRICS`).
5. One picture (``demo.png``): both generators' samples, same latents and labels, above both FD curves; and a
   table of this run beside the study's mean and 95% interval for the same rows, with one generated sentence
   saying what the run does and does not show.

Every stage is skipped when its output exists, so a second ``make demo`` only prints the table. ``--smoke``
(``make demo SMOKE=1``) runs the same chain at tiny sizes (under 2 minutes; the test suite runs it). It trains
two tiny classifiers instead of using the committed ones, so that it exercises the fall-back path the full
demo takes on a checkout without them, and stays independent of those files (the committed-file path is
tested on its own, in tests/test_demo.py).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gan_kd import study  # noqa: E402
from gan_kd.report import EVALUATION_FILE  # noqa: E402
from gan_kd.study import classifiers, families  # noqa: E402
from gan_kd.study.families import DIRECTIONS  # noqa: E402
from kd_core.runtime.datasets import DatasetNotFound  # noqa: E402
from kd_core.runtime.fashion_mnist import load_fashion_mnist, locate_fashion_mnist  # noqa: E402
from kd_core.runtime.io import write_text  # noqa: E402
from kd_core.runtime.metrics import metric_curves  # noqa: E402
from kd_core.runtime.run import RESULT_FILE  # noqa: E402
from kd_core.stats import bootstrap_mean_ci, compare, mean_std  # noqa: E402

BIN = Path(sys.executable).parent
GANS = ("da", "vkd-whiten")
STUDY_RESULTS = ROOT / "results" / "runs" / "gan_fmnist"  # the study's run copies: the table's context columns

# The study's regime (gan_kd.study.rows: width 8, batch 16, EMA 0.99 from iteration 100, label-free and classifier
# FD on 2,000 samples at 4 evaluations) at 60 training images, where the regime search's DA reached its best
# label-free FD near iteration 1000 (6.5 at 400, 2.6 at 1000): the more iterations fit, the more the samples look
# like garments. channels_last always (the same arithmetic, 0.79-0.84x the time of the default layout: section 1 of
# results/benchmarks.md); on a CPU with native bf16 (AVX-512-BF16 / AMX) also bf16 autocast, 0.55x fp32 there, whose
# FD the bf16-vs-fp32 section of results/benchmarks.md found within seed noise of fp32. The demo is never resumed
# on another machine, so it may use what this one has (the study may not: issue 26, item 4).
# Iterations per precision: what fits 10 minutes on 2 cores with a 2-minute install. Measured times: README's
# "make demo" section.
ITERATIONS = {"bf16": 800, "fp32": 400}
FULL = study.Regime(fraction=0.001, width=8, iterations=ITERATIONS["fp32"], eval_every=100, eval_samples=2000,
                    ema_decay=0.99, ema_start=100, batch_size=16, channels_last=True)
EVALUATIONS = 4  # training evaluations (label-free and classifier FD): the curves' points and the best-checkpoint choice
SMOKE = study.Regime(fraction=0.001, width=4, iterations=6, eval_every=3, eval_samples=40, ema_decay=0.99,
                     ema_start=3, batch_size=10, channels_last=True)
# A fast subset of the suite (gan_kd.metrics): FD in both spaces, GAN-test accuracy, precision/recall,
# density/coverage, memorisation; GAN-train accuracy (~100 s more per run, more than the budget has) is left
# out. 2,000 samples: the FDs differ from their 10,000-sample values by under 2% here (a 300-iteration DA: 17.96
# vs 18.00 classifier FD, 7.45 vs 7.34 label-free); recall and coverage do depend on the count.
EVALUATION_METRICS = "fd,cls,fd_vgg,prc,dc,memo"
EVALUATION_SAMPLES = {"full": 2000, "smoke": 60}
SMOKE_TRAINING = ("--epochs", "1", "--max-steps-per-epoch", "4", "--batch-size", "16", "--lr", "0.05", "--milestones", "1")
# The table's rows: result key and format (the label comes from evaluation.json, the better direction from
# gan_kd.study.families, the study report's list).
TABLE_ROWS = (("fd_vgg", "{:.2f}"), ("fd", "{:.2f}"), ("cls_acc", "{:.1%}"), ("precision", "{:.3f}"), ("recall", "{:.3f}"),
              ("density", "{:.3f}"), ("coverage", "{:.3f}"), ("memorised", "{:.1%}"))
ROLES = {"teacher": "teacher (D distils it)", "fd_net": "FD network (classifier FD, GAN-test accuracy)"}
PICTURE = "demo.png"
TABLE_FILE = "table.md"


def say(text: str) -> None:
    click.echo(f"[demo {time.strftime('%H:%M:%S')}] {text}", err=False)


def fail(text: str) -> None:
    click.echo(f"demo: {text}", err=True)
    sys.exit(2)


# --------------------------------------------------------------------------------------------------- data


def fashion_mnist_found(root: Path) -> str | None:
    try:
        paths = [locate_fashion_mnist(root, train)[0] for train in (True, False)]
    except DatasetNotFound:
        return None
    return str(paths[0].parent)


def ensure_fashion_mnist(root: Path) -> None:
    where = fashion_mnist_found(root)
    if where is None and os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing Debian's dataset-fashion-mnist")
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if subprocess.call(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], **quiet):
            subprocess.call(["apt-get", "update", "-qq"], **quiet)
            subprocess.call(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], **quiet)
        where = fashion_mnist_found(root)
    if where is None:
        say(f"downloading Fashion-MNIST into {root} (torchvision)")
        try:
            for train in (True, False):
                load_fashion_mnist(root, train, download=True)
        except (DatasetNotFound, OSError):
            fail(f"Fashion-MNIST is not available: put the four original .gz files in {root}/FashionMNIST/raw/, "
                 f"or install Debian's dataset-fashion-mnist (as root), or run online")
        where = fashion_mnist_found(root)
    say(f"Fashion-MNIST: {where}")


# --------------------------------------------------------------------------------------------------- runs


def run_parallel(jobs: dict[str, list[str]], logs: Path) -> None:
    """Run the commands side by side (one thread each), relaying their progress lines with a prefix."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    processes, relays = {}, []
    for name, command in jobs.items():
        log = open(logs / f"{name}.log", "a")
        log.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        processes[name] = process

        def relay(process=process, log=log, name=name):
            for line in process.stdout:
                log.write(line)
                log.flush()
                text = line.rstrip()
                if text and ("it " in text or "epoch" in text or "ERROR" in text or "Error" in text
                             or "iteration" in text or "done" in text):
                    if " INFO " in text:  # "<time> INFO gan_kd.train: iteration 100: ..." -> "iteration 100: ..."
                        text = text.split(" INFO ", 1)[1].split(": ", 1)[-1]
                    click.echo(f"  [{name}] {text}")
            log.close()

        thread = threading.Thread(target=relay, daemon=True)
        thread.start()
        relays.append(thread)
    codes = {name: process.wait() for name, process in processes.items()}
    for thread in relays:
        thread.join()
    failed = {name: code for name, code in codes.items() if code}
    if failed:
        fail("; ".join(f"{name} exited with {code} (see {logs / (name + '.log')})" for name, code in failed.items()))


# --------------------------------------------------------------------------------------------------- stages


def ensure_classifiers(data_root: Path, out: Path, smoke: bool) -> study.Assets:
    """The committed teacher and FD network (the full demo), or two tiny ones trained into ``out`` (smoke)."""
    if smoke:
        return classifiers.ensure_classifiers(str(data_root), committed=None, runs=out / "classifiers",
                                              classifier_kd=str(BIN / "classifier-kd"), training=SMOKE_TRAINING, log=say)
    return classifiers.ensure_classifiers(str(data_root), committed=ROOT / classifiers.COMMITTED,
                                          runs=ROOT / classifiers.RUNS, classifier_kd=str(BIN / "classifier-kd"), log=say)


def describe_classifier(classifier: classifiers.Classifier, path: Path) -> str:
    """``resnet20 (seed 0), test top-1 89.97%: results/teachers/fmnist_resnet20.pt (committed, SHA-256 checked)``."""
    committed = classifiers.committed_record(path.parent).get(path.name)
    if committed:
        accuracy, source = committed.get("test_top1"), "committed, SHA-256 as in teachers.json"
    else:
        result = path.parents[1] / "result.json"
        accuracy, source = json.loads(result.read_text()).get("best_top1"), "trained here"
    top1 = f"{accuracy:.2f}%" if accuracy is not None else "?"
    return f"{classifier.model} (seed {classifier.seed}), test top-1 {top1}: {shown(path)} ({source})"


def evaluate_command(run: Path, assets: study.Assets, samples: int) -> list[str]:
    return [str(BIN / "gan-kd"), "evaluate", str(run), "--checkpoint", "best", "--metrics", EVALUATION_METRICS,
            "--fd-features", f"ckpt:{assets.fd_net}", "--data-root", assets.data_root, "--num-samples", str(samples),
            "--device", "cpu"]


def write_picture(gans: dict[str, Path], path: Path) -> Path:
    """Both best EMA generators' samples (same latents, one row per class) above their FD curves."""
    from torchvision.datasets import FashionMNIST
    from torchvision.utils import make_grid

    from gan_kd.plots import samples_and_curves
    from gan_kd.snapshot import load_ema_generator
    from gan_kd.grids import grid_labels, grid_samples

    grids, titles, marks, panels = {}, {}, {}, {}
    for row, run in gans.items():
        generator, config, iteration = load_ema_generator(run, "best")
        images = grid_samples(generator, grid_labels(generator.num_classes, 10, 8), config["dim_z"], seed=0)
        grid = make_grid(images, nrow=8, padding=2, normalize=True, value_range=(-1, 1), pad_value=1.0)
        grids[row] = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
        titles[row] = f"{study.ROWS[row][0]}\nbest EMA generator: iteration {iteration}"
        marks[row] = iteration
        names = json.loads((run / RESULT_FILE).read_text())["evaluation"]["labels"]
        curves = metric_curves(run)
        for key, space in (("fd_vgg", "label-free"), ("fd", "classifier")):
            panels.setdefault(f"{space} {names[key]} ↓", {})[row] = curves.get(f"eval/{key}", [])
    title = (f"make demo: {training_images(run)} Fashion-MNIST training images, seed {config['seed']}; "
             f"both generators get the same latents and labels")
    return samples_and_curves(grids, panels, path, titles=titles, row_labels=FashionMNIST.classes, marks=marks,
                              ylabel=f"FD of {config['eval_samples']:,} samples (★: the samples above)", title=title)


# --------------------------------------------------------------------------------------------------- table


def study_runs(results: Path, regime: study.Regime) -> tuple[dict[str, list[dict]], str, str]:
    """The study's finished copies of :data:`GANS` at one regime (the demo's fraction and width if the study has
    it, else its largest), by row; that regime in a few words; and a longer description of the copies."""
    runs = [r for r in study.load_runs(results) if r["row"] in GANS] if results.is_dir() else []
    if not runs:
        return {row: [] for row in GANS}, "no regime", f"no finished copies in {shown(results)}"
    groups: dict[study.Regime, list[dict]] = {}
    for run in runs:
        groups.setdefault(study.regime_of(run["config"]), []).append(run)
    chosen = max(groups, key=lambda g: ((g.fraction, g.width) == (regime.fraction, regime.width), len(groups[g])))
    members, evaluation = groups[chosen], groups[chosen][0]["result"]
    words = f"{study.len_subset(members[0]['config'])} training images and {chosen.iterations} iterations"
    description = (f"{words} (fraction {chosen.fraction:g}, width {chosen.width}, batch {chosen.batch_size}; "
                   f"{shown(results)}: " + ", ".join(f"{sum(r['row'] == row for r in members)} seeds of {row}" for row in GANS)
                   + f", best checkpoints scored on {evaluation['num_samples']:,} samples × {evaluation.get('repeats', 1)})")
    return {row: [r for r in members if r["row"] == row] for row in GANS}, words, description


def study_cell(values: list[float], form: str) -> str:
    """``mean [low, high]`` (95% bootstrap interval of the mean), one value with its seed count, or —."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{form.format(values[0])} (1 seed)"
    low, high = bootstrap_mean_ci(values)
    return f"{form.format(mean_std(values)[0])} [{form.format(low)}, {form.format(high)}]"


def table_lines(results: dict[str, dict], context: dict[str, list[dict]]) -> list[str]:
    """The markdown table: one row per metric, this run's two values, then the study's for the same rows."""
    labels = next(iter(results.values()))["labels"]
    header = ["metric", *GANS, *(f"study {row}: mean [95% CI]" for row in GANS)]
    rows = []
    for key, form in TABLE_ROWS:
        rows.append([f"{labels.get(key, key)} {DIRECTIONS[key]}",
                     *(form.format(results[row]["metrics"][key]["mean"]) if key in results[row]["metrics"] else "—"
                       for row in GANS),
                     *(study_cell(families.metric_values(context[row], key), form) for row in GANS)])
    rows.append(["best checkpoint (iteration)", *(str(results[row]["iteration"]) for row in GANS),
                 *(study_cell([r["result"]["iteration"] for r in context[row]], "{:.0f}") for row in GANS)])
    widths = [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    return [line(header), "|" + "|".join("-" * (width + 2) for width in widths) + "|", *map(line, rows)]


def reading(results: dict[str, dict], context: dict[str, list[dict]], iterations: int, images: int,
            regime: str) -> str:
    """One sentence, from the numbers: what this run shows and what it does not (``regime``: the study's, in words)."""
    da, vkd = (results[row]["metrics"] for row in GANS)
    difference, label_free = vkd["fd"]["mean"] - da["fd"]["mean"], vkd["fd_vgg"]["mean"] - da["fd_vgg"]["mean"]
    here = (f"This demo shows both rows training end to end and their samples after {iterations} iterations on "
            f"{images} images, one seed each; it does not show which row is better: vkd-whiten − da is "
            f"{difference:+.2f} classifier FD here ({label_free:+.2f} label-free)")
    da_fd, vkd_fd = (families.metric_values(context[row], "fd") for row in GANS)
    if len(da_fd) < 2 or len(vkd_fd) < 2:
        return f"{here}, and the study has too few seeds of these rows to give a seed spread to compare it with."
    c = compare(vkd_fd, da_fd)
    inside = abs(difference) <= c["spread"]
    return (f"{here}, {'inside' if inside else 'larger than'} the study's seed-to-seed spread of {c['spread']:.2f} "
            f"(the larger std of the two rows over {c['n'][1]} and {c['n'][0]} seeds, at {regime})"
            + ("" if inside else ", but one seed at another regime is no test of it")
            + f"; over the study's seeds the difference is {c['difference']:+.2f} (95% CI "
            f"[{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]: {c['verdict']}).")


def training_images(run: Path) -> int:
    """How many training images the run drew (its subset_indices.npy; the fixture's data set is smaller)."""
    import numpy as np

    return len(np.load(run / "subset_indices.npy"))


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------- main


def demo_regime(smoke: bool, fraction: float | None, iterations: int | None, precision: str) -> study.Regime:
    """:data:`SMOKE` or :data:`FULL` with the precision (``auto``: bf16 where the CPU has native bf16) and the
    iterations of that precision (:data:`ITERATIONS`) unless given; the full demo evaluates :data:`EVALUATIONS`
    times during training."""
    from kd_core.runtime.precision import cpu_has_native_bf16

    if precision == "auto":
        precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if smoke:
        return replace(SMOKE, precision=precision, **({"fraction": fraction} if fraction else {}),
                       **({"iterations": iterations} if iterations else {}))
    iterations = iterations or ITERATIONS[precision]
    return replace(FULL, precision=precision, iterations=iterations, fraction=fraction or FULL.fraction,
                   eval_every=max(1, iterations // EVALUATIONS))


@click.command()
@click.option("--smoke", is_flag=True, help="The same chain at tiny sizes (< 2 minutes), with two tiny classifiers "
                                            "trained instead of the committed ones.")
@click.option("--out", default=None, help="Demo folder [default: runs/demo, or runs/demo_smoke with --smoke].")
@click.option("--data-root", default="data", show_default=True, help="Where Fashion-MNIST is (or goes).")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help=f"Fraction of the training set for the GANs [default: {FULL.fraction:g}, i.e. 60 images].")
@click.option("--iterations", type=click.IntRange(1), default=None,
              help=f"GAN iterations [default: {ITERATIONS['bf16']} with bf16, {ITERATIONS['fp32']} in fp32: what fits 10 "
                   f"minutes on 2 cores; the study's DA is best near 1000 at 60 images]. Another length is another "
                   f"run (its own folder).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 autocast where the CPU has native bf16 (AVX-512-BF16 / AMX), else fp32.")
def main(smoke, out, data_root, fraction, iterations, precision):
    """da and vkd-whiten side by side in the study's regime, with the committed classifiers: a picture and a table."""
    started, stages = time.monotonic(), {}
    mode = "smoke" if smoke else "full"
    regime = demo_regime(smoke, fraction, iterations, precision)
    out = Path(out or ("runs/demo_smoke" if smoke else "runs/demo"))
    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    # the subprocesses run this checkout's code, whichever checkout the environment was installed from
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    ensure_fashion_mnist(data_root)

    clock = time.monotonic()
    assets = ensure_classifiers(data_root, out, smoke)
    for classifier in classifiers.CLASSIFIERS:
        say(f"{ROLES[classifier.role]}: {describe_classifier(classifier, Path(getattr(assets, classifier.role)))}")
    stages["classifiers"] = time.monotonic() - clock

    clock = time.monotonic()
    gans = {row: out / study.run_name(row, regime, 0) for row in GANS}
    todo = {row: study.train_command(row, regime, 0, path, assets, gan_kd=str(BIN / "gan-kd"))
            for row, path in gans.items() if not (path / RESULT_FILE).is_file()}
    if todo:
        say(f"training the GANs side by side: {', '.join(todo)} ({regime.iterations} iterations, width {regime.width}, "
            f"batch {regime.batch_size}, fraction {regime.fraction:g} of Fashion-MNIST's training images; "
            f"{regime.precision}{', channels_last' if regime.channels_last else ''})")
        run_parallel(todo, out)
    stages["GANs"] = time.monotonic() - clock

    clock = time.monotonic()
    samples = EVALUATION_SAMPLES[mode]
    todo = {f"eval_{row}": evaluate_command(path, assets, samples) for row, path in gans.items()
            if not (path / EVALUATION_FILE).is_file()}
    if todo:
        say(f"evaluating the best checkpoints ({EVALUATION_METRICS}; {samples:,} samples each)")
        run_parallel(todo, out)
    stages["evaluation"] = time.monotonic() - clock

    clock = time.monotonic()
    from gan_kd.plots import PlotsUnavailable

    picture = out / PICTURE
    if not picture.is_file():
        try:
            write_picture(gans, picture)
        except PlotsUnavailable as error:
            picture = None
            say(str(error))
    stages["picture"] = time.monotonic() - clock

    results = {row: json.loads((path / EVALUATION_FILE).read_text()) for row, path in gans.items()}
    context, words, description = study_runs(STUDY_RESULTS, regime)
    images = training_images(gans[GANS[0]])
    lines = [f"This run: {images} training images, {regime.iterations} iterations in {regime.precision}, seed 0, best checkpoints "
             f"scored on {samples:,} samples. The study's columns: {description}.",
             "", *table_lines(results, context), "", reading(results, context, regime.iterations, images, words)]
    write_text(out / TABLE_FILE, "\n".join(lines) + "\n")
    click.echo("")
    click.echo("\n".join(lines))
    click.echo("")
    say(f"outputs in {out}/:")
    if picture:
        click.echo(f"  {picture}  <- open this first: the samples of both rows (same latents and labels) and their FD curves")
    click.echo(f"  {out / TABLE_FILE}  the table and sentence above")
    for row, path in gans.items():
        click.echo(f"  {path}/  the {row} run: checkpoints, metrics.jsonl, evaluation.json")
    click.echo(f"  {out}/*.log  the commands and their output; TensorBoard: tensorboard --logdir {out}")
    say("FD is the Fréchet distance in a classifier's or a random VGG-16's features, not FID; the study is "
        "results/gan_fmnist.md")
    say(f"finished in {time.monotonic() - started:.0f} s (this call: "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items()) + ")")


if __name__ == "__main__":
    main()
