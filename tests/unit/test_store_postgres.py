"""The PostgreSQL engine's own machinery (its semantics are in the conformance suite of
test_store_sqlite.py): group commit, one version clock for several stores, migrations,
reconnecting, and clear errors when the database cannot be used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow

from pullkv import errors
from pullkv.store import pg_schema
from pullkv.store.pg_schema import LATEST, MIGRATIONS, migrate
from pullkv.store.postgres import MAX_GROUP, PostgresStore, redact_url
from pullkv.types import ChangeRecord, NamespaceRecord, SealedWrite
from tests.pg import fresh_schema
from tests.unit.helpers import raises_kv

ACCOUNT = "0" * 32


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


class HeldClock:
    """Holds the version clock's row lock from another session, as a slow origin would:
    every store's writer waits for it, so writes queue up behind one blocked group."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None

    async def __aenter__(self) -> HeldClock:
        self.conn = await psycopg.AsyncConnection.connect(self.url)
        await self.conn.execute("SELECT version FROM version_clock WHERE id = 1 FOR UPDATE")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.conn is not None
        await self.conn.rollback()
        await self.conn.close()


async def test_group_commit_batches_concurrent_puts(store: PostgresStore) -> None:
    ns = await make_ns(store)
    before = store.commits
    await asyncio.gather(*(store.put(ns, [w(f"k{i:03}")]) for i in range(200)))
    assert store.commits - before < 50
    assert len(await store.list_keys(ns, "", None, 1000, 0)) == 200


async def test_one_commit_per_group_and_failures_spoil_nothing(
    store: PostgresStore, url: str
) -> None:
    ns = await make_ns(store)
    async with HeldClock(url):
        before = store.commits
        first = asyncio.ensure_future(store.put(ns, [w("first")]))
        await asyncio.sleep(0.2)  # the writer is now blocked on the clock with that group
        jobs = [asyncio.ensure_future(store.put(ns, [w(f"k{i:02}")])) for i in range(20)]
        jobs.insert(5, asyncio.ensure_future(store.put("f" * 32, [w("lost")])))
        bad = SealedWrite("bad", None, None, None)  # type: ignore[arg-type]  # fails in the engine
        jobs.insert(15, asyncio.ensure_future(store.put(ns, [w("half"), bad])))
        await asyncio.sleep(0.1)
    await first
    results = await asyncio.gather(*jobs, return_exceptions=True)
    # Two groups: the blocked one, then the 22 queued behind it, run again with savepoints.
    assert store.commits - before == 2
    assert isinstance(results[5], errors.KVError) and results[5].status == 404
    assert isinstance(results[15], psycopg.Error)
    names = [k.key for k in await store.list_keys(ns, "", None, 100, 0)]
    assert names == ["first", *(f"k{i:02}" for i in range(20))]
    versions = [r[0] for r in results if isinstance(r, list)]
    assert versions == sorted(versions) and len(set(versions)) == 20


async def test_without_group_commit_one_commit_per_write(url: str) -> None:
    store = PostgresStore(url, group_commit=False)
    try:
        ns = await make_ns(store)
        before = store.commits
        await asyncio.gather(*(store.put(ns, [w(f"k{i}")]) for i in range(30)))
        assert store.commits - before == 30
    finally:
        await store.close()


async def test_groups_are_bounded(store: PostgresStore, url: str) -> None:
    ns = await make_ns(store)
    count = MAX_GROUP + 10
    async with HeldClock(url):
        before = store.commits
        held = asyncio.ensure_future(store.put(ns, [w("held")]))
        await asyncio.sleep(0.2)
        puts = [asyncio.ensure_future(store.put(ns, [w(f"k{i:05}")])) for i in range(count)]
        await asyncio.sleep(0.1)
    await asyncio.gather(held, *puts)
    assert store.commits - before == 3  # the held group, one full group, the rest


