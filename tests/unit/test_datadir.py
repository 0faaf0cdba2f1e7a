"""The data folder: prepared with a clear error, held by one process at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pullkv.datadir import LOCK_FILE, DataDirError, DataDirLock, prepare


def test_prepare_makes_a_private_folder(tmp_path: Path) -> None:
    data = tmp_path / "a" / "data"
    prepare(data)
    assert data.is_dir()
    assert data.stat().st_mode & 0o777 == 0o700


def test_prepare_names_an_impossible_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataDirError, match=r"cannot use the data folder .*file/data"):
        prepare(tmp_path / "file" / "data")
    with pytest.raises(DataDirError, match="not a folder"):
        prepare(tmp_path / "file")


def test_second_holder_is_refused_with_the_first_pid(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path)
    try:
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(DataDirError, match=f"in use by pid {os.getpid()}"):
            DataDirLock.acquire(tmp_path)
    finally:
        first.release()
    DataDirLock.acquire(tmp_path).release()  # free again once released


def test_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from pullkv.datadir import DataDirLock
                DataDirLock.acquire(Path({str(tmp_path)!r}))
                print("held", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(DataDirError, match=f"in use by pid {holder.pid}"):
            DataDirLock.acquire(tmp_path)
    finally:
        holder.kill()
        holder.wait(10)
    DataDirLock.acquire(tmp_path).release()
