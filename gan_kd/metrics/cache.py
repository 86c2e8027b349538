"""An on-disk cache of what an evaluation computes from real data alone: the real sets' features in a feature space
and GAN-train's real-data ceiling.

Without it every ``gan-kd train`` recomputes the real test set's features at start-up and every ``gan-kd evaluate``
recomputes them, the memorisation pool's and the GAN-train ceiling (about two minutes of one core at the study's
sizes: the set-up table of results/benchmarks.md §7), although they are the same every time.

A value is filed under a key that hashes everything it depends on: what is computed and with which network (its
class, name and :func:`~gan_kd.metrics.features.fingerprint`), the images (SHA-256 of their bytes) and options,
the torch version, the device type, the number of threads and the CPU's SIMD capability (floating-point results
may differ in the last bits between those), and :data:`VERSION` (raise it when a computation changes). So a value
read from the cache is bit for bit what this process would compute. Arrays are ``.npy`` files read with
``allow_pickle=False``, numbers ``.json``; both are written atomically, and a file that cannot be read is computed
again and replaced.

Where: ``$KD_METRICS_CACHE`` (``off`` or an empty value turns the cache off), else ``~/.cache/kd-distill/metrics``.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kd_core.runtime.io import write_json, write_npy

CACHE_ENV = "KD_METRICS_CACHE"
DEFAULT_DIR = Path("~/.cache/kd-distill/metrics")
VERSION = 1


def cache_dir() -> Path | None:
    """The cache folder, or None when ``$KD_METRICS_CACHE`` turns the cache off."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return DEFAULT_DIR.expanduser()
    return None if value.strip().lower() in ("", "off") else Path(value).expanduser()


def digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    value = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    value.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return value.hexdigest()


def key(kind: str, *parts: object, device: torch.device | str = "cpu") -> str:
    """``<kind>-<hash>``: the hash of ``parts`` and of what makes the same computation give other bits."""
    context = (VERSION, torch.__version__, torch.device(device).type, torch.get_num_threads(),
               torch.backends.cpu.get_cpu_capability())
    return f"{kind}-{hashlib.sha256(repr((context, parts)).encode()).hexdigest()[:32]}"


def cached_array(name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The tensor filed as ``name`` (a :func:`key`), else ``compute()`` filed there; no cache: ``compute()``."""
    directory = cache_dir()
    if directory is None:
        return compute()
    path = directory / f"{name}.npy"
    if path.is_file():
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError):
            pass  # unreadable: computed again and replaced below
    value = compute()
    write_npy(path, value.numpy())
    return value


def cached_number(name: str, compute: Callable[[], float]) -> float:
    """The number filed as ``name`` (a :func:`key`), else ``compute()`` filed there; no cache: ``compute()``."""
    directory = cache_dir()
    if directory is None:
        return compute()
    path = directory / f"{name}.json"
    if path.is_file():
        try:
            return float(json.loads(path.read_text())["value"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    value = compute()
    write_json(path, {"value": value})
    return value


def features(space, images_uint8: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """``space.features(images_uint8, device)`` (a :class:`~gan_kd.metrics.features.FeatureSpace`), cached."""
    from gan_kd.metrics.features import fingerprint

    name = key("features", type(space).__name__, space.name, fingerprint(space), digest(images_uint8), device=device)
    return cached_array(name, lambda: space.features(images_uint8, device))
