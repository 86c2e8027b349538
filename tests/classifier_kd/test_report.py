"""classifier_kd.report: the markdown table of finished run directories (fake ones, JSON written directly)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier_kd.report import CLAIMS, build_table, claims_block, load_run, method_label


def write_run(root: Path, name: str, *, model: str, method: str | None = None, teacher: str | None = None,
              seed: int = 0, best: float = 70.0, zscore: bool = False, losses: list | None = None,
              dataset: str = "cifar100", finished: bool = True, hardware="Xeon (8 cores); NVIDIA A100; torch 2.14",
              device: str = "cuda:0", world_size: int = 1) -> Path:
    """A run directory as train-teacher (method None) or distill writes it."""
    run = root / name
    run.mkdir(parents=True)
    config = {"model": model, "dataset": dataset, "recipe": "cifar100", "seed": seed, "epochs": 240,
              "data_fraction": 1.0, "max_steps_per_epoch": None}
    if method is not None:
        config.update(method=method, zscore=zscore, teacher=teacher, ce_weight=1.0, losses=losses or [])
    (run / "config.json").write_text(json.dumps(config))
    if finished:
        kind = "train-teacher --model" if method is None else f"distill --method {method} --student"
        result = {"model": model, "dataset": dataset, "best_top1": best, "best_epoch": 231, "final_top1": best - 0.1,
                  "final_top5": 93.0, "epochs": 240, "trainable_parameters": 1000, "extra_parameters": 0,
                  "wall_time_s": 3723.0, "wall_time": "1:02:03",
                  "command": f"classifier-kd {kind} {model} --seed {seed} --out {run}",
                  "hardware": hardware, "device": device, "world_size": world_size, "torch_version": "2.14.1",
                  "config": config}
        (run / "result.json").write_text(json.dumps(result))
    return run


def parse_table(markdown: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(header, {"teacher → student": {column: cell}}) of the first markdown table."""
    lines = [line for line in markdown.split("## Provenance")[0].splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[1]] = dict(zip(header, cells))
    return header, rows


def test_cells_are_mean_and_sample_std_over_seeds_with_the_seed_count(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, f"kd{seed}", model="resnet8x4", method="kd", teacher="resnet32x4", seed=seed, best=best)
            for seed, best in ((0, 73.0), (1, 74.0), (2, 75.0))]
    runs.append(write_run(tmp_path, "dkd0", model="resnet8x4", method="dkd", teacher="resnet32x4", best=76.321))
    header, rows = parse_table(build_table(runs))
    assert header == ["dataset", "teacher → student", "KD", "DKD"]
    row = rows["resnet32x4 → resnet8x4"]
    assert row["dataset"] == "cifar100"
    assert row["KD"] == "74.00 ± 1.00 (3)"  # sample std (n-1): sqrt(2/2)
    assert row["DKD"] == "76.32 (1)"
    # the same directory given twice is one run, not two seeds
    assert parse_table(build_table(runs + [runs[0]]))[1]["resnet32x4 → resnet8x4"]["KD"] == "74.00 ± 1.00 (3)"


def test_rows_columns_teachers_and_students_alone(tmp_path: Path) -> None:
    ls = [{"name": "kd", "weight": 9.0, "options": {"temperature": 2.0, "zscore": True}}]
    runs = [
        write_run(tmp_path, "a_kd", model="resnet8x4", method="kd", teacher="resnet32x4", best=73.3),
        write_run(tmp_path, "a_kdls", model="resnet8x4", method="kd", teacher="resnet32x4", zscore=True,
                  losses=ls, best=76.6),
        write_run(tmp_path, "b_kdls_custom", model="ShuffleV2", method="custom", teacher="resnet32x4", zscore=True,
                  losses=[{"name": "kd", "weight": 1.0, "options": {"temperature": 3.0, "zscore": True}}], best=75.5),
        write_run(tmp_path, "c_dcdkd", model="wrn_16_2", method="dcd+kd", teacher="wrn_40_2", best=76.0),
        write_run(tmp_path, "teacher", model="resnet32x4", best=79.4),
        write_run(tmp_path, "lone_teacher", model="vgg13", best=74.6),
        *[write_run(tmp_path, f"ce{seed}", model="resnet8x4", method="ce", seed=seed, best=72.0 + seed)
          for seed in (0, 1)],
    ]
    header, rows = parse_table(build_table(runs))
    assert header == ["dataset", "teacher → student", "teacher", "CE (student)", "KD", "KD+LS", "DCD+KD"]
    assert list(rows) == ["resnet32x4 → resnet8x4", "resnet32x4 → ShuffleV2", "wrn_40_2 → wrn_16_2",
                          "vgg13 → —"]
    assert rows["resnet32x4 → resnet8x4"] == {
        "dataset": "cifar100", "teacher → student": "resnet32x4 → resnet8x4", "teacher": "79.40 (1)",
        "CE (student)": "72.50 ± 0.71 (2)", "KD": "73.30 (1)", "KD+LS": "76.60 (1)", "DCD+KD": "—"}
    # the teacher run fills every row with that teacher; a --loss kd --zscore run is KD+LS
    assert rows["resnet32x4 → ShuffleV2"]["teacher"] == "79.40 (1)"
    assert rows["resnet32x4 → ShuffleV2"]["KD+LS"] == "75.50 (1)"
    assert rows["resnet32x4 → ShuffleV2"]["CE (student)"] == "—"
    assert rows["wrn_40_2 → wrn_16_2"]["DCD+KD"] == "76.00 (1)"
    assert rows["vgg13 → —"]["teacher"] == "74.60 (1)"


