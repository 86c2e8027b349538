"""Finiteness helpers (kd_core/runtime/finite.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kd_core.runtime.finite import all_finite, all_ranks_true, first_non_finite, format_terms


def test_first_non_finite_names_the_first_bad_tensor_and_counts():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert first_non_finite(model) is None
    with torch.no_grad():
        model[1].running_var[2] = float("inf")
    assert first_non_finite(model) == "1.running_var: 1 of 4 values"
    with torch.no_grad():
        model[0].weight[0, :2] = float("nan")
    assert first_non_finite(model) == "0.weight: 2 of 12 values"  # parameters are checked before buffers


def test_terms_checks_and_format():
    assert all_finite({"a": 1.0, "b": torch.tensor(2.0)})
    assert not all_finite({"a": 1.0, "b": torch.tensor(float("nan"))})
    assert not all_finite({"a": -math.inf})
    assert format_terms({"loss_ce": 1.23456, "loss_kd": float("nan")}) == "loss_ce 1.235, loss_kd nan"


def test_all_ranks_true_without_process_group_is_the_flag():
    assert all_ranks_true(True) is True and all_ranks_true(False) is False


def test_first_divergence_is_the_first_watched_finite_term_past_the_threshold():
    """Issue 28 item 6: finite but exploding losses are found in the logged rows, in order; NaN/Inf (which stop a run
    by themselves), unwatched names and a threshold of 0 (off) are not."""
    from kd_core.runtime.finite import (DIVERGENCE_THRESHOLD, check_divergence_threshold, divergence_message,
                                        first_divergence)

    watched = lambda name: name.startswith("d/")  # noqa: E731
    rows = [{"step": 1, "d/loss": 2.0, "eval/fd": 5e4},  # a large metric is no loss
            {"step": 2, "d/loss": math.nan, "d/total": -math.inf},
            {"step": 3, "d/loss": 3.0, "d/total": -2e4},
            {"step": 4, "d/loss": 9e9}]
    record = first_divergence(rows, 1e4, watched)
    assert record == {"iteration": 3, "term": "d/total", "value": -2e4, "threshold": 1e4}
    assert first_divergence(rows, 0, watched) is None and first_divergence(rows, 1e10, watched) is None
    assert first_divergence(rows, 1e4, watched, unit="epoch")["epoch"] == 3
    message = divergence_message(record)
    assert "d/total reached -2e+04 at iteration 3" in message and "threshold 10000" in message and "\n" not in message
    assert DIVERGENCE_THRESHOLD == 1e4 and check_divergence_threshold(0) == 0.0
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="divergence_threshold must be >= 0"):
            check_divergence_threshold(bad)
