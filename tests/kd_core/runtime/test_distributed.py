"""Device resolution and torch.distributed helpers (kd_core/runtime/distributed.py)."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from kd_core.runtime import distributed
from kd_core.runtime.distributed import (
    DistributedContext,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    is_main_process,
    resolve_device,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
WORKER = HERE / "_ddp_worker.py"
TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend two CUDA devices exist (resolve_device only asks, it never touches a GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def _one_line_error(spec: str) -> str:
    with pytest.raises(ValueError) as err:
        resolve_device(spec)
    assert "\n" not in str(err.value)
    return str(err.value)


# --------------------------------------------------------------------------- resolve_device


def test_auto_and_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_prefers_cuda(fake_cuda):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_an_error(no_cuda, spec):
    message = _one_line_error(spec)
    assert repr(spec) in message and "not available" in message


def test_cuda_index_out_of_range(fake_cuda):
    message = _one_line_error("cuda:2")
    assert "'cuda:2'" in message and "2 CUDA device(s)" in message


@pytest.mark.parametrize("spec", ["gpu", "", "cuda:", "cuda:x", "cuda:-1", "CPU0", "mps"])
def test_unknown_spec_names_allowed_values(fake_cuda, spec):
    message = _one_line_error(spec)
    assert "auto" in message and "cpu" in message and "cuda:N" in message


# --------------------------------------------------------------------------- single process


def test_single_process_context_without_process_group(no_torchrun_env):
    ctx = init_distributed("cpu")
    assert ctx == DistributedContext(
        rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), is_main=True, distributed=False
    )
    assert not dist.is_initialized()


def test_world_size_one_is_single_process(no_torchrun_env, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert not init_distributed("cpu").distributed
    assert not dist.is_initialized()


def test_helpers_are_identities_without_process_group(no_torchrun_env):
    tensor = torch.tensor([1.0, 2.0], requires_grad=True)
    metrics = {"loss": 1.5, "acc": torch.tensor(0.25)}
    assert all_reduce_mean(tensor) is tensor
    assert all_reduce_mean(metrics) is metrics
    obj = {"a": [1, 2]}
    assert broadcast_object(obj) is obj
    assert is_main_process()
    barrier()
    cleanup_distributed()  # safe without a group


def test_world_size_without_rank_is_an_error(no_torchrun_env, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="torchrun"):
        init_distributed("cpu")
    assert not dist.is_initialized()


def test_explicit_cuda_index_rejected_under_torchrun(no_torchrun_env, monkeypatch, fake_cuda):
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        init_distributed("cuda:0")
    assert not dist.is_initialized()


@pytest.fixture
def one_process_group(tmp_path):
    """A real Gloo group with a single member: exercises the collective code paths in-process."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        cleanup_distributed()
    assert not dist.is_initialized()


def test_reduce_paths_preserve_kinds_in_a_real_group(one_process_group):
    assert is_main_process()
    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    out = all_reduce_mean(weights)
    assert out is not weights and out.dtype == torch.float32 and torch.equal(out, weights)

    counts = all_reduce_mean(torch.tensor([3, 4]))
    assert counts.dtype == torch.float64 and counts.tolist() == [3.0, 4.0]

    metrics = {"z": 2.5, "a": torch.tensor([[1.0, 2.0]], dtype=torch.float16), "n": 7}
    reduced = all_reduce_mean(metrics)
    assert list(reduced) == ["z", "a", "n"]
    assert reduced["z"] == 2.5 and isinstance(reduced["z"], float)
    assert reduced["a"].dtype == torch.float16 and reduced["a"].shape == (1, 2)
    assert reduced["a"].tolist() == [[1.0, 2.0]] and reduced["n"] == 7.0
    assert all_reduce_mean({}) == {}
    with pytest.raises(TypeError):
        all_reduce_mean({"bad": "text"})
    with pytest.raises(TypeError):
        all_reduce_mean([1.0])

    assert broadcast_object({"out": "runs/x"}) == {"out": "runs/x"}
    barrier()


@pytest.fixture
def teardown_calls(monkeypatch):
    """Record cleanup_distributed's barrier and destroy calls, in order (both still run)."""
    calls = []
    real_barrier, real_destroy = distributed.barrier, dist.destroy_process_group
    monkeypatch.setattr(distributed, "barrier", lambda: (calls.append("barrier"), real_barrier())[1])
    monkeypatch.setattr(dist, "destroy_process_group", lambda: (calls.append("destroy"), real_destroy())[1])
    return calls