def test_method_labels() -> None:
    def vkd(**options):
        return {"method": "vkd", "losses": [{"name": "kd", "weight": 1.0, "options": {"temperature": 1.0}},
                                            {"name": "vkd", "weight": 1.0, "options": options}]}
    assert method_label({"model": "resnet56"}) == "teacher"
    assert method_label({"method": "ce", "losses": []}) == "CE (student)"
    assert method_label({"method": "dkd", "zscore": True, "losses": []}) == "DKD+LS"
    custom = {"method": "custom", "losses": [{"name": "dcd", "weight": 1}, {"name": "kd", "weight": 1}]}
    assert method_label(custom) == "DCD+KD"
    assert method_label(vkd()) == "VkD"
    assert method_label(vkd(projector="orthogonal", normalizer="layernorm")) == "VkD"
    assert method_label(vkd(projector="linear", normalizer="none")) == "VkD (projector=linear, normalizer=none)"


def test_variant_columns_follow_their_method(tmp_path: Path) -> None:
    def vkd(name, **options):
        losses = [{"name": "kd", "weight": 1.0, "options": {}}, {"name": "vkd", "weight": 1.0, "options": options}]
        return write_run(tmp_path, name, model="timm/deit_tiny_patch16_224", method="vkd", losses=losses,
                         teacher="timm/regnety_160.deit_in1k", dataset="imagenet", best=78.3)
    runs = [vkd("linear", projector="linear"), vkd("plain"),
            write_run(tmp_path, "rsd", model="timm/deit_tiny_patch16_224", method="rsd",
                      teacher="timm/regnety_160.deit_in1k", dataset="imagenet", best=77.0)]
    header, _ = parse_table(build_table(runs))
    assert header[2:] == ["VkD", "VkD (projector=linear)", "RSD"]


def test_provenance_lists_every_run(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, "kd", model="resnet8x4", method="kd", teacher="resnet32x4", seed=2, best=73.25,
                      device="cuda", world_size=4),
            write_run(tmp_path, "old", model="resnet32x4", hardware={"device": "cpu", "world_size": 1, "gpu": None})]
    markdown = build_table(runs)
    provenance = markdown.split("## Provenance")[1]
    hardware = "Xeon (8 cores); NVIDIA A100; torch 2.14"
    assert f"| {runs[0]} | KD | 2 | 240 | 73.25 (231) | {hardware} | cuda × 4 | 1:02:03 |" in provenance
    old_hardware = "device cpu, world_size 1"  # the dict of older result.json files
    assert f"| {runs[1]} | teacher | 0 | 240 | 70.00 (231) | {old_hardware} | cuda:0 × 1 | 1:02:03 |" in provenance
    assert f"classifier-kd distill --method kd --student resnet8x4 --seed 2 --out {runs[0]}" in provenance
    assert f"classifier-kd train-teacher --model resnet32x4 --seed 0 --out {runs[1]}" in provenance


def test_unfinished_run_is_refused_with_what_to_run(tmp_path: Path) -> None:
    done = write_run(tmp_path, "done", model="resnet8x4", method="kd", teacher="resnet32x4")
    running = write_run(tmp_path, "running", model="resnet8x4", method="dkd", teacher="resnet32x4", finished=False)
    with pytest.raises(FileNotFoundError, match=r"running/result\.json not found.*classifier-kd distill .*--out"):
        build_table([done, running])
    teacher = write_run(tmp_path, "teacher", model="resnet32x4", finished=False)
    with pytest.raises(FileNotFoundError, match="classifier-kd train-teacher"):
        load_run(teacher)
    with pytest.raises(FileNotFoundError, match="nowhere/result.json"):
        load_run(tmp_path / "nowhere")


