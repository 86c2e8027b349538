"""gan_kd.study (the CPU study driver and its report) and kd_core.stats, on run copies written here."""
from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gan_kd import study
from gan_kd.study import agreement, modes
from gan_kd.cli import main as gan_cli
from gan_kd.config import TrainConfig
from kd_core.stats import bootstrap_mean_ci, compare, mean_std, verdict_line

REGIME = study.Regime(fraction=0.01, width=8, iterations=300, eval_every=100)
ASSETS = study.Assets(data_root="data", teacher="t.pt", fd_net="f.pt")


def test_mean_std_is_the_sample_std_and_intervals_are_reproducible():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, pytest.approx(np.std([1, 2, 3, 4], ddof=1)))
    assert mean_std([7.0]) == (7.0, 0.0)
    low, high = bootstrap_mean_ci([10.0, 11.0, 12.0, 13.0, 14.0])
    assert 10 <= low < 12 < high <= 14 and (low, high) == bootstrap_mean_ci([10.0, 11.0, 12.0, 13.0, 14.0])


@pytest.mark.parametrize("candidate, verdict", [
    ([8.0, 8.2, 7.9, 8.1, 8.0], "yes"),      # clearly lower FD
    ([12.0, 12.1, 11.9, 12.2, 12.0], "no"),  # clearly higher
    ([9.0, 11.0, 10.5, 9.4, 10.2], "not resolved"),
    ([8.0], "not resolved"),                 # one run: no interval
])
def test_compare_says_yes_no_or_not_resolved(candidate, verdict):
    result = compare(candidate, [10.0, 10.2, 9.8, 10.1, 9.9])
    assert result["verdict"] == verdict
    assert result["difference"] == pytest.approx(np.mean(candidate) - 10.0)


def test_verdict_line_reports_the_direction_the_metric_prefers():
    low, high = [8.0, 8.2, 7.9, 8.1, 8.0], [10.0, 10.2, 9.8, 10.1, 9.9]
    line = verdict_line(low, high, names=("a", "b"), unit="FD")
    assert line.startswith("**yes**, -1.96 FD (95% CI [") and "n = 5 vs 5), larger than the seed spread (0.16)" in line
    assert verdict_line(low, high, names=("a", "b"), unit="points", lower_is_better=False).startswith("**no**, -1.96 points")
    assert verdict_line([1.0], high, names=("a", "b"), unit="FD") == "**not resolved** (too few seeds: 1 a, 5 b)"


@pytest.mark.parametrize("row", study.ROWS)
def test_train_commands_parse_with_the_gan_kd_cli(row, tmp_path):
    command = study.train_command(row, REGIME, 3, tmp_path / "run", ASSETS)
    assert command[:2] == ["gan-kd", "train"]
    context = gan_cli.commands["train"].make_context("train", command[2:])
    assert context.params["seed"] == 3 and context.params["data_fraction"] == 0.01
    assert (context.params["teacher"] is None) == (row in study.TEACHERLESS_ROWS)
    if row == "linear-whiten":
        assert (context.params["preset"], context.params["normalizer"]) == ("da-kd", "whiten")


def test_precision_options_reach_the_command_only_when_they_differ_from_the_default(tmp_path):
    """fp32 runs keep the command recorded before --precision existed (so they resume); bf16 adds it."""
    plain = study.train_command("vkd-whiten", REGIME, 0, tmp_path / "run", ASSETS)
    assert "--precision" not in plain and "--channels-last" not in plain
    bf16 = replace(REGIME, precision="bf16", channels_last=True)
    command = study.train_command("vkd-whiten", bf16, 0, tmp_path / "run", ASSETS)
    context = gan_cli.commands["train"].make_context("train", command[2:])
    assert (context.params["precision"], context.params["channels_last"]) == ("bf16", True)
    assert study.run_name("da", bf16, 1).endswith("_i300_bf16_cl_s1") and study.run_name("da", REGIME, 1).endswith("_i300_s1")


def test_modes_set_compile_and_channels_last_and_name_the_run(tmp_path):
    """--mode reaches gan-kd train as --compile / --channels-last; eager runs keep their earlier names and commands."""
    assert study.train_command("da", REGIME, 0, tmp_path / "run", ASSETS) == \
        study.train_command("da", modes.with_mode(REGIME, "eager"), 0, tmp_path / "run", ASSETS)
    for mode, fields in modes.MODES.items():
        chosen = modes.with_mode(replace(REGIME, channels_last=True), mode)  # a mode replaces both fields
        assert modes.mode_of(chosen) == mode and (chosen.compile, chosen.channels_last) == \
            (fields.get("compile", False), fields.get("channels_last", False))
        command = study.train_command("vkd-whiten", chosen, 0, tmp_path / "run", ASSETS)
        context = gan_cli.commands["train"].make_context("train", command[2:])
        assert (context.params["compile"], context.params["channels_last"]) == (chosen.compile, chosen.channels_last)
        config = TrainConfig(compile=chosen.compile, channels_last=chosen.channels_last, data_fraction=0.01, g_ch=8,
                             iterations=300, eval_every=100).to_dict()
        assert modes.mode_of(study.regime_of(config)) == mode  # the mode read back from a run's config.json
    assert study.run_name("da", modes.with_mode(REGIME, "compile+channels_last"), 2).endswith("_i300_c_cl_s2")
    with pytest.raises(ValueError, match="unknown mode 'jit'; allowed: eager, channels_last, compile"):
        modes.with_mode(REGIME, "jit")


