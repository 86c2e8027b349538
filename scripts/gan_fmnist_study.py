#!/usr/bin/env python
"""The CPU-scale GAN study on Fashion-MNIST -> results/gan_fmnist.md (issue 11; VkD Table 4 rows).

Each step is resumable and skips what is finished (a run is finished when its copy under results/runs/ holds
evaluation.json):

    # the regime search (results/gan_fmnist.md, section 1b): DA and BigGAN without DiffAugment, seed 0
    python scripts/gan_fmnist_study.py pilot --fractions 0.001,0.0025 --iterations 4000 --eval-every 200
    # each distillation row's --kd-weight at that regime -> results/gan_calibration.md (issue 25)
    python scripts/gan_fmnist_study.py calibrate --fraction 0.001 --iterations 4000 --eval-every 200
    # every row x 5 seeds at the chosen regime (study v2), then the tables, verdicts and figures
    python scripts/gan_fmnist_study.py run --fraction 0.001 --iterations 4000 --eval-every 200 --seeds 0-4
    python scripts/gan_fmnist_study.py report
    # metrics added to the final evaluation since a copy was scored, from its committed generator file
    python scripts/gan_fmnist_study.py rescore-missing
    # bf16 vs fp32 (issue 10) -> a section of results/benchmarks.md
    python scripts/gan_fmnist_study.py precision --seeds 0-2 --iterations 300

``pilot`` trains DA and its no-DiffAugment control at several data fractions to find where D overfits;
``calibrate`` sets each distillation row's weight by one rule; ``run`` trains every row of the ablation
(``--rows``) for every seed at one regime; ``report`` regenerates the tables, verdicts and plots from the
committed run copies. The teacher (ResNet-20) and the FD network (ResNet-32) are the committed, hash-checked files
in results/teachers/; one that is missing or does not match is trained into runs/teachers/ first. Long runs:
pin to one core, e.g. ``nohup taskset -c 1 python scripts/gan_fmnist_study.py run ... &``; the same command
started on the other core shares the queue (each run is claimed by a lock file in --runs). Checkpoints stay in
--runs (not committed); the small files go to results/runs/.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gan_kd import study  # noqa: E402
from gan_kd.study import calibration, classifiers, modes  # noqa: E402
from kd_core.runtime.cli import checked_data_root  # noqa: E402
from kd_core.runtime.io import write_json, write_text  # noqa: E402

BIN = Path(sys.executable).parent
PILOT_RESULTS = "results/runs/gan_fmnist_pilot"
STUDY_RESULTS = "results/runs/gan_fmnist"
PRECISION_RESULTS = "results/runs/gan_fmnist_precision"
CALIBRATION_RESULTS = "results/runs/gan_fmnist_calibration"
MODE_RESULTS = "results/runs/gan_fmnist_mode"
MODE_REPORT = "results/gan_modes.md"
CALIBRATION_REPORT = "results/gan_calibration"  # .md (the table) and .json (records and chosen weights)


def train_classifiers(data_root: str) -> study.Assets:
    """The committed teacher and FD network (results/teachers/, hash-checked); each one that is missing or does
    not match its recorded hash is trained instead into runs/teachers/ (~20 minutes of one core), unless already
    trained (gan_kd.study.classifiers, shared with make demo)."""
    return classifiers.ensure_classifiers(data_root, committed=ROOT / classifiers.COMMITTED, runs=ROOT / classifiers.RUNS,
                                          classifier_kd=str(BIN / "classifier-kd"), log=click.echo)


def _seeds(ctx, param, value: str) -> list[int]:
    """``0-4`` or ``0,2,5`` -> the seeds; anything else is a one-line usage error."""
    try:
        if "-" in value:
            first, last = value.split("-")
            seeds = list(range(int(first), int(last) + 1))
        else:
            seeds = [int(v) for v in value.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise click.BadParameter(f"{value!r} is not a seed range like 0-4 or a list like 0,2,5")
    return seeds


def _fractions(ctx, param, value: str) -> list[float]:
    try:
        fractions = [float(v) for v in value.split(",")]
    except ValueError:
        fractions = []
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise click.BadParameter(f"{value!r} is not a comma-separated list of fractions in (0, 1]")
    return fractions


def _rows(ctx, param, value: str) -> list[str]:
    rows = value.split(",")
    unknown = [row for row in rows if row not in study.ROWS]
    if unknown:
        raise click.BadParameter(f"unknown row(s) {', '.join(unknown)}; allowed: {', '.join(study.ROWS)}")
    return rows


def regime(fraction, width, iterations, eval_every, batch_size, mode="eager") -> study.Regime:
    return modes.with_mode(study.Regime(fraction=fraction, width=width, iterations=iterations, eval_every=eval_every,
                                        batch_size=batch_size), mode)


common = [
    click.option("--width", type=click.IntRange(min=1), default=8, show_default=True, help="G and D width (g_ch = d_ch)."),
    click.option("--batch-size", type=click.IntRange(min=2), default=16, show_default=True, help="Batch of each D and G step."),
    click.option("--iterations", type=click.IntRange(min=1), default=1000, show_default=True,
                 help="At width 8 on one core: ~2.4 s (da) to 3.4 s (vkd-whiten) each at batch 50, ~0.9-1.2 s at batch 16."),
    click.option("--eval-every", type=click.IntRange(min=1), default=100, show_default=True),
    click.option("--data-root", default="data", show_default=True,
                 help="Fashion-MNIST root (relative to the checkout). The default may be missing: Debian's "
                      "dataset-fashion-mnist is then read; any other root must exist."),
    click.option("--runs", default="runs/gan_fmnist", show_default=True, help="Run directories (checkpoints)."),
]
mode_option = click.option(
    "--mode", type=click.Choice(list(modes.MODES)), default=modes.STUDY_MODE, show_default=True,
    help="How the runs execute (gan-kd train --compile / --channels-last); the default is the mode "
         "results/gan_modes.md admits (gan_kd.study.modes.STUDY_MODE). Part of each run's name.")


def with_common(function):
    for option in reversed(common):
        function = option(function)
    return function


def with_selection(function):
    """``--fraction``, ``--seeds``, ``--rows`` (one regime's runs) and the common options: ``run``, ``status`` and ``rescore``."""
    function = mode_option(with_common(function))
    for option in reversed([
            click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), required=True),
            click.option("--seeds", default="0-4", show_default=True, callback=_seeds, help="e.g. 0-4 or 0,2."),
            click.option("--rows", default=",".join(study.ROWS), show_default=True, callback=_rows)]):
        function = option(function)
    return function


