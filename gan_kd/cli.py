"""``gan-kd``: train a BigGAN with (or without) teacher distillation, evaluate it, sample from it.

Every problem with the input (a bad value, missing data, an unreadable file, a run directory made with other
options) is reported in one line (``Error: ...``) with exit code 2 before anything is written: the group is a
:class:`kd_core.runtime.cli.OneLineErrorGroup`, as ``classifier-kd``'s. The ``--projector`` / ``--normalizer``
choices are the ``kd_core`` registry's names, and ``--preset`` expands through :func:`gan_kd.presets.expand_preset`,
as ``TrainConfig.from_preset`` does.
"""
from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

import kd_core
from gan_kd import data as gan_data
from gan_kd.diffaug import AUGMENTATIONS
from gan_kd.snapshot import is_generator_file
from gan_kd.presets import DEFAULT_PRESET, PRESET_HELP, PRESETS, expand_preset
from kd_core.projectors import ORTHOGONAL_MAPS
from kd_core.runtime.datasets import DEFAULT_DATA_ROOT
from kd_core.runtime.cli import (OneLineErrorGroup, RunDiverged, checked_data_root, checked_output, divergence_option,
                                 fraction_option, one_line, usage_error)

REGISTERED = kd_core.available()  # {"projectors": [...], "normalizers": [...], "losses": [...]}