def mode_copies(fake_copy, results: Path, eager: list[float], compiled: list[float]) -> None:
    for seed, (a, b) in enumerate(zip(eager, compiled)):
        fake_copy(results, "da", seed, 5.0, [5.0], [0.1], fd_vgg=a)
        fake_copy(results, "da", seed, 5.0 + seed, [5.0], [0.1], fd_vgg=b,
                  regime=modes.with_mode(REGIME, "compile+channels_last"))


def test_mode_report_admits_a_mode_only_within_seed_noise_of_eager_at_three_seeds(fake_copy, tmp_path):
    mode_copies(fake_copy, tmp_path / "near", [3.0, 3.4, 3.2], [3.1, 3.3, 3.3])
    text = modes.mode_report(tmp_path / "near", "cmd", "runs/x")
    assert "| eager | 0, 1, 2 | 3.00, 3.40, 3.20 | 3.20 ± 0.20 | 5.00 ± 0.00 | 601 s | 0 s |" in text
    assert "| compile+channels_last | 0, 1, 2 | 3.10, 3.30, 3.30 | 3.23 ± 0.12 | 6.00 ± 1.00 |" in text
    assert "**compile+channels_last is within seed noise of eager**" in text.split("**classifier FD**")[0]
    assert "Modes admitted here: eager, compile+channels_last." in text
    commands = text.split("```")[1].splitlines()  # the reproducing commands: the compiled arm's say so
    assert sum("--compile" in line and "--channels-last" in line for line in commands) == 3
    mode_copies(fake_copy, tmp_path / "apart", [3.0, 3.1, 3.2], [4.0, 4.1, 4.2])
    text = modes.mode_report(tmp_path / "apart", "cmd", "runs/x")
    assert "**compile+channels_last is not within seed noise of eager**" in text and "Modes admitted here: eager." in text
    mode_copies(fake_copy, tmp_path / "two", [3.0, 3.4], [3.1, 3.3])  # within noise, but fewer than 3 seeds: not admitted
    assert "Modes admitted here: eager." in modes.mode_report(tmp_path / "two", "cmd", "runs/x")
    mode_copies(fake_copy, tmp_path / "one", [3.0], [3.1])  # one seed: no interval, no verdict
    text = modes.mode_report(tmp_path / "one", "cmd", "runs/x")
    assert "too few seeds for an interval (1 and 1); no verdict yet." in text and "seed noise of eager**" not in text


def precision_copies(fake_copy, results: Path, fp32: list[float], bf16: list[float]) -> None:
    for seed, (a, b) in enumerate(zip(fp32, bf16)):
        fake_copy(results, "vkd-whiten", seed, a, [a], [0.1], regime=replace(REGIME, channels_last=True))
        fake_copy(results, "vkd-whiten", seed, b, [b], [0.1], regime=replace(REGIME, precision="bf16", channels_last=True))


def test_precision_section_rewrites_only_its_part_of_benchmarks_md(fake_copy, tmp_path):
    results, markdown = tmp_path / "precision", tmp_path / "benchmarks.md"
    precision_copies(fake_copy, results, [10.0, 11.0, 10.5], [10.3, 10.6, 10.8])
    markdown.write_text("# Benchmarks\n\nmeasured by make bench\n")
    study.update_precision_section(markdown, results, "cmd")
    text = study.update_precision_section(markdown, results, "cmd")  # again: replaced, not appended twice
    assert text.startswith("# Benchmarks\n\nmeasured by make bench\n") and text.count(study.PRECISION_BEGIN) == 1
    assert "| bf16 | 0, 1, 2 | 10.30, 10.60, 10.80 | 10.57 ± 0.25 | 601 s |" in text
    assert "| fp32 | 0, 1, 2 | 10.00, 11.00, 10.50 | 10.50 ± 0.50 | 601 s |" in text
    assert "bf16 − fp32: +0.07 FD" in text and "**bf16 is within seed noise of fp32**" in text
    assert "bf16 − fp32 = +0.30 (seed 0), -0.40 (seed 1), +0.30 (seed 2); bf16 is higher in 2 of 3." in text
    assert text.count("--precision bf16 --channels-last") == 3

    apart = tmp_path / "apart"
    precision_copies(fake_copy, apart, [10.0, 10.1, 10.2], [14.0, 14.1, 14.2])
    assert "**bf16 is not within seed noise of fp32**" in study.precision_section(apart, "cmd")


