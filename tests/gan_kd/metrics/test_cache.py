"""gan_kd.metrics.cache: an evaluator built twice computes the real sets' features and GAN-train's ceiling once,
reads bit-for-bit the values it would compute, files them under keys that change with what they depend on, and
recomputes a damaged file. The data are the tiny fake Fashion-MNIST of tests/conftest.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gan_kd.metrics import cache, classwise
from gan_kd.metrics.evaluator import Evaluator
from gan_kd.metrics.features import FeatureSpace

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
METRICS = ("fd_vgg", "memo", "gan_train")
SUBSET = np.arange(10)


@pytest.fixture
def fake_root(tmp_path: Path, fashion_mnist_raw_dir: Path) -> Path:
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in fashion_mnist_raw_dir.iterdir():
        (raw / path.name).write_bytes(path.read_bytes())
    return tmp_path / "root"


def build(root: Path) -> Evaluator:
    return Evaluator(dataset="fashion_mnist", data_root=root, metrics=METRICS, num_samples=40, train_indices=SUBSET)


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch FeatureSpace.features to record how many images each call embeds."""
    calls, original = [], FeatureSpace.features

    def features(self, images_uint8, device="cpu"):
        calls.append(len(images_uint8))
        return original(self, images_uint8, device)

    monkeypatch.setattr(FeatureSpace, "features", features)
    return calls


def test_a_second_evaluator_reads_what_the_first_computed_bit_for_bit(fake_root, tmp_path, monkeypatch):
    reference = build(fake_root)  # the cache is off in tests by default: computed afresh
    reference_ceiling = reference.gan_train_ceiling(40)
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    calls = counting(monkeypatch)
    first = build(fake_root)
    first_ceiling = first.gan_train_ceiling(40)
    assert sorted(calls) == [10, 20, 50]  # the subset (never cached: small), the test set, the memorisation pool
    files = sorted(path.name.split("-")[0] for path in folder.iterdir())
    assert files == ["features", "features", "gan"], files  # the test set's, the pool's features; the ceiling

    calls.clear()
    monkeypatch.setattr(classwise, "gan_train_accuracy", lambda *a, **k: pytest.fail("the ceiling was retrained"))
    second = build(fake_root)
    assert calls == [10]  # only the training subset's features are computed again
    for evaluator in (first, second):
        assert torch.equal(evaluator.real_label_free, reference.real_label_free)
        assert evaluator.real_label_free.dtype == torch.float64
        assert torch.equal(evaluator.memorisation_sets["pool"], reference.memorisation_sets["pool"])
    assert second.gan_train_ceiling(40) == first_ceiling == reference_ceiling


def test_keys_change_with_what_the_values_depend_on():
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    other = images.clone()
    other[0, 0, 0, 0] = 1
    assert cache.digest(images) == cache.digest(images.clone()) != cache.digest(other)
    assert cache.digest(images) != cache.digest(images.view(2, 2, 3, 32, 32))  # the shape counts
    base = cache.key("features", "space", cache.digest(images))
    assert base == cache.key("features", "space", cache.digest(images))
    assert base != cache.key("features", "space", cache.digest(other)) != cache.key("features", "other space",
                                                                                      cache.digest(images))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # another thread count may round differently: another file
        assert cache.key("features", "space", cache.digest(images)) != base
    finally:
        torch.set_num_threads(threads)


def test_a_damaged_file_is_recomputed_and_off_writes_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    computed = []

    def compute() -> torch.Tensor:
        computed.append(1)
        return torch.arange(6, dtype=torch.float64).view(2, 3)

    name = cache.key("features", "test")
    assert torch.equal(cache.cached_array(name, compute), compute()) and len(computed) == 2
    assert torch.equal(cache.cached_array(name, compute), compute()) and len(computed) == 3  # read, not computed
    (folder / f"{name}.npy").write_bytes(b"not an array")
    assert torch.equal(cache.cached_array(name, compute), compute()) and len(computed) == 5
    assert np.load(folder / f"{name}.npy", allow_pickle=False).shape == (2, 3)  # replaced by a good file
    assert cache.cached_number("n", lambda: 0.25) == 0.25 and cache.cached_number("n", lambda: 1.0) == 0.25
    for value in ("off", ""):
        monkeypatch.setenv(cache.CACHE_ENV, value)
        assert cache.cache_dir() is None
        assert cache.cached_number("m", lambda: 2.0) == 2.0 and not (folder / "m.json").exists()
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_dir() == Path("~/.cache/kd-distill/metrics").expanduser()