async def test_versions_follow_commit_order_across_stores_with_skewed_clocks(url: str) -> None:
    # Two origins on one database, one clock far ahead of the other: versions still grow
    # in commit order, because the clock row in the database is shared.
    ahead = PostgresStore(url, clock=lambda: 2_000_000_000.0)
    behind = PostgresStore(url, clock=lambda: 1_000_000_000.0)
    try:
        ns = await make_ns(ahead)
        seen = []
        for i in range(6):
            writer = ahead if i % 2 == 0 else behind
            (version,) = await writer.put(ns, [w("k", str(i).encode())])
            seen.append(version)
        assert seen == sorted(seen) and len(set(seen)) == 6
        assert seen[0] >= 2_000_000_000 * 1_000_000
        assert await behind.last_version() == seen[-1]
    finally:
        await ahead.close()
        await behind.close()


async def test_concurrent_writes_to_one_key_from_two_stores_keep_the_highest_version(
    url: str,
) -> None:
    a, b = PostgresStore(url), PostgresStore(url)
    try:
        ns = await make_ns(a)
        writes = [
            (store, f"{name}{i}".encode())
            for i in range(100)
            for store, name in ((a, "a"), (b, "b"))
        ]
        results = await asyncio.gather(*(s.put(ns, [w("hot", v)]) for s, v in writes))
        acked = {version: value for ((version,), (_, value)) in zip(results, writes, strict=True)}
        assert len(acked) == 200  # no two writes share a version
        for reader in (a, b):
            entry = await reader.get(ns, "hot", 0)
            assert entry is not None
            assert entry.version == max(acked)  # last writer by version wins
            assert entry.value == acked[entry.version]
    finally:
        await a.close()
        await b.close()


async def test_migrations_are_recorded_once(store: PostgresStore, url: str) -> None:
    await store.get_setting("x")  # first use migrates
    again = PostgresStore(url)
    await again.get_setting("x")
    await again.close()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        assert await cur.fetchall() == [(m.version, m.name) for m in MIGRATIONS]
        cur = await conn.execute("SELECT version FROM version_clock")
        assert await cur.fetchall() == [(0,)]


async def test_a_newer_schema_is_refused(url: str) -> None:
    first = PostgresStore(url)
    await first.get_setting("x")
    await first.close()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, 'from the future')",
            (LATEST + 1,),
        )
    store = PostgresStore(url)
    try:
        with raises_kv(503, errors.UNAVAILABLE, f"schema is at version {LATEST + 1}"):
            await store.get_setting("x")
    finally:
        await store.close()


async def test_unreachable_database_is_a_clear_error_without_the_password() -> None:
    url = "postgresql://pullkv:sekret@127.0.0.1:1/nowhere?connect_timeout=2"
    store = PostgresStore(url)
    try:
        with pytest.raises(errors.KVError) as caught:
            await store.get("a" * 32, "k", 0)
        assert caught.value.status == 503
        assert "127.0.0.1:1" in caught.value.message
        assert "sekret" not in caught.value.message
    finally:
        await store.close()
    assert redact_url(url) == "postgresql://pullkv:***@127.0.0.1:1/nowhere?connect_timeout=2"


async def test_writer_and_readers_reconnect_after_losing_their_connections(
    store: PostgresStore, url: str
) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("before")])
    writer_conn = store._writer._conn
    assert writer_conn is not None
    (reader_row,) = await store._rows("SELECT pg_backend_pid()")
    pids = [writer_conn.info.backend_pid, int(reader_row[0])]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
    # Nothing was committed when the writer found its connection dead, so it ran the group
    # again on a new one; the pool replaced the reader's. Nobody saw an error.
    for i in range(3):
        await store.put(ns, [w(f"after{i}")])
    assert await store.get(ns, "after2", 0) is not None
    assert writer_conn.closed and store._writer._conn is not writer_conn


async def test_writer_sessions_are_durable(store: PostgresStore) -> None:
    ns = await make_ns(store)

    async def job(conn: psycopg.AsyncConnection[tuple[object, ...]], _: object) -> object:
        cur = await conn.execute("SHOW synchronous_commit")
        row = await cur.fetchone()
        assert row is not None
        return row[0]

    await store.put(ns, [w("k")])
    assert await store._writer.submit(job) == "on"


