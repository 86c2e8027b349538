"""scripts/gan_cifar.sh (VkD Table 4 on GPU): the DRY_RUN plan parses with the gan-kd CLI and covers every preset
row at 10/20/100% of both datasets; bad plans are refused in one line (exit 2) before anything runs."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gan_kd.cli import main as gan_cli
from gan_kd.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
KNOBS = ("DATA_ROOT", "RUNS", "SEEDS", "PRESETS", "LECAM", "KD_WEIGHT", "NPROC", "DRY_RUN", "CLIP_WEIGHTS",
         "INCEPTION_WEIGHTS")


def run_script(*args: str, **knobs: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in KNOBS}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(knobs)
    return subprocess.run(["bash", str(REPO / "scripts" / "gan_cifar.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_dry_run_lists_every_row_at_every_fraction_and_each_command_parses():
    done = run_script(DRY_RUN="1")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    commands = [shlex.split(line) for line in done.stdout.splitlines()]
    trains = [words for words in commands if words[:2] == ["gan-kd", "train"]]
    rows = {"da", "da-kd", "vkd", "vkd-whiten", "spkd", "pkd", "kd-dlgan",
            "label-distillation"}  # fitnets = da-kd: not run twice
    assert len(trains) == 2 * 3 * len(rows) * 3  # datasets x fractions x rows x seeds
    seen = set()
    for words in trains:
        params = gan_cli.commands["train"].make_context("train", words[2:]).params
        assert params["preset"] in PRESETS
        seen.add((params["dataset"], params["data_fraction"], params["preset"], params["seed"]))
        assert (params["teacher"] is None) == (params["preset"] == "da")
    assert {(d, f) for d, f, _, _ in seen} == {(d, f) for d in ("cifar10", "cifar100") for f in (0.1, 0.2, 1.0)}
    assert {p for _, _, p, _ in seen} == rows
    assert sum(words[:2] == ["gan-kd", "evaluate"] for words in commands) == len(trains)
    assert [words[-1] for words in commands if words[:2] == ["gan-kd", "table"]] == [
        "results/gan_cifar10_table4.md", "results/gan_cifar100_table4.md"]


@pytest.mark.parametrize("knob, expected", [
    (None, {"da-kd": 1.0, "vkd-whiten": 1.0, "spkd": 30.0, "pkd": 3000.0, "kd-dlgan": 0.0003}),  # each preset's own
    ("2.5", {"da-kd": 2.5, "vkd-whiten": 2.5, "spkd": 2.5, "pkd": 2.5, "kd-dlgan": 2.5}),     # one weight for all
])
def test_each_distillation_row_trains_at_its_presets_weight_unless_kd_weight_is_set(knob, expected):
    from gan_kd.config import TrainConfig
    from gan_kd.presets import expand_preset

    done = run_script("cifar10", "0.1", DRY_RUN="1", SEEDS="0", PRESETS=" ".join(expected),
                      **({"KD_WEIGHT": knob} if knob else {}))
    assert done.returncode == 0, done.stderr
    for words in (shlex.split(line) for line in done.stdout.splitlines()):
        if words[:2] != ["gan-kd", "train"]:
            continue
        params = gan_cli.commands["train"].make_context("train", words[2:]).params
        assert ("--kd-weight" in words) == (knob is not None)
        options = expand_preset(params["preset"], {} if knob is None else {"kd_weight": float(knob)})
        assert options.get("kd_weight", TrainConfig.kd_weight) == expected[params["preset"]], params["preset"]


@pytest.mark.parametrize("args, knobs, message", [
    (["cifar10", "0.5"], {}, "unknown fraction 0.5"),
    (["mnist"], {}, "unknown dataset mnist"),
    ([], {"PRESETS": "da kd-clip"}, "unknown preset(s) kd-clip; allowed: da, da-kd"),
    ([], {"NPROC": "two"}, "NPROC must be a positive integer"),
    ([], {"SEEDS": "0 x"}, "SEEDS must be non-negative integers"),
])
def test_bad_plans_are_refused_in_one_line(args, knobs, message):
    done = run_script(*args, DRY_RUN="1", **knobs)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
