"""Store.namespace_stats on both engines: live keys only, stored bytes, expiring keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pullkv.store.base import NamespaceStats, Store
from pullkv.store.postgres import PostgresStore
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import NamespaceRecord, SealedWrite
from tests.pg import fresh_schema

ACCOUNT = "0" * 32
NOW = 1_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "stats.sqlite3")
        yield opened
        await opened.close()
        return
    with fresh_schema() as url:
        opened = PostgresStore(url)
        yield opened
        await opened.close()


async def test_stats_count_live_keys_bytes_and_expirations(store: Store) -> None:
    one, other = "1" * 32, "2" * 32
    for namespace_id in (one, other):
        await store.create_namespace(NamespaceRecord(namespace_id, ACCOUNT, namespace_id), 10)
    assert await store.namespace_stats(one, NOW) == NamespaceStats(0, 0, 0)
    await store.put(
        one,
        [
            SealedWrite("a", b"x" * 10, None, None),
            SealedWrite("b", b"y" * 5, b"meta", NOW + 60),
            SealedWrite("gone", b"z" * 100, None, NOW - 1),  # expired: not counted
        ],
    )
    await store.put(other, [SealedWrite("a", b"q" * 1000, None, None)])
    assert await store.namespace_stats(one, NOW) == NamespaceStats(2, 15, 1)
    assert await store.namespace_stats(other, NOW) == NamespaceStats(1, 1000, 0)
    # At the expiration instant a key is gone, as every read sees it.
    assert await store.namespace_stats(one, NOW + 60) == NamespaceStats(1, 10, 0)