def _policy(ctx, param, value):
    from gan_kd.diffaug import parse_policy

    try:
        parse_policy(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    return value


def _metrics(ctx, param, value):
    from gan_kd.metrics.evaluator import parse_metrics

    try:
        return parse_metrics(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None


def _label_free(ctx, param, value):
    """A label-free spec must name a known space; a file it names must exist (whether it fits is checked when it is read)."""
    from gan_kd.metrics.features import label_free_file

    try:
        path = label_free_file(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    if path is not None and not path.is_file():
        raise click.BadParameter(f"{value!r}: label-free VGG-16 weights file {path} does not exist", ctx=ctx, param=param)
    return value


METRICS_HELP = ("Comma-separated from fid, isc, kid (Inception); fd, cls, icfd (the --fd-features classifier: FD, "
                "GAN-test accuracy and IS, intra-class FD); fd_vgg, kid_vgg, prc, dc, icfd_vgg, memo (the label-free "
                "space: FD, KID, precision/recall, density/coverage, intra-class FD, memorisation); gan_train "
                "(GAN-train accuracy), colour (channel spread); suite = every label-free and pixel metric. README "
                "explains each with its paper and ideal value.")
LABEL_FREE_HELP = ("Label-free feature space: vgg16-half-random[:SEED] (a random VGG-16 at half width; offline), "
                   "vgg16-random[:SEED] (full width), vgg16-imagenet (downloads once) or vgg16:PATH.")


def train_options(options: dict, given: set[str]) -> dict:
    """The ``TrainConfig`` options of a ``train`` command: its option values, with the preset expanded over them.

    ``given``: the options set on the command line; they are the overrides of
    :func:`gan_kd.presets.expand_preset`, so an explicit option wins over the preset and the rest keep their
    defaults (the ``TrainConfig`` defaults). Raises ``ValueError`` where the preset refuses an option.
    """
    overrides = {key: options[key] for key in given if key != "preset"}
    return {**options, **expand_preset(options["preset"], overrides)}


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main():
    """Data-limited BigGAN + DiffAugment with teacher -> discriminator distillation (VkD)."""


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (re-run the same command to resume).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET, show_default=True, help=PRESET_HELP)
@click.option("--dataset", type=click.Choice(gan_data.DATASETS), default="cifar10", show_default=True, help="Training data.")
@click.option("--data-root", default=DEFAULT_DATA_ROOT, show_default=True, type=click.Path(), help="Directory holding the datasets (torchvision layout); the default may be missing: Fashion-MNIST is then read from Debian's /usr/share/datasets/fashion-mnist. Any other root must exist (or --download).")
@click.option("--download/--no-download", default=False, show_default=True, help="Download the dataset if missing (needs internet).")
@click.option("--data-fraction", type=float, default=1.0, show_default=True, callback=fraction_option, help="Fraction of the training split, in (0, 1]: 0.1, 0.2 or 1.0 in the papers.")
@click.option("--subset-seed", type=int, default=0, show_default=True, help="Seed of the subset draw (0 = DiffAugment's and KD-DLGAN's subsets).")
@click.option("--iterations", type=int, default=1000, show_default=True, help="Training length; one iteration = D steps + 1 G step. Paper lengths: see README.")
@click.option("--batch-size", type=int, default=50, show_default=True, help="Global batch size of each D and G step.")
@click.option("--d-steps", type=int, default=4, show_default=True, help="D steps per G step, each with its own real batch.")
@click.option("--lr-g", type=float, default=2e-4, show_default=True, help="Adam learning rate of G.")
@click.option("--lr-d", type=float, default=2e-4, show_default=True, help="Adam learning rate of D (and of the projector).")
@click.option("--g-ch", type=int, default=64, show_default=True, help="G width multiplier (4*g_ch channels).")
@click.option("--d-ch", type=int, default=64, show_default=True, help="D width multiplier (4*d_ch channels = distilled feature size).")
@click.option("--spectral-norm", type=click.Choice(["own", "torch"]), default="own", show_default=True, help="Spectral norm implementation.")
@click.option("--diffaug", default="translation,cutout", show_default=True, callback=_policy, help=f"DiffAugment policy, comma-separated from {', '.join(AUGMENTATIONS)}.")
@click.option("--ema-decay", type=float, default=0.9999, show_default=True, help="EMA decay of the evaluated generator.")
@click.option("--ema-start", type=int, default=1000, show_default=True, help="Iterations before which the EMA copies G.")
@click.option("--lecam", type=float, default=0.0, show_default=True, help="LeCam regulariser weight (KD-DLGAN used 0.3).")
@click.option("--teacher", default=None, help="Frozen teacher: clip:MODEL (open_clip, e.g. clip:ViT-B-32) or ckpt:PATH (classifier_kd checkpoint).")
@click.option("--teacher-pretrained", default=None, help="open_clip pretrained tag for clip: teachers, e.g. openai (downloads once).")
@click.option("--teacher-weights", default=None, type=click.Path(), help="Local open_clip checkpoint for clip: teachers (no network).")
@click.option("--teacher-arch", default=None, help="Architecture of a ckpt: teacher file that does not record it (RepDistiller layout).")
@click.option("--teacher-preprocessing", type=click.Choice(["kd-dlgan", "native"]), default="kd-dlgan", show_default=True, help="kd-dlgan: nearest upsampling of the [-1,1] D inputs; native: the teacher's own resize and mean/std.")
@click.option("--teacher-bf16/--no-teacher-bf16", default=False, show_default=True, help="Run the teacher under bfloat16 autocast.")
@click.option("--kd-weight", type=float, default=1.0, show_default=True, help="Weight of the distillation term in the D loss.")
@click.option("--distill-loss", type=click.Choice(kd_core.registry.feature_losses()), default="vkd", show_default=True, help="The kd_core feature loss on D's feature (set by the preset): vkd takes --projector/--normalizer/--distance; spkd, pkd compare within-batch similarities; kd-dlgan, label-distillation train heads of their own on D against the teacher's class embeddings (CLIP prompts or a classifier teacher's head).")
@click.option("--projector", type=click.Choice(REGISTERED["projectors"]), default="orthogonal", show_default=True, help="Projector on D's features (set by the preset).")
@click.option("--orthogonal-map", type=click.Choice(list(ORTHOGONAL_MAPS)), default=ORTHOGONAL_MAPS[0], show_default=True, help="Parametrisation of the orthogonal projector: qr (exact, cheap), matrix_exp (the paper's eq. 5), cayley, householder.")
@click.option("--normalizer", type=click.Choice(REGISTERED["normalizers"]), default="whiten", show_default=True, help="Teacher-feature normaliser (set by the preset).")
@click.option("--whiten-group-size", type=int, default=None, help="Group size for whitening (default: min(dim, batch // 2)).")
@click.option("--distance", type=click.Choice(["mse", "smooth_l1"]), default="mse", show_default=True, help="Distance between projected and teacher features (paper: L2).")
@click.option("--eval-every", type=int, default=0, show_default=True, help="Evaluate the EMA generator every N iterations and keep the best (0 = never).")
@click.option("--eval-samples", type=int, default=10_000, show_default=True, help="Generated samples per evaluation (reference: 10,000 vs the test split).")
@click.option("--metrics", default="fid", show_default=True, callback=_metrics, help=METRICS_HELP + " The best checkpoint follows fid, else fd_vgg, else fd.")
@click.option("--label-free-features", "label_free", default="vgg16-half-random", show_default=True, callback=_label_free, help=LABEL_FREE_HELP)
@click.option("--inception-weights", default=None, type=click.Path(), help="Local torch-fidelity Inception weights file (offline).")
@click.option("--fd-features", default=None, help="ckpt:PATH of a classifier whose features give the domain Fréchet distance 'fd'.")
@click.option("--fd-arch", default=None, help="Architecture of an --fd-features file that does not record it.")
@click.option("--overfit-probe", type=int, default=500, show_default=True, help="At each evaluation, log D's mean logit on this many training reals and as many held-out (test) reals, their gap and ADA's r_t (probe/* in metrics.jsonl; 0 = off).")
@click.option("--sample-every", type=int, default=500, show_default=True, help="Save a sample grid every N iterations (0 = only at the end).")
@click.option("--checkpoint-every", type=int, default=500, show_default=True, help="Save checkpoints/last.pt every N iterations (and at the end).")
@click.option("--log-every", type=int, default=50, show_default=True, help="Progress and a metrics.jsonl row every N iterations.")
@click.option("--skip-nonfinite", type=int, default=0, show_default=True, help="Skip up to N D/G steps whose loss is NaN/Inf (their optimiser step is not taken); one more stops the run (exit 1).")
@divergence_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights, noise and data order.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True, help="Autocast precision: bf16 (CPU or CUDA; the teacher too), fp16 (CUDA, with grad scaling), fp32; auto = bf16/fp16 on CUDA, fp32 on the CPU.")
@click.option("--channels-last/--no-channels-last", default=False, show_default=True, help="NHWC memory format for G, D, the EMA G, the teacher and the batches (faster convolutions on many CPUs and GPUs).")
@click.option("--compile/--no-compile", "compile", default=False, show_default=True, help="torch.compile (inductor) G, D and the teacher: faster steps after a one-time compilation (minutes on a CPU, seconds with a warm cache), reported apart from the iteration time; needs a C++ compiler. Checkpoints hold the plain modules' weights.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads for this process.")
@click.option("--workers", "num_workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.pass_context
def train(ctx, out, **options):
    """Train a BigGAN on (a fraction of) a dataset, optionally distilling a frozen teacher into D.

    \b
    Example (offline, Fashion-MNIST 10%, classifier teacher, whitened VkD):
      gan-kd train --out runs/fm10 --dataset fashion_mnist --data-fraction 0.1 \\
          --preset vkd-whiten --teacher ckpt:runs/teachers/fmnist/checkpoints/best.pt \\
          --iterations 2000 --eval-every 500 --metrics fd --fd-features ckpt:runs/teachers/fmnist/checkpoints/best.pt
    """
    from gan_kd.config import TrainConfig
    from gan_kd.train import Trainer
    from kd_core.runtime.distributed import cleanup_distributed
    from kd_core.runtime.finite import TrainingDiverged, divergence_message
    from kd_core.runtime.signals import RunInterrupted

    given = {key for key in options if ctx.get_parameter_source(key) == click.core.ParameterSource.COMMANDLINE}
    try:  # a teacher-less preset refuses the options that only a teacher uses
        options = train_options(options, given)
    except ValueError as error:
        raise usage_error(error) from None
    checked_data_root(options["data_root"], options["download"])  # only the default "data" may be missing
    checked_output(out, "run directory", directory=True)
    try:
        config = TrainConfig(**options)
        trainer = Trainer(config, out)
    except (ValueError, FileNotFoundError, OSError) as error:  # nothing has been written yet
        cleanup_distributed()
        raise usage_error(error) from None
    try:
        trainer.run()
    except TrainingDiverged as error:  # not bad input: exit code 1, one line
        raise click.ClickException(one_line(error)) from None
    except RunInterrupted as error:  # SIGTERM / SIGINT: the checkpoint is saved and the message logged
        raise SystemExit(error.exit_code) from None
    finally:
        cleanup_distributed()
    if trainer.diverged is not None:  # finished, but past --divergence-threshold: exit code 3
        raise RunDiverged(f"{divergence_message(trainer.diverged)}; result.json records it")


def training_subset(source: str | Path, config: dict, data_root: str) -> np.ndarray:
    """The training images a generator was trained on: its run's ``subset_indices.npy``, else the same draw the
    trainer makes from its config (data fraction and subset seed)."""
    if not is_generator_file(source) and (Path(source) / "subset_indices.npy").is_file():
        return gan_data.load_indices(source)
    train_split = gan_data.load_dataset(config["dataset"], data_root, train=True, hflip=False)
    return gan_data.subset_indices(len(train_split), config["data_fraction"], config.get("subset_seed", 0))


@main.command()
@click.argument("source", metavar="RUN_DIR|GENERATOR.safetensors", type=click.Path())
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Which EMA generator of a run directory to evaluate.")
@click.option("--num-samples", type=int, default=10_000, show_default=True, help="Generated samples per repeat (reference: 10,000).")
@click.option("--repeats", type=int, default=1, show_default=True, help="Repeats with different sample seeds; evaluation.json gives mean ± std.")
@click.option("--metrics", default="fid,isc", show_default=True, callback=_metrics, help=METRICS_HELP)
@click.option("--label-free-features", "label_free", default="vgg16-half-random", show_default=True, callback=_label_free, help=LABEL_FREE_HELP)
@click.option("--inception-weights", default=None, type=click.Path(), help="Local torch-fidelity Inception weights (offline).")
@click.option("--fd-features", default=None, help="ckpt:PATH of the classifier for the fd, cls and icfd metrics.")
@click.option("--fd-arch", default=None, help="Architecture of an --fd-features file that does not record it.")
@click.option("--data-root", default=None, type=click.Path(), help="Dataset root (default: the run's).")
@click.option("--kid-subset-size", type=int, default=1000, show_default=True, help="KID subset size (capped at the sample count).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first repeat's samples.")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="Where to write the evaluation (default: evaluation.json in RUN_DIR, or beside the generator file).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def evaluate(source, checkpoint, num_samples, repeats, metrics, label_free, inception_weights, fd_features, fd_arch,
             data_root, kid_subset_size, seed, out_path, device):
    """Score a run's EMA generator (or a generator file of `gan-kd export`) against the test split; writes evaluation.json.

    \b
    Examples:
      gan-kd evaluate runs/c10_10 --repeats 3 --metrics fid,isc
      gan-kd evaluate results/runs/gan_fmnist/da_s0/generator_ema.safetensors --metrics suite,fd,cls,icfd \\
          --fd-features ckpt:runs/fmnist_resnet32/checkpoints/best.pt --data-root data
    """
    from gan_kd.metrics.evaluator import Evaluator
    from gan_kd.report import EVALUATION_FILE
    from kd_core.stats import mean_std
    from gan_kd.snapshot import load_ema_generator
    from kd_core.runtime.distributed import resolve_device
    from kd_core.runtime.io import write_json
    from kd_core.runtime.provenance import hardware_summary

    if num_samples < 2 or repeats < 1:
        raise click.UsageError(f"--num-samples must be >= 2 and --repeats >= 1, got {num_samples} and {repeats}")
    if data_root is not None:
        checked_data_root(data_root)
    is_file = is_generator_file(source)
    if not Path(source).exists():
        raise click.BadParameter(f"{source} does not exist (a run directory or a generator .safetensors file)",
                                 param_hint="'RUN_DIR|GENERATOR.safetensors'")
    path = Path(out_path) if out_path else (Path(source).parent if is_file else Path(source)) / EVALUATION_FILE
    checked_output(path, "evaluation file")
    try:
        resolved = resolve_device(device)
        generator, config, iteration = load_ema_generator(source, checkpoint)
        root = data_root or config["data_root"]
        subset = training_subset(source, config, root) if "memo" in metrics else None
        evaluator = Evaluator(dataset=config["dataset"], data_root=root, metrics=metrics, num_samples=num_samples,
                              inception_weights=inception_weights, fd_features=fd_features, fd_arch=fd_arch,
                              label_free=label_free, train_indices=subset, data_fraction=config["data_fraction"],
                              device=resolved, kid_subset_size=kid_subset_size)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise usage_error(error) from None
    started = time.monotonic()
    runs = []
    for repeat in range(repeats):
        runs.append(evaluator(generator.to(resolved), num_classes=generator.num_classes, dim_z=config["dim_z"], seed=seed + repeat))
        click.echo(f"repeat {repeat + 1}/{repeats}: " + ", ".join(f"{k} {v:.4f}" for k, v in runs[-1].items()), err=True)
    summary = {}
    for key in runs[0]:
        mean, std = mean_std([r[key] for r in runs])
        summary[key] = {"mean": mean, "std": std, "values": [r[key] for r in runs]}
    labels = evaluator.labels()
    result = {
        "run_dir": str(Path(source).parent if is_file else source), "source": str(source),
        "checkpoint": "file" if is_file else checkpoint, "iteration": iteration, "dataset": config["dataset"],
        "data_fraction": config["data_fraction"], "preset": config["preset"], "num_samples": num_samples,
        "reference": f"{config['dataset']} test split ({len(evaluator.real)} images)", "repeats": repeats,
        "seeds": [seed + r for r in range(repeats)], "metrics": summary, "labels": labels,
        "feature_spaces": evaluator.describe(),
        "inception_weights": str(evaluator.inception_weights) if evaluator.inception_weights else None,
        "fd_features": fd_features, **({"reference_scores": evaluator.reference_scores} if evaluator.reference_scores else {}),
        "hardware": hardware_summary(resolved),
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    written = write_json(path, result)
    for key, value in summary.items():
        click.echo(f"{labels.get(key, key)}: {value['mean']:.4f} ± {value['std']:.4f}")
    if evaluator.reference_scores:
        click.echo("real test set: " + ", ".join(f"{labels[k]} {v:.4f}" for k, v in evaluator.reference_scores.items()))
    click.echo(f"wrote {written}", err=True)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The .safetensors file to write.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Which EMA generator.")
def export(run_dir, out_path, checkpoint):
    """Write a run's EMA generator as a small safetensors file (tensors + the run's config), for sharing and re-scoring.

    \b
    Example: gan-kd export runs/fm10 --out fm10_best.safetensors && gan-kd evaluate fm10_best.safetensors --metrics suite
    """
    from gan_kd.snapshot import export_generator

    if not str(out_path).endswith(".safetensors"):
        raise click.BadParameter(f"{out_path}: the generator file must end in .safetensors", param_hint="'--out'")
    checked_output(out_path, "generator file")
    try:
        written = export_generator(run_dir, out_path, checkpoint)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise usage_error(error) from None
    click.echo(str(written))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="PNG to write (default RUN_DIR/samples/<checkpoint>_grid.png).")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="last", show_default=True, help="Which EMA generator.")