def test_report_tables_verdicts_and_plots_come_from_the_copies(fake_copy, tmp_path):
    pilot, results = tmp_path / "pilot", tmp_path / "study"
    fake_copy(pilot, "da", 0, 20.0, [30.0, 20.0, 25.0], [0.1, 0.8, 2.0])
    for seed in range(5):
        fake_copy(results, "da", seed, 20.0 + 0.1 * seed, [30.0, 20.0, 25.0], [0.1, 0.8, 2.0])
        fake_copy(results, "vkd-whiten", seed, 15.0 + 0.1 * seed, [28.0, 15.0, 16.0], [0.1, 0.3, 0.5])
    fake_copy(results, "vkd", 0, 19.0, [29.0, 19.0, 20.0], [0.1, 0.5, 1.0])
    out = tmp_path / "report.md"
    text = study.write_report(pilot, results, out, tmp_path / "figures", rows=list(study.ROWS))
    assert out.read_text() == text
    pilot_row = next(line for line in text.splitlines() if line.startswith("| 0.01 |"))
    assert "| 600 | 8 | 50 | 300 | 20.00 (200) | 25.00 | +25.0% | +25.0% | +0.100 → +2.000 | +0.50 | 600 s |" in pilot_row
    assert "DA's FD turned upward in: fraction 0.01, batch 50 (best 20.00 at iteration 200, +25.0% by the end)." in text
    classifier = text[text.index("#### classifier space"):text.index("#### k-NN")]
    vkd_whiten = next(line for line in classifier.splitlines() if "| DA + VkD w/ whitening" in line)
    assert "| 15.2 ± 0.16 | [15.08, 15.32] | 5 of 5 | -5 [" in vkd_whiten and vkd_whiten.endswith("] better |")
    assert "| DA + linear + whitening | | (missing) 0 of 5 | | |" in text  # the rows table: kd weight, seeds
    assert "| DA + VkD (orthogonal, no normaliser) | 1 | 0 (4 missing) | 200 (fd) | 600–600 s |" in text
    assert "| DA (baseline) | — (no teacher) | 0, 1, 2, 3, 4 | 200, 200, 200, 200, 200 (fd) | 600–604 s |" in text
    study_runs = study.load_runs(results)
    hours = sum(600 + r["config"]["seed"] for r in study_runs) / 3600
    assert f"Compute: {len(study_runs)} runs took {hours:.1f} h of training and 0.0 h of final evaluation" in text
    assert "kd weight 1." not in text and "| fd_vgg ↓ | every row | — | — | 0 of 11 runs | — |" in text
    assert "| FD (resnet32) ↓ | DA (baseline) | 20.2 ± 0.16 |" in classifier
    assert text.index(agreement.RULE) < text.index("- **(c) distillation (VkD w/ whitening) improves on DA** (VkD's claim): "
                                                   "**not resolved** — too few seeds with the label-free FD (0 vkd-whiten, "
                                                   "0 da; at least 5 each); better: fd (classifier space); not scored:")
    assert "- **(0) DA improves on the no-DiffAugment control** (DiffAugment's claim: the sanity check, not VkD's)" in text
    assert "(No first figure for regime f0.01_w8_i300:" in text  # no generator file, no label-free curve
    for name in ("pilot_fd.png", "pilot_gap.png", "study_fd.png", "study_gap.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 1000 and f"figures/{name})" in text
    assert text.count("gan-kd train --out runs/gan_fmnist/") == 12


def fake_gan_kd(monkeypatch) -> list[list[str]]:
    """``subprocess.call`` of gan-kd faked: every command succeeds, ``export`` writes the generator file; the
    ``[program, subcommand]`` of each call is appended to the returned list."""
    calls = []

    def fake_call(command, **kwargs):
        calls.append(command[:2])
        if command[1] == "export":
            Path(command[command.index("--out") + 1]).write_bytes(b"safetensors")
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    return calls


def asset_files(folder: Path) -> study.Assets:
    """A teacher and an FD-network file (their bytes only matter for the SHA-256 in assets.json)."""
    (folder / "t.pt").write_bytes(b"teacher")
    (folder / "f.pt").write_bytes(b"fd network")
    return study.Assets(data_root="data", teacher=str(folder / "t.pt"), fd_net=str(folder / "f.pt"))


def test_execute_skips_a_finished_copy_and_copies_a_fresh_run(fake_copy, tmp_path, monkeypatch):
    results, runs = tmp_path / "results", tmp_path / "runs"
    fake_copy(results, "da", 0, 20.0, [30.0], [0.1])
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("a finished run was started again"))
    assert study.execute("da", REGIME, 0, runs=runs, results=results, assets=ASSETS, log=lambda _: None).is_dir()

    run_dir = fake_copy(runs, "vkd", 1, 18.0, [25.0], [0.2])  # as a finished gan-kd run would leave it
    (run_dir / "samples").mkdir()
    (run_dir / "samples" / "final.png").write_bytes(b"png")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"not copied")
    calls = fake_gan_kd(monkeypatch)
    assets = asset_files(tmp_path)
    copy = study.execute("vkd", REGIME, 1, runs=runs, results=results, assets=assets, log=lambda _: None)
    assert calls == [["gan-kd", "train"], ["gan-kd", "evaluate"], ["gan-kd", "export"]]
    assert sorted(p.name for p in copy.iterdir()) == ["assets.json", "config.json", "evaluation.json", "final.png",
                                                      "generator_ema.safetensors", "metrics.csv", "result.json"]
    import hashlib

    assert json.loads((copy / "assets.json").read_text())["fd_net_sha256"] == hashlib.sha256(b"fd network").hexdigest()

    monkeypatch.setattr(subprocess, "call", lambda command, **k: 1)
    with pytest.raises(RuntimeError, match="exited with 1"):
        study.execute("da-kd", REGIME, 0, runs=runs, results=results, assets=ASSETS, log=lambda _: None)
    assert not (results / study.run_name("da-kd", REGIME, 0)).exists()


