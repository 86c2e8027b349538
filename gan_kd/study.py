"""The CPU-scale GAN study (``results/gan_fmnist.md``): runs, their small result files, and the report.

A study is a set of runs ``(row, regime, seed)``. Each run is ``gan-kd train`` (resumed if it was
interrupted) followed by ``gan-kd evaluate --checkpoint best``, in ``<runs>/<name>/``. When both have
finished, the run's small files (``config.json``, ``result.json`` (training), ``evaluation.json``,
``metrics.jsonl`` with the FD and overfitting-probe curves, and the final sample grid) are copied to
``<results>/<name>/``, which is what gets committed; a run whose copy holds ``evaluation.json`` is finished and
is skipped. Every table and plot
is regenerated from those copies by :func:`write_report`, so no number is typed by hand.

Rows: the projector × normaliser ablation of VkD (VkD paper §3, Table 4: DA, DA + KD, DA + VkD,
DA + VkD w/ whitening) plus linear projector + whitening. FitNets on D's feature (a linear projector and an
L2 loss to the raw teacher feature) is the ``da-kd`` row itself, so it is not run twice.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gan_kd.report import EVALUATION_FILE, load_run
from kd_core.runtime.io import write_bytes, write_json, write_text
from kd_core.runtime.run import RESULT_FILE
from kd_core.runtime.metrics import metric_curves
from kd_core.stats import bootstrap_mean_ci, compare, mean_std

# row -> (label, gan-kd train options). Everything else is equal across rows.
ROWS: dict[str, tuple[str, list[str]]] = {
    "da": ("DA (baseline)", ["--preset", "da"]),
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
# The claims of VkD Table 4 this study tests: (claim, candidate row, baseline row).
CLAIMS = [
    ("(a) whitening improves on VkD without it", "vkd-whiten", "vkd"),
    ("(b) the orthogonal projector improves on the linear one (no normaliser)", "vkd", "da-kd"),
    ("(b') the orthogonal projector improves on the linear one (with whitening)", "vkd-whiten", "linear-whiten"),
    ("(c) distillation (VkD w/ whitening) improves on DA", "vkd-whiten", "da"),
    ("(c') distillation (plain KD) improves on DA", "da-kd", "da"),
]
SMALL_FILES = ("config.json", RESULT_FILE, "metrics.jsonl", "metrics.csv")  # csv: older runs


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

    def tag(self) -> str:
        batch = "" if self.batch_size == 50 else f"_b{self.batch_size}"  # 50: the pilot's first runs
        precision = "" if self.precision == "fp32" else f"_{self.precision}"
        memory = "_cl" if self.channels_last else ""
        return f"f{self.fraction:g}_w{self.width}{batch}_i{self.iterations}{precision}{memory}"


@dataclass(frozen=True)
class Assets:
    """Where the data, the teacher and the FD network are."""

    data_root: str
    teacher: str
    fd_net: str


def run_name(row: str, regime: Regime, seed: int) -> str:
    return f"{row}_{regime.tag()}_s{seed}"


def train_command(row: str, regime: Regime, seed: int, out: Path, assets: Assets, gan_kd: str = "gan-kd") -> list[str]:
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; allowed: {', '.join(ROWS)}")
    command = [gan_kd, "train", "--out", str(out), *ROWS[row][1], "--dataset", "fashion_mnist",
               "--data-root", assets.data_root, "--data-fraction", f"{regime.fraction:g}",
               "--iterations", str(regime.iterations), "--batch-size", str(regime.batch_size),
               "--g-ch", str(regime.width), "--d-ch", str(regime.width),
               "--ema-decay", str(regime.ema_decay), "--ema-start", str(regime.ema_start),
               "--eval-every", str(regime.eval_every), "--eval-samples", str(regime.eval_samples), "--metrics", "fd",
               "--fd-features", f"ckpt:{assets.fd_net}", "--overfit-probe", "500",
               "--sample-every", "0", "--checkpoint-every", str(regime.eval_every), "--log-every", "50",
               "--seed", str(seed), "--threads", "1", "--device", "cpu"]
    if row != "da":
        command += ["--teacher", f"ckpt:{assets.teacher}"]
    if regime.precision != "fp32":  # fp32 is what the default (auto) picks on the CPU; runs before these options
        command += ["--precision", regime.precision]  # were recorded without them and must resume unchanged
    if regime.channels_last:
        command += ["--channels-last"]
    return command


def evaluate_command(out: Path, regime: Regime, assets: Assets, gan_kd: str = "gan-kd") -> list[str]:
    return [gan_kd, "evaluate", str(out), "--checkpoint", "best", "--metrics", "fd", "--fd-features",
            f"ckpt:{assets.fd_net}", "--data-root", assets.data_root, "--num-samples", str(regime.final_samples),
            "--repeats", str(regime.repeats), "--device", "cpu"]


def is_finished(results: Path, name: str) -> bool:
    return (results / name / EVALUATION_FILE).is_file()


def execute(row: str, regime: Regime, seed: int, *, runs: Path, results: Path, assets: Assets,
            gan_kd: str = "gan-kd", log=print) -> Path:
    """Train (or resume), evaluate and copy the small files of one run; skip it if its copy is complete."""
    name = run_name(row, regime, seed)
    if is_finished(results, name):
        log(f"{name}: finished (skipped)")
        return results / name
    out = runs / name
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.monotonic()
    with open(runs / f"{name}.log", "a") as stream:
        for command in (train_command(row, regime, seed, out, assets, gan_kd), evaluate_command(out, regime, assets, gan_kd)):
            stream.write("$ " + " ".join(command) + "\n")
            stream.flush()
            code = subprocess.call(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
            if code:
                raise RuntimeError(f"{name}: `{' '.join(command[:2])}` exited with {code}; see {runs / name}.log")
    write_json(results / name / ASSETS_FILE, asset_digests(assets))  # before evaluation.json marks the copy complete
    copy_small_files(out, results / name)
    log(f"{name}: done in {time.monotonic() - started:.0f} s")
    return results / name


ASSETS_FILE = "assets.json"


def asset_digests(assets: Assets) -> dict:
    """SHA-256 of the teacher and FD-network files a run used: the checkpoints are not committed, so this is
    what tells whether runs of different sessions measured FD with the same network."""
    def digest(path: str) -> str:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    return {"fd_net_sha256": digest(assets.fd_net), "teacher_sha256": digest(assets.teacher)}


def copy_small_files(run_dir: Path, destination: Path) -> None:
    """The committed part of a run; ``evaluation.json`` is written last, so its presence marks a complete copy."""
    for name in (*SMALL_FILES, ASSETS_FILE, "samples/final.png"):
        source = Path(run_dir) / name
        if source.is_file():
            write_bytes(Path(destination) / source.name, source.read_bytes())
    write_bytes(Path(destination) / EVALUATION_FILE, (Path(run_dir) / EVALUATION_FILE).read_bytes())


# ------------------------------------------------------------------------------------------------ reading


def load_runs(results: Path) -> list[dict]:
    """Every finished run copy under ``results`` (a folder per run)."""
    runs = []
    for evaluation in sorted(Path(results).glob(f"*/{EVALUATION_FILE}")):
        folder = evaluation.parent
        row, _, rest = folder.name.partition("_f")
        assets = folder / ASSETS_FILE
        runs.append({**load_run(folder), "name": folder.name, "dir": folder, "row": row,
                     "assets": json.loads(assets.read_text()) if assets.is_file() else {}, "curves": _curves(folder)})
    return runs


def _curves(folder: Path) -> dict[str, list[tuple[int, float]]]:
    try:
        return metric_curves(folder)
    except FileNotFoundError:
        return {}


def regime_of(config: dict) -> Regime:
    return Regime(fraction=config["data_fraction"], width=config["g_ch"], iterations=config["iterations"],
                  eval_every=config["eval_every"], eval_samples=config["eval_samples"], ema_decay=config["ema_decay"],
                  ema_start=config["ema_start"], batch_size=config["batch_size"],
                  precision="fp32" if config.get("precision", "auto") == "auto" else config["precision"],
                  channels_last=bool(config.get("channels_last", False)))


# ------------------------------------------------------------------------------------------------ report


def _fd(run: dict) -> float:
    return run["result"]["metrics"]["fd"]["mean"]


def overfitting_summary(run: dict) -> dict:
    """Where the FD curve bottoms out, how far it rises after, and the probe's gap at the start and end."""
    fd = run["curves"].get("eval/fd", [])
    gap = run["curves"].get("probe/d_gap", [])
    rt = run["curves"].get("probe/rt", [])
    if not fd:
        return {}
    best_step, best = min(fd, key=lambda point: point[1])
    last_step, last = fd[-1]
    two_thirds = min(fd, key=lambda point: abs(point[0] - 2 * last_step / 3))[1]
    return {"best_step": best_step, "best_fd": best, "last_step": last_step, "last_fd": last,
            "rise": last / best - 1, "last_third": last / two_thirds - 1, "gap_first": gap[0][1] if gap else math.nan,
            "gap_last": gap[-1][1] if gap else math.nan, "gap_max": max(v for _, v in gap) if gap else math.nan,
            "rt_last": rt[-1][1] if rt else math.nan}


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