@click.option("--rows", type=int, default=10, show_default=True, help="Rows = classes 0..rows-1 (capped at the class count).")
@click.option("--columns", type=int, default=10, show_default=True, help="Samples per class.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def sample(run_dir, out_path, checkpoint, rows, columns, seed, device):
    """Write a PNG grid from a run's EMA generator, one row per class.

    \b
    Example: gan-kd sample runs/c10_10 --checkpoint best --out grid.png
    """
    from gan_kd.snapshot import load_ema_generator
    from gan_kd.grids import sample_grid
    from kd_core.runtime.distributed import resolve_device

    if rows < 1 or columns < 1:
        raise click.UsageError(f"--rows and --columns must be >= 1, got {rows} and {columns}")
    path = Path(out_path) if out_path else Path(run_dir) / "samples" / f"{checkpoint}_grid.png"
    checked_output(path, "sample grid")
    try:
        resolved = resolve_device(device)
        generator, config, _ = load_ema_generator(run_dir, checkpoint)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise usage_error(error) from None
    sample_grid(generator, generator.num_classes, config["dim_z"], path, rows=rows, columns=columns, seed=seed, device=resolved)
    click.echo(str(path))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--metric", default="fid", show_default=True, help="Metric key of evaluation.json to tabulate (fid, fd, is_mean, kid_mean).")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="Write the markdown here (default: print).")
def table(run_dirs, metric, out_path):
    """Markdown table (preset x dataset/fraction, mean ± std over runs) of evaluated runs, with their provenance.

    \b
    Example: gan-kd table runs/c10_*_seed* --metric fid --out results/gan_cifar10.md
    """
    from gan_kd.report import build_table, provenance
    from kd_core.runtime.io import write_text

    if out_path:
        checked_output(out_path, "table file")
    try:
        text = build_table([Path(d) for d in run_dirs], metric) + "\n" + provenance([Path(d) for d in run_dirs])
    except (ValueError, FileNotFoundError, KeyError) as error:
        raise usage_error(error) from None
    if out_path:
        write_text(out_path, text)
        click.echo(f"wrote {out_path}", err=True)
    else:
        click.echo(text)


if __name__ == "__main__":
    main()
