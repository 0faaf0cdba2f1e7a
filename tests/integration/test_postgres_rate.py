"""``--same-key-write-rate`` with two origins on one PostgreSQL database: the limit holds
across them (the database keeps it, on its own clock), refused writes get Workers KV's 429
and change nothing, and the rest of a bulk write still applies."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullkv import errors
from tests.pg import fresh_schema
from tests.support import ServerProcess

ARGS = ["--min-expiration-ttl", "1", "--same-key-write-rate", "1"]


@pytest.fixture
def origins(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with fresh_schema("rate") as url:
        a = ServerProcess(tmp_path / "a", role="origin", args=[*ARGS, "--store", url]).start()
        try:
            # The second origin shares the first's master key and admin token.
            (tmp_path / "b").mkdir()
            for name in ("master.key", "admin-token"):
                shutil.copy2(a.data_dir / name, tmp_path / "b" / name)
            b = ServerProcess(tmp_path / "b", role="origin", args=[*ARGS, "--store", url])
            b.start()
            try:
                yield a, b
            finally:
                b.stop()
        finally:
            a.stop()


def assert_rate_limited(response: httpx.Response, key: str) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["success"] is False
    assert body["errors"][0]["code"] == errors.RATE_LIMITED
    assert body["errors"][0]["message"] == errors.rate_limited(key).message
    assert response.headers["retry-after"] == "1"


def test_the_same_key_write_rate_holds_across_origins(
    origins: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = origins
    with (
        httpx.Client(base_url=a.namespaces_url + "/", headers=a.headers()) as at_a,
        httpx.Client(base_url=b.namespaces_url + "/", headers=b.headers()) as at_b,
    ):
        ns = at_a.post("", json={"title": "rate"}).json()["result"]["id"]
        assert at_a.put(f"{ns}/values/hot", content=b"a").status_code == 200
        assert_rate_limited(at_b.put(f"{ns}/values/hot", content=b"b"), "hot")
        assert_rate_limited(at_b.delete(f"{ns}/values/hot"), "hot")
        assert at_b.get(f"{ns}/values/hot").content == b"a"  # nothing changed
        bulk = at_b.put(
            f"{ns}/bulk", json=[{"key": "hot", "value": "b"}, {"key": "cold", "value": "b"}]
        )
        assert bulk.json()["result"] == {"successful_key_count": 1, "unsuccessful_keys": ["hot"]}
        assert at_a.get(f"{ns}/values/cold").content == b"b"
        gone = at_a.request("DELETE", f"{ns}/bulk", json=["hot", "cold", "other"])
        assert gone.json()["result"] == {
            "successful_key_count": 1,
            "unsuccessful_keys": ["hot", "cold"],
        }
        assert at_a.get(f"{ns}/values/hot").content == b"a"
        time.sleep(1.1)
        assert at_b.put(f"{ns}/values/hot", content=b"b").status_code == 200
        assert_rate_limited(at_a.put(f"{ns}/values/hot", content=b"a"), "hot")
        assert at_a.get(f"{ns}/values/hot").content == b"b"
