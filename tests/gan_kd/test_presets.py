"""Presets expand identically through ``gan-kd train --preset`` and ``TrainConfig.from_preset`` (gan_kd.presets)."""
import dataclasses

import pytest
from click.testing import CliRunner

import kd_core
from gan_kd import train as gan_train
from gan_kd.cli import main
from gan_kd.config import TrainConfig
from gan_kd.presets import DISTILLATION_OPTIONS, PRESETS, expand_preset

TEACHER = {"teacher": "ckpt:teacher.pt"}
# (preset, overrides): every preset alone and with an option that changes what the preset sets
VKD_CASES = [TEACHER, {**TEACHER, "normalizer": "none"}, {**TEACHER, "projector": "mlp", "kd_weight": 0.5},
             {**TEACHER, "normalizer": "whiten", "whiten_group_size": 8, "orthogonal_map": "cayley"}]
CASES = [(preset, overrides) for preset in PRESETS
         for overrides in ([{}, {"iterations": 7, "lecam": 0.3}] if not PRESETS[preset]["distill"] else
                           VKD_CASES if PRESETS[preset]["distill_loss"] == "vkd" else
                           [TEACHER, {**TEACHER, "kd_weight": 0.5, "lecam": 0.3}])]


def cli_args(overrides: dict) -> list[str]:
    return [part for key, value in overrides.items() for part in ("--" + key.replace("_", "-"), str(value))]


def through_cli(monkeypatch, tmp_path, preset: str, overrides: dict):
    """``gan-kd train --preset PRESET <overrides>`` up to the Trainer: (the click result, the configs it built)."""
    built = []

    class Capture:
        diverged = None  # what `gan-kd train` reads after run() (issue 28: exit code 3 when set)

        def __init__(self, config, out):
            built.append(config)

        def run(self):
            return {}

    monkeypatch.setattr(gan_train, "Trainer", Capture)
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--preset", preset, *cli_args(overrides)])
    return result, built


@pytest.mark.parametrize("preset,overrides", CASES)
def test_cli_and_from_preset_build_the_same_config(preset, overrides, monkeypatch, tmp_path):
    result, built = through_cli(monkeypatch, tmp_path, preset, overrides)
    assert result.exit_code == 0, result.output
    config = TrainConfig.from_preset(preset, **overrides)
    assert built == [config]
    assert config.preset == preset and config.distill == PRESETS[preset]["distill"]
    for key, value in {**PRESETS[preset], **overrides}.items():  # explicit options win over the preset
        assert getattr(config, key) == value, key


@pytest.mark.parametrize("overrides,flags", [
    (TEACHER, ["--teacher", "ckpt:teacher.pt"]),
    ({"normalizer": "none"}, ["--normalizer", "none"]),
    ({"kd_weight": 2.0, "projector": "linear"}, ["--kd-weight", "2.0", "--projector", "linear"]),
    ({"teacher_bf16": True}, ["--teacher-bf16"]),
])
def test_from_preset_refuses_what_the_cli_refuses_with_the_same_message(overrides, flags, monkeypatch, tmp_path):
    built = []
    monkeypatch.setattr(gan_train, "Trainer", lambda config, out: built.append(config))
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--preset", "da", *flags])
    assert result.exit_code == 2 and not built and not (tmp_path / "run").exists()
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.output
    with pytest.raises(ValueError) as error:
        TrainConfig.from_preset("da", **overrides)
    assert lines[0] == f"Error: {error.value}"
    assert "--preset da trains without a teacher, so --" in lines[0] and "would be ignored" in lines[0]


def test_expand_preset_refuses_an_unknown_preset_and_what_the_preset_sets():
    with pytest.raises(ValueError, match="unknown preset 'kd-clip'; allowed: da, da-kd, vkd, vkd-whiten, fitnets, spkd, "
                                         "pkd, kd-dlgan, label-distillation"):
        TrainConfig.from_preset("kd-clip")
    with pytest.raises(ValueError, match="distill is set by the preset"):
        expand_preset("vkd", {"distill": False})
    assert expand_preset("vkd", {"normalizer": "whiten"}) == {"preset": "vkd", "distill": True, "distill_loss": "vkd",
                                                             "projector": "orthogonal", "normalizer": "whiten"}
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    assert set(DISTILLATION_OPTIONS) <= fields and all(set(values) <= fields for values in PRESETS.values())


def test_cli_choices_come_from_the_registry_and_the_preset_table():
    params = {param.name: param for param in main.commands["train"].params}
    registered = kd_core.available()
    assert list(params["projector"].type.choices) == registered["projectors"]
    assert list(params["normalizer"].type.choices) == registered["normalizers"]
    assert list(params["preset"].type.choices) == list(PRESETS)


def test_usage_errors_are_one_line_with_exit_code_2(tmp_path):
    for args, message in ((["train", "--out", str(tmp_path / "r"), "--data-fraction", "0"], "not in (0, 1]"),
                          (["train", "--out", str(tmp_path / "r"), "--projector", "pca"], "'pca' is not one of"),
                          (["train", "--bogus"], "--bogus"),
                          (["nonexistent"], "No such command 'nonexistent'")):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1, result.output
        assert message in result.output


def test_every_preset_has_a_table_row_and_help():
    from gan_kd.presets import PRESET_HELP, PRESET_LABELS, PRESETS

    assert list(PRESET_LABELS) == list(PRESETS)
    assert all(f"{name}:" in PRESET_HELP for name in PRESETS)


@pytest.mark.parametrize("preset", ["spkd", "pkd", "kd-dlgan", "label-distillation"])
def test_a_preset_with_another_loss_refuses_the_vkd_options(preset, monkeypatch, tmp_path):
    result, built = through_cli(monkeypatch, tmp_path, preset, {**TEACHER, "projector": "linear"})
    assert result.exit_code == 2 and not built
    assert "--projector is an option of the vkd loss" in result.output
    with pytest.raises(ValueError, match="--projector is an option of the vkd loss"):
        TrainConfig.from_preset(preset, **TEACHER, projector="linear")


def test_fitnets_is_an_alias_of_da_kd_and_computes_kd_cores_fitnet_loss():
    import torch

    from gan_kd.objectives import build_distill_loss

    fitnets, da_kd = (TrainConfig.from_preset(name, **TEACHER) for name in ("fitnets", "da-kd"))
    assert dataclasses.replace(fitnets, preset="da-kd") == da_kd
    torch.manual_seed(0)
    ours = build_distill_loss(fitnets, 16, 24)
    reference = kd_core.build_loss("fitnet", student_dim=16, teacher_dim=24)
    reference.projector.load_state_dict(ours.projector.state_dict())
    student, teacher = torch.randn(10, 16), torch.randn(10, 24)
    assert torch.allclose(ours(student, teacher), reference(student, teacher))
