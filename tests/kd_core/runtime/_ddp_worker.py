"""Worker launched by test_distributed.py under ``torchrun --nproc_per_node 2`` (Gloo, CPU).

Each rank checks the collective helpers against values it can compute alone, runs one DDP
backward pass on rank-dependent data, and writes what it saw to ``<out_dir>/rank<R>.json`` for
the test to compare across ranks. Any failed check exits non-zero (torchrun then fails).

It ends the way the trainers should: release the DDP wrapper, then ``cleanup_distributed``
(barrier, destroy), and checks that no Gloo thread survives the teardown, so nothing of the
backend is still running when the interpreter shuts down.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from kd_core.runtime.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    is_main_process,
)

WORLD_SIZE = 2


def make_model() -> torch.nn.Linear:
    """Same initial weights on every rank (DDP would broadcast rank 0's anyway)."""
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def make_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Different data on each rank, so the per-rank gradients differ and averaging matters."""
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(4, 3, generator=gen), torch.randn(4, 2, generator=gen)


def loss_fn(model: torch.nn.Module, rank: int) -> torch.Tensor:
    inputs, targets = make_batch(rank)
    return (model(inputs) - targets).pow(2).mean()


def backend_threads() -> list[str] | None:
    """Names of this process's Gloo threads (``gloo_tcp_loop``, ``pt_gloo_runloop``); None off Linux."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread exited meanwhile
            continue
    return sorted(name for name in names if "gloo" in name)


def main(out_dir: Path) -> None:
    ctx = init_distributed("cpu")
    assert ctx.distributed and ctx.world_size == WORLD_SIZE, ctx
    assert torch.distributed.get_backend() == "gloo"
    assert ctx.rank == torch.distributed.get_rank() and ctx.local_rank == ctx.rank
    assert ctx.is_main == (ctx.rank == 0) == is_main_process()
    assert ctx.device == torch.device("cpu")

    # all_reduce_mean: rank r contributes r (ints/floats) -> mean 0.5; tensors keep dtype/shape/device.
    tensor = torch.full((2, 2), float(ctx.rank), dtype=torch.float32)
    reduced = all_reduce_mean(tensor)
    assert reduced.dtype == torch.float32 and reduced.shape == (2, 2), reduced
    assert torch.equal(reduced, torch.full((2, 2), 0.5)), reduced
    assert torch.equal(tensor, torch.full((2, 2), float(ctx.rank))), "input must not be modified"
    metrics = all_reduce_mean({"loss": 1.0 + 2 * ctx.rank, "acc": torch.tensor(10.0 * ctx.rank), "n": ctx.rank})
    assert list(metrics) == ["loss", "acc", "n"]
    assert isinstance(metrics["loss"], float) and metrics["loss"] == 2.0, metrics
    assert isinstance(metrics["acc"], torch.Tensor) and metrics["acc"].item() == 5.0, metrics
    assert metrics["n"] == 0.5, metrics

    # broadcast_object: every rank ends up with rank 0's object (and rank 1's, from src=1).
    assert broadcast_object({"run_dir": f"runs/rank{ctx.rank}", "ids": [ctx.rank] * 3}) == {
        "run_dir": "runs/rank0",
        "ids": [0, 0, 0],
    }
    assert broadcast_object(f"from {ctx.rank}", src=1) == "from 1"

    # DDP: gradients after backward are the mean of the per-rank gradients, identical on all ranks.
    model = torch.nn.parallel.DistributedDataParallel(make_model())
    loss_fn(model, ctx.rank).backward()
    grads = {name: p.grad.tolist() for name, p in model.module.named_parameters()}

    barrier()
    (out_dir / f"rank{ctx.rank}.json").write_text(json.dumps({"rank": ctx.rank, "grads": grads}))
    del model  # DDP holds the process group: release it first, so destroying the group joins its threads
    cleanup_distributed()
    assert not torch.distributed.is_initialized()
    leftover = backend_threads()
    for _ in range(20):  # a joined thread can linger in /proc for a moment
        if not leftover:
            break
        time.sleep(0.05)
        leftover = backend_threads()
    assert not leftover, f"rank {ctx.rank} (pid {os.getpid()}): Gloo threads still running after cleanup: {leftover}"


if __name__ == "__main__":
    main(Path(sys.argv[1]))