@click.group()
def main():
    """The CPU-scale data-limited GAN study (pilot, ablation runs, report)."""


@main.command()
@click.option("--fractions", default="0.005,0.01", show_default=True, callback=_fractions)
@click.option("--rows", default="da,no-da", show_default=True, callback=_rows,
              help="DA and its no-DiffAugment control (issue 25), or any rows.")
@click.option("--seeds", default="0", show_default=True, callback=_seeds, help="e.g. 0 or 0-2.")
@mode_option
@with_common
def pilot(fractions, rows, seeds, width, batch_size, iterations, eval_every, data_root, runs, mode):
    """DA and the no-DiffAugment control at each fraction: the FD curves and D's overfitting signals."""
    os.chdir(ROOT)
    checked_data_root(data_root)  # only the default 'data' may be missing (Debian's copy is read then)
    assets = train_classifiers(data_root)
    for seed in seeds:
        for fraction in fractions:
            for row in rows:
                study.execute(row, regime(fraction, width, iterations, eval_every, batch_size, mode), seed, runs=Path(runs),
                              results=Path(PILOT_RESULTS), assets=assets, gan_kd=str(BIN / "gan-kd"), log=click.echo)


@main.command()
@with_selection
def run(fraction, seeds, rows, width, batch_size, iterations, eval_every, data_root, runs, mode):
    """Every row for every seed at one regime, seed by seed (so rows fill up evenly). Start it once per core with
    the same options: each process skips the run another one is training and takes the next.

    A distillation row trains only at the weight results/gan_calibration.json chose for it (frozen in
    gan_kd/presets.py); a row without one is refused before any work.
    """
    os.chdir(ROOT)
    checked_data_root(data_root)  # only the default 'data' may be missing (Debian's copy is read then)
    report = Path(CALIBRATION_REPORT + ".json")
    calibrated = json.loads(report.read_text())["chosen"] if report.is_file() else {}
    problems = calibration.weight_problems(rows, calibrated)
    if problems:
        raise click.UsageError(f"--rows: not at a calibrated weight ({report}): {'; '.join(problems)}; run "
                               f"`calibrate` and freeze its choice in gan_kd/presets.py, or leave the row out")
    assets = train_classifiers(data_root)
    chosen = regime(fraction, width, iterations, eval_every, batch_size, mode)
    for seed in seeds:
        for row in rows:
            sources, renamed = reuse_sources(row, chosen, seed)
            if study.reuse(study.run_name(row, chosen, seed), sources, ROOT / STUDY_RESULTS, log=click.echo,
                           renamed=renamed):
                continue
            study.execute(row, chosen, seed, runs=Path(runs), results=Path(STUDY_RESULTS), assets=assets,
                          gan_kd=str(BIN / "gan-kd"), log=click.echo)