async def test_conflicting_writes_in_one_group_each_get_their_answer(
    store: PostgresStore, url: str
) -> None:
    ns = await make_ns(store)
    async with HeldClock(url):
        held = asyncio.ensure_future(store.put(ns, [w("held")]))
        await asyncio.sleep(0.2)
        same_title = [
            asyncio.ensure_future(
                store.create_namespace(NamespaceRecord(f"{i:032x}", ACCOUNT, "same"), 100)
            )
            for i in range(1, 4)
        ]
        deletes = [
            asyncio.ensure_future(store.delete(ns, ["held"])),
            asyncio.ensure_future(store.delete("e" * 32, ["x"])),
        ]
        await asyncio.sleep(0.1)
    await held
    created = await asyncio.gather(*same_title, return_exceptions=True)
    assert sum(isinstance(c, NamespaceRecord) for c in created) == 1
    assert all(
        isinstance(c, errors.KVError) and c.code == errors.DUPLICATE_TITLE
        for c in created
        if not isinstance(c, NamespaceRecord)
    )
    deleted, missing = await asyncio.gather(*deletes, return_exceptions=True)
    assert isinstance(deleted, int)
    assert isinstance(missing, errors.KVError) and missing.status == 404
    assert await store.get(ns, "held", 0) is None


async def test_concurrent_point_reads_share_queries(store: PostgresStore) -> None:
    a, b = await make_ns(store, "a"), await make_ns(store, "b")
    await store.put(a, [w(f"k{i}", f"a{i}".encode()) for i in range(50)])
    await store.put(b, [w(f"k{i}", f"b{i}".encode()) for i in range(0, 50, 2)])
    await store.put(a, [SealedWrite("expired", b"x", None, 100), SealedWrite("é", b"e", b"m", 900)])
    queries = 0
    rows = store._point_reads._rows

    async def counting(query: str, params: Sequence[Any]) -> list[TupleRow]:
        nonlocal queries
        queries += 1
        return await rows(query, params)

    store._point_reads._rows = counting
    asks = [(ns, f"k{i}") for i in range(60) for ns in (a, b)] + [(a, "expired"), (a, "é")]
    found = await asyncio.gather(*(store.get(ns, key, 200) for ns, key in asks))
    assert queries < len(asks) / 4
    for (ns, key), entry in zip(asks, found, strict=True):
        index = int(key[1:]) if key.startswith("k") else -1
        if key == "é":
            assert entry is not None and (entry.value, entry.metadata) == (b"e", b"m")
        elif key == "expired" or index >= 50 or (ns == b and index % 2):
            assert entry is None, key
        else:
            assert entry is not None and entry.key == key
            assert entry.value == f"{'a' if ns == a else 'b'}{index}".encode()


async def test_a_failed_shared_read_fails_every_reader_in_it() -> None:
    from pullkv.store.postgres import _PointReads

    async def broken(query: str, params: Sequence[Any]) -> list[TupleRow]:
        await asyncio.sleep(0.01)
        raise errors.store_unavailable("database read failed (test)")

    reads = _PointReads(broken)
    results = await asyncio.gather(
        *(reads.get("a" * 32, b"k%d" % i, 0) for i in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, errors.KVError) and r.status == 503 for r in results)
    assert reads._queries == 0 and not reads._waiting


