"""The report's markdown tables and generated sentences, one function each, from the runs :mod:`.reading` reads."""
from __future__ import annotations

import json
import math

from gan_kd.study.reading import _fd, accuracies, claim_results, len_subset, overfitting_summary
from gan_kd.study.rows import ROWS
from kd_core.stats import bootstrap_mean_ci, compare, mean_std


def pilot_table(runs: list[dict]) -> str:
    lines = ["| fraction | images | width | batch | iterations | FD at best (iteration) | FD at end | end / best − 1 "
             "| FD change over the last third | D gap train − held-out (first → last eval) | r_t at end | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: (r["config"]["data_fraction"], r["config"]["g_ch"], -r["config"]["batch_size"],
                                           r["config"]["iterations"])):
        config, summary = run["config"], overfitting_summary(run)
        if not summary:
            continue
        images = len_subset(config)
        wall = run["training"].get("wall_time_s")
        lines.append(f"| {config['data_fraction']:g} | {images} | {config['g_ch']} | {config['batch_size']} | {config['iterations']} "
                     f"| {summary['best_fd']:.2f} ({summary['best_step']}) | {summary['last_fd']:.2f} "
                     f"| {summary['rise']:+.1%} | {summary['last_third']:+.1%} | {summary['gap_first']:+.3f} → {summary['gap_last']:+.3f} "
                     f"| {summary['rt_last']:+.2f} | {f'{wall:.0f} s' if wall else '?'} |")
    return "\n".join(lines) + "\n"


def pilot_reading(runs: list[dict], threshold: float = 0.05) -> str:
    """One generated sentence: did any pilot run's FD turn upward (end more than ``threshold`` above its best)?"""
    summaries = [(run, overfitting_summary(run)) for run in runs]
    summaries = [(run, summary) for run, summary in summaries if summary]
    turned = [(run, summary) for run, summary in summaries if summary["rise"] > threshold]
    if turned:
        return ("DA's FD turned upward in: " + "; ".join(
            f"fraction {run['config']['data_fraction']:g}, batch {run['config']['batch_size']} (best {s['best_fd']:.2f} at "
            f"iteration {s['best_step']}, {s['rise']:+.1%} by the end)" for run, s in turned) + ".")
    slowest = min(summaries, key=lambda item: abs(item[1]["last_third"]))
    return (f"In no pilot run did DA's FD turn upward (every run ends within {threshold:.0%} of its best): within "
            f"this budget no regime shows the generator suffering from D's overfitting. FD improved least over its "
            f"last third ({slowest[1]['last_third']:+.1%}) at fraction {slowest[0]['config']['data_fraction']:g}, batch "
            f"{slowest[0]['config']['batch_size']}, {slowest[0]['config']['iterations']} iterations.")


def study_table(runs: list[dict], rows: list[str], min_seeds: int) -> str:
    by_row = {row: [r for r in runs if r["row"] == row] for row in rows}
    label = next((r["result"]["labels"]["fd"] for r in runs), "FD")
    lines = [f"| row | {label} ↓ of the best checkpoint, mean ± std | 95% bootstrap CI of the mean | seeds "
             f"| Δ vs DA (95% CI) | per seed | train wall time per run |", "|---|---|---|---|---|---|---|"]
    baseline = [_fd(r) for r in by_row.get("da", [])]
    for row in rows:
        members = sorted(by_row[row], key=lambda r: r["config"]["seed"])
        if not members:
            lines.append(f"| {ROWS[row][0]} | (missing) | | 0 of {min_seeds} | | | |")
            continue
        values = [_fd(r) for r in members]
        mean, std = mean_std(values)
        low, high = bootstrap_mean_ci(values)
        interval = f"[{low:.2f}, {high:.2f}]" if not math.isnan(low) else "—"
        delta = "—"
        if row != "da" and len(baseline) >= 2 and len(values) >= 2:
            comparison = compare(values, baseline)
            delta = f"{comparison['difference']:+.2f} [{comparison['ci'][0]:+.2f}, {comparison['ci'][1]:+.2f}]"
        seeds = ", ".join(str(r["config"]["seed"]) for r in members)
        walls = [r["training"]["wall_time_s"] for r in members if r["training"].get("wall_time_s")]
        missing = f" ({min_seeds - len(members)} missing)" if len(members) < min_seeds else ""
        lines.append(f"| {ROWS[row][0]} | {mean:.2f} ± {std:.2f} | {interval} | {len(members)}{missing} | {delta} "
                     f"| {' / '.join(f'{v:.2f}' for v in values)} (seeds {seeds}) "
                     f"| {f'{min(walls):.0f}–{max(walls):.0f} s' if walls else '?'} |")
    return "\n".join(lines) + "\n"


