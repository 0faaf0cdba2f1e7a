"""The same-key write rate kept by the PostgreSQL engine (put_rated, delete_rated): claimed in
the write's own transaction, on the database's clock, so every origin sharing the database
keeps it whatever its own clock says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from pullkv import errors
from pullkv.limits import DEFAULT_LIMITS
from pullkv.origin.local import LocalBackend
from pullkv.store.base import RatedStore, RatedWrite
from pullkv.store.postgres import PostgresStore
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import NamespaceRecord, SealedWrite
from tests.pg import fresh_schema
from tests.unit.helpers import raises_kv

ACCOUNT = "0" * 32
LONG = 60.0  # an interval no test outlives: a second write within it is surely refused
SHORT = 0.3  # an interval a test waits out


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as made:
        yield made


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(url)
    yield opened
    await opened.close()


def w(key: str, value: bytes = b"v") -> SealedWrite:
    return SealedWrite(key, value, None, None)


async def make_ns(store: PostgresStore, title: str = "ns") -> str:
    namespace_id = (title.encode().hex() + "0" * 32)[:32]
    await store.create_namespace(NamespaceRecord(namespace_id, ACCOUNT, title), 100)
    return namespace_id


async def value(store: PostgresStore, ns: str, key: str) -> bytes | None:
    entry = await store.get(ns, key, 0)
    return None if entry is None else entry.value


async def claims(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT count(*) FROM key_writes")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_second_write_within_the_interval_is_refused_and_changes_nothing(
    store: PostgresStore,
) -> None:
    ns = await make_ns(store)
    first = await store.put_rated(ns, [w("k", b"one")], LONG)
    assert first.refused == [] and list(first.versions) == ["k"]
    again = await store.put_rated(ns, [w("k", b"two")], LONG)
    assert again == RatedWrite({}, ["k"])
    gone = await store.delete_rated(ns, ["k"], LONG)
    assert gone == RatedWrite({}, ["k"])
    entry = await store.get(ns, "k", 0)
    assert entry is not None and (entry.value, entry.version) == (b"one", first.versions["k"])


async def test_the_rest_of_a_bulk_write_applies(store: PostgresStore) -> None:
    ns = await make_ns(store)
    await store.put_rated(ns, [w("a", b"old")], LONG)
    result = await store.put_rated(ns, [w("a", b"new"), w("b", b"new"), w("c", b"new")], LONG)
    assert result.refused == ["a"] and list(result.versions) == ["b", "c"]
    assert [await value(store, ns, k) for k in "abc"] == [b"old", b"new", b"new"]
    deleted = await store.delete_rated(ns, ["a", "d", "d"], LONG)
    assert deleted.refused == ["a"] and list(deleted.versions) == ["d"]
    assert await value(store, ns, "a") == b"old"


async def test_a_key_may_be_written_again_once_its_interval_passed(store: PostgresStore) -> None:
    ns = await make_ns(store)
    await store.put_rated(ns, [w("k", b"one")], SHORT)
    await asyncio.sleep(SHORT + 0.05)
    deleted = await store.delete_rated(ns, ["k"], SHORT)
    assert list(deleted.versions) == ["k"] and await value(store, ns, "k") is None
    assert (await store.put_rated(ns, [w("k", b"two")], LONG)).refused == ["k"]
    await asyncio.sleep(SHORT + 0.05)
    put = await store.put_rated(ns, [w("k", b"three")], SHORT)
    assert put.versions["k"] > deleted.versions["k"]
    assert await value(store, ns, "k") == b"three"


async def test_keys_and_namespaces_are_independent(store: PostgresStore) -> None:
    ns, other = await make_ns(store, "one"), await make_ns(store, "two")
    await store.put_rated(ns, [w("a")], LONG)
    assert (await store.put_rated(ns, [w("b")], LONG)).refused == []
    assert (await store.put_rated(other, [w("a")], LONG)).refused == []
    assert (await store.delete_rated(other, ["b"], LONG)).refused == []


async def test_the_limit_holds_across_stores_with_skewed_clocks(url: str) -> None:
    # Two origins on one database, one clock an hour fast: the database's clock decides.
    fast = PostgresStore(url, clock=lambda: time.time() + 3600)
    slow = PostgresStore(url)
    try:
        ns = await make_ns(fast)
        await fast.put_rated(ns, [w("k", b"fast")], SHORT)
        assert (await slow.put_rated(ns, [w("k", b"slow")], SHORT)).refused == ["k"]
        assert (await slow.delete_rated(ns, ["k"], SHORT)).refused == ["k"]
        await asyncio.sleep(SHORT + 0.05)
        assert (await slow.put_rated(ns, [w("k", b"slow")], SHORT)).refused == []
        assert (await fast.delete_rated(ns, ["k"], SHORT)).refused == ["k"]
        assert await value(fast, ns, "k") == b"slow"
    finally:
        await slow.close()
        await fast.close()


async def test_concurrent_writes_of_one_key_from_two_stores_admit_one(url: str) -> None:
    a, b = PostgresStore(url), PostgresStore(url)
    try:
        ns = await make_ns(a)
        results = await asyncio.gather(
            *(s.put_rated(ns, [w("k", bytes([i]))], LONG) for i in range(20) for s in (a, b))
        )
        assert sum(1 for r in results if r.versions) == 1
        assert sum(len(r.refused) for r in results) == 39
    finally:
        await b.close()
        await a.close()


async def test_a_failed_write_claims_nothing(store: PostgresStore, url: str) -> None:
    ns = await make_ns(store)
    missing = "f" * 32
    # In one group with a good write: the failed one is rolled back alone.
    results = await asyncio.gather(
        store.put_rated(missing, [w("k")], LONG),
        store.put_rated(ns, [w("k")], LONG),
        store.delete_rated(missing, ["k"], LONG),
        return_exceptions=True,
    )
    assert isinstance(results[0], errors.KVError) and results[0].status == 404
    assert isinstance(results[1], RatedWrite) and results[1].refused == []
    assert isinstance(results[2], errors.KVError) and results[2].status == 404
    assert await claims(url) == 1
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await store.delete_rated(missing, ["other"], LONG)
    assert await claims(url) == 1


async def test_purge_sweeps_claims_past_due(store: PostgresStore, url: str) -> None:
    ns = await make_ns(store)
    await store.put_rated(ns, [w(f"short{i}") for i in range(5)], SHORT)
    await store.put_rated(ns, [w("long")], LONG)
    await asyncio.sleep(SHORT + 0.05)
    assert await store.purge_expired(int(time.time()), 3) == 3  # a full batch: call again
    assert await store.purge_expired(int(time.time()), 3) == 2
    assert await claims(url) == 1
    assert (await store.put_rated(ns, [w("long")], LONG)).refused == ["long"]


async def test_origin_leaves_the_rate_to_a_shared_store(
    store: PostgresStore, tmp_path: Path
) -> None:
    limited = DEFAULT_LIMITS.with_changes(writes_per_key_per_second=1)
    assert LocalBackend(store, limited, time.time)._rated is store
    assert LocalBackend(store, DEFAULT_LIMITS, time.time)._rated is None  # off by default
    own = SQLiteStore(tmp_path / "store.sqlite3")  # one origin: its memory keeps the rate
    try:
        assert not isinstance(own, RatedStore)
        assert LocalBackend(own, limited, time.time)._rated is None
    finally:
        await own.close()
