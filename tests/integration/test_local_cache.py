"""The in-process edge (``Client(..., cache=LocalCache(...))``) against real servers: hits
need no request, the client's own writes are read back at once, another process's writes
arrive through the namespace's change feed well within the TTL, and the async client
behaves the same."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from pullkv import AsyncClient, Client, LocalCache
from tests.support import EdgeProcess, ServerProcess

WAIT = 10.0


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("local") / "origin", role="origin")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge(origin: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    base = tmp_path_factory.mktemp("local-edge")
    node = EdgeProcess(base, origin.url, origin.admin_token, origin.master_key).start()
    yield node
    node.stop()


def wait_for(condition: object, what: str) -> float:
    """Seconds until ``condition()`` held."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < WAIT, f"{what} did not happen in {WAIT} s"
        time.sleep(0.01)
    return time.monotonic() - started


def test_hits_writes_and_another_processes_writes(origin: ServerProcess, edge: EdgeProcess) -> None:
    cache = LocalCache(8 << 20)
    with (
        Client(edge.url, origin.admin_token, account_id=origin.account_id, cache=cache) as app,
        Client(origin.url, origin.admin_token, account_id=origin.account_id) as elsewhere,
    ):
        ns_id = elsewhere.create_namespace("local-cache")["id"]
        ns, other = app.namespace(ns_id), elsewhere.namespace(ns_id)
        other.put("flag", "off", metadata={"by": "ops"})
        assert ns.get("flag") == "off"
        misses = cache.stats.misses
        for _ in range(100):
            assert ns.get("flag") == "off"
        assert cache.stats.misses == misses  # answered from memory
        meta = ns.get_with_metadata("flag")
        assert meta.metadata == {"by": "ops"} and meta.cache_status is not None
        assert meta.cache_status.startswith("pullkv-local; hit")
        assert ns.get("missing") is None and ns.get("missing") is None  # negative caching

        # Read-your-writes: the client's own write, at once, with no request.
        etag = ns.put("flag", "on")
        assert ns.get("flag") == "on" and ns.get_with_metadata("flag").etag == etag
        ns.delete("flag")
        assert ns.get("flag") is None

        # Another process's writes: through the feed, far inside the 60 s TTL.
        other.put("flag", "later")
        assert wait_for(lambda: ns.get("flag") == "later", "an update") < 5
        other.put("missing", "now here")
        assert wait_for(lambda: ns.get("missing") == "now here", "a creation") < 5
        other.delete("missing")
        assert wait_for(lambda: ns.get("missing") is None, "a delete") < 5
        assert cache.stats.invalidations >= 1


def test_threads_share_one_cache(origin: ServerProcess) -> None:
    cache = LocalCache()
    with Client(origin.url, origin.admin_token, account_id=origin.account_id, cache=cache) as c:
        ns = c.namespace(c.create_namespace("local-threads")["id"])
        for i in range(20):
            ns.put(f"k{i}", str(i))
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                for round_ in range(200):
                    i = round_ % 20
                    assert ns.get(f"k{i}") == str(i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        assert cache.stats.hit_ratio() > 0.9


async def test_the_async_client(origin: ServerProcess, edge: EdgeProcess) -> None:
    cache = LocalCache()
    async with (
        AsyncClient(edge.url, origin.admin_token, account_id=origin.account_id, cache=cache) as app,
        AsyncClient(origin.url, origin.admin_token, account_id=origin.account_id) as elsewhere,
    ):
        created = await elsewhere.create_namespace("local-async")
        ns, other = await app.namespace(created["id"]), await elsewhere.namespace(created["id"])
        await other.put("k", "1")
        assert await ns.get("k") == "1"
        await ns.put("k", "2")
        assert await ns.get("k") == "2"  # read-your-writes
        await other.put("k", "3")
        started = time.monotonic()
        while await ns.get("k") != "3":
            assert time.monotonic() - started < 5
            await asyncio.sleep(0.01)
        got = await ns.get_with_metadata("k")
        assert got.value == "3" and got.cache_status is not None
