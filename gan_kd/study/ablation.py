"""The report's ablation section (issue 27), per regime: the rows with the kd weight each ran at, one table per
metric family, the verdicts under the agreement rule, the rows beside VkD's published numbers, the curves and the
final sample grids; and the first figure's place and caption."""
from __future__ import annotations

import os
from pathlib import Path

from gan_kd.study.agreement import RULE, verdict_lines
from gan_kd.study.families import family_sections
from gan_kd.study.figure import CURVE_LABEL, FIGURE_SEED, curve_panel_groups, first_figure, run_has_figure
from gan_kd.study.published import published_section
from gan_kd.study.reading import kd_weight, len_subset, row_label, row_runs
from gan_kd.study.rows import Regime, regime_of


def by_regime(runs: list[dict]) -> list[tuple[Regime, list[dict], str]]:
    """``(regime, its runs, a file-name suffix)`` per regime; the suffix is empty when there is one regime."""
    regimes = sorted({regime_of(r["config"]) for r in runs}, key=lambda g: g.tag())
    return [(g, [r for r in runs if regime_of(r["config"]) == g], "" if len(regimes) == 1 else f"_{g.tag()}")
            for g in regimes]


def overview(study: list[dict], rows: list[str], figures: Path, rel: str) -> list[str]:
    """The first figure of each regime (:func:`gan_kd.study.figure.first_figure`) with its generated caption."""
    parts = []
    for regime, members, suffix in by_regime(study):
        name = f"overview{suffix}.png"
        if not any(run_has_figure(run) for run in members):
            parts += [f"(No first figure for regime {regime.tag()}: no run copy holds a generator file or a "
                      f"{CURVE_LABEL} curve.)", ""]
            continue
        record = first_figure(members, rows, figures / name)
        labels = record["labels"]
        parts += [f"![{name}]({rel}/{name})", "",
                  f"**Figure.** Regime {regime.tag()}. Top: a row of samples per method from its lowest-seed "
                  f"committed best EMA generator (`generator_ema.safetensors`), latent seed {FIGURE_SEED}, classes "
                  f"{labels[0] if labels else '–'}–{labels[-1] if labels else '–'} in the columns, the same latents "
                  f"and labels in every row. Bottom: each row's {CURVE_LABEL} against the iteration, mean over seeds "
                  f"with a min–max band, one panel per family of rows (DA in each), one colour per row."]
        if record["missing"]:
            parts[-1] += f" Rows without a committed generator (not shown): {', '.join(record['missing'])}."
        parts.append("")
    return parts


def rows_table(members: list[dict], rows: list[str], min_seeds: int) -> str:
    """One line per row: the kd weight its runs' config.json records, its seeds, the iteration of each seed's
    evaluated checkpoint (the best by the training-time selection metric, result.json's ``best``; an early one
    means the selection preferred it over every later evaluation) and training wall time."""
    lines = ["| row | kd weight (config.json) | seeds | evaluated checkpoint: iteration per seed (selected by) "
             "| train wall time per run |", "|---|---|---|---|---|"]
    for row in rows:
        runs = row_runs(members, row)
        if not runs:
            lines.append(f"| {row_label(row)} | | (missing) 0 of {min_seeds} | | |")
            continue
        weights: dict[str, list[int]] = {}
        for run in runs:
            weight = kd_weight(run["config"])
            weights.setdefault("— (no teacher)" if weight is None else f"{weight:g}", []).append(run["config"]["seed"])
        weight = next(iter(weights)) if len(weights) == 1 else "; ".join(
            f"{w} (seeds {', '.join(map(str, seeds))})" for w, seeds in weights.items()) + " — **differs within the row**"
        missing = f" ({min_seeds - len(runs)} missing)" if len(runs) < min_seeds else ""
        walls = [r["training"]["wall_time_s"] for r in runs if r["training"].get("wall_time_s")]
        best = [r["training"].get("best") or {} for r in runs]
        selected = ", ".join(str(b.get("iteration", "?")) for b in best)
        metrics = ", ".join(sorted({b["metric"] for b in best if b.get("metric")}))
        lines.append(f"| {row_label(row)} | {weight} | {', '.join(str(r['config']['seed']) for r in runs)}{missing} "
                     f"| {selected}{f' ({metrics})' if metrics else ''} "
                     f"| {f'{min(walls):.0f}–{max(walls):.0f} s' if walls else '?'} |")
    return "\n".join(lines) + "\n"


