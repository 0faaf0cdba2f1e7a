"""The pullkv command end to end against a real server (and, for keyring, a data folder)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

import pytest
from click.testing import CliRunner, Result

from pullkv.cli import main
from pullkv.crypto import key_id_of
from tests.support import ServerProcess


class Invoke(Protocol):
    """Runs ``pullkv <args>``; unless ``ok=False``, asserts that it succeeded."""

    def __call__(self, *args: str, input: str | None = None, ok: bool = True) -> Result: ...


@pytest.fixture
def cli(server: ServerProcess) -> Invoke:
    runner = CliRunner()
    env = {"PULLKV_URL": server.url, "PULLKV_TOKEN": server.admin_token, "PULLKV_NAMESPACE": ""}

    def invoke(*args: str, input: str | None = None, ok: bool = True) -> Result:
        result = runner.invoke(main, list(args), env=env, input=input, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_namespace_commands(cli: Invoke) -> None:
    created = json.loads(cli("--json", "namespace", "create", "cli-ns").stdout)
    assert len(created["id"]) == 32
    assert "cli-ns" in cli("namespace", "list").stdout
    assert (
        f"Renamed namespace {created['id']} to 'cli-ns2'"
        in cli("namespace", "rename", "cli-ns", "cli-ns2").stdout
    )
    duplicate = cli("namespace", "create", "cli-ns2", ok=False)
    assert duplicate.exit_code == 1 and "[code: 10014, status: 400]" in duplicate.output
    cli("namespace", "delete", created["id"], "--yes")
    assert "cli-ns2" not in cli("namespace", "list").stdout


def test_key_commands(cli: Invoke, tmp_path: Path) -> None:
    cli("namespace", "create", "keys-ns")
    cli(
        "key",
        "put",
        "greeting",
        "hello world",
        "-n",
        "keys-ns",
        "--metadata",
        '{"lang":"en"}',
        "--ttl",
        "600",
    )
    assert cli("key", "get", "greeting", "-n", "keys-ns").stdout == "hello world"
    shown = json.loads(cli("--json", "key", "get", "greeting", "-n", "keys-ns").stdout)
    assert shown["metadata"] == {"lang": "en"} and shown["expiration"] > 0

    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    cli("key", "put", "dir/file bin", "--path", str(blob), "-n", "keys-ns")
    listed = json.loads(cli("--json", "key", "list", "-n", "keys-ns").stdout)
    assert [k["name"] for k in listed] == ["dir/file bin", "greeting"]
    assert cli("key", "list", "-n", "keys-ns", "--prefix", "dir/").stdout.strip() == "dir/file bin"

    cli("key", "delete", "greeting", "-n", "keys-ns")
    missing = cli("key", "get", "greeting", "-n", "keys-ns", ok=False)
    assert missing.exit_code == 1 and "not found" in missing.output
    bad = cli("key", "put", "k", "v", "-n", "keys-ns", "--ttl", "-3", ok=False)
    assert "Invalid expiration_ttl of -3" in bad.output
    assert (
        "exactly one of VALUE or --path" in cli("key", "put", "k", "-n", "keys-ns", ok=False).output
    )


def test_bulk_commands(cli: Invoke, tmp_path: Path) -> None:
    cli("namespace", "create", "bulk-ns")
    items: list[dict[str, Any]] = [{"key": f"item{i:04d}", "value": f"v{i}"} for i in range(2500)]
    items[0]["metadata"] = {"first": True}
    put_file = tmp_path / "put.json"
    put_file.write_text(json.dumps(items))
    assert "Wrote 2500 keys" in cli("bulk", "put", str(put_file), "-n", "bulk-ns").stdout

    get_file = tmp_path / "get.json"
    get_file.write_text(json.dumps(["item0000", {"name": "item0001"}, "absent"]))
    got = json.loads(cli("bulk", "get", str(get_file), "-n", "bulk-ns").stdout)
    assert got == {"item0000": "v0", "item0001": "v1", "absent": None}
    with_meta = json.loads(cli("bulk", "get", str(get_file), "-n", "bulk-ns", "--metadata").stdout)
    assert with_meta["item0000"]["metadata"] == {"first": True}

    listed = json.loads(cli("--json", "key", "list", "-n", "bulk-ns").stdout)
    delete_file = tmp_path / "delete.json"
    delete_file.write_text(json.dumps(listed[:2400]))  # wrangler's list output works as input
    assert (
        "Deleted 2400 keys" in cli("bulk", "delete", str(delete_file), "-n", "bulk-ns", "-f").stdout
    )
    remaining = json.loads(cli("--json", "key", "list", "-n", "bulk-ns").stdout)
    assert len(remaining) == 100

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"key": "a"}, {"value": "b"}]))
    assert (
        "items 0, 1 need a string key"
        in cli("bulk", "put", str(bad), "-n", "bulk-ns", ok=False).output
    )


def test_token_commands(cli: Invoke, server: ServerProcess) -> None:
    created = json.loads(cli("--json", "token", "create", "--name", "ci", "--read-only").stdout)
    assert created["value"].startswith("pkv_") and created["read_only"] is True
    listing = cli("token", "list").stdout
    assert created["id"] in listing and "read-only" in listing
    assert created["value"] not in listing
    cli("token", "revoke", created["id"])
    assert "revoked" in cli("token", "list").stdout


def test_no_token_is_a_clear_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["namespace", "list"], env={"PULLKV_TOKEN": ""})
    assert result.exit_code == 2 and "no token" in result.output


def test_keyring_rotate_and_reencrypt_while_serving(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    runner = CliRunner()
    env = {
        "PULLKV_URL": proc.url,
        "PULLKV_TOKEN": proc.admin_token,
        "PULLKV_DATA": str(proc.data_dir),
    }

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    def key_ids() -> set[int]:
        with sqlite3.connect(proc.data_dir / "pullkv.sqlite3") as db:
            rows = db.execute("SELECT value, metadata FROM entries").fetchall()
        return {key_id_of(b) for row in rows for b in row if b is not None}

    try:
        run("namespace", "create", "ring")
        run("key", "put", "old", "before rotation", "-n", "ring", "--metadata", '{"m":1}')
        assert key_ids() == {1}
        assert "Added data key 2" in run("keyring", "rotate")
        assert json.loads(run("--json", "keyring", "list")) == {"keys": [1, 2], "current": 2}
        assert run("key", "get", "old", "-n", "ring") == "before rotation"
        report = json.loads(run("--json", "keyring", "reencrypt"))
        assert report["resealed"] == 1
        assert key_ids() == {2}
        shown = json.loads(run("--json", "key", "get", "old", "-n", "ring"))
        assert shown["value"] == "before rotation" and shown["metadata"] == {"m": 1}
    finally:
        proc.stop()
    proc.start()
    try:
        run("key", "put", "new", "after restart", "-n", "ring")
        assert key_ids() == {2}
    finally:
        proc.stop()


def test_console_script_runs(server: ServerProcess) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pullkv",
            "--url",
            server.url,
            "--token",
            server.admin_token,
            "--json",
            "namespace",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert isinstance(json.loads(result.stdout), list)