def test_execute_skips_a_run_another_process_holds_and_takes_it_once_released(fake_copy, tmp_path, monkeypatch):
    """Two `run` processes on one queue: the run one of them holds is skipped by the other, not trained twice."""
    results, runs = tmp_path / "results", tmp_path / "runs"
    name = study.run_name("vkd", REGIME, 0)
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("a run held elsewhere was started"))
    said = []
    with study.claimed(runs, name) as mine:  # another open file description: flock conflicts as across processes
        assert mine
        assert study.execute("vkd", REGIME, 0, runs=runs, results=results, assets=ASSETS, log=said.append) is None
        with study.claimed(runs, name) as again:
            assert not again
    assert said == [f"{name}: in progress in another process (skipped)"]

    fake_copy(runs, "vkd", 0, 18.0, [25.0], [0.2])  # released: the next process trains (here: fakes) it
    fake_gan_kd(monkeypatch)
    copy = study.execute("vkd", REGIME, 0, runs=runs, results=results, assets=asset_files(tmp_path), log=said.append)
    assert (copy / "evaluation.json").is_file() and said[-1].startswith(f"{name}: done in ")


def test_pilot_reading_says_when_no_run_turned_upward(fake_copy, tmp_path):
    fake_copy(tmp_path, "da", 0, 12.0, [30.0, 20.0, 15.0, 12.0], [0.1, 0.2, 0.3, 0.4])
    runs = study.load_runs(tmp_path)
    text = study.pilot_reading(runs)
    assert text.startswith("In no pilot run did DA's FD turn upward") and "(-20.0%)" in text