def class_score_table(runs: list[dict], rows: list[str]) -> str:
    """GAN-test accuracy and the classifier's IS per row (runs evaluated with ``--metrics fd,cls``), with the
    real test set's values, the ceiling; empty when no run has them."""
    scored = [r for r in runs if "cls_acc" in r["result"]["metrics"]]
    if not scored:
        return ""
    labels = scored[0]["result"]["labels"]
    lines = [f"| row | {labels['cls_acc']} ↑, mean ± std | Δ accuracy vs DA (95% CI) | {labels['cls_is']} ↑, mean ± std "
             f"| seeds scored |", "|---|---|---|---|---|"]
    da_accuracies = accuracies(runs, "da")
    for row in rows:
        members = sorted((r for r in runs if r["row"] == row), key=lambda r: r["config"]["seed"])
        have = [r for r in members if "cls_acc" in r["result"]["metrics"]]
        if not have:
            lines.append(f"| {ROWS[row][0]} | (not scored) | | | 0 of {len(members)} |")
            continue
        cells = []
        for key, scale in (("cls_acc", 100), ("cls_is", 1)):
            mean, std = mean_std([r["result"]["metrics"][key]["mean"] * scale for r in have])
            cells.append(f"{mean:.2f}{'%' if scale == 100 else ''} ± {std:.2f}")
        delta = "—"
        if row != "da" and len(have) >= 2 and len(da_accuracies) >= 2:
            c = compare(accuracies(runs, row), da_accuracies, lower_is_better=False)
            delta = f"{c['difference']:+.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}] points"
        seeds = ", ".join(str(r["config"]["seed"]) for r in have)
        lines.append(f"| {ROWS[row][0]} | {cells[0]} | {delta} | {cells[1]} | {len(have)} of {len(members)} (seeds {seeds}) |")
    references = {json.dumps(r["result"].get("reference_scores"), sort_keys=True) for r in scored}
    reference = json.loads(sorted(references)[0]) if len(references) == 1 else None
    if reference:
        lines.append(f"| *real test set (ceiling)* | {reference['cls_acc'] * 100:.2f}% | | {reference['cls_is']:.2f} | |")
    return "\n".join(lines) + "\n"


# The whole evaluation's keys, in table order, with the direction that is better (None: closest to the ideal).
SUITE_COLUMNS = (("fd_vgg", "↓"), ("kid_vgg_mean", "↓"), ("precision", "↑"), ("recall", "↑"), ("density", "→ 1"),
                 ("coverage", "↑"), ("icfd_vgg", "↓"), ("icfd", "↓"), ("gan_train_acc", "↑"), ("memorised", "↓"),
                 ("nn_ratio", "→ 1"), ("channel_spread", "↓"))


def suite_table(runs: list[dict], rows: list[str]) -> str:
    """Every metric of the full evaluation (``gan-kd evaluate --metrics suite,...``) per row, mean ± std over the
    row's scored seeds; each column named by its feature space. Empty when no run has them."""
    scored = [r for r in runs if "fd_vgg" in r["result"]["metrics"]]
    if not scored:
        return ""
    labels = scored[0]["result"]["labels"]
    columns = [(key, arrow) for key, arrow in SUITE_COLUMNS if any(key in r["result"]["metrics"] for r in scored)]
    lines = ["| row | " + " | ".join(f"{labels.get(key, key)} {arrow}" for key, arrow in columns) + " | seeds scored |",
             "|---|" + "---|" * len(columns) + "---|"]
    for row in rows:
        have = [r for r in scored if r["row"] == row]
        if not have:
            continue
        cells = []
        for key, _ in columns:
            values = [r["result"]["metrics"][key]["mean"] for r in have if key in r["result"]["metrics"]]
            mean, std = mean_std(values) if values else (math.nan, math.nan)
            cells.append(f"{mean:.3g} ± {std:.2g}" if values else "—")
        lines.append(f"| {ROWS[row][0]} | " + " | ".join(cells) + f" | {len(have)} |")
    ceiling = [r["result"]["metrics"]["gan_train_real_acc"]["mean"] for r in scored if "gan_train_real_acc" in r["result"]["metrics"]]
    if ceiling:
        lines += ["", f"GAN-train's ceiling, the same CNN trained on as many real training images: "
                  f"{ceiling[0]:.3f}. Real-vs-real values of every metric: `results/metric_ceilings.md`."]
    return "\n".join(lines) + "\n"


def verdicts(runs: list[dict]) -> list[str]:
    sentences = []
    for item in claim_results(runs):
        claim, candidate, baseline, c = item["claim"], item["candidate"], item["baseline"], item["compare"]
        if c is None:
            sentences.append(f"- **{claim}**: not resolved — too few finished seeds ({item['n'][0]} {candidate}, "
                             f"{item['n'][1]} {baseline}).")
            continue
        direction = "lower (better)" if c["difference"] < 0 else "higher (worse)"
        spread = "exceeds" if c["exceeds_spread"] else "does not exceed"
        sentences.append(f"- **{claim}**: {c['verdict']} — {candidate} is {abs(c['difference']):.2f} FD {direction} "
                         f"than {baseline} (95% bootstrap CI of the difference [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}], "
                         f"n = {c['n'][0]} vs {c['n'][1]}), which {spread} the seed spread (largest std "
                         f"{c['spread']:.2f}).")
    return sentences


def class_score_section(runs: list[dict], rows: list[str]) -> list[str]:
    table = class_score_table(runs, rows)
    if not table:
        return []
    return ["### Class scores of the same samples", "",
            "The FD network's own head on the samples of the table above (`--metrics cls`): GAN-test accuracy is "
            "the share of samples it assigns to the class they were generated for (Shmelkov et al., ECCV 2018); "
            "IS is exp(E KL(p(y|x) ‖ p(y))) with its softmax, from 1 to 10. Runs evaluated before the scores "
            "existed get them from `python scripts/gan_fmnist_study.py rescore`, which keeps a copy only when its "
            "FD is reproduced bit for bit.", "", table, ""]
