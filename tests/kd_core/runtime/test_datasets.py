"""kd_core.runtime.datasets: what the dataset loaders share (errors, the --data-root rule); and that the dataset
modules import neither trainer package."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kd_core.runtime import cifar, fashion_mnist
from kd_core.runtime import datasets as ds


@pytest.mark.parametrize("module", [ds, fashion_mnist, cifar], ids=lambda m: m.__name__)
def test_imports_neither_trainer_package(module):
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m for m in imported if m.split(".")[0] in ("gan_kd", "classifier_kd")}


def test_error_types():
    assert issubclass(ds.DatasetNotFound, FileNotFoundError) and issubclass(ds.DatasetCorrupt, ValueError)


# ------------------------------------------------------------------------------------------------ data root


def test_check_data_root(tmp_path):
    missing = tmp_path / "nonexistent"
    with pytest.raises(ds.DatasetNotFound) as info:
        ds.check_data_root(missing, download=False)
    assert str(info.value).startswith(f"data root {missing} does not exist; pass an existing folder or --download")
    assert "\n" not in str(info.value)
    assert ds.check_data_root(missing, download=True) == missing
    assert ds.check_data_root(str(tmp_path), download=False) == tmp_path
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for download in (False, True):
        with pytest.raises(ds.DatasetNotFound, match="is a file, not a folder"):
            ds.check_data_root(a_file, download)
    assert not missing.exists()