def test_cleanup_barriers_then_destroys_once(one_process_group, teardown_calls):
    cleanup_distributed()
    assert teardown_calls == ["barrier", "destroy"] and not dist.is_initialized()
    cleanup_distributed()  # a second call (e.g. a trainer's and its CLI's finally) does nothing
    assert teardown_calls == ["barrier", "destroy"]


def test_cleanup_while_an_exception_propagates_skips_the_barrier(one_process_group, teardown_calls):
    """The other ranks may never reach a barrier a failing rank waits in: it would hang until the timeout."""
    with pytest.raises(KeyError):
        try:
            raise KeyError("failed on this rank")
        finally:
            cleanup_distributed()
    assert teardown_calls == ["destroy"] and not dist.is_initialized()


def test_cleanup_synchronize_overrides_the_guess(one_process_group, teardown_calls):
    try:
        raise KeyError("handled")
    except KeyError:
        cleanup_distributed(synchronize=True)
    assert teardown_calls == ["barrier", "destroy"]


def test_cleanup_destroys_the_group_even_if_the_barrier_fails(one_process_group, monkeypatch):
    def broken_barrier():
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(distributed, "barrier", broken_barrier)
    with pytest.raises(RuntimeError, match="closed by peer"):
        cleanup_distributed()
    assert not dist.is_initialized()


GLOO_TEARDOWN_SCRIPT = """
import os, sys, time
import torch, torch.distributed as dist
from kd_core.runtime import distributed

def gloo_threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{task}/comm").read().strip())
        except OSError:
            pass
    return sorted(name for name in names if "gloo" in name)

distributed._import_group_default_modules()  # what init_distributed does before init_process_group
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
# Gloo starts its threads at once but each names itself a moment later (a race seen here: the names were
# missing right after init_process_group about one run in two), so wait for the names
for _ in range(100):
    if gloo_threads():
        break
    time.sleep(0.05)
assert gloo_threads(), "expected Gloo threads while the group exists"
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))  # imports torch.distributed.nn.functional
model(torch.ones(2, 3)).sum().backward()
del model
distributed.cleanup_distributed()
for _ in range(20):
    if not gloo_threads():
        break
    time.sleep(0.05)
print(gloo_threads())
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_cleanup_after_ddp_stops_the_gloo_threads(tmp_path):
    """torch.distributed.nn.functional binds the current world group into default arguments when first
    imported, and DDP imports it: imported after init_process_group, it kept the group (and Gloo's
    threads) alive past destroy_process_group until the process exited. A fresh interpreter, so the
    import really happens here."""
    env = {name: value for name, value in os.environ.items() if name not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", GLOO_TEARDOWN_SCRIPT, str(tmp_path / "store")],
                          env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]", f"Gloo threads left after cleanup: {done.stdout}"


# --------------------------------------------------------------------------- torchrun, 2 processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load_worker():
    spec = importlib.util.spec_from_file_location("_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worker_logs(log_dir: Path) -> str:
    """Each rank's stdout/stderr as torchrun's ``--redirects 3`` wrote them (``<run>/attempt_N/<rank>/``)."""
    parts = []
    for path in sorted(log_dir.rglob("*.log")):
        text = path.read_text(errors="replace")
        if text.strip():
            parts.append(f"----- {path.relative_to(log_dir)} -----\n{text[-6000:]}")
    return "\n".join(parts) or f"(no worker output under {log_dir})"


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a worker killed by a signal prints where each Python thread was
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log_dir = tmp_path / "logs"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "--log-dir", str(log_dir), "--redirects", "3",  # each rank's stdout/stderr to its own file
        str(WORKER), str(out_dir),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (
        f"torchrun exited with {done.returncode}\n"
        f"===== worker output =====\n{_worker_logs(log_dir)}\n"
        f"===== torchrun stdout =====\n{done.stdout[-3000:]}\n===== torchrun stderr =====\n{done.stderr[-6000:]}"
    )

    results = [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in results] == [0, 1]
    assert results[0]["grads"] == results[1]["grads"]  # bit-identical after the all-reduce

    # ... and equal to the mean of the two single-process gradients.
    worker = _load_worker()
    per_rank = []
    for rank in (0, 1):
        model = worker.make_model()
        worker.loss_fn(model, rank).backward()
        per_rank.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in results[0]["grads"].items():
        expected = (per_rank[0][name] + per_rank[1][name]) / 2
        torch.testing.assert_close(torch.tensor(grad), expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(per_rank[0][name], per_rank[1][name])  # the ranks really differed