def reuse_sources(row: str, chosen: study.Regime, seed: int) -> tuple[list[Path], tuple[tuple[Path, str], ...]]:
    """``study.reuse``'s sources of one run: a finished run of the same name in the pilot or the mode comparison
    is the same command, and so is the weight calibration's run of the row at its own weight."""
    calibrated = calibration.same_command(row)
    renamed = ((ROOT / CALIBRATION_RESULTS, study.run_name(calibrated, chosen, seed)),) if calibrated else ()
    return [ROOT / PILOT_RESULTS, ROOT / MODE_RESULTS], renamed


@main.command()
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True)
@click.option("--seeds", default="0-2", show_default=True, callback=_seeds, help="e.g. 0-2 (at least 3 for the table).")
@click.option("--row", default="vkd-whiten", show_default=True, type=click.Choice(list(study.ROWS)))
@click.option("--channels-last/--no-channels-last", default=True, show_default=True, help="In both arms.")
@with_common
def precision(fraction, seeds, row, channels_last, width, batch_size, iterations, eval_every, data_root, runs):
    """The same run in fp32 and in bf16 for each seed -> the FD table in results/benchmarks.md (issue 10).

    Without native bf16 (this machine) a bf16 iteration is several times slower than fp32: use a short
    --iterations (e.g. 300). The runs go to <runs>_precision/, their copies to results/runs/gan_fmnist_precision/.
    """
    os.chdir(ROOT)
    checked_data_root(data_root)  # only the default 'data' may be missing (Debian's copy is read then)
    assets = train_classifiers(data_root)
    for seed in seeds:
        for arm in ("fp32", "bf16"):
            chosen = study.Regime(fraction=fraction, width=width, iterations=iterations, eval_every=eval_every,
                                  batch_size=batch_size, precision=arm, channels_last=channels_last)
            study.execute(row, chosen, seed, runs=Path(runs + "_precision"), results=Path(PRECISION_RESULTS),
                          assets=assets, gan_kd=str(BIN / "gan-kd"), log=click.echo)
            write_precision_section()


def write_precision_section() -> None:
    os.chdir(ROOT)  # paths in the section relative to the checkout
    study.update_precision_section(Path("results/benchmarks.md"), Path(PRECISION_RESULTS),
                                   "python scripts/gan_fmnist_study.py precision-report")


@main.command()
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), required=True)
@click.option("--rows", default=",".join(calibration.DISTILLATION_ROWS), show_default=True, callback=_rows)
@mode_option
@with_common
def calibrate(fraction, rows, width, batch_size, iterations, eval_every, data_root, runs, mode):
    """Each distillation row's weight at one regime (issue 25), by gan_kd.study.calibration's rule.

    Probes every row at weight 1 (seed 0), sweeps three weights around the one bringing its term to ~0.3x D's
    hinge loss where the probe is outside 0.05-5x, adds a second seed for the best two, and scores every run by
    the label-free FD at a sample seed the tables do not use. Resumable; rerun it to continue. Writes
    results/gan_calibration.md/.json after every run. Two processes (one per core) may share the work: each
    skips the run the other is training.
    """
    os.chdir(ROOT)
    checked_data_root(data_root)  # only the default 'data' may be missing (Debian's copy is read then)
    assets = train_classifiers(data_root)
    chosen = regime(fraction, width, iterations, eval_every, batch_size, mode)
    results = Path(CALIBRATION_RESULTS)

    def run(row: str, weight: float, seed: int) -> None:
        name = calibration.weighted(row, weight)
        copy = study.execute(name, chosen, seed, runs=Path(runs), results=results, assets=assets,
                             gan_kd=str(BIN / "gan-kd"), log=click.echo)
        if copy is None:  # another process is training it
            return
        if calibration.selection_fd(copy) is None:
            study.call_logged(calibration.selection_command(copy, data_root, str(BIN / "gan-kd")),
                              study.run_name(name, chosen, seed), Path(runs))
        write_calibration(list(calibration.DISTILLATION_ROWS))  # every row's record, not only --rows

    for row in rows:  # every probe first: the plan of each row needs its own
        run(row, 1.0, 0)
    for row in rows:
        record = calibration.load_records(results, [row])[0]
        if record["kept"]:
            continue
        for weight in calibration.sweep_weights(row, record["plan"]):
            run(row, weight, 0)
        finalists = calibration.load_records(results, [row])[0].get("finalists")
        if finalists is None:  # a sweep run is still going in another process: its second seeds wait for it
            click.echo(f"{row}: the second seeds wait for the sweep runs in progress elsewhere; rerun calibrate then")
            continue
        for weight in finalists:
            run(row, weight, 1)
    click.echo(calibration.calibration_table(calibration.load_records(results, rows)), nl=False)


