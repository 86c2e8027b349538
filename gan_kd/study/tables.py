"""The pilot's markdown table and its generated sentence, from the runs :mod:`.reading` reads."""
from __future__ import annotations

from gan_kd.study.reading import len_subset, overfitting_summary


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
