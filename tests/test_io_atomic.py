"""Atomic writers: files get the mode a plain open() gives, reach the disk before the rename,
and a failed write leaves the old file and no temp file behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from foveal import io


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one after."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o027, 0o640)], ids=["umask022", "umask027"])
def test_json_and_safetensors_get_the_umask_mode(tmp_path: Path, umask, mask: int, expected: int):
    torch = pytest.importorskip("torch")
    umask(mask)
    io.write_json(tmp_path / "m.json", {"a": 1})
    io.save_tensors(tmp_path / "w.safetensors", {"x": torch.zeros(3)}, {"k": 1})
    plain = tmp_path / "plain.txt"
    with open(plain, "w"):
        pass
    assert _mode(plain) == expected  # what the writers must match
    assert _mode(tmp_path / "m.json") == expected
    assert _mode(tmp_path / "w.safetensors") == expected
    assert io.load_tensors(tmp_path / "w.safetensors")[1] == {"k": 1}


def test_overwrite_takes_the_umask_mode_too(tmp_path: Path, umask):
    umask(0o022)
    io.write_text(tmp_path / "a.txt", "one")
    io.write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two" and _mode(tmp_path / "a.txt") == 0o644


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "m.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(TypeError, match="cannot write object as JSON"):
        io.write_json(target, {"v": object()})  # fails while serializing
    with pytest.raises(RuntimeError, match="disk full"):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')  # a half-written file, then the writer dies
            raise RuntimeError("disk full")
    assert io.read_json(target) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_data_fsynced_before_rename_and_folder_after(tmp_path: Path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    io.write_text(tmp_path / "a.txt", "data")
    expected = ["fsync file", "replace", "fsync dir"] if os.name == "posix" else ["fsync file", "replace"]
    assert events == expected
    assert (tmp_path / "a.txt").read_text() == "data"


def test_temp_file_sits_beside_the_target(tmp_path: Path):
    target = tmp_path / "sub" / "a.txt"
    with io.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".a.txt.")
        tmp.write_text("x")
    assert target.read_text() == "x"


def test_current_umask_follows_changes(umask):
    umask(0o027)
    assert io.current_umask() == 0o027 or not Path("/proc/self/status").exists()
