"""The power-loss file system keeps what was fsynced and loses what was not.

Each test mounts lazyfs over a fresh backing folder, crashes it and mounts it again; SQLite in
WAL mode must keep every acknowledged commit with synchronous=FULL and must lose some with
synchronous=OFF (else the file system would be losing nothing). Skipped where FUSE is
unavailable, failed instead under CI=true.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.powerloss.harness import LazyMount, require_fuse


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[LazyMount]:
    """A lazyfs mount over tmp_path/backing, unmounted after the test whatever happens."""
    require_fuse()
    with LazyMount(tmp_path / "backing") as m:
        yield m


def write(path: Path, data: bytes, *, fsync: bool) -> None:
    """Create or replace path's content, fsyncing the file (not its folder) if asked."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make path's entries durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_new_names_are_durable_only_after_their_folder_is_fsynced(mount: LazyMount) -> None:
    root = mount.path
    write(root / "nothing-synced", b"a", fsync=False)
    write(root / "file-synced", b"b", fsync=True)
    write(root / "folder-synced", b"c", fsync=False)
    write(root / "both-synced", b"d", fsync=True)
    (root / "sub").mkdir()
    write(root / "sub" / "in-new-folder", b"e", fsync=True)
    fsync_dir(root / "sub")
    (root / "lost-sub").mkdir()
    write(root / "lost-sub" / "f", b"f", fsync=True)
    fsync_dir(root / "lost-sub")
    (root / "link").symlink_to("both-synced")
    fsync_dir(root)
    # Made after the folder's fsync: not durable.
    write(root / "too-late", b"g", fsync=True)
    (root / "lost-sub").rename(root / "renamed-sub")
    # Reads see what is not yet durable.
    assert (root / "nothing-synced").read_bytes() == b"a"
    assert (root / "too-late").read_bytes() == b"g"

    mount.crash()
    mount.remount()

    assert sorted(os.listdir(root)) == [
        "both-synced",
        "file-synced",
        "folder-synced",
        "link",
        "lost-sub",
        "nothing-synced",
        "sub",
    ]
    assert (root / "nothing-synced").read_bytes() == b""
    assert (root / "file-synced").read_bytes() == b"b"
    assert (root / "folder-synced").read_bytes() == b""
    assert (root / "both-synced").read_bytes() == b"d"
    assert (root / "sub" / "in-new-folder").read_bytes() == b"e"
    assert (root / "lost-sub" / "f").read_bytes() == b"f"
    assert os.readlink(root / "link") == "both-synced"
    # The backing folder itself holds the durable state.
    assert (mount.backing / "both-synced").read_bytes() == b"d"
    assert not (mount.backing / "too-late").exists()


def test_a_file_never_fsynced_nor_its_folder_is_gone(mount: LazyMount) -> None:
    write(mount.path / "lost", b"data", fsync=False)
    mount.crash()
    mount.remount()
    assert os.listdir(mount.path) == []


def test_changes_to_durable_files_are_undone_until_fsynced(mount: LazyMount) -> None:
    root = mount.path
    for name in ("renamed-over", "truncated", "overwritten", "unlinked", "kept-unlinked"):
        write(root / name, b"old " + name.encode(), fsync=True)
    write(root / "appended", b"0123456789", fsync=True)
    write(root / "hole", b"x" * 100, fsync=True)
    fsync_dir(root)
    # What survives: the synced part.
    with (root / "appended").open("ab") as f:
        f.write(b"synced")
        f.flush()
        os.fsync(f.fileno())
        f.write(b"not synced")
    write(root / "tmp", b"new content", fsync=True)
    os.rename(root / "tmp", root / "renamed-over")
    os.truncate(root / "truncated", 2)
    with (root / "overwritten").open("r+b") as f:
        f.seek(1)
        f.write(b"XY")
    with (root / "hole").open("r+b") as f:
        f.truncate(0)
        f.seek(50)
        f.write(b"z")
        f.flush()
        os.fsync(f.fileno())
    (root / "unlinked").unlink()
    assert (root / "renamed-over").read_bytes() == b"new content"
    assert (root / "truncated").read_bytes() == b"ol"
    assert (root / "overwritten").read_bytes() == b"oXY overwritten"

    mount.crash()
    mount.remount()

    assert (root / "appended").read_bytes() == b"0123456789synced"
    assert (root / "renamed-over").read_bytes() == b"old renamed-over"
    assert not (root / "tmp").exists()
    assert (root / "truncated").read_bytes() == b"old truncated"
    assert (root / "overwritten").read_bytes() == b"old overwritten"
    assert (root / "hole").read_bytes() == b"\0" * 50 + b"z"
    assert (root / "unlinked").read_bytes() == b"old unlinked"

    # The same changes followed by the folder's fsync are durable.
    write(root / "tmp", b"new content", fsync=True)
    os.rename(root / "tmp", root / "renamed-over")
    (root / "unlinked").unlink()
    fsync_dir(root)
    mount.crash()
    mount.remount()
    assert (root / "renamed-over").read_bytes() == b"new content"
    assert not (root / "unlinked").exists()
    assert not (root / "tmp").exists()