def write_calibration(rows: list[str]) -> None:
    records = calibration.load_records(Path(CALIBRATION_RESULTS), rows)
    text = ("# GAN distillation weights, calibrated (issue 25)\n\n"
            "Generated by `python scripts/gan_fmnist_study.py calibration-report` from the run copies in "
            f"`{CALIBRATION_RESULTS}/`; the rule is `gan_kd.study.calibration`'s docstring. 'term / D hinge' is "
            "the weighted distillation term over D's hinge loss (`d/kd_ratio`); 'selection FD' is the label-free "
            f"FD of 10,000 samples at sample seed {calibration.SELECTION_SEED}, which no table uses.\n\n"
            + calibration.calibration_table(records))
    write_text(Path(CALIBRATION_REPORT + ".md"), text)
    write_json(Path(CALIBRATION_REPORT + ".json"), {"records": records, "chosen": calibration.chosen_weights(records)})


@main.command("calibration-report")
@click.option("--rows", default=",".join(calibration.DISTILLATION_ROWS), show_default=True, callback=_rows)
def calibration_report(rows):
    """Regenerate results/gan_calibration.md/.json from the calibration's run copies."""
    os.chdir(ROOT)
    write_calibration(rows)
    click.echo(f"wrote {CALIBRATION_REPORT}.md and .json")


@main.command("precision-report")
def precision_report():
    """Regenerate only the bf16-vs-fp32 section of results/benchmarks.md from the run copies."""
    os.chdir(ROOT)
    write_precision_section()
    click.echo("updated results/benchmarks.md")


@main.command()
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), required=True)
@click.option("--seeds", default="0-2", show_default=True, callback=_seeds, help="e.g. 0-2 (at least 3 for the verdict).")
@click.option("--row", default="da", show_default=True, type=click.Choice(list(study.ROWS)))
@click.option("--candidate", default="compile+channels_last", show_default=True,
              type=click.Choice([mode for mode in modes.MODES if mode != modes.REFERENCE]),
              help="The mode compared with eager fp32.")
@with_common
def mode(fraction, seeds, row, candidate, width, batch_size, iterations, eval_every, data_root, runs):
    """The same run eager and in --candidate for each seed -> results/gan_modes.md (issue 26, item 4).

    A finished pilot run of the same row and regime is the eager arm of its seed (the same command): it is
    copied, not re-run. The runs go to <runs>_mode/, their copies to results/runs/gan_fmnist_mode/.
    """
    os.chdir(ROOT)
    checked_data_root(data_root)  # only the default 'data' may be missing (Debian's copy is read then)
    assets = train_classifiers(data_root)
    for seed in seeds:
        for arm in (modes.REFERENCE, candidate):
            chosen = regime(fraction, width, iterations, eval_every, batch_size, arm)
            name = study.run_name(row, chosen, seed)
            study.reuse(name, [ROOT / PILOT_RESULTS], ROOT / MODE_RESULTS, log=click.echo)
            study.execute(row, chosen, seed, runs=Path(runs + "_mode"), results=Path(MODE_RESULTS), assets=assets,
                          gan_kd=str(BIN / "gan-kd"), log=click.echo)
            write_mode_report()


def write_mode_report() -> None:
    os.chdir(ROOT)
    write_text(Path(MODE_REPORT), modes.mode_report(Path(MODE_RESULTS), "python scripts/gan_fmnist_study.py mode-report",
                                                    "runs/gan_fmnist_mode"))


