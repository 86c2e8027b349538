"""``gan-kd train --compile`` (issue 26): a compiled run resumes bitwise in the same mode, its checkpoints hold
the plain modules' weights (they load into eager models and `gan-kd evaluate` reads them), and it computes what an
eager run computes up to float rounding. Slow: the first compilation takes minutes on a cold inductor cache."""
import json

import pytest
import torch
from click.testing import CliRunner

from gan_kd.cli import main
from gan_kd.config import TrainConfig
from gan_kd.objectives import build_models
from kd_core.runtime.compiling import missing_compiler

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(missing_compiler() is not None, reason="no C++ compiler for inductor")]
TINY = ["--preset", "da", "--g-ch", "4", "--d-ch", "4", "--batch-size", "10", "--d-steps", "2", "--log-every", "1",
        "--threads", "1", "--checkpoint-every", "2", "--sample-every", "0", "--eval-every", "0", "--device", "cpu"]


def run(args, expect=0):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def test_a_compiled_run_resumes_bitwise_and_its_checkpoints_load_anywhere(cifar10_root, tmp_path):
    common = ["--data-root", cifar10_root, *TINY]
    straight, resumed, eager = tmp_path / "straight", tmp_path / "resumed", tmp_path / "eager"
    output = run(["train", "--out", straight, "--iterations", 4, "--compile", *common]).output
    assert "compile" in next(line for line in output.splitlines() if line.startswith("it 4/4"))  # apart from it/s
    summary = json.loads((straight / "result.json").read_text())
    assert 0 < summary["compile_s"] <= summary["wall_time_s"]
    run(["train", "--out", resumed, "--iterations", 2, "--compile", *common])
    assert "resuming from" in run(["train", "--out", resumed, "--iterations", 4, "--compile", *common]).output
    run(["train", "--out", eager, "--iterations", 4, *common])

    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=False)
    c = torch.load(eager / "checkpoints" / "last.pt", weights_only=False)
    for key in ("generator", "critic", "generator_ema"):
        assert not any("_orig_mod" in name for name in a[key])  # the plain modules' keys
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs after a compiled resume"
            # the same training as eager, up to float rounding of fused kernels, which Adam turns into at most
            # ~2 lr (2e-4) per step where a gradient is near 0 and its sign flips: 4 iterations -> 1.6e-3
            assert torch.allclose(value.float(), c[key][name].float(), rtol=1e-3, atol=2e-3), f"{key}.{name}"
    # the first iteration's losses (initial weights, one Adam step between its 2 D steps) agree closely
    from kd_core.runtime.metrics import read_metrics

    first = [read_metrics(d)[0] for d in (straight, eager)]
    for name in ("d/total", "g/total"):
        assert first[0][name] == pytest.approx(first[1][name], rel=1e-3), name
    for key in ("opt_g", "opt_d"):
        for index, state in a[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, b[key]["state"][index][name]), f"{key}.{index}.{name}"

    # an eager process loads the compiled run's weights strictly, and `gan-kd evaluate` scores them
    config = TrainConfig(**{k: v for k, v in json.loads((straight / "config.json").read_text()).items()
                            if k in TrainConfig.__dataclass_fields__})
    generator, critic = build_models(config, num_classes=10, teacher_dim=None)
    generator.load_state_dict(a["generator"])
    critic.load_state_dict(a["critic"])
    run(["evaluate", straight, "--checkpoint", "last", "--metrics", "colour", "--num-samples", "20"])
    assert "channel_spread" in json.loads((straight / "evaluation.json").read_text())["metrics"]


def test_compile_modules_keeps_state_dict_keys_and_an_ema_copy_made_before_stays_eager():
    import copy

    from torch import nn

    from kd_core.runtime.compiling import compile_modules

    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ema = copy.deepcopy(module)
    compile_modules(module, None)
    assert list(module.state_dict()) == list(ema.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert getattr(module, "_compiled_call_impl", None) is not None
    assert getattr(ema, "_compiled_call_impl", None) is None
