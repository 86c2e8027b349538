"""The regime search (issue 25): DA and its no-DiffAugment control per regime, their overfitting signals, and
the rule that picks the study's regime from them.

A *search run* is a pilot run that logged the label-free FD during training (``eval/fd_vgg``); the pilot's
earlier DA-only runs did not and stay in the report's first pilot table. Per regime (data fraction, width,
batch, iterations) and row, :func:`search_table` lists both FD curves' best and end, D's train-minus-held-out
logit gap and r_t (the overfitting probe, ADA §3), and the final evaluation's memorisation numbers.

:data:`RULE` is the choice, applied by :func:`choose_regime`, never by hand.
"""
from __future__ import annotations

import math
from pathlib import Path

from gan_kd.study.reading import len_subset, overfitting_summary
from gan_kd.study.rows import ROWS

SEARCH_ROWS = ("da", "no-da")
SEARCH_CURVE = "eval/fd_vgg"       # what makes a pilot run a search run
CONTROL_WORSE = 1.2                # the control's best label-free FD at least this many times DA's: "clearly worse"
OVERFIT_RISE = 0.05                # a label-free FD curve ending > 5% above its best has turned: D overfits
RULE = (f"**Choice rule** (applied by `gan_kd.study.regime.choose_regime`): among the regimes where the "
        f"no-DiffAugment control is clearly worse than DA (its best label-free FD ≥ {CONTROL_WORSE:g}× DA's: "
        f"DiffAugment's own claim, the sanity check), the one where DA's D overfits most: the largest gap between "
        f"D's mean logit on its training images and on held-out images at the end of DA's run. If the control is "
        f"clearly worse nowhere, the regime with the largest DA gap, and the report says so.")


def regime_key(run: dict) -> tuple[float, int, int, int]:
    config = run["config"]
    return config["data_fraction"], config["g_ch"], config["batch_size"], config["iterations"]


def describe(key: tuple[float, int, int, int]) -> str:
    fraction, width, batch, iterations = key
    return f"{len_subset({'data_fraction': fraction})} images, width {width}, batch {batch}, {iterations} iterations"


def search_runs(pilot: list[dict]) -> list[dict]:
    return [run for run in pilot if run["row"] in SEARCH_ROWS and run["curves"].get(SEARCH_CURVE)]


def _final(run: dict, key: str) -> float:
    metric = run["result"]["metrics"].get(key)
    return metric["mean"] if metric else math.nan


