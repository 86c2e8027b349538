"""Atomic writes and output checks (kd_core/runtime/io.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kd_core.runtime.io import (OutputNotWritable, check_writable_dir, check_writable_file, replace_block, write_json,
                                write_npy, write_text)


def test_writes_replace_atomically_and_leave_no_temp_files(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json(path, {"x": 1})
    write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    write_text(tmp_path / "t.txt", "héllo\n")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    write_npy(tmp_path / "i.npy", np.arange(5, dtype=np.int64))
    assert np.load(tmp_path / "i.npy").tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_json(path, {"old": True})

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_json(path, {"old": False})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_check_writable_dir_and_file_refuse_without_creating(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(OutputNotWritable, match="is a file, not a directory"):
        check_writable_dir(a_file / "run" / "deeper")
    with pytest.raises(OutputNotWritable, match="exists and is not a directory"):
        check_writable_dir(a_file)
    with pytest.raises(OutputNotWritable, match="is a directory"):
        check_writable_file(tmp_path)
    with pytest.raises(OutputNotWritable, match="is a file, not a directory"):
        check_writable_file(a_file / "out.json")
    assert check_writable_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_writable_file(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_directory_that_accepts_no_new_file_is_refused_even_for_root(tmp_path):
    """Issue 28 item 6: os.access says yes to root everywhere, and /proc takes no new file even from root; the probe
    file catches both. Where writing works, the probe leaves nothing behind."""
    for check, path in ((check_writable_dir, "/proc/x"), (check_writable_file, "/proc/x.png"),
                        (check_writable_dir, "/proc/x/run"), (check_writable_dir, "/proc")):
        with pytest.raises(OutputNotWritable) as info:
            check(path, "the output")
        assert str(path) in str(info.value) and "the output" in str(info.value)
    existing = tmp_path / "existing.json"
    existing.write_text("{}")
    assert check_writable_dir(tmp_path) == tmp_path and check_writable_file(existing) == existing
    assert check_writable_file(tmp_path / "new.json") == tmp_path / "new.json"
    assert [p.name for p in tmp_path.iterdir()] == ["existing.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_read_only_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputNotWritable, match="not writable"):
            check_writable_dir(locked / "run")
        with pytest.raises(OutputNotWritable, match="not writable"):
            check_writable_file(locked / "r.json")
    finally:
        locked.chmod(0o700)


def test_replace_block_keeps_the_rest_of_the_file_and_appends_only_when_asked(tmp_path):
    path, begin, end = tmp_path / "doc.md", "<!-- b -->", "<!-- /b -->"
    path.write_text(f"# head\n\n{begin}\nold\n{end}\ntail\n")
    assert replace_block(path, begin, end, f"{begin}\nnew 1\nnew 2\n{end}\n") == f"# head\n\n{begin}\nnew 1\nnew 2\n{end}\ntail\n"
    assert path.read_text() == f"# head\n\n{begin}\nnew 1\nnew 2\n{end}\ntail\n"

    bare = tmp_path / "bare.md"
    bare.write_text("# hand-written\n")
    with pytest.raises(ValueError, match="has no <!-- b --> ... <!-- /b --> block"):
        replace_block(bare, begin, end, f"{begin}\nx\n{end}")
    assert bare.read_text() == "# hand-written\n"
    assert replace_block(bare, begin, end, f"{begin}\nx\n{end}", append=True) == f"# hand-written\n\n{begin}\nx\n{end}\n"
    assert replace_block(tmp_path / "new.md", begin, end, f"{begin}\nx\n{end}", append=True) == f"{begin}\nx\n{end}\n"