@pytest.mark.parametrize("args, fragment", [
    (["run", "--fraction", "2"], "'--fraction': 2.0 is not in the range"),
    (["run", "--fraction", "0.1", "--seeds", "x"], "'x' is not a seed range"),
    (["run", "--fraction", "0.1", "--rows", "da,bogus"], "unknown row(s) bogus"),
    (["pilot", "--fractions", "0,0.1"], "fractions in (0, 1]"),
    (["run", "--fraction", "0.1", "--data-root", "/nonexistent/x"], "data root /nonexistent/x does not exist"),
    (["rescore-missing", "--results", "/nonexistent/x"], "Directory '/nonexistent/x' does not exist"),
])
def test_study_script_refuses_bad_options_in_one_line_before_any_work(args, fragment, tmp_path):
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "gan_fmnist_study.py"
    done = subprocess.run([sys.executable, str(script), *args, "--runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and fragment in errors[0], done.stderr
    assert not (tmp_path / "runs").exists()


def test_runs_from_before_one_result_file_name_still_load(fake_copy, tmp_path):
    """Older run directories hold training.json (training) + result.json (evaluation); newer ones result.json
    (training) + evaluation.json. gan_kd.report.load_run reads both the same way."""
    from gan_kd.report import load_run

    new = fake_copy(tmp_path / "new", "da", 0, 12.5, [12.5], [0.1])
    old = fake_copy(tmp_path / "old", "da", 0, 12.5, [12.5], [0.1])
    (old / "result.json").rename(old / "training.json")
    (old / "evaluation.json").rename(old / "result.json")
    for folder in (new, old):
        run = load_run(folder)
        assert run["result"]["metrics"]["fd"]["mean"] == 12.5 and run["training"]["wall_time_s"] == 600.0


def test_readme_block_is_regenerated_between_its_markers_from_the_copies(fake_copy, tmp_path):
    pilot, results = tmp_path / "pilot", tmp_path / "study"
    fake_copy(pilot, "da", 0, 12.0, [30.0, 20.0, 12.0], [0.1, 0.2, 0.3])  # still falling: the caveat is added
    for seed in range(5):
        fake_copy(results, "da", seed, 20.0 + 0.1 * seed, [30.0, 20.0], [0.1, 0.8], fd_vgg=40.0 + seed)
        fake_copy(results, "vkd-whiten", seed, 15.0 + 0.1 * seed, [28.0, 15.0], [0.1, 0.3], fd_vgg=30.0 + seed)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{study.README_BEGIN}\nstale line\n{study.README_END}\nafter\n")
    text = study.update_readme(readme, pilot, results, rows=list(study.ROWS))
    assert readme.read_text() == text and text.startswith("# title\n\nbefore\n") and text.endswith("\nafter\n")
    block = text[text.index(study.README_BEGIN):text.index(study.README_END)]
    assert "stale line" not in block
    assert "rows below 5 seeds: no-da 0, da-kd 0, linear-whiten 0, vkd 0, spkd 0" in block  # da and vkd-whiten have 5
    assert "not about the regime of VkD Table 4" in block
    claim_lines = [line for line in block.splitlines() if line.startswith("  * (")]
    assert len(claim_lines) == len(study.CLAIMS)
    c_line = next(line for line in claim_lines if line.startswith("  * (c) "))
    assert c_line == ("  * (c) distillation (VkD w/ whitening) improves on DA: **yes** — label-free FD vkd-whiten − da "
                      "= -10 [-11.8, -8.2] (n = 5 vs 5); agree (better): fd (classifier space); contradict (worse): none.")
    assert claim_lines[0].startswith("  * (0) DA improves on the no-DiffAugment control (DiffAugment's claim: the sanity "
                                     "check, not VkD's): **not resolved**")
    assert claim_lines[1] == ("  * (a) whitening improves on VkD without it: **not resolved** — too few seeds with the "
                              "label-free FD (5 vkd-whiten, 0 vkd; at least 5 each).")
    assert study.update_readme(readme, pilot, results, rows=list(study.ROWS)) == text  # idempotent

    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no <!-- gan-fmnist-verdicts"):
        study.update_readme(readme, pilot, results, rows=list(study.ROWS))
    assert readme.read_text() == "# no markers\n"


def test_readme_block_names_the_metric_that_contradicts_the_label_free_fd(fake_copy, tmp_path):
    for seed in range(5):  # label-free FD better, GAN-test accuracy clearly worse
        fake_copy(tmp_path, "da", seed, 20.0, [20.0], [0.1], scores=(0.50 + 0.01 * seed, 3.0), fd_vgg=40.0 + seed)
        fake_copy(tmp_path, "vkd-whiten", seed, 19.0, [19.0], [0.1], scores=(0.30 + 0.01 * seed, 4.0), fd_vgg=30.0 + seed)
    block = study.readme_block([], study.load_runs(tmp_path), list(study.ROWS), 5)
    line = next(line for line in block.splitlines() if line.startswith("  * (c) "))
    assert "**contradicted (by cls_acc, classifier space)** — label-free FD vkd-whiten − da = -10 [" in line
    assert "contradict (worse): cls_acc (classifier space)" in line and "not scored" not in line  # README: short


def test_the_readme_has_the_generated_block():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert readme.count(study.README_BEGIN) == 1 and readme.count(study.README_END) == 1


def test_status_says_done_running_partial_started_or_missing(fake_copy, tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    fake_copy(results, "da", 0, 20.0, [30.0], [0.1])
    partial = runs / study.run_name("vkd", REGIME, 0)
    partial.mkdir(parents=True)
    (partial / "metrics.jsonl").write_text('{"step": 50, "d_loss": 1.0}\n{"step": 100, "eval/fd": 30.0}\n\n')
    (runs / study.run_name("vkd", REGIME, 1)).mkdir()
    assert study.run_state(study.run_name("da", REGIME, 0), runs=runs, results=results) == "done"
    assert study.run_state(partial.name, runs=runs, results=results) == "partial (iteration 100)"
    assert study.run_state(study.run_name("vkd", REGIME, 1), runs=runs, results=results) == "started"
    assert study.run_state(study.run_name("da", REGIME, 1), runs=runs, results=results) == "missing"
    with study.claimed(runs, partial.name):  # held by a process (another `run`): running
        assert study.run_state(partial.name, runs=runs, results=results) == "running (iteration 100)"
    assert study.run_state(partial.name, runs=runs, results=results) == "partial (iteration 100)"  # released
    table = study.status_table(REGIME, ["da", "vkd"], [0, 1], runs=runs, results=results)
    assert "| da | done | missing |" in table and "| vkd | partial (iteration 100) | started |" in table
    assert "1 of 4 runs done; 0 reusable (copied by `run`, not trained); 3 to train (f0.01_w8_b16_i300)." in table
    # a finished copy of the same command in another study is shown as what `run` will copy, even over a partial run
    other = tmp_path / "gan_fmnist_mode"
    fake_copy(other, "vkd", 0, 18.0, [30.0], [0.1])
    found = study.reusable_copy(partial.name, [tmp_path / "none", other])
    assert found == other / partial.name and study.reusable_copy(partial.name, [tmp_path / "none"]) is None
    table = study.status_table(REGIME, ["da", "vkd"], [0, 1], runs=runs, results=results,
                               reusable=lambda row, seed: study.reusable_copy(study.run_name(row, REGIME, seed), [other]))
    assert "| vkd | reusable (gan_fmnist_mode) | started |" in table and "| da | done | missing |" in table
    assert "1 of 4 runs done; 1 reusable (copied by `run`, not trained); 2 to train" in table


def test_rescore_adds_class_scores_only_when_the_fd_is_reproduced(fake_copy, tmp_path, monkeypatch):
    results, runs = tmp_path / "results", tmp_path / "runs"
    (tmp_path / "t.pt").write_bytes(b"teacher")
    (tmp_path / "f.pt").write_bytes(b"fd network")
    assets = study.Assets(data_root="data", teacher=str(tmp_path / "t.pt"), fd_net=str(tmp_path / "f.pt"))

    def finished(row: str, fd: float) -> tuple[Path, Path]:
        copy = fake_copy(results, row, 0, fd, [fd], [0.1])
        evaluation = json.loads((copy / "evaluation.json").read_text())
        (copy / "evaluation.json").write_text(json.dumps({**evaluation, "fd_features": f"ckpt:{assets.fd_net}"}))
        (copy / "assets.json").write_text(json.dumps(study.asset_digests(assets)))
        run_dir = runs / copy.name
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "best.pt").write_bytes(b"generator")
        return copy, run_dir

    def evaluate_writing(fd_values: list[float]):
        def call(command, **kwargs):
            calls.append(command)
            run_dir = Path(command[2])
            (run_dir / "evaluation.json").write_text(json.dumps({
                "metrics": {"fd": {"mean": sum(fd_values) / 2, "std": 0.1, "values": fd_values},
                            "cls_acc": {"mean": 0.8, "std": 0.0, "values": [0.8, 0.8]},
                            "cls_is": {"mean": 7.0, "std": 0.0, "values": [7.0, 7.0]}},
                "labels": {"fd": "FD (resnet32)"}, "fd_features": f"ckpt:{assets.fd_net}"}))
            return 0
        return call

    copy, _ = finished("da", 20.0)
    before_da = (copy / "evaluation.json").read_bytes()
    calls: list = []
    monkeypatch.setattr(subprocess, "call", evaluate_writing(json.loads((copy / "evaluation.json").read_text())["metrics"]["fd"]["values"]))
    assert study.rescore("da", REGIME, 0, runs=runs, results=results, assets=assets, log=lambda _: None)
    assert calls[0][:2] == ["gan-kd", "evaluate"] and calls[0][calls[0].index("--metrics") + 1] == ",".join(study.FINAL_METRICS)
    assert json.loads((copy / "evaluation.json").read_text())["metrics"]["cls_acc"]["mean"] == 0.8
    # an interrupted rescore (run directory scored, copy not yet replaced) reuses the run directory's evaluation
    scored = (copy / "evaluation.json").read_bytes()
    copy.joinpath("evaluation.json").write_bytes(before_da)
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("a scored evaluation was computed again"))
    assert study.rescore("da", REGIME, 0, runs=runs, results=results, assets=assets, log=lambda _: None)
    assert (copy / "evaluation.json").read_bytes() == scored
    # scored already: nothing runs
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("a scored run was evaluated again"))
    assert not study.rescore("da", REGIME, 0, runs=runs, results=results, assets=assets, log=lambda _: None)

    copy, run_dir = finished("vkd", 18.0)
    before = (copy / "evaluation.json").read_bytes()
    recorded = json.loads((copy / "evaluation.json").read_text())["metrics"]["fd"]["values"]
    monkeypatch.setattr(subprocess, "call", evaluate_writing([recorded[0], recorded[1] + 1e-9]))  # FD not reproduced
    with pytest.raises(RuntimeError, match="differs from the recorded"):
        study.rescore("vkd", REGIME, 0, runs=runs, results=results, assets=assets, log=lambda _: None)
    assert (copy / "evaluation.json").read_bytes() == before
    (run_dir / "checkpoints" / "best.pt").unlink()
    with pytest.raises(RuntimeError, match="best.pt"):
        study.rescore("vkd", REGIME, 0, runs=runs, results=results, assets=assets, log=lambda _: None)
    (tmp_path / "f.pt").write_bytes(b"another fd network")
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"generator")
    with pytest.raises(RuntimeError, match="FD network"):
        study.rescore("vkd", REGIME, 0, runs=runs, results=results, assets=assets, log=lambda _: None)


