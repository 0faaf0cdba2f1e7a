"""``pullkv info``, ``namespace stats``, ``bulk export`` and interrupted bulk commands, end
to end against real servers (issue 10, part 3)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from pullkv import Client
from pullkv.cli import main
from pullkv.cli.client_commands import BULK_BATCH
from tests.conftest import TEST_SERVER_ARGS
from tests.support import EdgeProcess, ServerProcess

KEYS = 100_000
BATCH = 10_000


def _cli(server: ServerProcess, *args: str) -> str:
    """Run ``pullkv <args>`` in process against ``server``; its stdout."""
    env = {"PULLKV_URL": server.url, "PULLKV_TOKEN": server.admin_token, "PULLKV_NAMESPACE": ""}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Another server, to import into."""
    data = Path(tmp_path_factory.mktemp("second")) / "data"
    proc = ServerProcess(data, args=TEST_SERVER_ARGS).start()
    yield proc
    proc.stop()


def _items(now: int) -> list[dict[str, Any]]:
    """KEYS entries in wrangler's format: plain, with metadata, expiring, and binary."""
    items: list[dict[str, Any]] = []
    for i in range(KEYS):
        item: dict[str, Any] = {"key": f"k/{i:06d}", "value": f"value {i} é"}
        if i % 3 == 0:
            item["metadata"] = {"n": i, "tag": "ü"}
        if i % 5 == 0:
            item["expiration"] = now + 86_400 + i
        if i % 1000 == 7:
            item["value"] = base64.b64encode(bytes([0xFF, 0xFE, i % 256])).decode()
            item["base64"] = True
        items.append(item)
    return items


def test_info_through_serve_and_edge(server: ServerProcess, tmp_path: Path) -> None:
    with Client(server.url, server.admin_token) as client:
        info = client.info()
    assert info["role"] == "serve"
    assert info["account_id"] == server.account_id
    assert info["cache"] is not None and info["uptime_seconds"] >= 0
    shown = _cli(server, "info")
    assert f"account id:  {server.account_id}" in shown and server.url in shown
    # Any valid token may ask; no token may not.
    assert httpx.get(server.url + "/client/v4/pullkv/info").status_code == 401

    with Client(server.url, server.admin_token, account_id=server.account_id) as client:
        edge_token = client.create_token("edge", edge=True)["value"]
    edge = EdgeProcess(
        tmp_path, server.url, edge_token, server.master_key, args=["--location", "lhr"]
    ).start()
    try:
        with Client(edge.url, server.admin_token) as client:
            info = client.info()
            assert (info["role"], info["location"]) == ("edge", "lhr")
            assert info["upstream"] == server.url
            ns = client.namespace(client.create_namespace("edge-stats")["id"])
            ns.put("a", "12345")
            ns.put("b", "x", expiration_ttl=3600)
            # Stats are the store's, forwarded through the edge's internal API.
            stats = ns.stats()
        assert (stats["keys"], stats["expiring"]) == (2, 1)
        assert stats["value_bytes"] >= 6  # sealed: the plaintext and an overhead
    finally:
        edge.stop()


def test_namespace_stats(server: ServerProcess, namespace_id: str) -> None:
    with Client(server.url, server.admin_token, account_id=server.account_id) as client:
        ns = client.namespace(namespace_id)
        assert ns.stats() == {"keys": 0, "value_bytes": 0, "expiring": 0}
        ns.bulk_put(
            [
                {"key": "a", "value": "x" * 100},
                {"key": "b", "value": "y", "expiration_ttl": 3600},
                {"key": "c", "value": "z", "expiration_ttl": 1},
            ]
        )
        time.sleep(2.1)  # "c" expires: stats count live keys only
        stats = ns.stats()
    assert (stats["keys"], stats["expiring"]) == (2, 1)
    assert stats["value_bytes"] >= 101
    shown = _cli(server, "namespace", "stats", "-n", namespace_id)
    assert "keys:             2" in shown


