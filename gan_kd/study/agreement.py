"""Verdicts that need agreement (issue 27, item 3): each claim judged by the label-free FD and checked against every
other metric of the final evaluation, by :data:`RULE`, applied by :func:`claim_verdict`, never by hand."""
from __future__ import annotations

from gan_kd.study.families import (CLOSEST_TO_ONE, DIRECTIONS, FAMILIES, FAMILY_OF, compare_metric,
                                   difference_interval, metric_values)
from gan_kd.study.reading import row_runs
from gan_kd.study.rows import CLAIMS, Claim

# A verdict needs the study's design, >= 5 seeds per row (issue 27): a percentile bootstrap over 2 or 3 seeds is
# about their range, and resolved differences that the next seeds would undo. The family tables show intervals
# from 2 seeds on (families.MIN_SEEDS); only the verdicts wait.
VERDICT_SEEDS = 5
PRIMARY = "fd_vgg"  # the label-free FD: trained on no labels, so it cannot reward class-collapsed samples

RULE = (
    "**Agreement rule** (applied by `gan_kd.study.agreement.claim_verdict`, never by hand). Each metric compares "
    "the candidate row with the baseline by `kd_core.stats.compare`: the 95% percentile-bootstrap interval of the "
    "difference of the rows' means over seeds resolves it as *better* when it excludes 0 on the metric's better "
    f"side and *worse* when it excludes 0 on the other, with at least {VERDICT_SEEDS} seeds per row; a metric best "
    f"closest to 1 ({', '.join(k for k, d in DIRECTIONS.items() if d == CLOSEST_TO_ONE)}) is compared as |x − 1|. "
    f"A claim (candidate better than baseline) is **yes** when the label-free FD (`{PRIMARY}`) resolves it as "
    f"better and no other metric resolves it as worse; **contradicted (by *metric*, *family*)** when `{PRIMARY}` "
    f"says better and another metric says worse, or `{PRIMARY}` says worse and another says better; **no** when "
    f"`{PRIMARY}` says worse and no other metric says better; **not resolved** otherwise (`{PRIMARY}` resolves "
    f"neither way, or a row has fewer than {VERDICT_SEEDS} seeds with it). Every other metric counts, in any family "
    f"(KID in the label-free FD's own space too): "
    + "; ".join(f"{family.name}: " + ", ".join(f"`{key}` {direction}" for key, direction in family.metrics
                                               if key != PRIMARY) for family in FAMILIES
                if any(key != PRIMARY for key, _ in family.metrics))
    + ". A metric a row's copies do not hold counts neither way; the line lists it as not scored."
)


def claim_verdict(runs: list[dict], claim: Claim) -> dict:
    """The verdict of :data:`RULE` on ``claim`` and the metrics behind it: ``primary`` (``compare`` on
    ``fd_vgg``, or None), ``better``, ``worse``, ``unresolved`` and ``unscored`` (metric keys)."""
    candidate, baseline = row_runs(runs, claim.candidate), row_runs(runs, claim.baseline)
    primary = compare_metric(candidate, baseline, PRIMARY, VERDICT_SEEDS)
    sides: dict[str, list[str]] = {"better": [], "worse": [], "unresolved": [], "unscored": []}
    for key in DIRECTIONS:
        if key == PRIMARY:
            continue
        comparison = compare_metric(candidate, baseline, key, VERDICT_SEEDS)
        if comparison is None:
            enough = min(len(metric_values(candidate, key)), len(metric_values(baseline, key))) >= VERDICT_SEEDS
            sides["unresolved" if enough else "unscored"].append(key)
        else:
            sides[{"yes": "better", "no": "worse"}.get(comparison["verdict"], "unresolved")].append(key)
    said = primary["verdict"] if primary else "not resolved"
    against = {"yes": sides["worse"], "no": sides["better"]}.get(said, [])
    if against:
        verdict = "contradicted (" + "; ".join(f"by {key}, {FAMILY_OF[key]}" for key in against) + ")"
    else:
        verdict = said
    return {"claim": claim, "verdict": verdict, "primary": primary, **sides,
            "n": (len(metric_values(candidate, PRIMARY)), len(metric_values(baseline, PRIMARY)))}


def _keys(keys: list[str]) -> str:
    return ", ".join(f"{key} ({FAMILY_OF[key]})" for key in keys)


def describe(item: dict, full: bool = True) -> str:
    """``**verdict** — the label-free FD's difference, and which metrics agree and contradict`` (with ``full``, also
    those that resolve nothing or are not scored)."""
    claim, primary = item["claim"], item["primary"]
    if primary is None:
        fd = (f"too few seeds with the label-free FD ({item['n'][0]} {claim.candidate}, {item['n'][1]} "
              f"{claim.baseline}; at least {VERDICT_SEEDS} each)")
    else:
        fd = (f"label-free FD {claim.candidate} − {claim.baseline} = {difference_interval(primary)} "
              f"(n = {primary['n'][0]} vs {primary['n'][1]})")
    said = primary["verdict"] if primary else "not resolved"
    agree, against = {"yes": ("better", "worse"), "no": ("worse", "better")}.get(said, (None, None))
    parts = [fd]
    if agree:
        parts += [f"agree ({agree}): {_keys(item[agree]) or 'none'}", f"contradict ({against}): {_keys(item[against]) or 'none'}"]
    else:
        parts += [f"{side}: {_keys(item[side])}" for side in ("better", "worse") if item[side]]
    parts += [f"{name}: {', '.join(item[side])}" for side, name in (("unresolved", "not resolved"), ("unscored", "not scored"))
              if item[side] and full]
    return f"**{item['verdict']}** — " + "; ".join(parts)


def whose(claim: Claim) -> str:
    return f"{claim.source}'s claim" + ("" if claim.source == "VkD" else ": the sanity check, not VkD's")


def verdict_lines(runs: list[dict], claims: list[Claim] = CLAIMS) -> list[str]:
    """The report's verdicts: one line per claim, under :data:`RULE`."""
    return [f"- **{item['claim'].claim}** ({whose(item['claim'])}): {describe(item)}."
            for item in (claim_verdict(runs, claim) for claim in claims)]