def test_two_runs_of_the_same_seed_in_one_cell_are_refused(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, name, model="resnet8x4", method="kd", teacher="resnet32x4", seed=0)
            for name in ("first", "again")]
    with pytest.raises(ValueError, match="both seed 0 of KD"):
        build_table(runs)


def test_claims_are_tested_in_rows_that_hold_both_columns(tmp_path: Path) -> None:
    def run(name, method, seed, best, zscore=False, teacher="resnet32x4", student="resnet8x4"):
        return write_run(tmp_path, name, model=student, method=method, teacher=teacher, seed=seed, best=best,
                         zscore=zscore)
    runs = [run(f"kd{s}", "kd", s, 74.0 + 0.1 * s) for s in range(3)]
    runs += [run(f"ls{s}", "kd", s, 76.0 + 0.1 * s, zscore=True) for s in range(3)]       # clearly better: yes
    runs += [run(f"dkd{s}", "dkd", s, 75.0 + 0.1 * s) for s in range(3)]
    runs += [run(f"dkdls{s}", "dkd", s, 10.0 + 0.1 * s, zscore=True) for s in range(3)]   # clearly worse: no
    runs += [run("vkd0", "vkd", 0, 77.0)]                                                  # one seed: not resolved
    runs += [run("other_kd0", "kd", 0, 60.0, student="resnet20")]                         # a row without KD+LS
    markdown = build_table(runs)
    claims = markdown.split("## Claims")[1].split("## Provenance")[0]
    lines = [line for line in claims.splitlines() if line.startswith("- ")]
    assert len(lines) == 3  # KD+LS vs KD, DKD+LS vs DKD, VkD vs KD; nothing for the resnet20 row
    assert "logit standardisation improves KD (LS-KD Table 1): **yes**, +2.00 points top-1" in lines[0]
    assert "n = 3 vs 3" in lines[0] and "larger than the seed spread" in lines[0]
    assert "logit standardisation improves DKD (LS-KD Table 1): **no**, -65.00 points" in lines[1]
    assert "VkD improves on KD (VkD Table 1): **not resolved** (too few seeds: 1 VkD, 3 KD)" in lines[2]
    assert all(line.startswith("- cifar100, resnet32x4 → resnet8x4: ") for line in lines)

    block = claims_block(runs, "results/t.md")
    assert block.splitlines()[0] == "<!-- classifier-claims: results/t.md -->"
    assert block.splitlines()[-1] == "<!-- /classifier-claims: results/t.md -->"
    assert "seeds per cell: 1–3" in block and sum(line.startswith("  * ") for line in block.splitlines()) == 3


def test_every_claim_names_columns_the_table_can_have() -> None:
    from classifier_kd.report import COLUMN_ORDER

    for _, candidate, baseline in CLAIMS:
        for column in (candidate, baseline):
            assert column.split(" (")[0] in COLUMN_ORDER or column == "CE (student)", column


def test_a_table_without_testable_claims_has_no_claims_section(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, "kd0", model="resnet8x4", method="kd", teacher="resnet32x4")]
    assert "## Claims" not in build_table(runs)
    assert "no claim of the papers can be tested" in claims_block(runs, "t.md")


def test_table_command_rewrites_the_readme_block_or_refuses_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from classifier_kd.cli import cli

    runs = [str(write_run(tmp_path, f"kd{s}", model="resnet8x4", method="kd", teacher="resnet32x4", seed=s, best=70 + s))
            for s in range(2)]
    runs += [str(write_run(tmp_path, f"ce{s}", model="resnet8x4", method="ce", seed=s, best=60 + s)) for s in range(2)]
    out, readme = tmp_path / "table.md", tmp_path / "README.md"
    readme.write_text("# r\n")
    runner = CliRunner()
    for args, fragment in ((["--readme", str(readme)], "pass --out too"),
                           (["--out", str(out), "--readme", str(readme)], "has no <!-- classifier-claims: ")):
        result = runner.invoke(cli, ["table", *runs, *args])
        assert result.exit_code == 2 and fragment in result.output, result.output
        assert not out.exists() and readme.read_text() == "# r\n"
    readme.write_text(f"# r\n<!-- classifier-claims: {out} -->\nstale\n<!-- /classifier-claims: {out} -->\nend\n")
    result = runner.invoke(cli, ["table", *runs, "--out", str(out), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert "stale" not in text and text.endswith("\nend\n")
    assert "KD improves on the student alone (Hinton et al. 2015): **yes**, +10.00 points top-1" in text
    assert "## Claims" in out.read_text()
