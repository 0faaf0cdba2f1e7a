"""No plaintext value or metadata ever reaches the SQLite files (WAL included), and
tampered or moved ciphertext gives a clear error, never garbage."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.support import ServerProcess

VALUE_MARK = b"PLAINTEXT-VALUE-MARKER-7f3a"
META_MARK = "PLAINTEXT-METADATA-MARKER-91c2"


def _write_markers(proc: ServerProcess) -> str:
    with httpx.Client(base_url=proc.namespaces_url + "/", headers=proc.headers()) as c:
        ns = str(c.post("", json={"title": "secret"}).json()["result"]["id"])
        files: dict[str, tuple[None, bytes | str]] = {
            "value": (None, VALUE_MARK * 3),
            "metadata": (None, f'{{"m":"{META_MARK}"}}'),
        }
        assert c.put(f"{ns}/values/single", files=files).status_code == 200
        items = [
            {"key": f"bulk{i}", "value": VALUE_MARK.decode() + str(i), "metadata": {"m": META_MARK}}
            for i in range(50)
        ]
        assert c.put(f"{ns}/bulk", json=items).status_code == 200
        assert c.put(f"{ns}/values/other", content=b"innocent").status_code == 200
    return ns


def test_no_plaintext_in_database_files(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    _write_markers(proc)
    proc.kill9()  # leave the WAL unmerged, exactly as a crash would
    files = [p for p in proc.data_dir.iterdir() if p.name.startswith("pullkv.sqlite3")]
    assert any(p.name.endswith("-wal") for p in files)
    assert sum(p.stat().st_size for p in files) > 0
    for path in files:
        data = path.read_bytes()
        assert VALUE_MARK not in data, path
        assert META_MARK.encode() not in data, path
        assert META_MARK.encode("utf-16-le") not in data, path
    # The key names are stored in the clear (like Workers KV), which proves we looked in
    # the right files.
    assert any(b"bulk7" in p.read_bytes() for p in files)


def test_tampered_or_moved_ciphertext_is_a_clear_error(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    ns = _write_markers(proc)
    proc.stop()

    db = sqlite3.connect(proc.data_dir / "pullkv.sqlite3")
    with db:
        (blob,) = db.execute("SELECT value FROM entries WHERE key=?", (b"single",)).fetchone()
        flipped = bytearray(blob)
        flipped[-5] ^= 0x01
        db.execute("UPDATE entries SET value=? WHERE key=?", (bytes(flipped), b"single"))
        (bulk3,) = db.execute("SELECT value FROM entries WHERE key=?", (b"bulk3",)).fetchone()
        db.execute("UPDATE entries SET value=? WHERE key=?", (bulk3, b"other"))
    db.close()

    proc.start()
    try:
        with httpx.Client(base_url=proc.namespaces_url + "/", headers=proc.headers()) as c:
            for key in ("single", "other"):
                response = c.get(f"{ns}/values/{key}")
                assert response.status_code == 500
                message = response.json()["errors"][0]["message"]
                assert "failed integrity check" in message and key in message
                assert VALUE_MARK not in response.content
            assert c.get(f"{ns}/values/bulk3").content == VALUE_MARK + b"3"
            assert c.get(f"{proc.url}/healthz").status_code == 200
        assert "failed integrity check" in proc.log()
    finally:
        proc.stop()


def test_wrong_master_key_refuses_to_start(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    proc.stop()
    (proc.data_dir / "master.key").unlink()
    proc.env["PULLKV_MASTER_KEY"] = "A" * 43 + "="
    try:
        proc.start(timeout=10)
    except RuntimeError as exc:
        assert "does not open with this master key" in str(exc)
    else:
        proc.stop()
        raise AssertionError("a server with the wrong master key must not start")