# The change feed: one sequence for every origin on the database, in commit order.
async def test_two_stores_writing_at_once_make_one_contiguous_sequence(url: str) -> None:
    a, b = PostgresStore(url), PostgresStore(url)
    watcher = PostgresStore(url)
    try:
        ns = await make_ns(a)
        done = asyncio.Event()
        seen: list[ChangeRecord] = []

        async def watch() -> None:
            # A reader never sees a record before every record below it.
            while True:
                finished = done.is_set()
                page = await watcher.changes_after(seen[-1].seq if seen else 0, 1000)
                assert [r.seq for r in page] == list(
                    range(len(seen) + 1, len(seen) + 1 + len(page))
                )
                seen.extend(page)
                if finished and not page:
                    return
                await asyncio.sleep(0.001)

        acked: dict[str, int] = {}

        async def writer(store: PostgresStore, name: str) -> None:
            # Each origin writes one key after another from several tasks, so the two
            # origins' small groups alternate on the clock.
            for i in range(25):
                key = f"{name}{i:02}"
                (acked[key],) = await store.put(ns, [w(key)])

        watching = asyncio.ensure_future(watch())
        before = a.commits + b.commits
        await asyncio.gather(
            *(writer(s, f"{n}{t}-") for t in range(8) for s, n in ((a, "a"), (b, "b")))
        )
        done.set()
        await watching
        assert a.commits + b.commits - before > 10  # the origins took turns with the clock
        assert [r.seq for r in seen] == list(range(1, 401))
        versions = [r.version for r in seen]
        assert versions == sorted(versions) and len(set(versions)) == 400
        assert {r.key: r.version for r in seen} == acked
        assert await b.change_bounds() == (0, 400)
    finally:
        for store in (a, b, watcher):
            await store.close()


async def test_rated_writes_record_only_the_keys_they_wrote(store: PostgresStore) -> None:
    ns = await make_ns(store)
    long = 60.0
    first = await store.put_rated(ns, [w("a"), w("b")], long)
    second = await store.put_rated(ns, [w("a"), w("c"), w("d")], long)
    assert second.refused == ["a"]
    deleted = await store.delete_rated(ns, ["e", "b", "f"], long)
    assert deleted.refused == ["b"]
    refused = await store.put_rated(ns, [w("e")], long)
    assert refused.refused == ["e"]
    records = await store.changes_after(0, 100)
    assert [(r.seq, r.key, r.version, r.deleted) for r in records] == [
        (1, "a", first.versions["a"], False),
        (2, "b", first.versions["b"], False),
        (3, "c", second.versions["c"], False),
        (4, "d", second.versions["d"], False),
        (5, "e", deleted.versions["e"], True),
        (6, "f", deleted.versions["f"], True),
    ]
    assert {(r.account_id, r.namespace_id) for r in records} == {(ACCOUNT, ns)}
    with raises_kv(404):
        await store.put_rated("f" * 32, [w("lost")], long)
    (after,) = await store.put(ns, [w("g")])
    assert await store.changes_after(6, 10) == [ChangeRecord(7, ACCOUNT, ns, "g", after, False)]


async def test_migration_to_the_change_feed_keeps_the_data(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database at schema 2, written by the pullkv before the change feed.
    with monkeypatch.context() as old:
        old.setattr(pg_schema, "MIGRATIONS", MIGRATIONS[:2])
        old.setattr(pg_schema, "LATEST", 2)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert [m.version for m in await migrate(conn)] == [1, 2]
            await conn.execute(
                "INSERT INTO namespaces (id, account_id, title) VALUES (%s, %s, 'old')",
                ("a" * 32, ACCOUNT),
            )
            await conn.execute(
                "INSERT INTO entries (namespace_id, key, value, version) "
                "VALUES (%s, 'k', 'sealed', 5000)",
                ("a" * 32,),
            )
            await conn.execute("UPDATE version_clock SET version = 5000")
    store = PostgresStore(url)
    try:
        entry = await store.get("a" * 32, "k", 0)
        assert entry is not None and (entry.value, entry.version) == (b"sealed", 5000)
        assert await store.change_bounds() == (0, 0)
        (version,) = await store.put("a" * 32, [w("k2")])
        assert version > 5000
        assert await store.changes_after(0, 10) == [
            ChangeRecord(1, ACCOUNT, "a" * 32, "k2", version, False)
        ]
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT max(version) FROM schema_migrations")
        assert await cur.fetchone() == (LATEST,)
