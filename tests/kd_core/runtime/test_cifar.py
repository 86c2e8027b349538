"""kd_core.runtime.cifar: CIFAR-10/100 files through torchvision, with one-line errors (tiny fakes of
tests/conftest.py)."""
from __future__ import annotations

import hashlib
import pickle
import urllib.error

import pytest
from torchvision import datasets as tv_datasets
from torchvision import transforms

from kd_core.runtime import cifar
from kd_core.runtime import datasets as ds


def test_cifar_files(tmp_path, cifar10_root):
    files = cifar.cifar_files("cifar10", cifar10_root)
    assert files.folder == cifar10_root / "cifar-10-batches-py"
    assert files.expected == tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
    assert files.missing == ()
    (files.folder / "test_batch").unlink()
    assert cifar.cifar_files("cifar10", cifar10_root).missing == ("test_batch",)
    empty = cifar.cifar_files("cifar100", tmp_path / "none")
    assert empty.folder == tmp_path / "none" / "cifar-100-python" and empty.missing == empty.expected
    with pytest.raises(ValueError, match="not a CIFAR dataset"):
        cifar.cifar_files("fashion_mnist", tmp_path)


def test_cifar_missing_file_is_not_found_for_either_split(cifar10_root):
    folder = cifar10_root / "cifar-10-batches-py"
    (folder / "test_batch").unlink()
    for train in (True, False):  # torchvision checks every file, whichever split is read
        with pytest.raises(ds.DatasetNotFound) as info:
            cifar.load_cifar("cifar10", cifar10_root, train)
        assert str(info.value) == (
            f"CIFAR-10 not found: expected {folder}/{{data_batch_1, data_batch_2, data_batch_3, data_batch_4, "
            f"data_batch_5, test_batch, batches.meta}}; missing test_batch; pass --download to fetch it when online")


def test_cifar_nothing_there(tmp_path):
    with pytest.raises(ds.DatasetNotFound, match="none of them is there; pass --download"):
        cifar.load_cifar("cifar100", tmp_path / "absent", True)
    assert not (tmp_path / "absent").exists()


def test_cifar_loads(cifar100_root):
    dataset = cifar.load_cifar("cifar100", cifar100_root, False, transform=transforms.PILToTensor())
    assert len(dataset) == 100 and dataset[0][0].shape == (3, 32, 32)


def test_cifar_garbage_fails_the_md5_check_naming_the_file(cifar10_root):
    path = cifar10_root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(b"garbage")
    with pytest.raises(ds.DatasetCorrupt) as info:
        cifar.load_cifar("cifar10", cifar10_root, False, download=True)  # all present: no download either
    assert str(info.value) == (f"CIFAR-10 file {path} failed torchvision's md5 check (it is not the original "
                               f"file); delete it and pass --download to fetch the original again")


@pytest.mark.parametrize("blob", [b"garbage", pickle.dumps({"nothing": 1}), b"\x80\x04"])
def test_cifar_garbage_that_passes_the_md5_check_is_corrupt_not_a_traceback(cifar100_root, monkeypatch, blob):
    folder = cifar100_root / "cifar-100-python"
    (folder / "test").write_bytes(blob)
    monkeypatch.setattr(tv_datasets.CIFAR100, "test_list", [["test", hashlib.md5(blob).hexdigest()]])
    with pytest.raises(ds.DatasetCorrupt) as info:
        cifar.load_cifar("cifar100", cifar100_root, False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"CIFAR-100 files in {folder} cannot be unpickled (")
    assert message.endswith("); delete them and pass --download to fetch them again")


def test_cifar_failed_download_is_not_found(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(tv_datasets.CIFAR10, "download", offline)
    with pytest.raises(ds.DatasetNotFound, match=r"CIFAR-10 download into .* failed \(URLError: <urlopen error "
                                                 r"offline>\); check the network"):
        cifar.load_cifar("cifar10", tmp_path / "root", True, download=True)
