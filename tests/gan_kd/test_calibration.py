"""gan_kd.study.calibration: the weight-calibration rule of issue 25, on made-up ratios and run copies."""
import json
from pathlib import Path

import pytest

from gan_kd.study import calibration as cal
from gan_kd.study.rows import Assets, Regime, run_name, train_command, weighted


def test_snap_rounds_to_the_1_3_10_grid_on_a_log_scale():
    assert [cal.snap(x) for x in (1.0, 1.6, 1.8, 2.5, 5.0, 6.0, 0.004, 0.0013, 77.0)] == \
        [1.0, 1.0, 3.0, 3.0, 3.0, 10.0, 0.003, 0.001, 100.0]


def test_plan_keeps_weight_one_inside_the_band_and_sweeps_a_factor_100_around_the_target_outside():
    assert cal.plan(0.05, 5.0) == [1.0] and cal.plan(0.3, 2.0) == [1.0]
    # KD-DLGAN's 77-204x (issue 25): centre 0.3 / sqrt(77 * 204) = 0.0024 -> 0.003
    assert cal.plan(77.0, 204.0) == [0.0003, 0.003, 0.03]
    # a term far below the hinge loss (PKD's ~1e-4): weights up to 1e4
    assert cal.plan(1e-4, 1e-4) == [300.0, 3000.0, 30000.0]
    # inside at the first evaluation but not at the end: swept
    assert cal.plan(1.0, 6.0) == [0.01, 0.1, 1.0]
    for first, end in ((77.0, 204.0), (1e-4, 1e-4), (1.0, 6.0)):
        low, centre, high = cal.plan(first, end)
        assert high / low == pytest.approx(100) and 0.1 <= centre * (first * end) ** 0.5 <= 1


def test_published_weight_joins_the_sweep_and_choice_needs_two_seeds():
    assert cal.sweep_weights("kd-dlgan", [0.0003, 0.003, 0.03]) == [0.0003, 0.003, 0.03, 1.0]
    assert cal.sweep_weights("vkd", [0.1, 1.0, 10.0]) == [0.1, 1.0, 10.0]
    assert cal.best_two({0.1: 5.0, 1.0: 4.0, 10.0: 4.5}) == [1.0, 10.0]
    assert cal.choose({1.0: [4.0, 5.0], 10.0: [4.5, 4.4]}) == 10.0
    with pytest.raises(ValueError, match="two scored seeds"):
        cal.choose({1.0: [4.0]})


def test_sweep_runs_are_named_and_commanded_with_their_weight(tmp_path):
    assets = Assets(data_root="data", teacher="t.pt", fd_net="f.pt")
    regime = Regime(fraction=0.001, width=8, iterations=4000, batch_size=16)
    command = train_command(weighted("vkd-whiten", 0.03), regime, 1, tmp_path, assets)
    assert command[command.index("--preset") + 1] == "vkd-whiten" and command[command.index("--kd-weight") + 1] == "0.03"
    assert "--teacher" in command
    assert run_name(weighted("pkd", 3000.0), regime, 0) == "pkd@kd3000_f0.001_w8_b16_i4000_s0"
    assert "--kd-weight" not in train_command("vkd-whiten", regime, 1, tmp_path, assets)
    with pytest.raises(ValueError, match="no distillation term"):
        train_command(weighted("da", 0.1), regime, 0, tmp_path, assets)


def copy(results: Path, row: str, weight: float, seed: int, ratio: tuple[float, float], fd: float | None) -> Path:
    folder = results / run_name(weighted(row, weight), Regime(fraction=0.001, batch_size=16), seed)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"preset": row, "seed": seed, "data_fraction": 0.001}))
    (folder / "result.json").write_text(json.dumps({"distillation_ratio": {
        "kd_weight": weight, "first_eval": {"iteration": 100, "ratio": ratio[0] * weight},
        "end": {"iteration": 4000, "ratio": ratio[1] * weight}}}))
    (folder / "evaluation.json").write_text(json.dumps({"metrics": {"fd": {"mean": 1.0}}}))
    if fd is not None:
        (folder / cal.SELECTION_FILE).write_text(json.dumps({"metrics": {"fd_vgg": {"mean": fd}}}))
    return folder