def len_subset(config: dict) -> int:
    from gan_kd.data import subset_indices

    return len(subset_indices(60_000, config["data_fraction"], config.get("subset_seed", 0)))


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


def verdicts(runs: list[dict]) -> list[str]:
    sentences = []
    for claim, candidate, baseline in CLAIMS:
        a = [_fd(r) for r in runs if r["row"] == candidate]
        b = [_fd(r) for r in runs if r["row"] == baseline]
        if len(a) < 2 or len(b) < 2:
            sentences.append(f"- **{claim}**: not resolved — too few finished seeds ({len(a)} {candidate}, "
                             f"{len(b)} {baseline}).")
            continue
        c = compare(a, b)
        direction = "lower (better)" if c["difference"] < 0 else "higher (worse)"
        spread = "exceeds" if c["exceeds_spread"] else "does not exceed"
        sentences.append(f"- **{claim}**: {c['verdict']} — {candidate} is {abs(c['difference']):.2f} FD {direction} "
                         f"than {baseline} (95% bootstrap CI of the difference [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}], "
                         f"n = {c['n'][0]} vs {c['n'][1]}), which {spread} the seed spread (largest std "
                         f"{c['spread']:.2f}).")
    return sentences


def plot_rows(runs: list[dict], rows: list[str], column: str, path: Path, ylabel: str, title: str) -> Path:
    """One line per row: the mean over seeds of ``column`` against the iteration, with a min–max band."""
    from gan_kd.plots import curve_plot

    groups = {ROWS[row][0] if row in ROWS else row: [r["curves"].get(column, []) for r in runs if r["row"] == row]
              for row in rows}
    return curve_plot({k: [c for c in v if c] for k, v in groups.items() if any(v)}, path, ylabel=ylabel, title=title)


