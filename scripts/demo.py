#!/usr/bin/env python
"""`make demo`: the project's main job, offline, end to end, in a few minutes on a CPU.

1. Fashion-MNIST: an existing copy (``--data-root`` or Debian's folder), else ``apt-get install
   dataset-fashion-mnist`` when root, else torchvision's download when online; otherwise one line saying how
   to supply the files.
2. Two classifiers, trained once and cached: the **teacher** (ResNet-20, seed 0) whose features D distils,
   and the **evaluator** (MobileNetV2, seed 1) whose features give the Fréchet distance (FD, not FID: no
   Inception weights offline). The teacher is never the evaluator.
3. Two GANs on 10% of Fashion-MNIST, same seed and length, side by side (one thread each): the ``da``
   baseline and ``vkd-whiten`` (VkD: orthogonal projector, whitened teacher features).
4. Evaluation of each best checkpoint, the sample grids, an FD-vs-iteration plot, and a two-line table.

Every stage is skipped when its output exists, so a second ``make demo`` only prints the table. ``--smoke``
(``make demo SMOKE=1``) runs the same chain at tiny sizes (under 2 minutes; the test suite runs it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gan_kd.report import EVALUATION_FILE  # noqa: E402
from kd_core.runtime.metrics import metric_curves  # noqa: E402
from kd_core.runtime.run import RESULT_FILE  # noqa: E402
from kd_core.runtime.datasets import DatasetNotFound, load_fashion_mnist, locate_fashion_mnist  # noqa: E402

BIN = Path(sys.executable).parent
# stage sizes: full demo (<= 10 minutes with the install on a 2-core CPU) and smoke (< 2 minutes)
SIZES = {
    "full": dict(cls_steps=150, cls_batch=64, gan_iterations=80, eval_every=20, eval_samples=1000, width=8,
                 batch=32, final_samples=5000, probe=500),
    "smoke": dict(cls_steps=4, cls_batch=16, gan_iterations=6, eval_every=3, eval_samples=40, width=4,
                  batch=10, final_samples=60, probe=10),
}
CLASSIFIERS = {"teacher": ("resnet20", 0), "evaluator": ("mobilenet_v2", 1)}
GANS = ("da", "vkd-whiten")


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
                    click.echo(f"  [{name}] {text.split(' INFO ')[-1]}")
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


def classifier_command(role: str, out: Path, data_root: Path, sizes: dict) -> list[str]:
    model, seed = CLASSIFIERS[role]
    return [str(BIN / "classifier-kd"), "train-teacher", "--model", model, "--dataset", "fashion_mnist",
            "--data-root", str(data_root), "--epochs", "1", "--max-steps-per-epoch", str(sizes["cls_steps"]),
            "--batch-size", str(sizes["cls_batch"]), "--lr", "0.05", "--milestones", "1", "--workers", "0",
            "--device", "cpu", "--seed", str(seed), "--out", str(out)]


def gan_command(preset: str, out: Path, data_root: Path, fraction: float, teacher: Path, evaluator: Path,
                sizes: dict) -> list[str]:
    command = [str(BIN / "gan-kd"), "train", "--out", str(out), "--preset", preset, "--dataset", "fashion_mnist",
               "--data-root", str(data_root), "--data-fraction", str(fraction),
               "--iterations", str(sizes["gan_iterations"]), "--batch-size", str(sizes["batch"]),
               "--g-ch", str(sizes["width"]), "--d-ch", str(sizes["width"]), "--ema-decay", "0.99",
               "--ema-start", str(sizes["eval_every"]), "--eval-every", str(sizes["eval_every"]),
               "--eval-samples", str(sizes["eval_samples"]), "--metrics", "fd", "--fd-features", f"ckpt:{evaluator}",
               "--overfit-probe", str(sizes["probe"]), "--sample-every", str(sizes["gan_iterations"] // 2),
               "--checkpoint-every", str(sizes["eval_every"]), "--log-every", str(max(1, sizes["eval_every"] // 2)),
               "--seed", "0", "--threads", "1", "--device", "cpu"]
    if preset != "da":
        command += ["--teacher", f"ckpt:{teacher}"]
    return command


def evaluate_command(out: Path, evaluator: Path, sizes: dict) -> list[str]:
    return [str(BIN / "gan-kd"), "evaluate", str(out), "--checkpoint", "best", "--metrics", "fd,cls",
            "--fd-features", f"ckpt:{evaluator}", "--num-samples", str(sizes["final_samples"]), "--device", "cpu"]


@click.command()
@click.option("--smoke", is_flag=True, help="The same chain at tiny sizes (< 2 minutes).")
@click.option("--out", default=None, help="Demo folder [default: runs/demo, or runs/demo_smoke with --smoke].")
@click.option("--data-root", default="data", show_default=True, help="Where Fashion-MNIST is (or goes).")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True, help="Fraction of the training set for the GANs.")
def main(smoke, out, data_root, fraction):
    """Teacher + evaluator classifiers, then da and vkd-whiten GANs on 10% of Fashion-MNIST, FD and plots."""
    started = time.monotonic()
    sizes = SIZES["smoke" if smoke else "full"]
    out = Path(out or ("runs/demo_smoke" if smoke else "runs/demo"))
    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ensure_fashion_mnist(data_root)

    classifiers = {role: out / role for role in CLASSIFIERS}
    todo = {role: classifier_command(role, path, data_root, sizes) for role, path in classifiers.items()
            if not (path / "result.json").is_file()}
    if todo:
        say(f"training {' and '.join(f'the {r} ({CLASSIFIERS[r][0]})' for r in todo)}")
        run_parallel(todo, out)
    for role, path in classifiers.items():
        record = json.loads((path / "result.json").read_text())
        say(f"{role}: {CLASSIFIERS[role][0]}, test top-1 {record.get('best_top1', float('nan')):.2f}% ({path})")
    teacher, evaluator = (classifiers[r] / "checkpoints" / "best.pt" for r in ("teacher", "evaluator"))

    gans = {preset: out / f"gan_{preset}" for preset in GANS}
    todo = {preset: gan_command(preset, path, data_root, fraction, teacher, evaluator, sizes)
            for preset, path in gans.items() if not (path / RESULT_FILE).is_file()}
    if todo:
        say(f"training the GANs side by side: {', '.join(todo)} ({sizes['gan_iterations']} iterations, width "
            f"{sizes['width']}, {fraction:g} of Fashion-MNIST)")
        run_parallel(todo, out)
    todo = {f"eval_{preset}": evaluate_command(path, evaluator, sizes) for preset, path in gans.items()
            if not (path / EVALUATION_FILE).is_file()}
    if todo:
        say(f"evaluating the best checkpoints ({sizes['final_samples']} samples each)")
        run_parallel(todo, out)

    from gan_kd.plots import PlotsUnavailable, curve_plot

    plot = out / "fd_vs_iteration.png"
    try:
        curve_plot({preset: [metric_curves(path).get("eval/fd", [])] for preset, path in gans.items()},
                   plot, ylabel=f"FD ({CLASSIFIERS['evaluator'][0]} features)", title="EMA generator during training")
    except PlotsUnavailable as error:
        plot = None
        say(str(error))

    results = {preset: json.loads((path / EVALUATION_FILE).read_text()) for preset, path in gans.items()}
    click.echo("")
    click.echo(f"{'run':<12} {'FD ↓ (best checkpoint)':>24} {'GAN-test acc ↑':>15} {'best at':>9}   samples")
    for preset, path in gans.items():
        metrics = results[preset]["metrics"]
        accuracy = f"{metrics['cls_acc']['mean']:.1%}" if "cls_acc" in metrics else "—"  # demos evaluated before cls
        click.echo(f"{preset:<12} {metrics['fd']['mean']:>24.2f} {accuracy:>15} {results[preset]['iteration']:>9}   "
                   f"{path / 'samples' / 'final.png'}")
    reference = next((r["reference_scores"] for r in results.values() if "reference_scores" in r), None)
    if reference:
        click.echo(f"(the evaluator on the real test set: accuracy {reference['cls_acc']:.1%}; GAN-test accuracy is "
                   f"the share of samples it assigns to the class they were generated for)")
    click.echo("")
    say(f"FD-vs-iteration plot: {plot}" if plot else "no plot (matplotlib missing)")
    say(f"runs, logs and checkpoints: {out}/; TensorBoard: tensorboard --logdir {out}")
    say(f"FD is the Fréchet distance on {CLASSIFIERS['evaluator'][0]} features, not FID; one seed, "
        f"{sizes['gan_iterations']} iterations: a demonstration, not a result (see results/gan_fmnist.md)")
    say(f"finished in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
