"""The classifier reproduction scripts (scripts/cls_*.sh): syntax, the DRY_RUN plan (every printed command parses
with the ``classifier-kd`` CLI, nothing is run) and the one-line refusals (exit 2) before anything is launched."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("cls_cifar100.sh", "cls_imagenet.sh", "cls_cross_arch.sh")
KNOBS = ("DATA_ROOT", "RUNS", "SEEDS", "METHODS", "PAIRS", "TEACHER_DIR", "TEACHER_SEED", "BASELINES", "LS_PER_PAIR",
         "NPROC", "EXTRA", "OUT", "DRY_RUN", "R50_TEACHER", "VKD_STUDENTS", "VKD_TEACHER", "VKD_ABLATION")


def run_script(name: str, *args: str, path_prefix: Path | None = None, **knobs: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in KNOBS}
    env["PATH"] = os.pathsep.join([*([str(path_prefix)] if path_prefix else []), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    env.update(knobs)
    return subprocess.run(["bash", str(REPO / "scripts" / name), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def cli_words(line: str) -> list[str]:
    """``classifier-kd SUB ...`` or ``torchrun ... -m classifier_kd.cli SUB ...`` -> ``[SUB, ...]``."""
    words = shlex.split(line)
    if words[0] == "torchrun":
        at = words.index("-m")
        assert words[at + 1] == "classifier_kd.cli", line
        return words[at + 2:]
    assert words[0] == "classifier-kd", line
    return words[1:]


def check_model_name(name: str) -> None:
    from classifier_kd.models import available

    if name in available():
        return
    timm = pytest.importorskip("timm")
    assert name.startswith("timm/") and timm.is_model(name[len("timm/"):]), f"unknown model {name}"


def check_command(words: list[str], workdir: Path) -> None:
    """Parse one command with the CLI, in ``workdir`` (no callback runs a model or reads data)."""
    import classifier_kd.cli as cli_module

    name, args = words[0], words[1:]
    assert name in cli_module.cli.commands, f"classifier-kd has no command {name!r}"
    if name == "table":  # its run directories must exist: the runs before it would have made them
        for run_dir in args[:args.index("--out")]:
            (workdir / run_dir).mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        params = cli_module.cli.commands[name].make_context(name, list(args)).params
    except click.ClickException as err:
        pytest.fail(f"`classifier-kd {shlex.join(words[:8])} ...` does not parse: {err.format_message()}")
    finally:
        os.chdir(cwd)
    for key in ("model", "student", "teacher"):
        if params.get(key):
            check_model_name(params[key])
    if name == "distill":  # the method's terms under the recipe, with --loss / --zscore / --set applied
        assert not (params["method"] and params["losses"])
        assert not (params["teacher_ckpt"] and params["teacher_pretrained"])
        method = params["method"] or ("custom" if params["losses"] else "kd")
        if method != "ce":
            assert params["teacher"] and (params["teacher_ckpt"] or params["teacher_pretrained"]), words
        from classifier_kd.recipes import distillation_terms

        distillation_terms(params["recipe"], None if method == "custom" else method, params["losses"],
                           params["zscore"], params["settings"], params["ce_weight"])
    return None


def dry_run(name: str, workdir: Path, **knobs: str) -> list[list[str]]:
    """The commands ``DRY_RUN=1 scripts/NAME`` prints (as ``[SUBCOMMAND, ...]``), each checked by the CLI's parser."""
    result = run_script(name, DRY_RUN="1", **knobs)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    commands = [cli_words(line) for line in result.stdout.splitlines() if line.strip()]
    for words in commands:
        check_command(words, workdir)
    return commands


def option(words: list[str], flag: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words) if word == flag]


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_valid_bash_and_executable(name: str) -> None:
    path = REPO / "scripts" / name
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert 'source "$(dirname "$0")/cls_common.sh"' in path.read_text()


def test_common_functions_are_valid_bash_and_only_defined_when_sourced() -> None:
    path = REPO / "scripts" / "cls_common.sh"
    subprocess.run(["bash", "-n", str(path)], check=True)
    result = subprocess.run(["bash", "-c", f"set -euo pipefail; source {shlex.quote(str(path))}; declare -F"],
                            capture_output=True, text=True, check=True)
    functions = [line.split()[-1] for line in result.stdout.splitlines()]
    assert {"die", "launch", "launch_seeds", "method_args", "write_table"} <= set(functions)
    lines = path.read_text().splitlines()
    for at, line in enumerate(lines):  # each function has its one-line comment just above it
        if line.split("(")[0] in functions and line.endswith(("{", "}")):
            assert lines[at - 1].startswith(f"# {line.split('(')[0]}"), line


