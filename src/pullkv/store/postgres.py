"""The PostgreSQL engine: the central store once one machine is outgrown.

It keeps the SQLite engine's semantics exactly: keys are ``bytea`` (so order is UTF-8 byte
order, never the database collation), prefixes become byte ranges, expired entries are
filtered in every read, bulk writes are all or nothing, and rows hold only ciphertext.

Writes: group commit. One writer task per store owns one connection. Writes from any number
of coroutines queue while the previous transaction commits; the writer then applies the whole
queue in one transaction and one COMMIT (``synchronous_commit=on``: one WAL flush for the
group). Acknowledgements go out only after the COMMIT has returned, so an acknowledged write
survives kill -9 of the origin (and of the database server). The group's statements go out
in pipeline mode, without waiting for each answer: three round trips for a group however
large, where waiting would cost one per statement. A write whose answer decides its result
(was anything written? which version?) reads it after the pipeline has synced
(``_Deferred``). If any write of the group fails, the transaction is rolled back and the
group runs again without the pipeline and with a SAVEPOINT around each write, as the SQLite
writer does, so one failure spoils no other. Savepoints only on that rare path, because every
savepoint that writes takes a subtransaction id, and more than 64 of them in one transaction
slow every other session's visibility checks. If the connection is lost before COMMIT was
sent, nothing was written and the group runs once more on a new connection.

Versions: several origins may share one database, so the version clock lives in it. The
single row of ``version_clock`` holds the highest version handed out. Each write transaction
begins by locking that row (``SELECT ... FOR UPDATE``), hands out versions in process with
the hybrid-clock rule of :mod:`pullkv.versioning` (``max(last + 1, now_us)``) for every write
of the group, and stores the last one back before COMMIT. The lock is held until COMMIT, so
write transactions of all origins commit one after another in version order. Hence a later
write always has the higher version, whichever origin made it; the row a key ends with is the
write with the highest version (last writer wins, the same answer on every origin); and a
delete is never undone by a slower write carrying an older version.

The alternatives were weighed. A sequence (``nextval``) is not transactional: two origins
could commit in the opposite order of their versions, so an upsert would need a version
condition and deletes would need tombstones to keep an older write from coming back. An
``UPDATE version_clock ... RETURNING`` per write takes the same lock but costs a round trip
per version (10,000 of them for one bulk put). The price of the lock is that write
transactions never overlap, across origins as in one: the database commits one group at a
time, as SQLite's one writer does, and the groups grow under load.

The change feed: every put, delete and namespace deletion inserts its records into
``changes`` in the statement that writes the data, numbered from the feed's high-water mark
(``_FEED_HIGH``): the ``feed_seq`` counter of the clock row (the last number committed), or the
newest record above it that this transaction has added. Numbers are handed out under the
clock's lock, so they follow commit order across origins, and a record becomes visible only
after every record below it; they are made in SQL, not in the writer's memory like versions,
because how many records a write makes (a conditional write that fails its condition, the keys
a rated write claims) is known only to the database, and asking would cost a round trip per
write. A write rolled back (its savepoint or the group) takes its numbers with it, so there
are no gaps; ``feed_seq`` is stored back before COMMIT, and a prune raises it first, so numbers
are never reused even when every record has been pruned.

Reads take a connection from a pool (autocommit: each read is one statement and one
snapshot) and ask for binary results, so values arrive as bytes without hex decoding. Under
load, concurrent point reads share queries (``_PointReads``): an origin's CPU, not the
database, is what limits its reads, and one query for thirty keys costs it little more than
one for one key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pullkv import errors
from pullkv.store.base import NamespaceOrder, NamespaceStats, RatedWrite
from pullkv.store.keyrange import live_keys_query
from pullkv.store.pg_schema import migrate
from pullkv.types import (
    ChangeRecord,
    ListedKey,
    NamespaceRecord,
    SealedEntry,
    SealedWrite,
    TokenRecord,
    WriteCondition,
)
from pullkv.versioning import next_version

T = TypeVar("T")
Conn = psycopg.AsyncConnection[TupleRow]

MAX_GROUP = 4096
POOL_SIZE = 10
# Point reads: at most this many queries in flight; reads that arrive meanwhile wait and then
# go together in one query (up to MAX_READ_GROUP keys).
READ_QUERIES = 4
MAX_READ_GROUP = 256
CONNECT_TIMEOUT = 10.0
# A writer's transaction is never idle for long; if its origin vanishes without closing the
# connection (a network partition), the server ends the transaction and frees the clock row.
_WRITER_SETUP = b"SET synchronous_commit TO on; SET idle_in_transaction_session_timeout TO '60s'"


def redact_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(slots=True)
class _Job:
    fn: Callable[[Conn, _Writer], Awaitable[Any]]
    future: asyncio.Future[Any]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the waiter was cancelled; the write happened all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Retry(Exception):
    """A write failed in a group run without savepoints: run the group again, carefully."""


@dataclass(frozen=True, slots=True)
class _Deferred(Generic[T]):
    """A job's result to be read once the group's pipeline has its answers: the job sent its
    statements without waiting, and ``finish`` reads their results (and may raise)."""

    finish: Callable[[], Awaitable[T]]


class _Writer:
    """The single writer task: applies queued jobs in groups, one durable commit per group."""

    def __init__(self, conninfo: str, group_commit: bool, clock: Callable[[], float]) -> None:
        self._conninfo = conninfo
        self._group_commit = group_commit
        self._clock = clock
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: Conn | None = None
        self._stopping = False
        self._commit_sent = False
        self.last_version = 0
        self.commits = 0

    def allocate_version(self) -> int:
        """The next version; called by jobs, inside the transaction that holds the clock."""
        self.last_version = next_version(self.last_version, self._clock())
        return self.last_version

    def now(self) -> int:
        """The store clock's time in whole seconds, for expiry checks inside jobs."""
        return int(self._clock())

    def reach_version(self, version: int) -> None:
        """Make every later version larger than ``version`` (imports keep their versions)."""
        self.last_version = max(self.last_version, version)

    async def submit(self, fn: Callable[[Conn, _Writer], Awaitable[T | _Deferred[T]]]) -> T:
        if self._stopping:
            raise errors.store_unavailable("the store is shutting down")
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="pullkv-postgres-writer")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(fn, future))
        return await future

    async def stop(self) -> None:
        """Apply what is queued, then stop and close the connection."""
        self._stopping = True
        if self._queue is not None and self._task is not None:
            self._queue.put_nowait(None)
            await self._task
        await self._drop_connection()

    async def _run(self) -> None:
        assert self._queue is not None
        try:
            while True:
                job = await self._queue.get()
                if job is None:
                    return
                batch = [job]
                stop_after = False
                while self._group_commit and len(batch) < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if nxt is None:
                        stop_after = True
                        break
                    batch.append(nxt)
                await self._apply(batch)
                if stop_after:
                    return
        finally:
            # Whatever stopped the loop, nobody may wait forever for an answer.
            gone = errors.store_unavailable("the store is shutting down")
            while not self._queue.empty():
                left = self._queue.get_nowait()
                if left is not None:
                    _settle(left.future, None, gone)

    async def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
            )
            await self._conn.execute(_WRITER_SETUP)
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def _apply(self, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        for attempt in (1, 2):
            self._commit_sent = False
            try:
                try:
                    outcomes = await self._transaction(batch, careful=False)
                except _Retry:
                    outcomes = await self._transaction(batch, careful=True)
                break
            except Exception as exc:
                # The connection may be broken: continue on a new one. If COMMIT was never
                # sent nothing was written, so the group may safely run once more (a database
                # restart or failover then costs a reconnect, not an error); after COMMIT was
                # sent the outcome is unknown, and the writers must be told so.
                await self._drop_connection()
                if attempt == 1 and not self._commit_sent and isinstance(exc, psycopg.Error):
                    continue
                failure = (
                    exc
                    if isinstance(exc, errors.KVError)
                    else errors.store_unavailable(f"commit failed ({exc})")
                )
                outcomes = [(job, None, failure) for job in batch]
        for job, result, error in outcomes:
            _settle(job.future, result, error)

    async def _transaction(
        self, batch: list[_Job], *, careful: bool
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        conn = await self._connection()
        try:
            if careful:
                outcomes = await self._careful(conn, batch)
            else:
                outcomes = await self._pipelined(conn, batch)
            self._commit_sent = True
            await conn.execute("COMMIT")
        except BaseException as exc:
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.execute("ROLLBACK")
            if not careful and _is_write_failure(conn, exc):
                raise _Retry from exc
            raise
        self.commits += 1
        return outcomes

    async def _lock_clock(self, conn: Conn) -> None:
        await conn.execute("BEGIN")
        cur = await conn.execute("SELECT version FROM version_clock WHERE id = 1 FOR UPDATE")
        row = await cur.fetchone()
        if row is None:
            raise errors.store_unavailable("the version_clock row is missing")
        self.reach_version(int(row[0]))

    async def _store_clock(self, conn: Conn, start: int) -> None:
        # Every write that records changes takes a version, so the feed's counter is brought
        # up to date here too.
        if self.last_version != start:
            await conn.execute(
                f"UPDATE version_clock SET version = %s, feed_seq = {_FEED_HIGH} WHERE id = 1",
                (self.last_version,),
            )

    async def _pipelined(
        self, conn: Conn, batch: list[_Job]
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """The common case: every statement of the group sent without waiting for answers
        (three round trips for the group); any failure means run it again carefully."""
        results = []
        async with conn.pipeline():
            await self._lock_clock(conn)
            start = self.last_version
            for job in batch:
                results.append(await job.fn(conn, self))
            await self._store_clock(conn, start)
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        for job, result in zip(batch, results, strict=True):
            if isinstance(result, _Deferred):
                result = await result.finish()
            outcomes.append((job, result, None))
        return outcomes

    async def _careful(
        self, conn: Conn, batch: list[_Job]
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """After a failure: each write in its own savepoint, its failure handed to its caller."""
        await self._lock_clock(conn)
        start = self.last_version
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        for job in batch:
            await conn.execute("SAVEPOINT job")
            try:
                result = await job.fn(conn, self)
                if isinstance(result, _Deferred):
                    result = await result.finish()
            except Exception as exc:
                if not _is_write_failure(conn, exc):
                    raise
                await conn.execute("ROLLBACK TO SAVEPOINT job")
                outcomes.append((job, None, exc))
                continue
            await conn.execute("RELEASE SAVEPOINT job")
            outcomes.append((job, result, None))
        await self._store_clock(conn, start)
        return outcomes


async def _done(value: T) -> T:
    """A result already known once the pipeline has answered (for ``_Deferred``)."""
    return value


def _is_write_failure(conn: Conn, exc: BaseException) -> bool:
    """Whether ``exc`` is one write's own failure (a constraint, a missing namespace), as
    opposed to the connection's or the store's, which fails the whole group."""
    if isinstance(exc, _Retry | asyncio.CancelledError):
        return False
    if isinstance(exc, errors.KVError):
        return exc.status < 500
    if isinstance(exc, psycopg.Error):
        return not (conn.closed or conn.broken)
    return isinstance(exc, Exception)


_PointRead = tuple[str, bytes, int, asyncio.Future[TupleRow | None]]


class _PointReads:
    """Point reads that share queries under load, much as writes share commits.

    A read goes out at once while fewer than READ_QUERIES point-read queries are in flight;
    otherwise it waits, and the next free query takes every read waiting (one ``unnest``
    join). Idle, nothing changes; busy, dozens of reads cost one round trip, one pool
    checkout and one wakeup instead of dozens, which is what an origin's CPU goes on.
    """

    def __init__(self, rows: Callable[[str, Sequence[Any]], Awaitable[list[TupleRow]]]) -> None:
        self._rows = rows
        self._waiting: list[_PointRead] = []
        self._queries = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, namespace_id: str, key: bytes, now: int) -> TupleRow | None:
        future: asyncio.Future[TupleRow | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((namespace_id, key, now, future))
        if self._queries < READ_QUERIES:
            self._queries += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)  # a reference, so the task is not collected mid-flight
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[:MAX_READ_GROUP]
                del self._waiting[:MAX_READ_GROUP]
                try:
                    found = await self._fetch(group)
                except BaseException as exc:  # every reader in the group gets the answer
                    _fail(group, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (*_, future), row in zip(group, found, strict=True):
                    if not future.done():
                        future.set_result(row)
        finally:
            self._queries -= 1
            if self._queries == 0 and self._waiting:  # cancelled (shutting down)
                waiting, self._waiting = self._waiting, []
                _fail(waiting, errors.store_unavailable("the store is shutting down"))

    async def _fetch(self, group: list[_PointRead]) -> list[TupleRow | None]:
        if len(group) == 1:
            namespace_id, key, now, _ = group[0]
            rows = await self._rows(
                "SELECT value, metadata, expiration, version FROM entries WHERE "
                "namespace_id = %s AND key = %s AND (expiration IS NULL OR expiration > %s)",
                (namespace_id, key, now),
            )
            return [rows[0] if rows else None]
        rows = await self._rows(
            "SELECT e.value, e.metadata, e.expiration, e.version, u.i "
            "FROM unnest(%s::text[], %s::bytea[], %s::bigint[]) WITH ORDINALITY "
            "AS u(ns, k, now, i) JOIN entries e "
            'ON e.namespace_id = u.ns COLLATE "C" AND e.key = u.k '
            "WHERE e.expiration IS NULL OR e.expiration > u.now",
            (
                [namespace_id for namespace_id, *_ in group],
                [key for _, key, *_ in group],
                [now for _, _, now, _ in group],
            ),
        )
        found: list[TupleRow | None] = [None] * len(group)
        for row in rows:
            found[int(row[4]) - 1] = row
        return found


def _fail(reads: list[_PointRead], exc: BaseException) -> None:
    if not isinstance(exc, Exception):
        exc = errors.store_unavailable("the store is shutting down")
    for *_, future in reads:
        if not future.done():
            future.set_exception(exc)


def _row_to_token(row: TupleRow) -> TokenRecord:
    namespaces = tuple(json.loads(row[5])) if row[5] is not None else None
    return TokenRecord(
        id=row[0],
        account_id=row[1],
        name=row[2],
        salt=bytes(row[3]),
        secret_hash=bytes(row[4]),
        namespaces=namespaces,
        read_only=bool(row[6]),
        admin=bool(row[7]),
        edge=bool(row[8]),
        created_at=int(row[9]),
        revoked_at=None if row[10] is None else int(row[10]),
    )


def _entry(key: bytes, row: TupleRow) -> SealedEntry:
    return SealedEntry(
        key.decode("utf-8"),
        bytes(row[0]),
        None if row[1] is None else bytes(row[1]),
        None if row[2] is None else int(row[2]),
        int(row[3]),
    )


_NAMESPACE_COLUMNS = "id, account_id, title, jurisdiction"
_TOKEN_COLUMNS = (
    "id, account_id, name, salt, secret_hash, namespaces, read_only, admin, edge, created_at, "
    "revoked_at"
)
# The claim of a rated write, over the keys ``u.k`` (parameters: namespace id, interval in
# seconds): a key is claimed if its namespace exists and no write of it is due later than now
# on the database's clock; a claimed key is not due again before now plus the interval.
_CLAIM_KEYS = (
    "claimed AS (INSERT INTO key_writes AS w (namespace_id, key, not_before) "
    "SELECT %s::text, u.k, clock_timestamp() + %s * interval '1 second' "
    "FROM u WHERE EXISTS (SELECT 1 FROM ns) "
    "ON CONFLICT (namespace_id, key) DO UPDATE SET not_before = excluded.not_before "
    "WHERE w.not_before <= clock_timestamp() RETURNING w.key)"
)
# The answer: whether the namespace exists, and the keys claimed.
_CLAIMED = "SELECT (SELECT count(*) FROM ns), (SELECT array_agg(key) FROM claimed)"


async def _claimed(cur: psycopg.AsyncCursor[TupleRow], operation: str) -> set[bytes]:
    """The keys a rated write claimed; 404 if its namespace does not exist."""
    row = await cur.fetchone()
    if row is None or int(row[0]) == 0:
        raise errors.namespace_not_found(operation)
    return {bytes(k) for k in row[1] or ()}


# The change feed's high-water mark inside a write transaction (which holds the clock row's
# lock, so nobody else adds records meanwhile): the last number committed or raised by a
# prune, or the newest record above it that this transaction has added. A statement reads it
# once, before its own records, which take the numbers after it in order.
_FEED_HIGH = (
    "(SELECT coalesce((SELECT max(seq) FROM changes WHERE seq > f.feed_seq), f.feed_seq) "
    "FROM version_clock f WHERE f.id = 1)"
)
_RECORD = "INSERT INTO changes (seq, account_id, namespace_id, key, version, deleted) "

_UPSERT_ENTRY = (
    " ON CONFLICT (namespace_id, key) DO UPDATE SET value = excluded.value, "
    "metadata = excluded.metadata, expiration = excluded.expiration, version = excluded.version"
)


# A conditional write's view of its key (parameters: namespace id, key, now): ``cur`` holds
# the live version, or no row if the key is absent or expired.
_LIVE_VERSION = (
    "cur AS (SELECT version FROM entries WHERE namespace_id = %s AND key = %s "
    "AND (expiration IS NULL OR expiration > %s))"
)


def _condition_sql(condition: WriteCondition) -> tuple[str, tuple[int, ...]]:
    """The SQL test of a write condition over ``cur``, and its parameters."""
    if condition.absent:
        return "NOT EXISTS (SELECT 1 FROM cur)", ()
    assert condition.version is not None  # WriteCondition: a version when not absent
    return "EXISTS (SELECT 1 FROM cur WHERE version = %s)", (condition.version,)


@dataclass(frozen=True, slots=True)
class _Checked:
    """A conditional write's outcome: the key's live version before it, and its version."""

    current: int | None
    version: int


def _condition_outcome(row: TupleRow | None, operation: str, version: int) -> _Checked:
    """The outcome from the statement's answer; 404 if the namespace does not exist."""
    if row is None or int(row[0]) == 0:
        raise errors.namespace_not_found(operation)
    return _Checked(None if row[1] is None else int(row[1]), version)


class PostgresStore:
    """The PostgreSQL store engine (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        group_commit: bool = True,
        clock: Callable[[], float] = time.time,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._opening: asyncio.Lock | None = None
        self._writer = _Writer(url, group_commit, clock)
        self._point_reads = _PointReads(self._rows)

    @property
    def commits(self) -> int:
        """How many durable commits the writer has made (for tests and metrics)."""
        return self._writer.commits

    async def _open(self) -> AsyncConnectionPool[Conn]:
        """Migrate the schema and open the pool, once, on first use."""
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self._pool_size,
                    open=False,
                    kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)},
                    timeout=CONNECT_TIMEOUT,
                    name="pullkv-readers",
                )
                try:
                    async with await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
                    ) as conn:
                        await migrate(conn)
                    await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
                except psycopg.Error as exc:
                    with contextlib.suppress(Exception):
                        await pool.close()
                    raise errors.store_unavailable(
                        f"cannot use PostgreSQL at {redact_url(self.url)}: {exc}"
                    ) from None
                self._pool = pool
        return self._pool

    async def _rows(self, query: str, params: Sequence[Any] = ()) -> list[TupleRow]:
        pool = await self._open()
        for attempt in (1, 2):
            try:
                async with pool.connection() as conn:
                    cur = await conn.execute(query, params, binary=True)
                    return await cur.fetchall()
            except psycopg.OperationalError as exc:
                # The pool drops a broken connection when it comes back; a read is safe to
                # repeat once on another (after a database restart, say).
                if attempt == 2 or isinstance(exc, PoolTimeout):
                    raise errors.store_unavailable(f"database read failed ({exc})") from None
        raise AssertionError("unreachable")

    async def _one(self, query: str, params: Sequence[Any] = ()) -> TupleRow | None:
        rows = await self._rows(query, params)
        return rows[0] if rows else None

    async def _write(self, fn: Callable[[Conn, _Writer], Awaitable[T | _Deferred[T]]]) -> T:
        await self._open()
        return await self._writer.submit(fn)

    async def close(self) -> None:
        """Apply pending writes, stop the writer and close every connection."""
        await self._writer.stop()
        if self._pool is not None:
            await self._pool.close()

    # Settings.
    async def get_setting(self, name: str) -> str | None:
        """A setting's value, or None."""
        row = await self._one("SELECT value FROM settings WHERE name = %s", (name,))
        return None if row is None else str(row[0])

    async def setdefault_setting(self, name: str, value: str) -> str:
        """Store ``value`` unless the setting exists; return the value in force."""

        async def job(conn: Conn, _: _Writer) -> str:
            await conn.execute(
                "INSERT INTO settings (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (name, value),
            )
            cur = await conn.execute("SELECT value FROM settings WHERE name = %s", (name,))
            row = await cur.fetchone()
            assert row is not None
            return str(row[0])

        return await self._write(job)

    async def set_setting(self, name: str, value: str) -> None:
        """Store a setting, replacing any value."""

        async def job(conn: Conn, _: _Writer) -> None:
            await conn.execute(
                "INSERT INTO settings (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

        await self._write(job)

    async def list_settings(self) -> dict[str, str]:
        """Every setting, without the engine's own bookkeeping."""
        rows = await self._rows("SELECT name, value FROM settings ORDER BY name")
        return {str(r[0]): str(r[1]) for r in rows}

    # Namespaces.
    async def create_namespace(
        self, namespace: NamespaceRecord, max_per_account: int
    ) -> NamespaceRecord:
        """Create; KVError for a duplicate title or too many namespaces."""

        async def job(conn: Conn, _: _Writer) -> NamespaceRecord:
            cur = await conn.execute(
                "SELECT count(*) FROM namespaces WHERE account_id = %s", (namespace.account_id,)
            )
            row = await cur.fetchone()
            if row is not None and int(row[0]) >= max_per_account:
                raise errors.too_many_namespaces(max_per_account)
            try:
                await conn.execute(
                    "INSERT INTO namespaces (id, account_id, title, jurisdiction) "
                    "VALUES (%s, %s, %s, %s)",
                    (namespace.id, namespace.account_id, namespace.title, namespace.jurisdiction),
                )
            except pg_errors.UniqueViolation:
                raise errors.duplicate_title(namespace.title) from None
            return namespace

        return await self._write(job)

    async def get_namespace(self, namespace_id: str) -> NamespaceRecord | None:
        """The namespace with this id, in any account."""
        row = await self._one(
            f"SELECT {_NAMESPACE_COLUMNS} FROM namespaces WHERE id = %s", (namespace_id,)
        )
        return None if row is None else NamespaceRecord(*row)

    async def list_namespaces(
        self,
        account_id: str,
        order: NamespaceOrder,
        descending: bool,
        offset: int,
        limit: int,
        only: Sequence[str] | None = None,
    ) -> tuple[list[NamespaceRecord], int]:
        """A page of an account's namespaces and the account's total (restricted to ``only``)."""
        column = "title" if order == "title" else "id"
        direction = "DESC" if descending else "ASC"
        where = "account_id = %s"
        params: list[Any] = [account_id]
        if only is not None:
            where += " AND id = ANY(%s::text[])"
            params.append(list(only))
        # One statement, so the page and the total come from one snapshot.
        rows = await self._rows(
            f"SELECT {_NAMESPACE_COLUMNS}, count(*) OVER () FROM namespaces WHERE {where} "
            f"ORDER BY {column} {direction}, id {direction} LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        if rows:
            return [NamespaceRecord(*r[:4]) for r in rows], int(rows[0][4])
        if offset == 0:
            return [], 0
        row = await self._one(f"SELECT count(*) FROM namespaces WHERE {where}", params)
        return [], 0 if row is None else int(row[0])

    async def rename_namespace(self, namespace_id: str, title: str) -> NamespaceRecord:
        """Change a title; KVError if it is taken or the namespace is gone."""

        async def job(conn: Conn, _: _Writer) -> NamespaceRecord:
            try:
                cur = await conn.execute(
                    "UPDATE namespaces SET title = %s WHERE id = %s "
                    "RETURNING account_id, jurisdiction",
                    (title, namespace_id),
                )
            except pg_errors.UniqueViolation:
                raise errors.duplicate_title(title) from None
            row = await cur.fetchone()
            if row is None:
                raise errors.namespace_not_found("rename namespace")
            return NamespaceRecord(namespace_id, row[0], title, row[1])

        return await self._write(job)

    async def delete_namespace(self, namespace_id: str) -> bool:
        """Delete a namespace and every key in it; False if it did not exist."""

        async def job(conn: Conn, writer: _Writer) -> _Deferred[bool]:
            cur = await conn.execute(
                "WITH gone AS (DELETE FROM namespaces WHERE id = %s RETURNING account_id), "
                f"rec AS ({_RECORD}SELECT {_FEED_HIGH} + 1, account_id, %s, NULL, %s, true "
                "FROM gone) SELECT count(*) FROM gone",
                (namespace_id, namespace_id, writer.allocate_version()),
            )
            await conn.execute("DELETE FROM entries WHERE namespace_id = %s", (namespace_id,))

            async def finish() -> bool:
                row = await cur.fetchone()
                return row is not None and int(row[0]) > 0

            return _Deferred(finish)

        return await self._write(job)

    # Keys.
    async def get(self, namespace_id: str, key: str, now: int) -> SealedEntry | None:
        """One live entry, or None."""
        raw = key.encode("utf-8")
        row = await self._point_reads.get(namespace_id, raw, now)
        return None if row is None else _entry(raw, row)

    async def get_many(
        self, namespace_id: str, keys: Sequence[str], now: int
    ) -> dict[str, SealedEntry]:
        """The live entries among ``keys``; missing ones are absent from the result."""
        if not keys:
            return {}
        unique = [k.encode("utf-8") for k in dict.fromkeys(keys)]
        rows = await self._rows(
            "SELECT value, metadata, expiration, version, key FROM entries "
            "WHERE namespace_id = %s AND key = ANY(%s::bytea[]) "
            "AND (expiration IS NULL OR expiration > %s)",
            (namespace_id, unique, now),
        )
        found: dict[str, SealedEntry] = {}
        for row in rows:
            entry = _entry(bytes(row[4]), row)
            found[entry.key] = entry
        return found

    async def put(self, namespace_id: str, writes: Sequence[SealedWrite]) -> list[int]:
        """Write all or none, durably; return each write's version. A conditional write
        (``SealedWrite.condition``) must be the only one: 412 if its condition fails."""
        if any(w.condition is not None for w in writes):
            if len(writes) != 1:
                raise ValueError("a conditional write is a single-key write")
            return [await self._put_conditional(namespace_id, writes[0])]

        async def job(conn: Conn, writer: _Writer) -> _Deferred[list[int]]:
            versions = [writer.allocate_version() for _ in writes]
            # A key written twice in one put ends as its last write, as if applied in order
            # (one INSERT may not touch a row twice).
            last = {w.key: i for i, w in enumerate(writes)}
            chosen = sorted(last.values())
            # Every write is recorded, a key written twice included, as SQLite does.
            ns = "WITH ns AS (SELECT account_id FROM namespaces WHERE id = %s), "
            exists = "WHERE EXISTS (SELECT 1 FROM ns)"
            if len(writes) == 1:
                write = writes[0]
                raw = write.key.encode("utf-8")
                cur = await conn.execute(
                    f"{ns}rec AS ({_RECORD}SELECT {_FEED_HIGH} + 1, account_id, %s, %s::bytea, "
                    "%s::bigint, false FROM ns) "
                    "INSERT INTO entries (namespace_id, key, value, metadata, expiration, version) "
                    "SELECT %s::text, %s::bytea, %s::bytea, %s::bytea, %s::bigint, %s::bigint "
                    f"{exists}{_UPSERT_ENTRY}",
                    (
                        namespace_id,
                        namespace_id,
                        raw,
                        versions[0],
                        namespace_id,
                        raw,
                        write.value,
                        write.metadata,
                        write.expiration,
                        versions[0],
                    ),
                )
            else:
                cur = await conn.execute(
                    f"{ns}rec AS ({_RECORD}SELECT {_FEED_HIGH} + r.i, ns.account_id, %s, r.k, "
                    "r.ver, false FROM ns, unnest(%s::bytea[], %s::bigint[]) WITH ORDINALITY "
                    "AS r(k, ver, i)) "
                    "INSERT INTO entries (namespace_id, key, value, metadata, expiration, version) "
                    "SELECT %s::text, k, v, m, e, ver FROM unnest(%s::bytea[], %s::bytea[], "
                    "%s::bytea[], %s::bigint[], %s::bigint[]) AS u(k, v, m, e, ver) "
                    f"{exists}{_UPSERT_ENTRY}",
                    (
                        namespace_id,
                        namespace_id,
                        [w.key.encode("utf-8") for w in writes],
                        versions,
                        namespace_id,
                        [writes[i].key.encode("utf-8") for i in chosen],
                        [writes[i].value for i in chosen],
                        [writes[i].metadata for i in chosen],
                        [writes[i].expiration for i in chosen],
                        [versions[i] for i in chosen],
                    ),
                )

            async def finish() -> list[int]:
                if chosen and cur.rowcount == 0:  # nothing was written: no such namespace
                    raise errors.namespace_not_found("put")
                return versions

            return _Deferred(finish)

        return await self._write(job)

    async def delete(
        self, namespace_id: str, keys: Sequence[str], condition: WriteCondition | None = None
    ) -> int:
        """Delete keys (missing ones are fine), durably; return the version of the delete.
        A conditional delete names one key: 412 if its condition fails."""
        if condition is not None:
            if len(keys) != 1:
                raise ValueError("a conditional delete is a single-key delete")
            return await self._delete_conditional(namespace_id, keys[0], condition)

        async def job(conn: Conn, writer: _Writer) -> _Deferred[int]:
            version = writer.allocate_version()
            raw = [k.encode("utf-8") for k in keys]
            # One record per key named, deleted or not, all at the delete's version.
            cur = await conn.execute(
                "WITH ns AS (SELECT account_id FROM namespaces WHERE id = %s), "
                "gone AS (DELETE FROM entries WHERE namespace_id = %s "
                "AND key = ANY(%s::bytea[]) AND EXISTS (SELECT 1 FROM ns)), "
                f"rec AS ({_RECORD}SELECT {_FEED_HIGH} + r.i, ns.account_id, %s, r.k, %s, true "
                "FROM ns, unnest(%s::bytea[]) WITH ORDINALITY AS r(k, i)) "
                "SELECT count(*) FROM ns",
                (namespace_id, namespace_id, raw, namespace_id, version, raw),
            )

            async def finish() -> int:
                row = await cur.fetchone()
                if row is None or int(row[0]) == 0:  # nothing was deleted: no such namespace
                    raise errors.namespace_not_found("delete")
                return version

            return _Deferred(finish)

        return await self._write(job)

    # Conditional writes: one statement reads the key's live version and writes only if the
    # condition holds. It runs in the group's transaction, which holds the version clock's
    # lock, so no write of any origin sharing the database commits between check and write;
    # a refused condition writes nothing and spoils no other write of the group.
    async def _put_conditional(self, namespace_id: str, write: SealedWrite) -> int:
        condition = write.condition
        assert condition is not None  # put() sends only conditional writes here
        raw = write.key.encode("utf-8")

        async def job(conn: Conn, writer: _Writer) -> _Checked | _Deferred[_Checked]:
            version = writer.allocate_version()
            holds, holds_params = _condition_sql(condition)
            # ``ok``: the namespace's account, if it exists and the condition holds.
            cur = await conn.execute(
                f"WITH {_LIVE_VERSION}, ok AS (SELECT account_id FROM namespaces "
                f"WHERE id = %s AND {holds}), written AS (INSERT INTO entries "
                "(namespace_id, key, value, metadata, expiration, version) "
                "SELECT %s::text, %s::bytea, %s::bytea, %s::bytea, %s::bigint, %s::bigint "
                f"WHERE EXISTS (SELECT 1 FROM ok){_UPSERT_ENTRY}), "
                f"rec AS ({_RECORD}SELECT {_FEED_HIGH} + 1, account_id, %s, %s::bytea, "
                "%s::bigint, false FROM ok) "
                "SELECT (SELECT count(*) FROM namespaces WHERE id = %s), (SELECT version FROM cur)",
                (
                    namespace_id,
                    raw,
                    writer.now(),
                    namespace_id,
                    *holds_params,
                    namespace_id,
                    raw,
                    write.value,
                    write.metadata,
                    write.expiration,
                    version,
                    namespace_id,
                    raw,
                    version,
                    namespace_id,
                ),
            )

            async def finish() -> _Checked:
                return _condition_outcome(await cur.fetchone(), "put", version)

            return _Deferred(finish)

        checked = await self._write(job)
        if not condition.holds(checked.current):
            raise errors.precondition_failed(write.key, checked.current)
        return checked.version

    async def _delete_conditional(
        self, namespace_id: str, key: str, condition: WriteCondition
    ) -> int:
        raw = key.encode("utf-8")

        async def job(conn: Conn, writer: _Writer) -> _Checked | _Deferred[_Checked]:
            version = writer.allocate_version()
            holds, holds_params = _condition_sql(condition)
            # ``ok``: the namespace's account, if it exists and the condition holds; the
            # delete is recorded then, whether or not the key was there.
            cur = await conn.execute(
                f"WITH {_LIVE_VERSION}, ok AS (SELECT account_id FROM namespaces "
                f"WHERE id = %s AND {holds}), gone AS (DELETE FROM entries "
                "WHERE namespace_id = %s AND key = %s AND EXISTS (SELECT 1 FROM ok)), "
                f"rec AS ({_RECORD}SELECT {_FEED_HIGH} + 1, account_id, %s, %s::bytea, "
                "%s::bigint, true FROM ok) "
                "SELECT (SELECT count(*) FROM namespaces WHERE id = %s), (SELECT version FROM cur)",
                (
                    namespace_id,
                    raw,
                    writer.now(),
                    namespace_id,
                    *holds_params,
                    namespace_id,
                    raw,
                    namespace_id,
                    raw,
                    version,
                    namespace_id,
                ),
            )

            async def finish() -> _Checked:
                return _condition_outcome(await cur.fetchone(), "delete", version)

            return _Deferred(finish)

        checked = await self._write(job)
        if not condition.holds(checked.current):
            raise errors.precondition_failed(key, checked.current)
        return checked.version

    # The same-key write rate: one statement claims the keys whose interval has passed in
    # ``key_writes`` and writes only those, inside the group's transaction, so a write that
    # fails (its savepoint or the group rolled back) claims nothing. The version clock's lock
    # already serialises the write transactions of every origin, so claims never race.
    async def put_rated(
        self, namespace_id: str, writes: Sequence[SealedWrite], min_interval: float
    ) -> RatedWrite:
        """Write the keys not written within ``min_interval`` seconds (by any origin sharing
        the database, on its clock), all or none, durably."""
        latest = list({w.key: w for w in writes}.values())
        if not latest:
            return RatedWrite()

        async def job(conn: Conn, writer: _Writer) -> _Deferred[RatedWrite]:
            versions = {w.key.encode("utf-8"): writer.allocate_version() for w in latest}
            columns: list[Any] = [
                list(versions),
                [w.value for w in latest],
                [w.metadata for w in latest],
                [w.expiration for w in latest],
                list(versions.values()),
            ]
            if len(latest) == 1:  # scalars: planned and run faster than unnest
                rows = "SELECT %s::bytea, %s::bytea, %s::bytea, %s::bigint, %s::bigint"
                columns = [column[0] for column in columns]
            else:
                rows = (
                    "SELECT * FROM unnest(%s::bytea[], %s::bytea[], %s::bytea[], %s::bigint[], "
                    "%s::bigint[])"
                )
            # The keys written are recorded in version order.
            cur = await conn.execute(
                "WITH ns AS (SELECT account_id FROM namespaces WHERE id = %s), "
                f"u (k, v, m, e, ver) AS ({rows}), {_CLAIM_KEYS}, "
                "written AS (INSERT INTO entries "
                "(namespace_id, key, value, metadata, expiration, version) "
                "SELECT %s::text, u.k, u.v, u.m, u.e, u.ver FROM u JOIN claimed c ON c.key = u.k"
                f"{_UPSERT_ENTRY}), rec AS ({_RECORD}SELECT {_FEED_HIGH} + row_number() OVER "
                "(ORDER BY u.ver), ns.account_id, %s, u.k, u.ver, false "
                f"FROM ns, u JOIN claimed c ON c.key = u.k) {_CLAIMED}",
                (namespace_id, *columns, namespace_id, min_interval, namespace_id, namespace_id),
            )

            async def finish() -> RatedWrite:
                claimed = await _claimed(cur, "put")
                done = [(w.key, raw) for w, raw in zip(latest, versions, strict=True)]
                return RatedWrite(
                    {key: versions[raw] for key, raw in done if raw in claimed},
                    [key for key, raw in done if raw not in claimed],
                )

            return _Deferred(finish)

        return await self._write(job)

    async def delete_rated(
        self, namespace_id: str, keys: Sequence[str], min_interval: float
    ) -> RatedWrite:
        """Delete the keys not written within ``min_interval`` seconds (by any origin sharing
        the database, on its clock), durably."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return RatedWrite()
        raw = [k.encode("utf-8") for k in unique]

        async def job(conn: Conn, writer: _Writer) -> _Deferred[RatedWrite]:
            version = writer.allocate_version()
            rows = (
                "SELECT %s::bytea, 1::bigint"
                if len(raw) == 1
                else "SELECT * FROM unnest(%s::bytea[]) WITH ORDINALITY"
            )
            # The keys deleted are recorded in the order given, all at the delete's version.
            cur = await conn.execute(
                f"WITH ns AS (SELECT account_id FROM namespaces WHERE id = %s), "
                f"u (k, i) AS ({rows}), {_CLAIM_KEYS}, gone AS (DELETE FROM entries e "
                "USING claimed c WHERE e.namespace_id = %s AND e.key = c.key), "
                f"rec AS ({_RECORD}SELECT {_FEED_HIGH} + row_number() OVER (ORDER BY u.i), "
                "ns.account_id, %s, u.k, %s::bigint, true "
                f"FROM ns, u JOIN claimed c ON c.key = u.k) {_CLAIMED}",
                (
                    namespace_id,
                    raw[0] if len(raw) == 1 else raw,
                    namespace_id,
                    min_interval,
                    namespace_id,
                    namespace_id,
                    version,
                ),
            )

            async def finish() -> RatedWrite:
                claimed = await _claimed(cur, "delete")
                return RatedWrite(
                    {k: version for k, r in zip(unique, raw, strict=True) if r in claimed},
                    [k for k, r in zip(unique, raw, strict=True) if r not in claimed],
                )

            return _Deferred(finish)

        return await self._write(job)

    async def list_keys(
        self, namespace_id: str, prefix: str, after: str | None, limit: int, now: int
    ) -> list[ListedKey]:
        """Live keys with ``prefix``, strictly after ``after``, in UTF-8 byte order."""
        sql, params = live_keys_query(namespace_id, prefix, after, limit, now, "%s")
        rows = await self._rows(sql, params)
        return [
            ListedKey(
                bytes(r[0]).decode("utf-8"),
                None if r[1] is None else int(r[1]),
                None if r[2] is None else bytes(r[2]),
            )
            for r in rows
        ]

    async def purge_expired(self, now: int, batch: int) -> int:
        """Remove up to ``batch`` expired entries, and as many same-key write records past
        their interval; return the larger count (``batch`` means call again)."""

        async def job(conn: Conn, _: _Writer) -> _Deferred[int]:
            cur = await conn.execute(
                "DELETE FROM entries WHERE (namespace_id, key) IN (SELECT namespace_id, key "
                "FROM entries WHERE expiration IS NOT NULL AND expiration <= %s LIMIT %s)",
                (now, batch),
            )
            swept = await conn.execute(
                "DELETE FROM key_writes WHERE (namespace_id, key) IN (SELECT namespace_id, key "
                "FROM key_writes WHERE not_before <= clock_timestamp() LIMIT %s)",
                (batch,),
            )
            return _Deferred(lambda: _done(max(cur.rowcount, swept.rowcount)))

        return await self._write(job)

    async def scan_entries(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, SealedEntry]]:
        """Every entry of every namespace in (namespace, key) order, a page at a time."""
        sql = "SELECT value, metadata, expiration, version, namespace_id, key FROM entries"
        params: list[Any] = []
        if after is not None:
            sql += " WHERE (namespace_id, key) > (%s, %s)"
            params += [after[0], after[1].encode("utf-8")]
        sql += " ORDER BY namespace_id, key LIMIT %s"
        params.append(limit)
        rows = await self._rows(sql, params)
        return [(str(r[4]), _entry(bytes(r[5]), r)) for r in rows]

    async def reseal(
        self, namespace_id: str, key: str, version: int, value: bytes, metadata: bytes | None
    ) -> bool:
        """Replace an entry's ciphertext if it is still at ``version``; the version is kept."""

        async def job(conn: Conn, _: _Writer) -> _Deferred[bool]:
            cur = await conn.execute(
                "UPDATE entries SET value = %s, metadata = %s "
                "WHERE namespace_id = %s AND key = %s AND version = %s",
                (value, metadata, namespace_id, key.encode("utf-8"), version),
            )
            return _Deferred(lambda: _done(cur.rowcount == 1))

        return await self._write(job)

    # The change feed. Write transactions commit one at a time in sequence order (the clock
    # row's lock), so a reader's snapshot always holds every record up to some number and
    # none above it: paging by sequence number misses nothing.
    async def changes_after(self, seq: int, limit: int) -> list[ChangeRecord]:
        """Up to ``limit`` change records with a sequence number above ``seq``, in order."""
        rows = await self._rows(
            "SELECT seq, account_id, namespace_id, key, version, deleted FROM changes "
            "WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [
            ChangeRecord(
                int(r[0]),
                str(r[1]),
                str(r[2]),
                None if r[3] is None else bytes(r[3]).decode("utf-8"),
                int(r[4]),
                bool(r[5]),
            )
            for r in rows
        ]

    async def change_bounds(self) -> tuple[int, int]:
        """(floor, high): every record in (floor, high] is retained."""
        # One statement, so both figures come from one snapshot.
        row = await self._one(
            "SELECT f.feed_seq, (SELECT min(seq) FROM changes) FROM version_clock f WHERE f.id = 1"
        )
        if row is None:
            return 0, 0
        high = int(row[0])
        return (high if row[1] is None else int(row[1]) - 1), high

    async def prune_changes(self, keep: int) -> int:
        """Drop change records older than the newest ``keep``; return how many went."""

        async def job(conn: Conn, _: _Writer) -> _Deferred[int]:
            # The counter is raised to the high-water mark first: were the newest records of
            # this transaction pruned, later writes would otherwise reuse their numbers.
            cur = await conn.execute(
                f"WITH h AS (SELECT {_FEED_HIGH} AS high), "
                "bump AS (UPDATE version_clock SET feed_seq = h.high FROM h WHERE id = 1) "
                "DELETE FROM changes WHERE seq <= (SELECT high FROM h) - %s",
                (keep,),
            )
            return _Deferred(lambda: _done(cur.rowcount))

        return await self._write(job)

    # Tokens.
    async def add_token(self, token: TokenRecord) -> None:
        """Store a token record (replacing one with the same id)."""

        async def job(conn: Conn, _: _Writer) -> None:
            await conn.execute(
                f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, "
                "name = excluded.name, salt = excluded.salt, secret_hash = excluded.secret_hash, "
                "namespaces = excluded.namespaces, read_only = excluded.read_only, "
                "admin = excluded.admin, edge = excluded.edge, created_at = excluded.created_at, "
                "revoked_at = excluded.revoked_at",
                (
                    token.id,
                    token.account_id,
                    token.name,
                    token.salt,
                    token.secret_hash,
                    json.dumps(list(token.namespaces)) if token.namespaces is not None else None,
                    token.read_only,
                    token.admin,
                    token.edge,
                    token.created_at,
                    token.revoked_at,
                ),
            )

        await self._write(job)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """A token record by id."""
        row = await self._one(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = %s", (token_id,))
        return None if row is None else _row_to_token(row)

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """An account's tokens, revoked ones included."""
        rows = await self._rows(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE account_id = %s ORDER BY created_at, id",
            (account_id,),
        )
        return [_row_to_token(r) for r in rows]

    async def revoke_token(self, account_id: str, token_id: str, now: int) -> bool:
        """Mark a token revoked; False if the account has no such active token."""

        async def job(conn: Conn, _: _Writer) -> _Deferred[bool]:
            cur = await conn.execute(
                "UPDATE tokens SET revoked_at = %s "
                "WHERE id = %s AND account_id = %s AND revoked_at IS NULL",
                (now, token_id, account_id),
            )
            return _Deferred(lambda: _done(cur.rowcount == 1))

        return await self._write(job)

    # Wrapped data keys.
    async def data_keys(self) -> list[tuple[int, bytes]]:
        """Every (key id, wrapped key), oldest first."""
        rows = await self._rows("SELECT id, wrapped FROM data_keys ORDER BY id")
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def add_data_key(self, key_id: int, wrapped: bytes) -> bool:
        """Add a wrapped data key; False if the id is taken."""

        async def job(conn: Conn, _: _Writer) -> _Deferred[bool]:
            cur = await conn.execute(
                "INSERT INTO data_keys (id, wrapped) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (key_id, wrapped),
            )
            return _Deferred(lambda: _done(cur.rowcount == 1))

        return await self._write(job)

    # Copying.
    async def scan_namespaces(self, after: str | None, limit: int) -> list[NamespaceRecord]:
        """Every namespace of every account in id order, a page at a time."""
        rows = await self._rows(
            f"SELECT {_NAMESPACE_COLUMNS} FROM namespaces WHERE id > %s ORDER BY id LIMIT %s",
            (after or "", limit),
        )
        return [NamespaceRecord(*r) for r in rows]

    async def scan_tokens(self, after: str | None, limit: int) -> list[TokenRecord]:
        """Every token of every account in id order, a page at a time."""
        rows = await self._rows(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id > %s ORDER BY id LIMIT %s",
            (after or "", limit),
        )
        return [_row_to_token(r) for r in rows]

    async def namespace_stats(self, namespace_id: str, now: int) -> NamespaceStats:
        """Counts over a namespace's live keys, computed in the database."""
        row = await self._one(
            "SELECT count(*), coalesce(sum(octet_length(value)), 0), count(expiration) "
            "FROM entries WHERE namespace_id = %s AND (expiration IS NULL OR expiration > %s)",
            (namespace_id, now),
        )
        if row is None:
            return NamespaceStats(0, 0, 0)
        return NamespaceStats(int(row[0]), int(row[1]), int(row[2]))

    async def count_entries(self) -> int:
        """How many entries are stored, expired ones included."""
        row = await self._one("SELECT count(*) FROM entries")
        return 0 if row is None else int(row[0])

    async def last_version(self) -> int:
        """The highest version handed out and committed so far (0 for a new store)."""
        row = await self._one("SELECT version FROM version_clock WHERE id = 1")
        return 0 if row is None else int(row[0])

    async def import_namespaces(self, namespaces: Sequence[NamespaceRecord]) -> None:
        """Store namespaces as given, replacing by id; no per-account limit applies."""

        async def job(conn: Conn, _: _Writer) -> None:
            for namespace in namespaces:
                try:
                    await conn.execute(
                        "INSERT INTO namespaces (id, account_id, title, jurisdiction) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                        "account_id = excluded.account_id, title = excluded.title, "
                        "jurisdiction = excluded.jurisdiction",
                        (
                            namespace.id,
                            namespace.account_id,
                            namespace.title,
                            namespace.jurisdiction,
                        ),
                    )
                except pg_errors.UniqueViolation:
                    raise errors.duplicate_title(namespace.title) from None

        await self._write(job)

    async def import_entries(
        self, entries: Sequence[tuple[str, SealedEntry]], min_version: int = 0
    ) -> None:
        """Store (namespace, entry) pairs as given, versions included, all or none, replacing
        by namespace and key; later writes get versions above these and ``min_version``."""

        async def job(conn: Conn, writer: _Writer) -> None:
            if entries:
                await conn.execute(
                    "INSERT INTO entries (namespace_id, key, value, metadata, expiration, version) "
                    "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bytea[], %s::bytea[], "
                    f"%s::bigint[], %s::bigint[]){_UPSERT_ENTRY}",
                    (
                        [n for n, _ in entries],
                        [e.key.encode("utf-8") for _, e in entries],
                        [e.value for _, e in entries],
                        [e.metadata for _, e in entries],
                        [e.expiration for _, e in entries],
                        [e.version for _, e in entries],
                    ),
                )
            writer.reach_version(max([min_version, *(e.version for _, e in entries)]))

        await self._write(job)
