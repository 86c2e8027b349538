"""The study's rows, claims and regime: what one run ``(row, regime, seed)`` is, its name and its ``gan-kd`` commands.

Rows: the projector × normaliser ablation of VkD (VkD paper §3, Table 4: DA, DA + KD, DA + VkD,
DA + VkD w/ whitening) plus linear projector + whitening. FitNets on D's feature (a linear projector and an
L2 loss to the raw teacher feature) is the ``da-kd`` row itself, so it is not run twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

# row -> (label, gan-kd train options). Everything else is equal across rows.
ROWS: dict[str, tuple[str, list[str]]] = {
    "da": ("DA (baseline)", ["--preset", "da"]),
    # issue 25's positive control: the same BigGAN without DiffAugment, which must overfit where DA's claim lives
    "no-da": ("BigGAN without DiffAugment (control)", ["--preset", "da", "--diffaug", ""]),
    "da-kd": ("DA + KD (linear, no normaliser; = FitNets)", ["--preset", "da-kd"]),
    "linear-whiten": ("DA + linear + whitening", ["--preset", "da-kd", "--normalizer", "whiten"]),
    "vkd": ("DA + VkD (orthogonal, no normaliser)", ["--preset", "vkd"]),
    "vkd-whiten": ("DA + VkD w/ whitening (orthogonal)", ["--preset", "vkd-whiten"]),
    # the other distillation baselines of VkD Table 4/5 (issue 14)
    "spkd": ("DA + SPKD (Tung & Mori 2019)", ["--preset", "spkd"]),
    "pkd": ("DA + PKD (Passalis & Tefas 2018)", ["--preset", "pkd"]),
    "kd-dlgan": ("DA + KD-DLGAN (Cui et al. 2023; its LeCam 0.3 acts only after iteration 1000)", ["--preset", "kd-dlgan"]),
    "label-distillation": ("DA + label distillation", ["--preset", "label-distillation"]),
}
TEACHERLESS_ROWS = ("da", "no-da")
# The panels of the report's curve figures: ten rows' seed bands in one axes hide each other, so each family of
# rows gets a panel, with DA in every panel as the common reference (:func:`curve_panels`).
CURVE_PANELS: dict[str, tuple[str, ...]] = {
    "DiffAugment and its control": ("da", "no-da"),
    "VkD's ablation (Table 4)": ("da", "da-kd", "linear-whiten", "vkd", "vkd-whiten"),
    "the other distillation baselines": ("da", "vkd-whiten", "spkd", "pkd", "kd-dlgan", "label-distillation"),
}


def curve_panels(rows: list[str], panels: dict[str, tuple[str, ...]] = CURVE_PANELS) -> dict[str, list[str]]:
    """The panels (title -> rows, in ``rows``' order) for the rows a figure shows: each of ``panels`` that holds a
    row of ``rows`` no earlier panel shows, other than the reference (its first), and "other rows" for rows in no
    panel; one panel "every row" when none applies."""
    chosen: dict[str, list[str]] = {}
    for title, members in panels.items():
        shown = [row for row in rows if row in members]
        earlier = {row for rows_shown in chosen.values() for row in rows_shown}
        if any(row != members[0] and row not in earlier for row in shown):
            chosen[title] = shown
    placed = {row for members in chosen.values() for row in members}
    others = [row for row in rows if row not in placed and not any(row in members for members in panels.values())]
    if others:  # with the panels' reference beside them
        references = {members[0] for members in panels.values()}
        chosen["other rows"] = [row for row in rows if row in references or row in others]
    return chosen or {"every row": list(rows)}


class Claim(NamedTuple):
    """A claim the study tests: ``candidate`` is better than ``baseline``; ``source``: whose claim it is."""

    claim: str
    candidate: str
    baseline: str
    source: str = "VkD"


# The claims this study tests: VkD Table 4's, and DiffAugment's own as the sanity check (issue 25's positive
# control: if DA does not beat BigGAN without DiffAugment here, the regime is not where the claims live).
CLAIMS = [
    Claim("(0) DA improves on the no-DiffAugment control", "da", "no-da", source="DiffAugment"),
    Claim("(a) whitening improves on VkD without it", "vkd-whiten", "vkd"),
    Claim("(b) the orthogonal projector improves on the linear one (no normaliser)", "vkd", "da-kd"),
    Claim("(b') the orthogonal projector improves on the linear one (with whitening)", "vkd-whiten", "linear-whiten"),
    Claim("(c) distillation (VkD w/ whitening) improves on DA", "vkd-whiten", "da"),
    Claim("(c') distillation (plain KD) improves on DA", "da-kd", "da"),
    # VkD Table 4 also ranks VkD w/ whitening above every other distillation baseline (issue 14)
    Claim("(d) VkD w/ whitening improves on SPKD", "vkd-whiten", "spkd"),
    Claim("(d) VkD w/ whitening improves on PKD", "vkd-whiten", "pkd"),
    Claim("(d) VkD w/ whitening improves on KD-DLGAN", "vkd-whiten", "kd-dlgan"),
    Claim("(d) VkD w/ whitening improves on label distillation", "vkd-whiten", "label-distillation"),
]


@dataclass(frozen=True)
class Regime:
    """The sizes every run of one study shares."""

    fraction: float = 0.01
    width: int = 8
    iterations: int = 1000
    eval_every: int = 100
    eval_samples: int = 2000
    ema_decay: float = 0.99
    ema_start: int = 100
    final_samples: int = 10_000
    repeats: int = 2
    batch_size: int = 16
    precision: str = "fp32"       # gan-kd train --precision (fp32 = the CPU's auto)
    channels_last: bool = False
    compile: bool = False         # gan-kd train --compile (gan_kd.study.modes)

    def tag(self) -> str:
        batch = "" if self.batch_size == 50 else f"_b{self.batch_size}"  # 50: the pilot's first runs
        precision = "" if self.precision == "fp32" else f"_{self.precision}"
        compiled = "_c" if self.compile else ""
        memory = "_cl" if self.channels_last else ""
        return f"f{self.fraction:g}_w{self.width}{batch}_i{self.iterations}{precision}{compiled}{memory}"


@dataclass(frozen=True)
class Assets:
    """Where the data, the teacher and the FD network are."""

    data_root: str
    teacher: str
    fd_net: str


WEIGHT_MARK = "@kd"  # "vkd-whiten@kd0.03": the row at --kd-weight 0.03 (the weight calibration's sweep runs)


def weighted(row: str, weight: float) -> str:
    """The name of ``row`` run at an explicit ``--kd-weight``."""
    return f"{row}{WEIGHT_MARK}{weight:g}"


def split_row(row: str) -> tuple[str, float | None]:
    """``"vkd@kd0.3"`` -> ``("vkd", 0.3)``; a plain row -> ``(row, None)`` (the preset's weight)."""
    base, mark, weight = row.partition(WEIGHT_MARK)
    return base, float(weight) if mark else None


def run_name(row: str, regime: Regime, seed: int) -> str:
    return f"{row}_{regime.tag()}_s{seed}"


def train_command(row: str, regime: Regime, seed: int, out: Path, assets: Assets, gan_kd: str = "gan-kd") -> list[str]:
    base, weight = split_row(row)
    if base not in ROWS:
        raise ValueError(f"unknown row {row!r}; allowed: {', '.join(ROWS)}")
    if weight is not None and base in TEACHERLESS_ROWS:
        raise ValueError(f"row {base!r} has no distillation term to weight")
    options = [*ROWS[base][1], *(["--kd-weight", f"{weight:g}"] if weight is not None else [])]
    command = [gan_kd, "train", "--out", str(out), *options, "--dataset", "fashion_mnist",
               "--data-root", assets.data_root, "--data-fraction", f"{regime.fraction:g}",
               "--iterations", str(regime.iterations), "--batch-size", str(regime.batch_size),
               "--g-ch", str(regime.width), "--d-ch", str(regime.width),
               "--ema-decay", str(regime.ema_decay), "--ema-start", str(regime.ema_start),
               "--eval-every", str(regime.eval_every), "--eval-samples", str(regime.eval_samples),
               "--metrics", ",".join(TRAINING_METRICS),
               "--fd-features", f"ckpt:{assets.fd_net}", "--overfit-probe", "500",
               "--sample-every", "0", "--checkpoint-every", str(regime.eval_every), "--log-every", "50",
               "--seed", str(seed), "--threads", "1", "--device", "cpu"]
    if base not in TEACHERLESS_ROWS:
        command += ["--teacher", f"ckpt:{assets.teacher}"]
    if regime.precision != "fp32":  # fp32 is what the default (auto) picks on the CPU; runs before these options
        command += ["--precision", regime.precision]  # were recorded without them and must resume unchanged
    if regime.channels_last:
        command += ["--channels-last"]
    if regime.compile:
        command += ["--compile"]
    return command


# Logged at every evaluation during training: the label-free FD picks the best checkpoint (it rewards no
# class-collapsed samples), the classifier FD is the curve the earlier runs logged.
TRAINING_METRICS = ("fd", "fd_vgg")
# The final evaluation of the best checkpoint: the whole suite (gan_kd.metrics.evaluator) in both spaces.
FINAL_METRICS = ("fd", "cls", "icfd", "suite")


def evaluate_command(out: Path, regime: Regime, assets: Assets, gan_kd: str = "gan-kd") -> list[str]:
    return [gan_kd, "evaluate", str(out), "--checkpoint", "best", "--metrics", ",".join(FINAL_METRICS), "--fd-features",
            f"ckpt:{assets.fd_net}", "--data-root", assets.data_root, "--num-samples", str(regime.final_samples),
            "--repeats", str(regime.repeats), "--device", "cpu"]


def regime_of(config: dict) -> Regime:
    return Regime(fraction=config["data_fraction"], width=config["g_ch"], iterations=config["iterations"],
                  eval_every=config["eval_every"], eval_samples=config["eval_samples"], ema_decay=config["ema_decay"],
                  ema_start=config["ema_start"], batch_size=config["batch_size"],
                  precision="fp32" if config.get("precision", "auto") == "auto" else config["precision"],
                  channels_last=bool(config.get("channels_last", False)), compile=bool(config.get("compile", False)))