@pytest.mark.parametrize("name", SCRIPTS)
def test_dry_run_prints_commands_that_parse_and_a_table_of_every_run(name: str, tmp_path: Path) -> None:
    commands = dry_run(name, tmp_path)
    *training, table = commands
    assert table[0] == "table" and option(table, "--out") == [f"results/{name[:-3]}.md"]
    outs = [option(words, "--out")[0] for words in training]
    assert len(set(outs)) == len(outs) == len(training) > 0
    assert table[1:-2] == outs  # every run directory, in order


def test_cifar100_plan(tmp_path: Path) -> None:
    commands = dry_run("cls_cifar100.sh", tmp_path)
    distill = [words for words in commands if words[0] == "distill" and "ce" not in option(words, "--method")]
    pairs = {(option(words, "--teacher")[0], option(words, "--student")[0]) for words in distill}
    assert len(pairs) == 17 and ("resnet110", "resnet20") in pairs and ("ResNet50", "vgg8") in pairs
    assert len(distill) == 17 * 9 * 3
    teachers = [words for words in commands if words[0] == "train-teacher"]
    assert sorted(option(words, "--model")[0] for words in teachers) == sorted(
        ["resnet32x4", "wrn_40_2", "vgg13", "ResNet50", "resnet56", "resnet110"])

    def settings(teacher, student, run):
        [words] = [w for w in distill if option(w, "--out")[0].endswith(f"/{teacher}_{student}/{run}_seed0")]
        return option(words, "--set")
    assert settings("resnet56", "resnet20", "dkd") == ["dkd.beta=2"]
    assert settings("resnet56", "resnet20", "dkd-zscore") == ["dkd.beta=18"]
    assert settings("vgg13", "vgg8", "dkd") == ["dkd.beta=6"]
    assert settings("resnet32x4", "resnet8x4", "dkd") == ["dkd.beta=8"]
    assert settings("vgg13", "vgg8", "kd-zscore") == ["kd.temperature=3"]

    with_files = dry_run("cls_cifar100.sh", tmp_path, TEACHER_DIR="/teachers", PAIRS="vgg13:vgg8", METHODS="kd",
                         SEEDS="0", BASELINES="0")
    assert [words[0] for words in with_files] == ["distill", "table"]
    assert option(with_files[0], "--teacher-ckpt") == ["/teachers/vgg13_vanilla/ckpt_epoch_240.pth"]


