"""``pullkv store backup`` while the server is writing: the server keeps committing, and the
backup is a complete, consistent store that serves every write acknowledged before it began."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support import ServerProcess


def test_backup_while_the_server_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    try:
        with httpx.Client(base_url=server.namespaces_url + "/", headers=server.headers()) as c:
            ns = c.post("", json={"title": "backed-up"}).json()["result"]["id"]
            # Some bulk first, so the backup has pages to copy while writes go on.
            for start in range(0, 5000, 1000):
                items = [
                    {"key": f"bulk-{i:05}", "value": "x" * 200} for i in range(start, start + 1000)
                ]
                assert c.put(f"{ns}/bulk", json=items).status_code == 200

        acked: list[tuple[float, str]] = []
        stop = threading.Event()

        def writer() -> None:
            with httpx.Client(base_url=server.namespaces_url + "/", headers=server.headers()) as c:
                sequence = 0
                while not stop.is_set():
                    key = f"live-{sequence:06d}"
                    if c.put(f"{ns}/values/{key}", content=key.encode()).status_code == 200:
                        acked.append((time.monotonic(), key))
                    sequence += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.5)
            began = time.monotonic()
            dest = tmp_path / "backups" / "first.sqlite3"
            result = subprocess.run(
                [sys.executable, "-m", "pullkv", "store", "backup", str(dest), "--data", str(data)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            ended = time.monotonic()
            time.sleep(0.3)
        finally:
            stop.set()
            thread.join()
        assert result.returncode == 0, result.stderr
        assert "master.key" in result.stdout  # the reminder: the key is not in the backup
        before = {key for at, key in acked if at < began}
        after = [key for at, key in acked if at > ended]
        assert len(before) > 10 and after, "the server kept writing around the backup"
        assert not (dest.parent / f".{dest.name}.partial").exists()

        backup = sqlite3.connect(dest)
        try:
            assert backup.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert backup.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            keys = {
                bytes(k).decode()
                for (k,) in backup.execute("SELECT key FROM entries WHERE namespace_id=?", (ns,))
            }
        finally:
            backup.close()
        assert {f"bulk-{i:05}" for i in range(5000)} <= keys
        assert before <= keys, f"{len(before - keys)} writes acknowledged before the backup lost"
        again = subprocess.run(
            [sys.executable, "-m", "pullkv", "store", "backup", str(dest), "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 1 and "already exists" in again.stderr
    finally:
        server.stop()

    # Restoring is putting the file in a data folder beside the same master key.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy2(dest, restored / "pullkv.sqlite3")
    for name in ("master.key", "admin-token"):
        shutil.copy2(data / name, restored / name)
    copy = ServerProcess(restored).start()
    try:
        with httpx.Client(base_url=copy.namespaces_url + "/", headers=copy.headers()) as c:
            some = sorted(before)[len(before) // 2]
            assert c.get(f"{ns}/values/{some}").content == some.encode()
            assert c.get(f"{ns}/values/bulk-04999").content == b"x" * 200
    finally:
        copy.stop()


def test_backup_refuses_postgres_and_missing_stores(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pullkv", "store", "backup", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    pg = run(str(tmp_path / "b"), "--store", "postgresql://u@127.0.0.1/db")
    assert pg.returncode == 2 and "pg_dump" in pg.stderr
    missing = run(str(tmp_path / "b"), "--data", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "no SQLite store" in missing.stderr