def search_copy(results: Path, row: str, fraction: float, width: int, fd_vgg: list[float], gap: list[float],
                memorised: float = 0.05, batch_size: int = 16) -> Path:
    """A regime-search run copy: label-free and classifier FD curves, the probe, and a final memorisation score."""
    regime = replace(REGIME, fraction=fraction, width=width)
    folder = results / study.run_name(row, regime, 0)
    folder.mkdir(parents=True)
    config = TrainConfig(dataset="fashion_mnist", data_fraction=fraction, g_ch=width, d_ch=width, iterations=300,
                         eval_every=100, eval_samples=2000, ema_decay=0.99, ema_start=100, seed=0, preset="da",
                         batch_size=batch_size,
                         distill=False, diffaug="" if row == "no-da" else "translation,cutout").to_dict()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "result.json").write_text(json.dumps({"wall_time_s": 1800.0}))
    metrics = {key: {"mean": value, "std": 0.0, "values": [value]}
               for key, value in (("fd", 5.0), ("fd_vgg", min(fd_vgg)), ("memorised", memorised), ("nn_ratio", 0.9))}
    (folder / "evaluation.json").write_text(json.dumps({"metrics": metrics, "labels": {"fd": "FD (resnet32)"},
                                                        "iteration": 100, "hardware": "test CPU"}))
    rows = [{"step": 100 * (i + 1), "eval/fd": 2 * value, "eval/fd_vgg": value, "probe/d_gap": g, "probe/rt": 0.5}
            for i, (value, g) in enumerate(zip(fd_vgg, gap))]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_regime_search_table_and_the_choice_rule(fake_copy, tmp_path):
    from gan_kd.study import regime as search

    pilot = tmp_path / "pilot"
    fake_copy(pilot, "da", 0, 20.0, [30.0, 20.0, 25.0], [0.1, 0.8, 2.0])  # the first pilot: no label-free curve
    # 60 images, width 8: the control is clearly worse (3.0 vs 2.0), DA's D gap ends at 1.5
    search_copy(pilot, "da", 0.001, 8, [4.0, 2.0, 2.2], [0.2, 1.0, 1.5])
    search_copy(pilot, "no-da", 0.001, 8, [5.0, 3.0, 4.5], [0.5, 3.0, 6.0], memorised=0.4)
    # 150 images, width 16: a larger DA gap, but the control is not clearly worse (2.2 vs 2.0): not chosen
    search_copy(pilot, "da", 0.0025, 16, [4.0, 2.0, 2.0], [0.2, 2.0, 3.0])
    search_copy(pilot, "no-da", 0.0025, 16, [4.0, 2.2, 2.3], [0.2, 2.0, 3.0])
    # a regime with only one row finished is not a candidate
    search_copy(pilot, "da", 0.0025, 8, [4.0, 1.0, 1.0], [0.2, 5.0, 9.0])
    runs = study.load_runs(pilot)
    searched = search.search_runs(runs)
    assert len(searched) == 5 and all(run["row"] in ("da", "no-da") for run in searched)
    key, sentence = search.choose_regime(searched)
    assert key == (0.001, 8, 16, 300)
    assert sentence.startswith("Chosen regime (of 2 regimes with both rows finished): 60 images, width 8, batch 16, "
                               "300 iterations: DA's D ends with the "
                               "largest train − held-out logit gap (+1.50)")
    assert "(its best label-free FD 1.50× DA's)" in sentence and "ends +10% above its best, the control's +50%" in sentence
    table = search.search_table(searched)
    control = next(line for line in table.splitlines() if line.startswith("| 60 images") and "without DiffAugment" in line)
    assert "| 3.00 (200) → 4.50 (+50%) | 6.00 (200) → 9.00 (+50%) | +0.50 → +6.00 | +0.50 | 0.400 / 0.900 | 30 min |" in control

    # no regime where the control is clearly worse: the largest DA gap, and the sentence says so
    flat = [run for run in searched if regime_key_is(run, 0.0025, 16)]
    key, sentence = search.choose_regime(flat)
    assert key == (0.0025, 16, 16, 300) and "clearly worse than DA in no regime (best ratio 1.10×" in sentence
    assert search.choose_regime([])[0] is None

    text = study.write_report(pilot, tmp_path / "none", tmp_path / "report.md", tmp_path / "figures", rows=["da"])
    assert "## 1b. Regime search" in text and "): 60 images, width 8" in text
    assert "| 0.01 | 600 | 8 | 50 | 300 |" in text  # the first pilot's table keeps its DA-only run, and only it
    assert text.count("| 0.001 |") == 0
    for name in ("search_fd_vgg.png", "search_gap.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 1000 and f"figures/{name})" in text