def hardware(runs: list[dict]) -> str:
    found = sorted({r["result"].get("hardware", "?") for r in runs})
    return "; ".join(found)


def commands(runs: list[dict], runs_dir: str = "runs/gan_fmnist") -> list[str]:
    from gan_kd.report import train_command as reproduce

    here = str(Path.cwd()) + os.sep  # the absolute paths a run recorded, shown relative to the checkout
    # (and those of another checkout of this repository, e.g. a worktree the runs were started from)
    return [re.sub(r"(?<=ckpt:)/\S*?/(?=runs/teachers/)", "",
                   reproduce(r["config"], f"{runs_dir}/{r['name']}").replace(here, "")) for r in runs]


def write_report(pilot_results: Path, study_results: Path, out_md: Path, figures: Path, *, rows: list[str],
                 min_seeds: int = 5, command: str = "python scripts/gan_fmnist_study.py report") -> str:
    """Regenerate ``results/gan_fmnist.md`` and its PNGs from the committed run copies."""
    figures.mkdir(parents=True, exist_ok=True)
    pilot = load_runs(pilot_results) if Path(pilot_results).is_dir() else []
    study = load_runs(study_results) if Path(study_results).is_dir() else []
    rel = os.path.relpath(figures, out_md.parent)
    parts = ["# GAN distillation at CPU scale: Fashion-MNIST, data-limited (VkD Table 4 rows)", "",
             f"Generated by `{command}` from the run copies in `{pilot_results}/` and `{study_results}/` "
             f"(each: config.json, result.json (training), "
             "evaluation.json, metrics.jsonl); no number here is typed by hand.", "",
             "FD is the Fréchet distance on the pooled features of a ResNet-32 classifier trained here on "
             "Fashion-MNIST (seed 1), **not FID**: Inception weights cannot be downloaded on this machine. The "
             "teacher is a different network (ResNet-20, seed 0). Evaluation: 10,000 samples of the best EMA "
             "generator against the 10,000 test images, 2 sample sets; the best checkpoint is chosen by the "
             "2,000-sample FD logged during training.", ""]
    if pilot:
        parts += ["## 1. Pilot: where does plain DA overfit?", "",
                  "DA only, seed 0. D's mean logit on 500 training reals vs 500 held-out (test) reals is logged at each "
                  "evaluation (ADA, Karras et al. 2020, §3): a growing gap and r_t → 1 mean D has begun to memorise "
                  "its training set; a FD curve that bottoms out and rises means the generator suffers for it.", "",
                  pilot_table(pilot), pilot_reading(pilot), ""]
        regimes = sorted({regime_of(r["config"]) for r in pilot}, key=lambda g: (g.fraction, -g.batch_size, g.iterations))

        def label(g: Regime) -> str:
            return f"{g.fraction:g} ({len_subset({'data_fraction': g.fraction})} images), batch {g.batch_size}"

        for name, column, ylabel in (("pilot_fd.png", "eval/fd", "FD (2,000 samples)"),
                                     ("pilot_gap.png", "probe/d_gap", "D(train reals) − D(held-out reals)")):
            groups = {label(g): [r["curves"].get(column, []) for r in pilot if regime_of(r["config"]) == g]
                      for g in regimes}
            from gan_kd.plots import curve_plot

            curve_plot(groups, figures / name, ylabel=ylabel, title=f"pilot (DA): {ylabel}")
            parts.append(f"![{name}]({rel}/{name})")
        parts += ["", f"Hardware: {hardware(pilot)}.", ""]
    if study:
        regimes = sorted({regime_of(r["config"]) for r in study}, key=lambda g: g.tag())
        parts += ["## 2. The ablation at the chosen regime", ""]
        if pilot and not any(overfitting_summary(run).get("rise", 0) > 0.05 for run in pilot):
            parts += ["**Caveat, from the pilot:** DA did not overfit in any regime that fits the budget, so this "
                      "ablation compares the methods early in training, with DA's FD still falling, not in the "
                      "regime of VkD Table 4, where the discriminator's overfitting is what distillation is "
                      "claimed to relieve. Its verdicts do not transfer to that claim either way.", ""]
        for regime in regimes:
            members = [r for r in study if regime_of(r["config"]) == regime]
            parts += [f"Regime: Fashion-MNIST fraction {regime.fraction:g} ({len_subset({'data_fraction': regime.fraction})} "
                      f"images), G and D width {regime.width} (channels 4×{regime.width}), {regime.iterations} "
                      f"iterations of 4 D steps + 1 G step at batch {regime.batch_size}, EMA {regime.ema_decay} from "
                      f"iteration {regime.ema_start}, evaluation every {regime.eval_every} iterations. Everything "
                      f"but the seed is equal within a row; teacher = ResNet-20 classifier checkpoint, "
                      f"kd weight 1.", "", study_table(members, rows, min_seeds), "",
                      "### Verdicts", "", *verdicts(members), "",
                      "Verdict rule: *yes* when the 95% bootstrap interval of the difference of means excludes 0 on "
                      "the better side, *no* when it excludes 0 on the worse side, *not resolved* otherwise. With "
                      "5 seeds a percentile bootstrap is narrower than a t interval; read borderline cases with that "
                      "in mind.", ""]
            for name, column, ylabel in (("study_fd.png", "eval/fd", "FD (2,000 samples)"),
                                         ("study_gap.png", "probe/d_gap", "D(train reals) − D(held-out reals)")):
                plot_rows(members, rows, column, figures / name, ylabel, f"{ylabel}: mean over seeds, min–max band")
                parts.append(f"![{name}]({rel}/{name})")
            grids = [(row, members_row[0]) for row in rows
                     for members_row in [[r for r in members if r["row"] == row]] if members_row
                     and (members_row[0]["dir"] / "final.png").is_file()]
            if grids:
                parts += ["", "Final sample grids (EMA generator, lowest seed, one class per row):", ""]
                parts += [f"- {ROWS[row][0]}: ![{row}]({os.path.relpath(run['dir'] / 'final.png', out_md.parent)})"
                          for row, run in grids]
        parts += ["", f"Hardware: {hardware(study)}.", ""]
    else:
        parts += ["## 2. The ablation", "", "No finished run yet.", ""]
    every = pilot + study
    fd_nets = {r["assets"].get("fd_net_sha256", "unrecorded") for r in study}
    if len(fd_nets) > 1:
        parts += [f"**Warning:** the ablation's runs used {len(fd_nets)} different FD networks (SHA-256 in each "
                  f"run's {ASSETS_FILE}); their FD values are not comparable. Re-run the odd ones.", ""]
    if every:
        parts += ["## Commands", "", "Each run is followed by `gan-kd evaluate RUN --checkpoint best --metrics fd "
                  "--num-samples 10000 --repeats 2`; `config.json` records every option and the git commit.", "",
                  "```", *commands(every), "```", ""]
    text = "\n".join(parts)
    write_text(out_md, text)
    return text