def _cell(value: float, spec: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def search_table(pilot: list[dict]) -> str:
    """One line per search run, grouped by regime."""
    lines = ["| regime | row | label-free FD: best (iteration) → end | classifier FD: best (iteration) → end "
             "| D gap train − held-out: first → end | r_t at end | memorised / nn ratio (final) | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for run in sorted(search_runs(pilot), key=lambda r: (regime_key(r), SEARCH_ROWS.index(r["row"]))):
        free, classifier = overfitting_summary(run, SEARCH_CURVE), overfitting_summary(run)
        wall = run["training"].get("wall_time_s")
        lines.append(
            f"| {describe(regime_key(run))} | {ROWS[run['row']][0]} "
            f"| {free['best_fd']:.2f} ({free['best_step']}) → {free['last_fd']:.2f} ({free['rise']:+.0%}) "
            f"| {classifier['best_fd']:.2f} ({classifier['best_step']}) → {classifier['last_fd']:.2f} ({classifier['rise']:+.0%}) "
            f"| {free['gap_first']:+.2f} → {free['gap_last']:+.2f} | {_cell(free['rt_last'], '+.2f')} "
            f"| {_cell(_final(run, 'memorised'), '.3f')} / {_cell(_final(run, 'nn_ratio'), '.3f')} "
            f"| {f'{wall / 60:.0f} min' if wall else '?'} |")
    return "\n".join(lines) + "\n"


def regime_signals(pilot: list[dict]) -> dict[tuple, dict]:
    """Per regime with both rows finished: DA's end gap and FD rise, and the control's best FD over DA's."""
    by_regime: dict[tuple, dict[str, dict]] = {}
    for run in search_runs(pilot):
        by_regime.setdefault(regime_key(run), {})[run["row"]] = run
    signals = {}
    for key, rows in by_regime.items():
        if set(rows) != set(SEARCH_ROWS):
            continue
        da, control = (overfitting_summary(rows[row], SEARCH_CURVE) for row in SEARCH_ROWS)
        signals[key] = {"da_gap": da["gap_last"], "da_rise": da["rise"], "control_rise": control["rise"],
                        "control_over_da": control["best_fd"] / da["best_fd"]}
    return signals


def choose_regime(pilot: list[dict]) -> tuple[tuple | None, str]:
    """The regime :data:`RULE` picks and one generated sentence that says why (``None`` without a complete regime)."""
    signals = regime_signals(pilot)
    if not signals:
        return None, "No regime of the search has both DA and the no-DiffAugment control finished yet."
    worse = {key: s for key, s in signals.items() if s["control_over_da"] >= CONTROL_WORSE}
    pool = worse or signals
    key = max(pool, key=lambda k: pool[k]["da_gap"])
    s = signals[key]
    why = (f"DA's D ends with the largest train − held-out logit gap ({s['da_gap']:+.2f}) of the regimes where the "
           f"control is clearly worse (its best label-free FD {s['control_over_da']:.2f}× DA's)" if worse else
           f"the no-DiffAugment control is clearly worse than DA in no regime (best ratio "
           f"{max(v['control_over_da'] for v in signals.values()):.2f}×, threshold {CONTROL_WORSE:g}×), so DiffAugment's "
           f"own claim is not reproduced here; this regime has the largest DA gap ({s['da_gap']:+.2f})")
    turned = (f"DA's label-free FD ends {s['da_rise']:+.0%} above its best, the control's {s['control_rise']:+.0%}.")
    complete = f"{len(signals)} regime{'s' if len(signals) > 1 else ''} with both rows finished"
    return key, f"Chosen regime (of {complete}): {describe(key)}: {why}. {turned}"


def search_figures(pilot: list[dict], figures: Path) -> list[str]:
    """Label-free FD and D-gap curves of every search run (one line per regime and row); the PNG names."""
    from gan_kd.plots import curve_plot

    runs = search_runs(pilot)
    names = []
    for name, column, ylabel in (("search_fd_vgg.png", SEARCH_CURVE, "label-free FD (2,000 samples)"),
                                 ("search_gap.png", "probe/d_gap", "D(train reals) − D(held-out reals)")):
        groups: dict[str, list] = {}
        for run in sorted(runs, key=lambda r: (regime_key(r), SEARCH_ROWS.index(r["row"]))):
            fraction, width, _, _ = regime_key(run)
            label = f"{len_subset({'data_fraction': fraction})} img, w{width}, {'DA' if run['row'] == 'da' else 'no DA'}"
            groups.setdefault(label, []).append(run["curves"].get(column, []))
        curve_plot(groups, figures / name, ylabel=ylabel, title=f"regime search: {ylabel}")
        names.append(name)
    return names


def ablation_note(study: list[dict], searched: list[dict]) -> str | None:
    """One generated sentence: does DA's D overfit at the ablation's regime? From the ablation's own DA runs (every
    seed that logged the label-free FD), else from the regime search's DA run at the same regime; None when neither
    exists (the report then falls back on the first pilot). A curve that ends more than :data:`OVERFIT_RISE` above
    its best has turned upward; DA overfits when most of its seeds' curves have."""
    regimes = {regime_key(run) for run in study}
    da = sorted((run for run in study if run["row"] == "da" and run["curves"].get(SEARCH_CURVE)),
                key=lambda run: run["config"]["seed"])
    source = f"the ablation's DA runs ({len(da)} seed{'s' if len(da) > 1 else ''})"
    if not da:
        da = [run for run in search_runs(searched) if run["row"] == "da" and regime_key(run) in regimes]
        source = "the regime search's DA run (seed 0) at this regime"
    if not da:
        return None
    summaries = [overfitting_summary(run, SEARCH_CURVE) for run in da]
    turned = sum(summary["rise"] > OVERFIT_RISE for summary in summaries)
    rises = ", ".join(f"{summary['rise']:+.0%}" for summary in summaries)
    gaps = ", ".join(_cell(summary["gap_last"], "+.2f") for summary in summaries)
    evidence = (f"label-free FD at the end vs its best: {rises}; D's train − held-out logit gap at the end: {gaps}")
    if 2 * turned > len(da):
        return (f"DA's D overfits at this regime: in {source}, the label-free FD turns upward in {turned} of "
                f"{len(da)} ({evidence}), the regime of VkD Table 4, where distillation is claimed to help.")
    return (f"DA's D does not clearly overfit at this regime: in {source}, the label-free FD turns upward in "
            f"{turned} of {len(da)} ({evidence}); the verdicts below are not about the regime of VkD Table 4, "
            f"where D overfits.")