def test_o_sync_writes_are_durable_and_open_unlinked_files_have_no_name(
    mount: LazyMount,
) -> None:
    root = mount.path
    fd = os.open(root / "o-sync", os.O_WRONLY | os.O_CREAT | os.O_SYNC, 0o644)
    try:
        os.write(fd, b"durable on return")
    finally:
        os.close(fd)
    (root / "unlinked-while-open").write_bytes(b"still readable")
    with (root / "unlinked-while-open").open("rb") as f:
        (root / "unlinked-while-open").unlink()
        fsync_dir(root)
        assert os.listdir(root) == ["o-sync"]
        assert f.read() == b"still readable"
    mount.crash()
    mount.remount()
    assert os.listdir(root) == ["o-sync"]
    assert (root / "o-sync").read_bytes() == b"durable on return"


def test_a_clean_unmount_keeps_everything(mount: LazyMount) -> None:
    (mount.path / "d").mkdir()
    write(mount.path / "d" / "f", b"unsynced", fsync=False)
    os.chmod(mount.path / "d" / "f", 0o600)
    mount.remount()
    assert (mount.path / "d" / "f").read_bytes() == b"unsynced"
    assert (mount.path / "d" / "f").stat().st_mode & 0o777 == 0o600
    mount.crash()
    mount.remount()
    assert (mount.path / "d" / "f").read_bytes() == b"unsynced"


def test_small_writes_are_fast_enough(mount: LazyMount) -> None:
    """A few thousand small writes a second (the bound is loose: the machine is shared)."""
    count = 3000
    fd = os.open(mount.path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        started = time.monotonic()
        for i in range(count):
            os.write(fd, b"%08d\n" % i)
            if i % 10 == 9:
                os.fsync(fd)
        elapsed = time.monotonic() - started
    finally:
        os.close(fd)
    fsync_dir(mount.path)
    print(f"lazyfs: {count} writes (+{count // 10} fsyncs) in {elapsed:.2f} s")
    assert count / elapsed > 300, f"{count / elapsed:.0f} writes/s"
    mount.crash()
    mount.remount()
    assert len((mount.path / "log").read_bytes()) == 9 * count


# A SQLite writer that acknowledges each commit on stdout once SQLite says it committed. The
# schema is made with synchronous=FULL so that the database exists durably in every trial.
WRITER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
con.execute("PRAGMA synchronous=FULL")
con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
con.execute("PRAGMA synchronous=" + sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    i += 1
    con.execute("INSERT INTO t (id, v) VALUES (?, randomblob(200))", (i,))
    print(i, flush=True)
"""


def sqlite_trial(mount: LazyMount, log_dir: Path, synchronous: str, seed: int) -> tuple[int, int]:
    """Write under load, kill -9 and crash at a random moment, reboot: (acknowledged, kept)."""
    db = mount.path / "data.db"
    out = log_dir / f"writer-{synchronous}-{seed}.out"
    with out.open("wb") as stdout:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), synchronous],
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not out.read_bytes().startswith(b"ready\n"):
            assert writer.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "the SQLite writer did not start"
            time.sleep(0.02)
        time.sleep(random.Random(seed).uniform(0.3, 1.2))
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    acknowledged = [line for line in out.read_text().split("\n")[1:] if line.isdigit()]
    acked = int(acknowledged[-1]) if acknowledged else 0
    mount.crash()
    mount.remount()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count, top = con.execute("SELECT count(*), coalesce(max(id), 0) FROM t").fetchone()
    finally:
        con.close()
    assert count == top, "rows are missing from the middle"
    # Reset for the next trial (a clean removal, made durable).
    for name in os.listdir(mount.path):
        os.unlink(mount.path / name)
    fsync_dir(mount.path)
    return acked, int(count)


def test_sqlite_full_sync_keeps_every_acknowledged_commit(mount: LazyMount, tmp_path: Path) -> None:
    results = [sqlite_trial(mount, tmp_path, "FULL", seed) for seed in range(3)]
    print(f"lazyfs: synchronous=FULL (acknowledged, kept) per trial: {results}")
    assert all(acked > 0 for acked, _ in results), results
    for acked, kept in results:
        assert kept >= acked, results


def test_sqlite_without_fsync_loses_commits(mount: LazyMount, tmp_path: Path) -> None:
    results = [sqlite_trial(mount, tmp_path, "OFF", seed) for seed in range(3)]
    print(f"lazyfs: synchronous=OFF (acknowledged, kept) per trial: {results}")
    assert all(acked > 0 for acked, _ in results), results
    assert sum(acked - kept for acked, kept in results) > 0, results