def test_records_follow_the_runs_from_probe_to_choice(tmp_path):
    results = tmp_path / "calibration"
    rows = ["vkd-whiten", "kd-dlgan", "pkd"]
    assert [r["state"] for r in cal.load_records(results, rows)] == ["probe missing"] * 3
    copy(results, "vkd-whiten", 1.0, 0, (0.4, 0.8), 3.0)         # inside the band: keeps 1
    copy(results, "kd-dlgan", 1.0, 0, (77.0, 204.0), 6.0)        # the published recipe = the probe
    for weight, fd in ((0.0003, 4.0), (0.003, 2.5), (0.03, 3.0)):
        copy(results, "kd-dlgan", weight, 0, (77.0, 204.0), fd)
    copy(results, "pkd", 1.0, 0, (1e-4, 1e-4), 5.0)
    copy(results, "pkd", 300.0, 0, (1e-4, 1e-4), 4.0)
    records = {r["row"]: r for r in cal.load_records(results, rows)}
    assert records["vkd-whiten"]["state"] == "done" and records["vkd-whiten"]["chosen"] == 1.0
    assert records["kd-dlgan"]["state"] == "second seeds running" and records["kd-dlgan"]["finalists"] == [0.003, 0.03]
    assert records["pkd"]["state"] == "sweep running"
    copy(results, "kd-dlgan", 0.003, 1, (77.0, 204.0), 2.9)     # mean 2.7
    copy(results, "kd-dlgan", 0.03, 1, (77.0, 204.0), 2.2)      # mean 2.6: chosen
    records = {r["row"]: r for r in cal.load_records(results, rows)}
    assert records["kd-dlgan"]["chosen"] == 0.03 and records["kd-dlgan"]["published"] == 1.0
    assert cal.chosen_weights(list(records.values())) == {"vkd-whiten": 1.0, "kd-dlgan": 0.03}
    table = cal.calibration_table([records[row] for row in rows])
    kd_dlgan = next(line for line in table.splitlines() if "KD-DLGAN" in line)
    assert "| 77 → 204 | sweep 0.0003, 0.003, 0.03 |" in kd_dlgan
    assert "0.03: 3.00, 2.20 [6.1×]" in kd_dlgan and "1: 6.00 [2e+02×]" in kd_dlgan
    assert kd_dlgan.endswith("| **0.03** | 1 |")
    assert "| keeps 1 (within 0.05–5×) |" in next(line for line in table.splitlines() if "whitening" in line)
    assert "| sweep running |" in next(line for line in table.splitlines() if "PKD" in line)


def test_selection_scores_the_committed_generator_at_a_seed_the_tables_do_not_use(tmp_path):
    command = cal.selection_command(tmp_path, "data")
    assert command[:3] == ["gan-kd", "evaluate", str(tmp_path / "generator_ema.safetensors")]
    assert command[command.index("--seed") + 1] == str(cal.SELECTION_SEED) and cal.SELECTION_SEED not in (0, 1)
    assert command[command.index("--metrics") + 1] == "fd_vgg"
    assert command[command.index("--out") + 1] == str(tmp_path / cal.SELECTION_FILE)


