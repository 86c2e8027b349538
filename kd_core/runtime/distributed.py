"""torchrun / torch.distributed setup shared by both trainers.

Multi-process runs are launched with ``torchrun --nproc_per_node N ...``; torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`init_distributed`
reads them. A plain ``python -m ...`` run gets a single-process context and no process group, so
the helpers below (barrier, all-reduce, broadcast) are identities and the training loop is
written once for both cases.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

ALLOWED_DEVICES = "auto, cpu, cuda, cuda:N"

T = TypeVar("T")


def resolve_device(spec: str | torch.device) -> torch.device:
    """Turn a ``--device`` option into a ``torch.device``, failing early with a one-line reason.

    ``auto`` picks CUDA when available, else CPU. An explicit CUDA request on a machine without
    it is an error rather than a silent CPU fallback: a run silently 100x slower is worse.
    """
    text = str(spec).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"unknown device {text!r}; allowed: {ALLOWED_DEVICES}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {text!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if match.group(1) is not None:
        index, count = int(match.group(1)), torch.cuda.device_count()
        if index >= count:
            raise ValueError(
                f"device {text!r} is out of range: {count} CUDA device(s) visible (cuda:0..cuda:{count - 1})"
            )
    return torch.device(text)


@dataclass
class DistributedContext:
    """Where this process sits in the run; ``is_main`` (rank 0) does all file I/O."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool
    distributed: bool


def init_distributed(device: str | torch.device = "auto") -> DistributedContext:
    """Join the torchrun process group if there is one, else return a single-process context.

    Under torchrun (``WORLD_SIZE`` > 1) each process uses ``cuda:LOCAL_RANK`` with NCCL, or the
    CPU with Gloo; an explicit ``cuda:N`` is rejected there because torchrun, not the user,
    assigns devices to processes.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistributedContext(
            rank=0, world_size=1, local_rank=0, device=resolve_device(device), is_main=True, distributed=False
        )
    if "RANK" not in os.environ:
        raise ValueError("WORLD_SIZE > 1 but RANK is not set; launch multi-process runs with torchrun")
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if resolved.index is not None:
            raise ValueError(
                f"device {str(device)!r} cannot be used under torchrun (each process uses cuda:LOCAL_RANK); "
                "pass 'cuda' or 'auto'"
            )
        resolved = resolve_device(f"cuda:{local_rank}")
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        _import_group_default_modules()
        if resolved.type == "cuda":
            # device_id binds NCCL to this GPU now instead of guessing it at the first collective.
            dist.init_process_group(backend="nccl", init_method="env://", device_id=resolved)
        else:
            dist.init_process_group(backend="gloo", init_method="env://")
    return DistributedContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=resolved,
        is_main=rank == 0,
        distributed=True,
    )


def _import_group_default_modules() -> None:
    """Import, before the process group exists, the torch modules that bind it at import time.

    ``torch.distributed.nn.functional`` declares ``group=group.WORLD`` as a default argument of
    ten functions, so the default group current when it is first imported stays referenced by
    those defaults for the life of the process. DistributedDataParallel imports it (through
    ``torch.distributed._shard``) in its constructor, i.e. after ``init_process_group``; the
    world group then outlives ``destroy_process_group``, its Gloo backend is never destroyed and
    its threads (``pt_gloo_runloop`` x2, ``gloo_tcp_loop``) keep running through interpreter
    shutdown and ``exit()``. Imported first, the defaults are ``None`` and destroying the group
    (once the DDP wrappers holding it are gone) joins those threads.
    """
    import torch.distributed.nn.functional  # noqa: F401


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _comm_device() -> torch.device:
    """NCCL communicates CUDA tensors only; Gloo (and the rest) CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cleanup_distributed(*, synchronize: bool | None = None) -> None:
    """Barrier, then destroy the process group; a no-op without one (single process, or a second call).

    The barrier makes every rank finish its collectives before any rank tears down its
    connections, so no rank closes a socket a peer is still reading from. It is skipped when the
    call happens while an exception propagates (the usual ``try: ... finally:
    cleanup_distributed()``), since the other ranks may never reach it and it would then block
    until the collective timeout; ``synchronize`` overrides that choice. The group is destroyed
    even if the barrier fails.

    The backend's threads are stopped and joined when the last reference to the group goes: this
    drops torch's registry entries, and a DistributedDataParallel wrapper holds one more until it
    is freed. Free DDP models before the process exits (release them before this call, or let the
    function holding them return), so no backend thread is still running at interpreter shutdown.
    """
    if not _is_distributed():
        return
    if synchronize is None:
        synchronize = sys.exc_info()[1] is None
    try:
        if synchronize:
            barrier()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (e.g. rank 0 writing a file the others read); no-op without a group."""
    if not _is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def is_main_process() -> bool:
    """True on rank 0 and in single-process runs: the process that writes files and prints."""
    return not _is_distributed() or dist.get_rank() == 0


def all_reduce_mean(value: T) -> T:
    """Mean over ranks of a tensor, or of a ``{name: float | tensor}`` dict; identity without a group.

    A tensor comes back as a tensor on its original device (integer tensors as float64, since a
    mean is not an integer); a dict comes back as a dict with the same keys, floats as floats and
    tensors with their original shape, dtype and device. A dict is reduced with one collective,
    not one per entry. Every rank must pass the same keys and shapes.
    """
    if not _is_distributed():
        return value
    if isinstance(value, torch.Tensor):
        dtype = value.dtype if value.is_floating_point() or value.is_complex() else torch.float64
        reduced = value.detach().to(device=_comm_device(), dtype=dtype).clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return (reduced / dist.get_world_size()).to(value.device)
    if isinstance(value, Mapping):
        return _all_reduce_mean_dict(value)
    raise TypeError(f"all_reduce_mean takes a tensor or a dict of floats/tensors, got {type(value).__name__}")


def _all_reduce_mean_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    keys = sorted(values)  # same order on every rank regardless of insertion order
    flat = []
    for key in keys:
        item = values[key]
        if isinstance(item, torch.Tensor):
            flat.append(item.detach().to(device=_comm_device(), dtype=torch.float64).reshape(-1))
        elif isinstance(item, (int, float)):
            flat.append(torch.tensor([float(item)], dtype=torch.float64, device=_comm_device()))
        else:
            raise TypeError(f"all_reduce_mean: value for {key!r} is a {type(item).__name__}, expected float or tensor")
    packed = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed = packed / dist.get_world_size()
    out: dict[str, Any] = {}
    offset = 0
    for key, chunk in zip(keys, flat):
        part = packed[offset : offset + chunk.numel()]
        offset += chunk.numel()
        original = values[key]
        if isinstance(original, torch.Tensor):
            dtype = original.dtype if original.is_floating_point() else torch.float64
            out[key] = part.reshape(original.shape).to(device=original.device, dtype=dtype)
        else:
            out[key] = float(part.item())
    return {key: out[key] for key in values}  # caller's key order


def broadcast_object(obj: T, src: int = 0) -> T:
    """Every rank gets rank ``src``'s picklable ``obj`` (e.g. a run directory or subset indices)."""
    if not _is_distributed():
        return obj
    box = [obj]
    device = _comm_device() if dist.get_backend() == "nccl" else None
    dist.broadcast_object_list(box, src=src, device=device)
    return box[0]


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module a ``DistributedDataParallel`` wraps (its state_dict keys have no ``module.`` prefix), else itself."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module