# ------------------------------------------------------------------------------------------------ bf16 vs fp32

PRECISION_BEGIN, PRECISION_END = "<!-- precision-study: generated by gan_kd.study.precision_section -->", "<!-- /precision-study -->"


def precision_section(results: Path, command: str, runs_dir: str = "runs/gan_fmnist_precision") -> str:
    """The bf16-vs-fp32 FD table (issue 10): the same runs but for ``--precision``, seed by seed."""
    runs = load_runs(results) if Path(results).is_dir() else []
    lines = [PRECISION_BEGIN, "## FD of short GAN runs: bf16 vs fp32", "",
             f"Generated by `{command}` from the run copies in `{results}/`."]
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(regime_of(run["config"]).precision, []).append(run)
    if not runs:
        return "\n".join([*lines, "", "No finished run yet.", PRECISION_END]) + "\n"
    regime = regime_of(runs[0]["config"])
    lines += ["", f"Preset `{runs[0]['row']}`, Fashion-MNIST fraction {regime.fraction:g} "
              f"({len_subset({'data_fraction': regime.fraction})} images), width {regime.width}, batch "
              f"{regime.batch_size}, {regime.iterations} iterations, channels_last "
              f"{'on' if regime.channels_last else 'off'} in both arms; only `--precision` differs (bf16: "
              f"autocast for G, D and the teacher; spectral norm, projector, whitening and losses in fp32). FD: "
              f"the best checkpoint's EMA generator, {regime.final_samples} samples × {regime.repeats}, against the "
              f"test set, with the ResNet-32 FD network, evaluated in fp32 for both arms.", "",
              "| precision | seeds | FD per seed | FD mean ± std | train wall time per run (median) |", "|---|---|---|---|---|"]
    values = {}
    for precision in sorted(groups):
        members = sorted(groups[precision], key=lambda r: r["config"]["seed"])
        values[precision] = [_fd(r) for r in members]
        mean, std = mean_std(values[precision])
        walls = sorted(r["training"].get("wall_time_s", math.nan) for r in members)
        lines.append(f"| {precision} | {', '.join(str(r['config']['seed']) for r in members)} "
                     f"| {', '.join(f'{v:.2f}' for v in values[precision])} | {mean:.2f} ± {std:.2f} "
                     f"| {walls[len(walls) // 2]:.0f} s |")
    if {"fp32", "bf16"} <= values.keys():
        result = compare(values["bf16"], values["fp32"])
        low, high = result["ci"]
        spread, within = result["spread"], not result["exceeds_spread"]
        lines += ["", f"bf16 − fp32: {result['difference']:+.2f} FD (95% bootstrap CI {low:+.2f} … {high:+.2f}); the "
                  f"larger seed-to-seed std of the two arms is {spread:.2f}. "
                  + ("**bf16 is within seed noise of fp32**" if within and low <= 0 <= high else
                     "**bf16 is not within seed noise of fp32**") + " (rule: |difference| ≤ the larger std and the "
                  "interval contains 0)."]
        fp32_by_seed = {r["config"]["seed"]: _fd(r) for r in groups["fp32"]}
        paired = [(r["config"]["seed"], _fd(r) - fp32_by_seed[r["config"]["seed"]])
                  for r in sorted(groups["bf16"], key=lambda r: r["config"]["seed"]) if r["config"]["seed"] in fp32_by_seed]
        if paired:
            higher = sum(difference > 0 for _, difference in paired)
            lines += ["", "Paired by seed (the same data order and initial weights): bf16 − fp32 = "
                      + ", ".join(f"{difference:+.2f} (seed {seed})" for seed, difference in paired)
                      + f"; bf16 is higher in {higher} of {len(paired)}."]
    lines += ["", f"Hardware: {hardware(runs)}.", "", "```", *commands(runs, runs_dir), "```", PRECISION_END]
    return "\n".join(lines) + "\n"


def update_precision_section(markdown: Path, results: Path, command: str) -> str:
    """Replace (or append) the generated bf16-vs-fp32 section of ``markdown`` (``results/benchmarks.md``),
    leaving the rest of the file, which ``make bench`` writes, as it is."""
    text = Path(markdown).read_text() if Path(markdown).is_file() else ""
    section = precision_section(results, command)
    if PRECISION_BEGIN in text and PRECISION_END in text:
        head, _, rest = text.partition(PRECISION_BEGIN)
        _, _, tail = rest.partition(PRECISION_END)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    write_text(markdown, text)
    return text
