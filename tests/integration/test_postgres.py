"""Origins on PostgreSQL as real processes: several origins on one database with an edge on
each, concurrent writers converging, kill -9 durability, and ``pullkv store`` commands
(migrate, copy SQLite -> PostgreSQL -> SQLite, resumed)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullkv.store import open_store
from pullkv.store.copy import copy_store
from tests.pg import fresh_schema
from tests.support import EdgeProcess, ServerProcess, all_keys, write_until_killed

ORIGIN_ARGS = ["--min-expiration-ttl", "1"]
TTL = 2  # the edges' cache TTL, seconds
EDGE_ARGS = [
    *("--default-cache-ttl", str(TTL), "--min-cache-ttl", "1", "--refresh-interval", "1"),
    *("--min-expiration-ttl", "1", "--upstream-timeout", "2"),
]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema("it") as url:
        yield url


def share_secrets(first: Path, second: Path) -> None:
    """What a second origin on the same database needs from the first: its master key (to
    open the data keys) and its admin token (so starting does not mint another)."""
    second.mkdir(parents=True)
    for name in ("master.key", "admin-token"):
        shutil.copy2(first / name, second / name)


@pytest.fixture
def origins(pg_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    a = ServerProcess(tmp_path / "a", role="origin", args=[*ORIGIN_ARGS, "--store", pg_url])
    a.start()
    share_secrets(a.data_dir, tmp_path / "b")
    b = ServerProcess(tmp_path / "b", role="origin", args=[*ORIGIN_ARGS, "--store", pg_url])
    try:
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


def edge_on(origin: ServerProcess, log_dir: Path, location: str) -> EdgeProcess:
    edge = EdgeProcess(
        log_dir,
        origin.url,
        origin.admin_token,
        origin.master_key,
        args=[*EDGE_ARGS, "--location", location],
    )
    return edge.start()


def new_namespace(node: ServerProcess) -> str:
    response = httpx.post(node.namespaces_url, json={"title": "pg"}, headers=node.headers())
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["id"])


def value_at(node: ServerProcess | EdgeProcess, token: str, ns: str, key: str) -> bytes | None:
    response = httpx.get(
        f"{node.namespaces_url}/{ns}/values/{key}", headers={"Authorization": f"Bearer {token}"}
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.content


def test_two_origins_on_one_database_with_an_edge_each(
    origins: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    a, b = origins
    token = a.admin_token
    assert b.admin_token == token
    edge_a = edge_on(a, tmp_path / "edge-a", "a")
    edge_b = edge_on(b, tmp_path / "edge-b", "b")
    try:
        ns = new_namespace(a)
        assert value_at(edge_b, token, ns, "k") is None  # edge b caches "not found"
        put = httpx.put(
            f"{edge_a.namespaces_url}/{ns}/values/k",
            content=b"from a",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert put.status_code == 200
        assert value_at(edge_a, token, ns, "k") == b"from a"  # read your writes
        assert value_at(b, token, ns, "k") == b"from a"  # the other origin: same database
        time.sleep(TTL + 0.3)
        assert value_at(edge_b, token, ns, "k") == b"from a"  # after the cache TTL

        # And the other way round, through origin b's edge, seen at a's edge.
        httpx.put(
            f"{edge_b.namespaces_url}/{ns}/values/k",
            content=b"from b",
            headers={"Authorization": f"Bearer {token}"},
        ).raise_for_status()
        time.sleep(TTL + 0.3)
        assert value_at(edge_a, token, ns, "k") == b"from b"
    finally:
        edge_a.stop()
        edge_b.stop()


def test_concurrent_writers_through_two_origins_converge(
    origins: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    a, b = origins
    token = a.admin_token
    edges = [edge_on(a, tmp_path / "edge-a", "a"), edge_on(b, tmp_path / "edge-b", "b")]
    nodes: list[ServerProcess | EdgeProcess] = [a, b, *edges]
    try:
        ns = new_namespace(a)
        acked: list[bytes] = []
        deadline = time.monotonic() + 1.5

        def writer(node: ServerProcess | EdgeProcess, name: str) -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
                sequence = 0
                while time.monotonic() < deadline:
                    value = f"{name}-{sequence}".encode()
                    response = client.put(f"{node.namespaces_url}/{ns}/values/hot", content=value)
                    assert response.status_code == 200, response.text
                    acked.append(value)
                    sequence += 1

        threads = [
            threading.Thread(target=writer, args=(node, f"w{i}"))
            for i, node in enumerate([*nodes, *nodes])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(acked) > 20
        time.sleep(TTL + 0.3)
        seen = [value_at(node, token, ns, "hot") for node in nodes]
        assert len(set(seen)) == 1, f"the nodes disagree: {seen}"
        assert seen[0] in acked
    finally:
        for edge in edges:
            edge.stop()


def test_acknowledged_writes_survive_kill_9_of_an_origin(pg_url: str, tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "o", role="origin", args=[*ORIGIN_ARGS, "--store", pg_url])
    proc.start()
    ns = new_namespace(proc)
    acked = asyncio.run(write_until_killed(proc, ns, seconds=10.0, enough=300))
    assert len(acked) > 100, "the load should have written something before the kill"
    proc.start()
    try:
        with httpx.Client(base_url=proc.namespaces_url + "/", headers=proc.headers()) as c:
            missing = set(acked) - all_keys(c, ns)
            assert not missing, f"{len(missing)} acknowledged writes lost: {sorted(missing)[:5]}"
            for key in list(acked)[:: max(1, len(acked) // 100)]:
                assert c.get(f"{ns}/values/{key}").content == acked[key]
    finally:
        proc.stop()


def pullkv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pullkv", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_store_migrate_command(pg_url: str) -> None:
    first = pullkv("store", "migrate", "--store", pg_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"applied": [1, 2, 3], "version": 3}
    again = pullkv("store", "migrate", "--store", pg_url)
    assert json.loads(again.stdout) == {"applied": [], "version": 3}


def fill_through_http(server: ServerProcess) -> tuple[str, dict[str, bytes]]:
    ns = new_namespace(server)
    written = {f"key-{i:04}": f"value {i} é".encode() for i in range(600)}
    written["binary"] = bytes(range(256))
    with httpx.Client(base_url=server.namespaces_url + "/", headers=server.headers()) as c:
        items = [{"key": k, "value": v.decode()} for k, v in written.items() if k != "binary"]
        assert c.put(f"{ns}/bulk", json=items).status_code == 200
        assert c.put(f"{ns}/values/binary", content=written["binary"]).status_code == 200
        meta = {"value": (None, b"m"), "metadata": (None, b'{"a": 1}')}
        assert c.put(f"{ns}/values/meta", files=meta).status_code == 200
        written["meta"] = b"m"
        assert c.put(
            f"{ns}/values/later", content=b"l", params={"expiration_ttl": "3600"}
        ).is_success
        written["later"] = b"l"
    return ns, written


def check_served(server: ServerProcess, ns: str, written: dict[str, bytes]) -> None:
    with httpx.Client(base_url=server.namespaces_url + "/", headers=server.headers()) as c:
        assert all_keys(c, ns) == set(written)
        for key in ["binary", "meta", "later", "key-0000", "key-0599"]:
            assert c.get(f"{ns}/values/{key}").content == written[key]
        assert c.get(f"{ns}/metadata/meta").json()["result"] == {"a": 1}
        later = c.get(f"{ns}/keys", params={"prefix": "later"}).json()["result"]
        assert later[0]["expiration"] > time.time() + 3000


def test_store_copy_round_trip_through_postgres(pg_url: str, tmp_path: Path) -> None:
    sqlite_data = tmp_path / "sqlite"
    server = ServerProcess(sqlite_data, args=ORIGIN_ARGS).start()
    ns, written = fill_through_http(server)
    server.stop()

    # An interrupted copy to PostgreSQL (as after Ctrl-C), which the command then resumes.
    class Interrupted(Exception):
        pass

    def interrupt(_: int) -> None:
        raise Interrupted

    async def partial_copy() -> None:
        source = open_store(f"sqlite://{sqlite_data / 'pullkv.sqlite3'}")
        dest = open_store(pg_url)
        try:
            await copy_store(source, dest, progress=interrupt)
        finally:
            await source.close()
            await dest.close()

    with pytest.raises(Interrupted):
        asyncio.run(partial_copy())
    to_pg = pullkv("store", "copy", "--from", str(sqlite_data), "--to", pg_url)
    assert to_pg.returncode == 0, to_pg.stderr
    there = json.loads(to_pg.stdout)
    assert there["resumed"] and 0 < there["entries_copied"] < there["counts"]["entries"]
    assert there["counts"]["entries"] == len(written)
    assert "Copying entries" in to_pg.stderr  # the progress bar
    again = pullkv("store", "copy", "--from", str(sqlite_data), "--to", pg_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already_complete"]  # nothing left to do but verify

    # The same data folder (master key, admin token) now serves from PostgreSQL.
    on_pg = ServerProcess(sqlite_data, args=[*ORIGIN_ARGS, "--store", pg_url]).start()
    try:
        check_served(on_pg, ns, written)
    finally:
        on_pg.stop()

    back_data = tmp_path / "back"
    back_data.mkdir()
    back_url = f"sqlite://{back_data / 'pullkv.sqlite3'}"
    to_sqlite = pullkv("store", "copy", "--from", pg_url, "--to", back_url)
    assert to_sqlite.returncode == 0, to_sqlite.stderr
    back = json.loads(to_sqlite.stdout)
    assert not back["resumed"] and back["entries_copied"] == len(written)
    assert back["checksums"] == there["checksums"]  # identical contents, table by table
    for name in ("master.key", "admin-token"):
        shutil.copy2(sqlite_data / name, back_data / name)
    on_copy = ServerProcess(back_data, args=ORIGIN_ARGS).start()
    try:
        check_served(on_copy, ns, written)
    finally:
        on_copy.stop()

    # The keyring commands reach the PostgreSQL store with --store.
    rotated = pullkv("keyring", "rotate", "--data", str(sqlite_data), "--store", pg_url)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"current": 2}
    listed = pullkv("keyring", "list", "--data", str(sqlite_data), "--store", pg_url)
    assert json.loads(listed.stdout) == {"keys": [1, 2], "current": 2}


def test_a_second_origin_without_the_admin_token_is_refused(pg_url: str, tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "a", role="origin", args=[*ORIGIN_ARGS, "--store", pg_url])
    first.start()
    try:
        (tmp_path / "b").mkdir()
        shutil.copy2(first.data_dir / "master.key", tmp_path / "b" / "master.key")
        second = pullkv_origin(tmp_path / "b", pg_url)
        assert second.returncode != 0
        assert "admin-token" in second.stderr and "is missing" in second.stderr
        # The first origin's token still works.
        assert httpx.get(first.namespaces_url, headers=first.headers()).status_code == 200
    finally:
        first.stop()


def pullkv_origin(data: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pullkv", "origin", "--data", str(data), "--store", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