def test_the_ablation_says_whether_da_overfits_at_its_regime_from_its_own_da_seeds(fake_copy, tmp_path):
    from gan_kd.study import regime as search

    pilot, results = tmp_path / "pilot", tmp_path / "study"
    fake_copy(pilot, "da", 0, 12.0, [30.0, 20.0, 12.0], [0.1, 0.2, 0.3])  # the first pilot: still falling
    rising, falling = [4.0, 2.0, 3.0], [4.0, 3.0, 2.0]  # label-free FD: ends +50% above its best / at its best
    for seed in range(5):
        fake_copy(results, "da", seed, 20.0, [30.0, 20.0, 20.0], [0.1, 0.5, 1.0 + seed], fd_vgg=3.0,
                  fd_vgg_curve=rising if seed < 3 else falling)
        fake_copy(results, "vkd-whiten", seed, 15.0, [28.0, 15.0, 15.0], [0.1, 0.3, 0.5], fd_vgg=2.0,
                  fd_vgg_curve=falling)
    note = search.ablation_note(study.load_runs(results), [])
    assert note == ("DA's D overfits at this regime: in the ablation's DA runs (5 seeds), the label-free FD turns upward "
                    "in 3 of 5 (label-free FD at the end vs its best: +50%, +50%, +50%, +0%, +0%; D's train − held-out "
                    "logit gap at the end: +1.00, +2.00, +3.00, +4.00, +5.00), the regime of VkD Table 4, where "
                    "distillation is claimed to help.")
    text = study.write_report(pilot, results, tmp_path / "report.md", tmp_path / "figures", rows=["da", "vkd-whiten"])
    assert f"**Does D overfit here?** {note}" in text and "**Caveat, from the pilot:**" not in text
    readme = tmp_path / "README.md"
    readme.write_text(f"{study.README_BEGIN}\n{study.README_END}\n")
    block = study.update_readme(readme, pilot, results, rows=["da", "vkd-whiten"])
    assert f"  * {note}" in block and "not about the regime of VkD Table 4" not in block  # the pilot's caveat is gone