def test_export_then_import_round_trips_100k_keys(
    server: ServerProcess, second: ServerProcess, tmp_path: Path
) -> None:
    started = time.monotonic()
    items = _items(int(time.time()))
    with Client(server.url, server.admin_token) as a, Client(second.url, second.admin_token) as b:
        source = a.namespace(a.create_namespace("export-source")["id"])
        for start in range(0, KEYS, BATCH):
            assert source.bulk_put(items[start : start + BATCH])["unsuccessful_keys"] == []
        target_id = b.create_namespace("export-target")["id"]
    exported = _cli(server, "bulk", "export", "-n", "export-source")
    assert json.loads(exported) == items  # in key order, exactly as written
    dump = tmp_path / "dump.json"
    dump.write_text(exported)
    _cli(second, "bulk", "put", str(dump), "-n", target_id)
    assert json.loads(_cli(second, "bulk", "export", "-n", target_id)) == items
    subset = json.loads(_cli(server, "bulk", "export", "-n", "export-source", "--prefix", "k/0000"))
    assert subset == items[:100]
    assert time.monotonic() - started < 120  # about 30 s on a quiet machine


def _wait_for_keys(client: Client, namespace_id: str, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.namespace(namespace_id).stats()["keys"] < at_least:
        assert time.monotonic() < deadline, "the bulk put never started writing"
        time.sleep(0.05)


@pytest.mark.parametrize("command", ["put", "delete"])
def test_ctrl_c_says_how_to_resume(server: ServerProcess, tmp_path: Path, command: str) -> None:
    count = 60_000
    items = [{"key": f"r{i:06d}", "value": "v" * 50} for i in range(count)]
    path = tmp_path / "items.json"
    path.write_text(json.dumps(items if command == "put" else [i["key"] for i in items]))
    with Client(server.url, server.admin_token, account_id=server.account_id) as client:
        namespace_id = client.create_namespace(f"resume-{command}")["id"]
        if command == "delete":
            for start in range(0, count, BATCH):
                client.namespace(namespace_id).bulk_put(items[start : start + BATCH])
        env = {**os.environ, "PULLKV_URL": server.url, "PULLKV_TOKEN": server.admin_token}
        args = [sys.executable, "-m", "pullkv", "bulk", command, str(path), "-n", namespace_id]
        if command == "delete":
            args.append("-f")
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # Wait until the server has applied more than one of the CLI's requests: only
            # then has the CLI surely seen the first one finish (it sends one at a time), so
            # the interruption cannot land before any request counts as done.
            if command == "put":
                _wait_for_keys(client, namespace_id, BULK_BATCH + 1, 30)
            else:
                deadline = time.monotonic() + 30
                while client.namespace(namespace_id).stats()["keys"] > count - BULK_BATCH - 1:
                    assert time.monotonic() < deadline, "the bulk delete never started"
                    time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = err.decode()
        assert proc.returncode == 130, stderr
        assert "Aborted!" not in stderr
        verb = "written" if command == "put" else "deleted"
        done = int(stderr.split("Interrupted: ")[1].split(" of ")[0])
        assert f"{done} of {count} entries {verb}" in stderr
        assert f"--skip {done}" in stderr
        assert 0 < done < count, stderr
        keys = client.namespace(namespace_id).stats()["keys"]
        # Every finished request is applied (one in flight may be too).
        assert keys >= done if command == "put" else keys <= count - done
        resume = subprocess.run(
            [*args, "--skip", str(done)], env=env, capture_output=True, timeout=120
        )
        assert resume.returncode == 0, resume.stderr
        expected = count if command == "put" else 0
        assert client.namespace(namespace_id).stats()["keys"] == expected


def test_a_missing_namespace_is_worded_by_the_operation(server: ServerProcess) -> None:
    missing = f"{server.namespaces_url}/{'0' * 32}"
    expected = {
        "/values/k": "get: 'namespace not found'",
        "/metadata/k": "metadata: 'namespace not found'",
        "/pullkv/stats": "namespace stats: 'namespace not found'",
    }
    for path, message in expected.items():
        response = httpx.get(missing + path, headers=server.headers())
        assert response.status_code == 404
        assert response.json()["errors"] == [{"code": 10013, "message": message}]