def test_the_calibrate_command_probes_sweeps_and_adds_second_seeds_in_order(tmp_path, monkeypatch):
    """scripts/gan_fmnist_study.py calibrate with `execute` and the selection faked: which runs, in which order."""
    import importlib.util

    from click.testing import CliRunner

    from gan_kd import study

    spec = importlib.util.spec_from_file_location("gan_fmnist_study", Path(__file__).parents[2] / "scripts" / "gan_fmnist_study.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)  # the command changes into ROOT; restored after the test
    monkeypatch.setattr(script, "train_classifiers", lambda data_root: Assets(data_root, "t.pt", "f.pt"))
    ratios = {"vkd": (0.5, 0.9), "kd-dlgan": (77.0, 204.0)}  # vkd keeps 1; kd-dlgan is swept
    selection = {1.0: 6.0, 0.0003: 4.0, 0.003: 2.5, 0.03: 3.0}
    started = []

    busy = {("kd-dlgan", 0.03, 0)}  # first pass: another process is training this sweep run

    def fake_execute(name, regime, seed, *, runs, results, assets, gan_kd, log):
        row, weight = study.split_row(name)
        started.append((row, weight, seed))
        folder = Path(results) / study.run_name(name, regime, seed)
        if folder.is_dir():  # finished: skipped, as study.execute does
            return folder
        if (row, weight, seed) in busy:  # held by another process: skipped, as study.execute does
            return None
        made = copy(tmp_path / "scratch", row, weight, seed, ratios[row], None)
        folder.parent.mkdir(parents=True, exist_ok=True)
        return made.rename(folder)

    def fake_call(command, name, runs):
        out = Path(command[command.index("--out") + 1])
        weight = study.split_row(name.split("_f")[0])[1]
        out.write_text(json.dumps({"metrics": {"fd_vgg": {"mean": selection[weight] + 0.1 * name.endswith("_s1")}}}))

    monkeypatch.setattr(study, "execute", fake_execute)
    monkeypatch.setattr(study, "call_logged", fake_call)
    arguments = ["calibrate", "--fraction", "0.001", "--rows", "vkd,kd-dlgan", "--iterations", "4000", "--eval-every", "200"]
    waiting = CliRunner().invoke(script.main, arguments, catch_exceptions=False)
    assert waiting.exit_code == 0, waiting.output
    assert "kd-dlgan: the second seeds wait for the sweep runs in progress elsewhere" in waiting.output
    assert all(seed == 0 for _, _, seed in started)  # no second seed chosen from an unfinished sweep
    busy.clear()
    started.clear()
    result = CliRunner().invoke(script.main, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "data").exists()  # the default root may be missing: Debian's copy is read (issue 28)
    assert started == [("vkd", 1.0, 0), ("kd-dlgan", 1.0, 0),  # the probes first
                       ("kd-dlgan", 0.0003, 0), ("kd-dlgan", 0.003, 0), ("kd-dlgan", 0.03, 0), ("kd-dlgan", 1.0, 0),
                       ("kd-dlgan", 0.003, 1), ("kd-dlgan", 0.03, 1)]  # the best two get a second seed
    record = json.loads((tmp_path / "results" / "gan_calibration.json").read_text())
    assert record["chosen"] == {"vkd": 1.0, "kd-dlgan": 0.003}
    assert "| **0.003** | 1 |" in (tmp_path / "results" / "gan_calibration.md").read_text()
    # one row at a time (one process per core) still writes every row's record: kd-dlgan's choice stays
    again = CliRunner().invoke(script.main, ["calibrate", "--fraction", "0.001", "--rows", "vkd",
                                             "--iterations", "4000", "--eval-every", "200"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "results" / "gan_calibration.json").read_text())["chosen"] == record["chosen"]


def test_study_rows_train_at_the_weights_the_committed_calibration_chose():
    # the weights are frozen in gan_kd/presets.py (or the row's options) from results/gan_calibration.json; a row
    # the calibration has not chosen yet (its sweep unfinished) is not in "chosen"
    repo = Path(__file__).resolve().parents[2]
    chosen = json.loads((repo / "results" / "gan_calibration.json").read_text())["chosen"]
    assert chosen, "the committed calibration chose no weight"
    assert set(chosen) <= set(cal.DISTILLATION_ROWS)
    for row, weight in chosen.items():
        assert cal.row_weight(row) == weight, row


def test_the_study_trains_a_distillation_row_only_at_its_calibrated_weight(tmp_path, monkeypatch, fake_copy):
    """`run` refuses, in one line and before any work, a row the calibration has not chosen a weight for or one
    whose preset trains at another weight; teacher-less rows and calibrated rows pass."""
    import importlib.util

    from click.testing import CliRunner

    from gan_kd import study

    assert cal.weight_problems(["da", "no-da", "vkd"], {"vkd": 1.0}) == []
    assert cal.weight_problems(["vkd", "spkd"], {"vkd": 30.0}) == [
        "vkd (trains at --kd-weight 1, the calibration chose 30)", "spkd (no calibrated weight yet)"]

    spec = importlib.util.spec_from_file_location("gan_fmnist_study", Path(__file__).parents[2] / "scripts" / "gan_fmnist_study.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "gan_calibration.json").write_text(json.dumps({"records": [], "chosen": {"vkd": 1.0}}))
    monkeypatch.setattr(script, "train_classifiers", lambda data_root: Assets(data_root, "t.pt", "f.pt"))
    started = []
    monkeypatch.setattr(study, "execute", lambda name, regime, seed, **kwargs: started.append((name, seed)))
    base = ["run", "--fraction", "0.001", "--iterations", "4000", "--eval-every", "200", "--seeds", "0",
            "--runs", str(tmp_path / "runs")]
    refused = CliRunner().invoke(script.main, [*base, "--rows", "da,vkd,pkd"])
    assert refused.exit_code == 2 and started == []
    assert "pkd (no calibrated weight yet)" in refused.output and "vkd" not in refused.output.split("json): ")[1]
    done = CliRunner().invoke(script.main, [*base, "--rows", "da,vkd"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert started == [("da", 0), ("vkd", 0)]
    # the calibration's run of vkd at its own weight is the study's run: copied under the study's name, not trained
    regime = script.regime(0.001, 8, 4000, 200, 16, script.modes.STUDY_MODE)
    fake_copy(tmp_path / script.CALIBRATION_RESULTS, "vkd@kd1", 1, 2.0, [3.0], [0.1], regime=regime)
    started.clear()
    again = CliRunner().invoke(script.main, [*base[:-3], "0-1", "--runs", str(tmp_path / "runs"), "--rows", "vkd"],
                               catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert started == [("vkd", 0)] and "reused" in again.output
    assert study.is_finished(tmp_path / script.STUDY_RESULTS, study.run_name("vkd", regime, 1))