def compute_line(members: list[dict]) -> str:
    """How much compute the regime's runs took: the sums of their training and evaluation wall times (each run
    on one core; ``result.json`` and ``evaluation.json``'s ``wall_time_s``), and on what hardware."""
    train = sum(r["training"].get("wall_time_s") or 0.0 for r in members)
    evaluate = sum(r["result"].get("wall_time_s") or 0.0 for r in members)
    machines = "; ".join(sorted({r["training"].get("hardware") or r["result"].get("hardware") or "?" for r in members}))
    return (f"Compute: {len(members)} runs took {train / 3600:.1f} h of training and {evaluate / 3600:.1f} h of final "
            f"evaluation, each run on one core ({machines}; the study ran two at a time, one per core).")


def plot_rows(runs: list[dict], rows: list[str], column: str, path: Path, ylabel: str, title: str) -> Path:
    """One line per row: the mean over seeds of ``column`` against the iteration, with a min–max band; one panel
    per family of rows (:func:`gan_kd.study.rows.curve_panels`), one colour per row throughout."""
    from gan_kd.plots import panels_plot

    panels, _ = curve_panel_groups(runs, rows, column)  # short row names: the legends sit in the panels
    return panels_plot(panels, path, ylabel=ylabel, title=title)


def ablation_section(study: list[dict], rows: list[str], min_seeds: int, figures: Path, rel: str,
                     out_md: Path) -> list[str]:
    """Per regime: what was run, the family tables, the rule and the verdicts, the curves and the grids."""
    parts = []
    for regime, members, suffix in by_regime(study):
        parts += [f"Regime: Fashion-MNIST fraction {regime.fraction:g} ({len_subset({'data_fraction': regime.fraction})} "
                  f"images), G and D width {regime.width} (channels 4×{regime.width}), {regime.iterations} "
                  f"iterations of 4 D steps + 1 G step at batch {regime.batch_size}, EMA {regime.ema_decay} from "
                  f"iteration {regime.ema_start}, evaluation every {regime.eval_every} iterations. Everything "
                  f"but the seed is equal within a row; teacher = ResNet-20 classifier checkpoint; each row's kd "
                  f"weight is the one its runs' config.json records:", "", rows_table(members, rows, min_seeds), "",
                  compute_line(members), "",
                  "### The whole evaluation, one table per family of metrics", "",
                  "Each metric of the final evaluation (10,000 samples of the best EMA generator, mean over its "
                  "sample sets) per row: mean ± sample std over seeds, the 95% percentile-bootstrap interval of the "
                  "mean, the seeds scored, and the difference from DA with the 95% bootstrap interval of the "
                  "difference (*better* / *worse* where it excludes 0). ↓ lower is better, ↑ higher, → 1 closest "
                  "to 1 (compared as |x − 1|). — : not in the copies.", "",
                  *family_sections(members, rows),
                  "### Verdicts", "", RULE, "", *verdict_lines(members), "",
                  "With 5 seeds a percentile bootstrap is narrower than a t interval; read borderline cases with "
                  "that in mind.", "", *published_section(members, rows)]
        for name, column, ylabel in ((f"study_fd{suffix}.png", "eval/fd", "classifier FD (2,000 samples)"),
                                     (f"study_gap{suffix}.png", "probe/d_gap", "D(train reals) − D(held-out reals)")):
            plot_rows(members, rows, column, figures / name, ylabel, f"{ylabel}: mean over seeds, min–max band")
            parts.append(f"![{name}]({rel}/{name})")
        grids = [(row, runs[0]) for row in rows for runs in [row_runs(members, row)]
                 if runs and (Path(runs[0]["dir"]) / "final.png").is_file()]
        if grids:
            parts += ["", "Final sample grids (EMA generator, lowest seed, one class per row):", ""]
            parts += [f"- {row_label(row)}: ![{row}]({os.path.relpath(Path(run['dir']) / 'final.png', out_md.parent)})"
                      for row, run in grids]
        parts.append("")
    return parts
