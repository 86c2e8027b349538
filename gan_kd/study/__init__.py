"""The CPU-scale GAN study (``results/gan_fmnist.md``): runs, their small result files, and the report.

A study is a set of runs ``(row, regime, seed)``. Each run is ``gan-kd train`` (resumed if it was
interrupted) followed by ``gan-kd evaluate --checkpoint best``, in ``<runs>/<name>/``. When both have
finished, the run's small files (``config.json``, ``result.json`` (training), ``evaluation.json``,
``metrics.jsonl`` with the FD and overfitting-probe curves, the final sample grid and the best EMA generator as
a small ``generator_ema.safetensors``, which ``gan-kd evaluate`` re-scores without training) are copied to
``<results>/<name>/``, which is what gets committed; a run whose copy holds ``evaluation.json`` is finished and
is skipped. Every table and plot
is regenerated from those copies by :func:`write_report`, so no number is typed by hand.

The modules, each importing only those above it:

* :mod:`~gan_kd.study.rows`: the rows, the claims, the regime and the ``gan-kd`` commands of a run;
* :mod:`~gan_kd.study.runner`: running, resuming and re-scoring runs, copying their small files, their state;
* :mod:`~gan_kd.study.rescoring`: the final evaluation's metrics a copy lacks, from its committed generator file;
* :mod:`~gan_kd.study.reading`: the committed run copies read into numbers, grouped by row;
* :mod:`~gan_kd.study.families`: the metrics in families with their better direction, one table per family;
* :mod:`~gan_kd.study.agreement`: the verdicts that need agreement between the families, and their rule;
* :mod:`~gan_kd.study.published`: the rows beside VkD's published CIFAR-10 FIDs, by direction;
* :mod:`~gan_kd.study.figure`: the figure a reader looks at first (samples per row, label-free FD curves);
* :mod:`~gan_kd.study.tables`: the pilot's table and generated sentence;
* :mod:`~gan_kd.study.ablation`: the report's ablation section (rows, family tables, verdicts, curves, grids);
* :mod:`~gan_kd.study.report`: ``results/gan_fmnist.md``, its plots and README's generated GAN result lines;
* :mod:`~gan_kd.study.modes`: the execution modes (eager, compiled, channels_last) and ``results/gan_modes.md``;
* :mod:`~gan_kd.study.precision`: the bf16-vs-fp32 section of ``results/benchmarks.md``;
* :mod:`~gan_kd.study.regime`: the regime search's table and the rule that picks the study's regime;
* :mod:`~gan_kd.study.calibration`: each distillation row's weight at that regime;
* :mod:`~gan_kd.study.classifiers`: the study's teacher and FD network (the committed files, else trained).

Every public name of ``rows``, ``runner``, ``reading``, ``tables``, ``report`` and ``precision`` is importable from
``gan_kd.study`` itself; the others are used as modules (``from gan_kd.study import agreement, families``).
"""
from gan_kd.study.rows import (
    CLAIMS,
    Claim,
    FINAL_METRICS,
    ROWS,
    TEACHERLESS_ROWS,
    TRAINING_METRICS,
    WEIGHT_MARK,
    Assets,
    Regime,
    evaluate_command,
    regime_of,
    run_name,
    split_row,
    train_command,
    weighted,
)
from gan_kd.study.runner import (
    ASSETS_FILE,
    SMALL_FILES,
    asset_digests,
    call_logged,
    claimed,
    copy_small_files,
    execute,
    has_class_scores,
    is_claimed,
    is_finished,
    rescore,
    reusable_copy,
    reuse,
    run_state,
    status_table,
)
from gan_kd.study.reading import kd_weight, len_subset, load_runs, overfitting_summary, row_label, row_runs
from gan_kd.study.tables import pilot_reading, pilot_table
from gan_kd.study.report import (
    README_BEGIN,
    README_END,
    commands,
    hardware,
    readme_block,
    update_readme,
    write_report,
)
from gan_kd.study.precision import PRECISION_BEGIN, PRECISION_END, precision_section, update_precision_section

__all__ = [
    "ASSETS_FILE", "Assets", "CLAIMS", "Claim", "FINAL_METRICS", "PRECISION_BEGIN", "PRECISION_END", "README_BEGIN",
    "README_END", "ROWS", "Regime", "SMALL_FILES", "TEACHERLESS_ROWS", "TRAINING_METRICS", "WEIGHT_MARK",
    "asset_digests", "call_logged", "claimed", "commands", "copy_small_files", "evaluate_command", "execute", "hardware",
    "has_class_scores", "is_claimed", "is_finished", "kd_weight", "len_subset", "load_runs", "overfitting_summary", "pilot_reading",
    "pilot_table", "precision_section", "readme_block", "regime_of", "rescore", "reusable_copy", "reuse", "row_label", "row_runs", "run_name",
    "run_state", "status_table", "train_command", "split_row", "weighted", "update_precision_section", "update_readme",
    "write_report",
]