def test_imagenet_plan_with_torchrun(tmp_path: Path) -> None:
    result = run_script("cls_imagenet.sh", DRY_RUN="1", NPROC="4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("torchrun --nproc_per_node 4 -m classifier_kd.cli ") for line in lines[:-1])
    commands = dry_run("cls_imagenet.sh", tmp_path, NPROC="4")
    cnn = [words for words in commands if "imagenet" in option(words, "--recipe")]
    assert cnn and all(option(words, "--batch-size") == ["128"] for words in cnn)  # global 512, as mdistiller
    vkd = [words for words in commands if "deit" in option(words, "--recipe")]
    students = {option(words, "--student")[0] for words in vkd}
    assert students == {"vkd_deit_tiny", "vkd_deit_small"}
    assert len(vkd) == 5 and all(option(words, "--batch-size") == [] for words in vkd)  # Table 1 + Table 6 ablation


def test_cross_arch_plan(tmp_path: Path) -> None:
    commands = dry_run("cls_cross_arch.sh", tmp_path, METHODS="rsd kd", SEEDS="0")
    distill = [words for words in commands if words[0] == "distill" and option(words, "--method") != ["ce"]]
    assert len(distill) == 12 * 2
    for words in distill:
        cnn_student = option(words, "--student")[0] in ("timm/resnet18", "timm/mobilenetv2_100")
        assert option(words, "--recipe") == ["cross-arch-cnn" if cnn_student else "cross-arch-vit"]
        # teachers fine-tuned here by train-teacher record their input size: no flag
        assert option(words, "--teacher-image-size") == []
        assert option(words, "--teacher-ckpt")[0].endswith("/checkpoints/best.pt")


def test_cross_arch_plan_with_rsd_teachers_passes_their_224_px(tmp_path: Path) -> None:
    teacher_dir = tmp_path / "rsd-teachers"  # RSD's bare timm state_dicts, which record no input size
    teacher_dir.mkdir()
    for name in ("swin_tiny_patch4_window7_224", "vit_small_patch16_224", "mixer_b16_224", "convnext_tiny"):
        (teacher_dir / f"{name}_cifar100.pth").write_bytes(b"")
    commands = dry_run("cls_cross_arch.sh", tmp_path, TEACHER_DIR=str(teacher_dir), METHODS="rsd kd", SEEDS="0")
    assert not [words for words in commands if words[0] == "train-teacher"]
    distill = [words for words in commands if words[0] == "distill" and option(words, "--method") != ["ce"]]
    assert len(distill) == 12 * 2
    for words in distill:
        assert option(words, "--teacher-image-size") == ["224"]
        [ckpt] = option(words, "--teacher-ckpt")
        assert Path(ckpt).parent == teacher_dir and Path(ckpt).name.endswith("_cifar100.pth")
    baselines = [words for words in commands if option(words, "--method") == ["ce"]]
    assert baselines and all("--teacher-image-size" not in words for words in baselines)


@pytest.mark.parametrize("name", SCRIPTS)
def test_refuses_without_a_gpu_in_one_line(name: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    result = run_script(name)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{name}: no CUDA GPU visible")


@pytest.fixture
def fake_gpu(tmp_path: Path) -> Path:
    """A folder whose ``python`` answers the scripts' CUDA check with yes (nothing else is run before the refusals)."""
    folder = tmp_path / "fake-gpu-bin"
    folder.mkdir()
    (folder / "python").write_text("#!/bin/sh\nexit 0\n")
    (folder / "python").chmod(0o755)
    return folder


@pytest.mark.parametrize("name, message", [("cls_cifar100.sh", "CIFAR-100 missing"),
                                           ("cls_cross_arch.sh", "CIFAR-100 missing"),
                                           ("cls_imagenet.sh", "ImageNet missing")])
def test_refuses_without_data(name: str, message: str, fake_gpu: Path, tmp_path: Path) -> None:
    result = run_script(name, path_prefix=fake_gpu, DATA_ROOT=str(tmp_path / "no-data"), RUNS=str(tmp_path / "runs"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{name}: {message}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, missing", [("cls_cifar100.sh", "resnet32x4_vanilla/ckpt_epoch_240.pth"),
                                           ("cls_cross_arch.sh", "swin_tiny_patch4_window7_224_cifar100.pth")])
def test_refuses_without_teacher_files(name: str, missing: str, fake_gpu: Path, tmp_path: Path) -> None:
    (tmp_path / "data" / "cifar-100-python").mkdir(parents=True)
    (tmp_path / "data" / "cifar-100-python" / "train").write_bytes(b"")
    result = run_script(name, path_prefix=fake_gpu, DATA_ROOT=str(tmp_path / "data"),
                        TEACHER_DIR=str(tmp_path / "teachers"), RUNS=str(tmp_path / "runs"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and f"teacher missing: {tmp_path}/teachers/" in result.stderr
    assert missing in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_run_skips_finished_runs_and_writes_the_table(fake_gpu: Path, tmp_path: Path) -> None:
    """Without DRY_RUN, launch runs each command (here a stand-in classifier-kd that logs its arguments), except
    those whose run directory has a result.json, and the table gets every run directory."""
    log = tmp_path / "calls.log"
    (fake_gpu / "classifier-kd").write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n')
    (fake_gpu / "classifier-kd").chmod(0o755)
    (tmp_path / "data" / "cifar-100-python").mkdir(parents=True)
    (tmp_path / "data" / "cifar-100-python" / "train").write_bytes(b"")
    runs = tmp_path / "runs"
    (runs / "teachers" / "resnet56").mkdir(parents=True)
    (runs / "teachers" / "resnet56" / "result.json").write_text("{}")
    result = run_script("cls_cifar100.sh", path_prefix=fake_gpu, DATA_ROOT=str(tmp_path / "data"), RUNS=str(runs),
                        PAIRS="resnet56:resnet20", METHODS="dkd-zscore", SEEDS="0", OUT=str(tmp_path / "out.md"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"cls_cifar100.sh: {runs}/teachers/resnet56 has finished, skipped\n"
    calls = [line.split() for line in log.read_text().splitlines()]
    assert [words[0] for words in calls] == ["distill", "distill", "table"]
    assert option(calls[1], "--set") == ["dkd.beta=18"] and option(calls[1], "--seed") == ["0"]
    assert calls[2][1:-2] == [f"{runs}/teachers/resnet56", f"{runs}/students/resnet20/ce_seed0",
                              f"{runs}/resnet56_resnet20/dkd-zscore_seed0"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_bad_plans_are_refused_before_anything(name: str) -> None:
    for knobs in ({"METHODS": "kd nonsense"}, {"PAIRS": "nobody:nothing"}, {"NPROC": "two"}):
        result = run_script(name, DRY_RUN="1", **knobs)
        assert (result.returncode, result.stdout) == (2, ""), knobs
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"{name}: ")
    result = run_script(name, "cifar100", DRY_RUN="1")
    assert (result.returncode, result.stdout) == (2, "") and result.stderr.startswith(f"{name}: usage: ")
    assert run_script(name, "--help").stdout.startswith("usage: ")