def test_the_ablation_note_says_so_when_da_does_not_overfit_and_falls_back_on_the_search(fake_copy, tmp_path):
    from gan_kd.study import regime as search

    results = tmp_path / "study"
    for seed in range(3):
        fake_copy(results, "da", seed, 20.0, [30.0, 20.0], [0.1, 0.5], fd_vgg=3.0, fd_vgg_curve=[4.0, 3.0, 3.1])
    note = search.ablation_note(study.load_runs(results), [])
    assert note.startswith("DA's D does not clearly overfit at this regime: in the ablation's DA runs (3 seeds), the "
                           "label-free FD turns upward in 0 of 3 (label-free FD at the end vs its best: +0%, +0%, +0%")
    assert note.endswith("the verdicts below are not about the regime of VkD Table 4, where D overfits.")

    # no DA in the ablation with the label-free curve: the regime search's DA run at the same regime speaks for it
    other = tmp_path / "other"
    fake_copy(other, "vkd-whiten", 0, 15.0, [28.0, 15.0], [0.1, 0.3], fd_vgg=2.0)
    pilot = tmp_path / "pilot"
    search_copy(pilot, "da", 0.01, 8, [4.0, 2.0, 2.4], [0.2, 1.0, 1.5], batch_size=50)  # the fake copies' regime
    search_copy(pilot, "da", 0.001, 8, [4.0, 2.0, 2.0], [0.2, 1.0, 9.0])  # another regime: not this one
    searched = search.search_runs(study.load_runs(pilot))
    assert search.ablation_note(study.load_runs(other), searched) == (
        "DA's D overfits at this regime: in the regime search's DA run (seed 0) at this regime, the label-free FD "
        "turns upward in 1 of 1 (label-free FD at the end vs its best: +20%; D's train − held-out logit gap at the "
        "end: +1.50), the regime of VkD Table 4, where distillation is claimed to help.")
    assert search.ablation_note(study.load_runs(other), []) is None  # neither: the report uses the first pilot


def regime_key_is(run: dict, fraction: float, width: int) -> bool:
    return run["config"]["data_fraction"] == fraction and run["config"]["g_ch"] == width


def test_reuse_copies_another_studys_finished_copy_whole_and_nothing_unfinished(fake_copy, tmp_path):
    pilot, mode, results = tmp_path / "pilot", tmp_path / "mode", tmp_path / "study"
    source = fake_copy(pilot, "da", 0, 5.0, [5.0], [0.1])
    (source / "final.png").write_bytes(b"png")  # a copy's files sit at its top level, samples included
    unfinished = fake_copy(mode, "da", 1, 5.0, [5.0], [0.1])
    (unfinished / "evaluation.json").unlink()
    name = source.name
    assert study.reuse(name, [mode, pilot], results, log=lambda _: None)
    assert sorted(p.name for p in (results / name).iterdir()) == sorted(p.name for p in source.iterdir())
    assert (results / name / "final.png").read_bytes() == b"png"
    assert not study.reuse(unfinished.name, [mode, pilot], results, log=lambda _: None)
    assert not (results / unfinished.name).exists()
    (source / "final.png").unlink()  # already finished here: nothing is copied again
    assert study.reuse(name, [pilot], results, log=lambda _: None) and (results / name / "final.png").is_file()


def test_reuse_takes_the_calibration_run_of_a_row_at_its_own_weight_under_the_studys_name(fake_copy, tmp_path):
    """The calibration's ``vkd@kd1`` seed-0 run is the study's ``vkd`` seed 0 (the same command but for an explicit
    ``--kd-weight`` equal to the preset's): the study reuses it under its own name, and never another weight's."""
    from gan_kd.study import calibration
    from gan_kd.study.rows import ROWS

    assert calibration.row_weight("vkd") == 1.0 and calibration.same_command("vkd") == "vkd@kd1"
    assert calibration.same_command("da") is None and calibration.same_command("no-da") is None
    from gan_kd.presets import PRESETS

    for row in calibration.DISTILLATION_ROWS:  # the preset's frozen weight (1 unless the calibration chose another)
        preset = ROWS[row][1][ROWS[row][1].index("--preset") + 1]
        assert calibration.same_command(row) == f"{row}@kd{PRESETS[preset].get('kd_weight', 1.0):g}", row
    assert calibration.same_command("pkd") == "pkd@kd3000"
    calibrated, results = tmp_path / "calibration", tmp_path / "study"
    source = fake_copy(calibrated, "vkd@kd1", 0, 5.0, [5.0], [0.1])
    other = fake_copy(calibrated, "vkd@kd0.1", 1, 5.0, [5.0], [0.1])
    name = source.name.replace("vkd@kd1_", "vkd_", 1)
    assert study.reuse(name, [], results, log=lambda _: None, renamed=((calibrated, source.name),))
    assert sorted(p.name for p in (results / name).iterdir()) == sorted(p.name for p in source.iterdir())
    assert [run["row"] for run in study.load_runs(results)] == ["vkd"]
    wanted = other.name.replace("vkd@kd0.1_", "vkd_", 1)
    assert not study.reuse(wanted, [], results, log=lambda _: None, renamed=((calibrated, wanted.replace("vkd_", "vkd@kd1_", 1)),))


def test_the_study_mode_is_one_the_committed_mode_comparison_admits():
    """STUDY_MODE is frozen from results/gan_modes.md (issue 26, item 4): the committed report admits it and names it."""
    report = (Path(__file__).resolve().parents[2] / "results" / "gan_modes.md").read_text()
    admitted = report.split("Modes admitted here: ")[1].split(".")[0].split(", ")
    assert modes.STUDY_MODE in admitted and modes.STUDY_MODE in modes.MODES
    assert f"(`gan_kd.study.modes.STUDY_MODE`): **{modes.STUDY_MODE}**" in report