@main.command("mode-report")
def mode_report():
    """Regenerate results/gan_modes.md from the mode comparison's run copies."""
    write_mode_report()
    click.echo(f"wrote {MODE_REPORT}")


@main.command()
@with_selection
def status(fraction, seeds, rows, width, batch_size, iterations, eval_every, data_root, runs, mode):
    """Which runs of one regime are done, reusable (a finished copy of the same command that `run` copies),
    partial (resumable from their checkpoint) or missing; trains nothing."""
    os.chdir(ROOT)
    chosen = regime(fraction, width, iterations, eval_every, batch_size, mode)

    def reusable(row: str, seed: int) -> Path | None:
        return study.reusable_copy(study.run_name(row, chosen, seed), *reuse_sources(row, chosen, seed))

    click.echo(study.status_table(chosen, rows, seeds, runs=Path(runs), results=Path(STUDY_RESULTS),
                                  reusable=reusable), nl=False)


@main.command()
@with_selection
def rescore(fraction, seeds, rows, width, batch_size, iterations, eval_every, data_root, runs, mode):
    """Add the class scores (GAN-test accuracy, IS on the FD network) to finished runs evaluated without them.

    Re-runs `gan-kd evaluate --metrics fd,cls` on each run's best.pt (about 2.5 min of one core per run) and
    replaces its copy's evaluation.json only if the FD values come out bit for bit as recorded; trains nothing.
    """
    os.chdir(ROOT)
    checked_data_root(data_root)
    assets = train_classifiers(data_root)
    chosen = regime(fraction, width, iterations, eval_every, batch_size, mode)
    failed = []
    for seed in seeds:
        for row in rows:
            try:
                study.rescore(row, chosen, seed, runs=Path(runs), results=Path(STUDY_RESULTS), assets=assets,
                              gan_kd=str(BIN / "gan-kd"), log=click.echo)
            except RuntimeError as error:
                click.echo(f"error: {error}", err=True)
                failed.append(study.run_name(row, chosen, seed))
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) not rescored: {', '.join(failed)}")


@main.command("rescore-missing")
@click.option("--results", default=STUDY_RESULTS, show_default=True, type=click.Path(file_okay=False, exists=True),
              help="The run copies to complete (e.g. results/runs/gan_fmnist_pilot).")
@click.option("--data-root", default="data", show_default=True,
              help="Fashion-MNIST root (relative to the checkout); the default may be missing (Debian's copy is read).")
@click.option("--runs", default="runs/gan_fmnist", show_default=True, help="Where each copy's <name>.log is appended.")
def rescore_missing(results, data_root, runs):
    """Add the final evaluation's metrics that a finished copy's evaluation.json lacks, from its committed generator.

    Runs `gan-kd evaluate <copy>/generator_ema.safetensors` for the missing metrics only, with the recorded
    sample count, repeats and sample seeds, and merges only the missing keys into the copy's evaluation.json;
    refuses a copy whose assets.json records another FD network. Trains nothing.
    """
    from gan_kd.study import rescoring

    os.chdir(ROOT)
    checked_data_root(data_root)
    assets = train_classifiers(data_root)
    failed = rescoring.fill_all(Path(results), assets, runs=Path(runs), gan_kd=str(BIN / "gan-kd"), log=click.echo)
    if failed:
        raise click.ClickException(f"{len(failed)} copy(ies) not re-scored: {', '.join(failed)}")


@main.command()
@click.option("--rows", default=",".join(study.ROWS), show_default=True, callback=_rows)
@click.option("--min-seeds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--out", default="results/gan_fmnist.md", show_default=True)
@click.option("--readme/--no-readme", default=True, show_default=True,
              help="Also regenerate README's GAN result lines (its gan-fmnist-verdicts block).")
def report(rows, min_seeds, out, readme):
    """Regenerate results/gan_fmnist.md and results/gan_fmnist_figures/*.png from the run copies."""
    os.chdir(ROOT)
    study.write_report(Path(PILOT_RESULTS), Path(STUDY_RESULTS), Path(out), Path("results/gan_fmnist_figures"),
                       rows=rows, min_seeds=min_seeds)
    click.echo(f"wrote {out}")
    if readme:
        study.update_readme(Path("README.md"), Path(PILOT_RESULTS), Path(STUDY_RESULTS), rows=rows, min_seeds=min_seeds)
        click.echo("updated the GAN result lines in README.md")


if __name__ == "__main__":
    main()
