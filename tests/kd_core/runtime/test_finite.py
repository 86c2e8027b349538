"""Finiteness helpers (kd_core/runtime/finite.py)."""
from __future__ import annotations

import math

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
