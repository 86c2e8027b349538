"""What runs recorded before an option or a metric name existed, and how a resume reads it today.

:data:`ADDED_KEYS` gives an option added later the value the older runs had (their ``config.json`` lacks the key);
:func:`rename_legacy_window` renames a ``last.pt``'s partial metrics window saved under the old loss-term names.
"""
from __future__ import annotations

from gan_kd.metrics.features import LABEL_FREE_DEFAULT

# Options added after runs were recorded -> the value those runs had (their config.json lacks the key).
ADDED_KEYS = {"distill_loss": "vkd", "label_free": LABEL_FREE_DEFAULT}

# metrics.jsonl names of the loss terms before they were named per step; a last.pt written then holds its partial
# metrics window under these names, which a resume renames (:func:`rename_legacy_window`).
LEGACY_METRIC_NAMES = {"d_loss": "d/loss_hinge", "lecam": "d/loss_lecam", "kd_loss": "d/loss_kd",
                       "d_real": "d/logit_real", "d_fake": "d/logit_fake", "g_loss": "g/loss_hinge"}


def rename_legacy_window(sums: dict[str, float], kd_weight: float) -> dict[str, float]:
    """A metrics window saved under :data:`LEGACY_METRIC_NAMES`, in today's names (totals rebuilt from the terms).

    The window holds sums over iterations of per-iteration values, so the totals are the same sums of the terms.
    """
    if not set(sums) & set(LEGACY_METRIC_NAMES):
        return dict(sums)
    renamed = {LEGACY_METRIC_NAMES.get(name, name): value for name, value in sums.items()}
    if "d/loss_hinge" in renamed and "d/total" not in renamed:
        renamed["d/total"] = (renamed["d/loss_hinge"] + renamed.get("d/loss_lecam", 0.0)
                              + kd_weight * renamed.get("d/loss_kd", 0.0))
    if "g/loss_hinge" in renamed and "g/total" not in renamed:
        renamed["g/total"] = renamed["g/loss_hinge"]
    return renamed
