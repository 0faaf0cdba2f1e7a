"""Durable file writes: whole files or the old content, never a torn or missing name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pullkv import durable


def test_write_file_creates_with_mode_and_content(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "secret"
    durable.write_file(path, b"hello\n", mode=0o600)
    assert path.read_bytes() == b"hello\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret"]  # no temporary left


def test_write_file_replaces_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    durable.write_file(path, b"x" * 10_000)
    durable.write_file(path, b"short")
    assert path.read_bytes() == b"short"


def test_exclusive_write_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f"
    durable.write_file(path, b"one", exclusive=True)
    with pytest.raises(FileExistsError):
        durable.write_file(path, b"two", exclusive=True)
    assert path.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_failed_write_leaves_old_content_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    durable.write_file(path, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        durable.write_file(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_write_file_fsyncs_file_then_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = tmp_path / "f"
    durable.write_file(path, b"data")
    assert synced[-1] == str(tmp_path)  # the folder last: the new name is durable
    assert synced[-2].startswith(str(tmp_path / ".f."))  # the data before the rename


def test_make_dirs_syncs_each_new_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    durable.make_dirs(tmp_path / "x" / "y", 0o700)
    assert synced == [str(tmp_path), str(tmp_path / "x")]
    assert stat.S_IMODE((tmp_path / "x" / "y").stat().st_mode) == 0o700
    durable.make_dirs(tmp_path / "x" / "y")  # exists: nothing to do
    assert len(synced) == 2


def test_remove_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    durable.remove_file(path)
    assert not path.exists()
    durable.remove_file(path)  # already gone: fine
