"""``copy_store``: SQLite -> PostgreSQL -> SQLite ends identical, resumes after an interruption,
refuses destinations that are not its own, and verifies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pullkv.errors import StoreMaintenanceError
from pullkv.store import copy as copy_module
from pullkv.store.base import Store
from pullkv.store.copy import PROGRESS_SETTING, copy_store, digest_store
from pullkv.store.postgres import PostgresStore
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import NamespaceRecord, SealedEntry, SealedWrite
from tests.pg import fresh_schema
from tests.unit.helpers import token

ACCOUNT = "0" * 32
OTHER = "1" * 32
NS = ["a" * 32, "b" * 32, "c" * 32]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema("copy") as url:
        yield url


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "source.sqlite3")
    await fill(store)
    yield store
    await store.close()


async def fill(store: Store, entries: int = 700) -> None:
    """A store with something of every kind, including what is easy to get wrong."""
    await store.add_data_key(1, b"wrapped-1")
    await store.add_data_key(2, b"wrapped-2")
    await store.set_setting("default_account_id", ACCOUNT)
    await store.set_setting("admin_token_id", "t1")
    await store.create_namespace(NamespaceRecord(NS[0], ACCOUNT, "Title"), 100)
    await store.create_namespace(NamespaceRecord(NS[1], ACCOUNT, "title", "eu"), 100)
    await store.create_namespace(NamespaceRecord(NS[2], OTHER, "Title"), 100)
    await store.add_token(token("t1", admin=True, edge=True))
    await store.add_token(token("t2", namespaces=(NS[0],), read_only=True, revoked_at=500))
    await store.add_token(token("t3", OTHER, namespaces=()))
    keys = ["é", "\U0001f600", "Z", "a", "\uffff", "k" * 512, "with space", "😀/x"]
    await store.put(
        NS[0],
        [
            SealedWrite(k, f"v-{k}".encode() + bytes(range(256)), b"meta" if i % 2 else None, None)
            for i, k in enumerate(keys)
        ],
    )
    await store.put(NS[0], [SealedWrite("expiring", b"x", None, 4_000_000_000)])
    await store.put(NS[0], [SealedWrite("expired", b"x", None, 100)])  # copied all the same
    await store.put(
        NS[1], [SealedWrite(f"bulk-{i:05}", b"%d" % i, None, None) for i in range(entries)]
    )
    await store.put(NS[2], [SealedWrite("empty", b"", None, None)])
    await store.delete(NS[1], ["bulk-00000"])  # the last version handed out is a delete's


async def everything(store: Store) -> dict[str, object]:
    """The whole content, read back through the protocol, for exact comparison."""
    entries: list[tuple[str, SealedEntry]] = []
    after = None
    while page := await store.scan_entries(after, 100):
        entries += page
        after = (page[-1][0], page[-1][1].key)
    settings = await store.list_settings()
    settings.pop(PROGRESS_SETTING, None)
    return {
        "data_keys": await store.data_keys(),
        "settings": settings,
        "namespaces": await store.scan_namespaces(None, 1000),
        "tokens": await store.scan_tokens(None, 1000),
        "entries": entries,
    }


async def test_round_trip_sqlite_postgres_sqlite(
    source: SQLiteStore, pg_url: str, tmp_path: Path
) -> None:
    middle = PostgresStore(pg_url)
    back = SQLiteStore(tmp_path / "back.sqlite3")
    try:
        totals: list[tuple[int, int]] = []
        steps: list[int] = []
        report = await copy_store(
            source, middle, progress=steps.append, on_total=lambda t, d: totals.append((t, d))
        )
        assert totals == [(await source.count_entries(), 0)]
        assert sum(steps) == report.entries_copied == await source.count_entries()
        assert report.resumed_after is None
        assert report.counts == {
            "data_keys": 2,
            "settings": 2,
            "namespaces": 3,
            "tokens": 3,
            "entries": report.entries_copied,
        }
        assert await everything(middle) == await everything(source)

        report_back = await copy_store(middle, back)
        assert await everything(back) == await everything(source)
        assert report_back.digest == report.digest == await digest_store(source)

        # Later writes on a copy get versions above everything the source handed out,
        # including its last delete, whose version no entry carries.
        last = await source.last_version()
        assert await middle.last_version() >= last and await back.last_version() >= last
        for copy in (middle, back):
            (version,) = await copy.put(NS[0], [SealedWrite("new", b"n", None, None)])
            assert version > last
    finally:
        await middle.close()
        await back.close()


async def test_interrupted_copy_resumes(
    source: SQLiteStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copy_module, "FIRST_PAGE", 50)
    monkeypatch.setattr(copy_module, "MAX_PAGE", 100)
    total = await source.count_entries()

    class Interrupted(Exception):
        pass

    def interrupt_after_three_pages(count: int) -> None:
        pages.append(count)
        if len(pages) == 3:
            raise Interrupted

    pages: list[int] = []
    dest = PostgresStore(pg_url)
    try:
        with pytest.raises(Interrupted):
            await copy_store(source, dest, progress=interrupt_after_three_pages)
        partial = await dest.count_entries()
        assert partial == sum(pages) < total
    finally:
        await dest.close()

    dest = PostgresStore(pg_url)  # a new run, as after Ctrl-C
    try:
        totals: list[tuple[int, int]] = []
        report = await copy_store(source, dest, on_total=lambda t, d: totals.append((t, d)))
        assert report.resumed_after is not None
        assert totals == [(total, partial)]
        assert report.entries_copied == total - partial
        assert await everything(dest) == await everything(source)
        again = await copy_store(source, dest)  # done: only verifies
        assert again.already_complete and again.entries_copied == 0
    finally:
        await dest.close()


async def test_refuses_a_destination_that_is_not_its_own(
    source: SQLiteStore, tmp_path: Path
) -> None:
    used = SQLiteStore(tmp_path / "used.sqlite3")
    other = SQLiteStore(tmp_path / "other.sqlite3")
    try:
        await used.set_setting("default_account_id", OTHER)
        with pytest.raises(StoreMaintenanceError, match="not empty"):
            await copy_store(source, used)
        await other.add_data_key(1, b"another store")
        target = SQLiteStore(tmp_path / "target.sqlite3")
        try:
            await copy_store(other, target)
            with pytest.raises(StoreMaintenanceError, match="copy of another store"):
                await copy_store(source, target)
        finally:
            await target.close()
    finally:
        await used.close()
        await other.close()


async def test_a_source_changed_after_the_copy_fails_verification(
    source: SQLiteStore, tmp_path: Path
) -> None:
    dest = SQLiteStore(tmp_path / "dest.sqlite3")
    try:
        await copy_store(source, dest)
        await source.put(NS[0], [SealedWrite("late", b"x", None, None)])
        with pytest.raises(StoreMaintenanceError, match="entries"):
            await copy_store(source, dest)
    finally:
        await dest.close()
