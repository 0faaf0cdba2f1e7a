"""The embedded engine: SQLite in WAL mode with group commit.

One writer thread owns the only write connection. Writes from any number of coroutines queue
up while the previous commit is being made durable; the writer then applies the whole queue in
one transaction (each write in its own savepoint, so one failure spoils no other) and makes it
durable with one fsync (``synchronous=FULL``). Acknowledgements go out only after the commit,
so an acknowledged write survives kill -9. Reads use a connection per thread and run inline:
in WAL mode a point read takes microseconds and never waits for the writer, which is cheaper
than a thread hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pullkv import errors
from pullkv.durable import fsync_path, make_dirs
from pullkv.store.base import NamespaceOrder, NamespaceStats
from pullkv.store.keyrange import live_keys_query, prefix_upper_bound
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

__all__ = ["MAX_GROUP", "SQLiteStore", "prefix_upper_bound"]

SCHEMA_VERSION = 1
MAX_GROUP = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    title TEXT NOT NULL,
    jurisdiction TEXT,
    UNIQUE (account_id, title)
);
CREATE TABLE IF NOT EXISTS entries (
    namespace_id TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    metadata BLOB,
    expiration INTEGER,
    version INTEGER NOT NULL,
    UNIQUE (namespace_id, key)
);
CREATE INDEX IF NOT EXISTS entries_expiration ON entries (expiration)
    WHERE expiration IS NOT NULL;
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    salt BLOB NOT NULL,
    secret_hash BLOB NOT NULL,
    namespaces TEXT,
    read_only INTEGER NOT NULL,
    admin INTEGER NOT NULL,
    edge INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS tokens_account ON tokens (account_id);
CREATE TABLE IF NOT EXISTS data_keys (id INTEGER PRIMARY KEY, wrapped BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    namespace_id TEXT NOT NULL,
    key BLOB,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
"""

# AUTOINCREMENT: a sequence number is never reused, even after the newest records are
# pruned; a savepoint rolled back takes its numbers with it, so the sequence has no gaps.
_RECORD_CHANGE = (
    "INSERT INTO changes(account_id, namespace_id, key, version, deleted) VALUES (?, ?, ?, ?, ?)"
)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection, _Writer], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Writer(threading.Thread):
    """The single writer: applies queued jobs in groups, one durable commit per group."""

    def __init__(self, path: Path, group_commit: bool, clock: Callable[[], float]) -> None:
        super().__init__(name="pullkv-sqlite-writer", daemon=True)
        self._conn = _connect(path)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._group_commit = group_commit
        self._clock = clock
        (max_entry,) = self._conn.execute(
            "SELECT coalesce(max(version), 0) FROM entries"
        ).fetchone()
        self.last_version = int(max_entry)
        self._catch_up()
        self.commits = 0
        self._stopping = False

    def _catch_up(self) -> None:
        """Continue after the highest version committed by any process sharing the file."""
        row = self._conn.execute("SELECT value FROM settings WHERE name='last_version'").fetchone()
        if row is not None:
            self.last_version = max(self.last_version, int(row[0]))

    def allocate_version(self) -> int:
        """The next version; called by jobs inside the writer thread only."""
        self.last_version = next_version(self.last_version, self._clock())
        return self.last_version

    def now(self) -> int:
        """The store clock's time in whole seconds, for expiry checks inside jobs."""
        return int(self._clock())

    def reach_version(self, version: int) -> None:
        """Make every later version larger than ``version`` (imports keep their versions)."""
        self.last_version = max(self.last_version, version)

    def submit(self, fn: Callable[[sqlite3.Connection, _Writer], T]) -> asyncio.Future[T]:
        if self._stopping:
            raise errors.store_unavailable("the store is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return future

    def stop(self) -> None:
        self._stopping = True
        self._queue.put(None)

    def run(self) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                batch = [job]
                stop_after = False
                while self._group_commit and len(batch) < MAX_GROUP:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop_after = True
                        break
                    batch.append(nxt)
                self._apply(batch)
                if stop_after:
                    return
        finally:
            self._conn.close()

    def _apply(self, batch: list[_Job]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._catch_up()
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.fn(conn, self)
                except BaseException as exc:  # handed to the waiting coroutine
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, result, None))
            conn.execute(
                "INSERT INTO settings(name, value) VALUES ('last_version', ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (str(self.last_version),),
            )
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = errors.store_unavailable(f"commit failed ({exc})")
            outcomes = [(job, None, failure) for job, _, _ in outcomes]
            outcomes += [(job, None, failure) for job in batch[len(outcomes) :]]
        for job, result, error in outcomes:
            # RuntimeError: the waiter's event loop is gone, so nobody is listening.
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def _row_to_token(row: sqlite3.Row | tuple[Any, ...]) -> TokenRecord:
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
        revoked_at=row[10],
    )


_NAMESPACE_COLUMNS = "id, account_id, title, jurisdiction"
# Settings the engine keeps for itself: not the store's content, so never listed or copied.
_BOOKKEEPING = ("last_version", "schema_version")
_TOKEN_COLUMNS = (
    "id, account_id, name, salt, secret_hash, namespaces, read_only, admin, edge, created_at, "
    "revoked_at"
)


class SQLiteStore:
    """The embedded store engine (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        group_commit: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        try:
            make_dirs(path.parent)
            created = not path.exists()
            setup = _connect(path)
            try:
                setup.executescript(_SCHEMA)
                setup.execute(
                    "INSERT OR IGNORE INTO settings(name, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            finally:
                setup.close()
            if created:
                # SQLite makes its -wal file's name durable but not the database file's own.
                fsync_path(path)
                fsync_path(path.parent)
            self._writer = _Writer(path, group_commit, clock)
        except sqlite3.OperationalError as exc:  # permissions, locking, I/O: not the data
            raise errors.StoreMaintenanceError(f"cannot open the store {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise errors.StoreMaintenanceError(
                f"the store {path} cannot be read ({exc}): restore it from a backup made with "
                "`pullkv store backup`, or move it aside to start with an empty store"
            ) from None
        except OSError as exc:
            raise errors.StoreMaintenanceError(
                f"cannot open the store {path}: {exc.strerror or exc}"
            ) from None
        self._writer.start()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    @property
    def commits(self) -> int:
        """How many durable commits the writer has made (for tests and metrics)."""
        return self._writer.commits

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def close(self) -> None:
        """Drain the write queue, stop the writer and close every connection."""
        self._writer.stop()
        await asyncio.to_thread(self._writer.join)
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    # Settings.
    async def get_setting(self, name: str) -> str | None:
        """A setting's value, or None."""
        row = self._reader().execute("SELECT value FROM settings WHERE name=?", (name,)).fetchone()
        return None if row is None else str(row[0])

    async def setdefault_setting(self, name: str, value: str) -> str:
        """Store ``value`` unless the setting exists; return the value in force."""

        def job(conn: sqlite3.Connection, _: _Writer) -> str:
            conn.execute("INSERT OR IGNORE INTO settings(name, value) VALUES (?, ?)", (name, value))
            row = conn.execute("SELECT value FROM settings WHERE name=?", (name,)).fetchone()
            return str(row[0])

        return await self._writer.submit(job)

    async def set_setting(self, name: str, value: str) -> None:
        """Store a setting, replacing any value."""

        def job(conn: sqlite3.Connection, _: _Writer) -> None:
            conn.execute(
                "INSERT INTO settings(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (name, value),
            )

        await self._writer.submit(job)

    async def list_settings(self) -> dict[str, str]:
        """Every setting, without the engine's own bookkeeping."""
        rows = (
            self._reader()
            .execute(
                "SELECT name, value FROM settings WHERE name NOT IN (?, ?) ORDER BY name",
                _BOOKKEEPING,
            )
            .fetchall()
        )
        return {str(r[0]): str(r[1]) for r in rows}

    # Namespaces.
    async def create_namespace(
        self, namespace: NamespaceRecord, max_per_account: int
    ) -> NamespaceRecord:
        """Create; KVError for a duplicate title or too many namespaces."""

        def job(conn: sqlite3.Connection, _: _Writer) -> NamespaceRecord:
            (count,) = conn.execute(
                "SELECT count(*) FROM namespaces WHERE account_id=?", (namespace.account_id,)
            ).fetchone()
            if count >= max_per_account:
                raise errors.too_many_namespaces(max_per_account)
            try:
                conn.execute(
                    "INSERT INTO namespaces(id, account_id, title, jurisdiction) "
                    "VALUES (?, ?, ?, ?)",
                    (namespace.id, namespace.account_id, namespace.title, namespace.jurisdiction),
                )
            except sqlite3.IntegrityError:
                raise errors.duplicate_title(namespace.title) from None
            return namespace

        return await self._writer.submit(job)

    async def get_namespace(self, namespace_id: str) -> NamespaceRecord | None:
        """The namespace with this id, in any account."""
        row = (
            self._reader()
            .execute(f"SELECT {_NAMESPACE_COLUMNS} FROM namespaces WHERE id=?", (namespace_id,))
            .fetchone()
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
        where = "account_id=?"
        params: list[Any] = [account_id]
        if only is not None:
            where += f" AND id IN ({','.join('?' * len(only))})"
            params += list(only)
        conn = self._reader()
        (total,) = conn.execute(f"SELECT count(*) FROM namespaces WHERE {where}", params).fetchone()
        rows = conn.execute(
            f"SELECT {_NAMESPACE_COLUMNS} FROM namespaces WHERE {where} "
            f"ORDER BY {column} {direction}, id {direction} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
        return [NamespaceRecord(*r) for r in rows], int(total)

    async def rename_namespace(self, namespace_id: str, title: str) -> NamespaceRecord:
        """Change a title; KVError if it is taken or the namespace is gone."""

        def job(conn: sqlite3.Connection, _: _Writer) -> NamespaceRecord:
            row = conn.execute(
                "SELECT account_id, jurisdiction FROM namespaces WHERE id=?", (namespace_id,)
            ).fetchone()
            if row is None:
                raise errors.namespace_not_found("rename namespace")
            try:
                conn.execute("UPDATE namespaces SET title=? WHERE id=?", (title, namespace_id))
            except sqlite3.IntegrityError:
                raise errors.duplicate_title(title) from None
            return NamespaceRecord(namespace_id, row[0], title, row[1])

        return await self._writer.submit(job)

    async def delete_namespace(self, namespace_id: str) -> bool:
        """Delete a namespace and every key in it; False if it did not exist."""

        def job(conn: sqlite3.Connection, writer: _Writer) -> bool:
            row = conn.execute(
                "SELECT account_id FROM namespaces WHERE id=?", (namespace_id,)
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM namespaces WHERE id=?", (namespace_id,))
            conn.execute("DELETE FROM entries WHERE namespace_id=?", (namespace_id,))
            conn.execute(_RECORD_CHANGE, (row[0], namespace_id, None, writer.allocate_version(), 1))
            return True

        return await self._writer.submit(job)

    # Keys.
    async def get(self, namespace_id: str, key: str, now: int) -> SealedEntry | None:
        """One live entry, or None."""
        row = (
            self._reader()
            .execute(
                "SELECT value, metadata, expiration, version FROM entries "
                "WHERE namespace_id=? AND key=? AND (expiration IS NULL OR expiration > ?)",
                (namespace_id, key.encode("utf-8"), now),
            )
            .fetchone()
        )
        if row is None:
            return None
        return SealedEntry(key, row[0], row[1], row[2], row[3])

    async def get_many(
        self, namespace_id: str, keys: Sequence[str], now: int
    ) -> dict[str, SealedEntry]:
        """The live entries among ``keys``; missing ones are absent from the result."""
        if not keys:
            return {}
        unique = list(dict.fromkeys(keys))
        marks = ",".join("?" * len(unique))
        rows = (
            self._reader()
            .execute(
                "SELECT key, value, metadata, expiration, version FROM entries "
                f"WHERE namespace_id=? AND key IN ({marks}) "
                "AND (expiration IS NULL OR expiration > ?)",
                [namespace_id, *(k.encode("utf-8") for k in unique), now],
            )
            .fetchall()
        )
        found: dict[str, SealedEntry] = {}
        for row in rows:
            name = bytes(row[0]).decode("utf-8")
            found[name] = SealedEntry(name, row[1], row[2], row[3], row[4])
        return found

    async def put(self, namespace_id: str, writes: Sequence[SealedWrite]) -> list[int]:
        """Write all or none, durably; return each write's version."""

        def job(conn: sqlite3.Connection, writer: _Writer) -> list[int]:
            account_id = _require_namespace(conn, namespace_id, "put")
            versions = []
            for write in writes:
                if write.condition is not None:
                    # In the writer's transaction: nothing can write between check and write.
                    _check(conn, namespace_id, write.key, write.condition, writer.now())
                version = writer.allocate_version()
                conn.execute(
                    "INSERT INTO entries(namespace_id, key, value, metadata, expiration, version) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(namespace_id, key) DO UPDATE SET "
                    "value=excluded.value, metadata=excluded.metadata, "
                    "expiration=excluded.expiration, version=excluded.version",
                    (
                        namespace_id,
                        write.key.encode("utf-8"),
                        write.value,
                        write.metadata,
                        write.expiration,
                        version,
                    ),
                )
                versions.append(version)
            conn.executemany(
                _RECORD_CHANGE,
                [
                    (account_id, namespace_id, w.key.encode("utf-8"), v, 0)
                    for w, v in zip(writes, versions, strict=True)
                ],
            )
            return versions

        return await self._writer.submit(job)

    async def delete(
        self, namespace_id: str, keys: Sequence[str], condition: WriteCondition | None = None
    ) -> int:
        """Delete keys (missing ones are fine), durably; return the version of the delete.
        With a ``condition``, every key must meet it or nothing is deleted (412)."""

        def job(conn: sqlite3.Connection, writer: _Writer) -> int:
            account_id = _require_namespace(conn, namespace_id, "delete")
            if condition is not None:
                for key in keys:
                    _check(conn, namespace_id, key, condition, writer.now())
            encoded = [k.encode("utf-8") for k in keys]
            conn.executemany(
                "DELETE FROM entries WHERE namespace_id=? AND key=?",
                [(namespace_id, k) for k in encoded],
            )
            version = writer.allocate_version()
            conn.executemany(
                _RECORD_CHANGE, [(account_id, namespace_id, k, version, 1) for k in encoded]
            )
            return version

        return await self._writer.submit(job)

    async def list_keys(
        self, namespace_id: str, prefix: str, after: str | None, limit: int, now: int
    ) -> list[ListedKey]:
        """Live keys with ``prefix``, strictly after ``after``, in UTF-8 byte order."""
        sql, params = live_keys_query(namespace_id, prefix, after, limit, now, "?")
        rows = self._reader().execute(sql, params).fetchall()
        return [ListedKey(bytes(r[0]).decode("utf-8"), r[1], r[2]) for r in rows]

    async def namespace_stats(self, namespace_id: str, now: int) -> NamespaceStats:
        """Counts over a namespace's live keys, in one indexed scan of its rows."""
        row = (
            self._reader()
            .execute(
                "SELECT count(*), coalesce(sum(length(value)), 0), count(expiration) "
                "FROM entries WHERE namespace_id=? AND (expiration IS NULL OR expiration > ?)",
                (namespace_id, now),
            )
            .fetchone()
        )
        return NamespaceStats(int(row[0]), int(row[1]), int(row[2]))

    async def purge_expired(self, now: int, batch: int) -> int:
        """Remove up to ``batch`` expired entries; return how many went."""

        def job(conn: sqlite3.Connection, _: _Writer) -> int:
            cur = conn.execute(
                "DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries "
                "WHERE expiration IS NOT NULL AND expiration <= ? LIMIT ?)",
                (now, batch),
            )
            return cur.rowcount

        return await self._writer.submit(job)

    async def scan_entries(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, SealedEntry]]:
        """Every entry of every namespace in (namespace, key) order, a page at a time."""
        sql = "SELECT namespace_id, key, value, metadata, expiration, version FROM entries"
        params: list[Any] = []
        if after is not None:
            sql += " WHERE (namespace_id, key) > (?, ?)"
            params += [after[0], after[1].encode("utf-8")]
        sql += " ORDER BY namespace_id, key LIMIT ?"
        params.append(limit)
        rows = self._reader().execute(sql, params).fetchall()
        out = []
        for r in rows:
            name = bytes(r[1]).decode("utf-8")
            out.append((str(r[0]), SealedEntry(name, r[2], r[3], r[4], r[5])))
        return out

    async def reseal(
        self, namespace_id: str, key: str, version: int, value: bytes, metadata: bytes | None
    ) -> bool:
        """Replace an entry's ciphertext if it is still at ``version``; the version is kept."""

        def job(conn: sqlite3.Connection, _: _Writer) -> bool:
            cur = conn.execute(
                "UPDATE entries SET value=?, metadata=? "
                "WHERE namespace_id=? AND key=? AND version=?",
                (value, metadata, namespace_id, key.encode("utf-8"), version),
            )
            return cur.rowcount == 1

        return await self._writer.submit(job)

    # The change feed.
    async def changes_after(self, seq: int, limit: int) -> list[ChangeRecord]:
        """Up to ``limit`` change records with a sequence number above ``seq``, in order."""
        rows = (
            self._reader()
            .execute(
                "SELECT seq, account_id, namespace_id, key, version, deleted FROM changes "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
            .fetchall()
        )
        return [
            ChangeRecord(
                int(r[0]),
                r[1],
                r[2],
                None if r[3] is None else bytes(r[3]).decode("utf-8"),
                int(r[4]),
                bool(r[5]),
            )
            for r in rows
        ]

    async def change_bounds(self) -> tuple[int, int]:
        """(floor, high): every record in (floor, high] is retained."""
        conn = self._reader()
        # One read transaction, so the two figures describe the same moment.
        conn.execute("BEGIN")
        try:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='changes'").fetchone()
            high = 0 if row is None else int(row[0])
            (oldest,) = conn.execute("SELECT min(seq) FROM changes").fetchone()
        finally:
            conn.execute("COMMIT")
        return (high if oldest is None else int(oldest) - 1), high

    async def prune_changes(self, keep: int) -> int:
        """Drop change records older than the newest ``keep``; return how many went."""

        def job(conn: sqlite3.Connection, _: _Writer) -> int:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='changes'").fetchone()
            if row is None:
                return 0
            return conn.execute(
                "DELETE FROM changes WHERE seq <= ?", (int(row[0]) - keep,)
            ).rowcount

        return await self._writer.submit(job)

    # Tokens.
    async def add_token(self, token: TokenRecord) -> None:
        """Store a token record (replacing one with the same id)."""

        def job(conn: sqlite3.Connection, _: _Writer) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO tokens({_TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    token.id,
                    token.account_id,
                    token.name,
                    token.salt,
                    token.secret_hash,
                    json.dumps(list(token.namespaces)) if token.namespaces is not None else None,
                    int(token.read_only),
                    int(token.admin),
                    int(token.edge),
                    token.created_at,
                    token.revoked_at,
                ),
            )

        await self._writer.submit(job)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """A token record by id."""
        row = (
            self._reader()
            .execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id=?", (token_id,))
            .fetchone()
        )
        return None if row is None else _row_to_token(row)

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """An account's tokens, revoked ones included."""
        rows = (
            self._reader()
            .execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE account_id=? ORDER BY created_at, id",
                (account_id,),
            )
            .fetchall()
        )
        return [_row_to_token(r) for r in rows]

    async def revoke_token(self, account_id: str, token_id: str, now: int) -> bool:
        """Mark a token revoked; False if the account has no such active token."""

        def job(conn: sqlite3.Connection, _: _Writer) -> bool:
            cur = conn.execute(
                "UPDATE tokens SET revoked_at=? WHERE id=? AND account_id=? AND revoked_at IS NULL",
                (now, token_id, account_id),
            )
            return cur.rowcount == 1

        return await self._writer.submit(job)

    # Wrapped data keys.
    async def data_keys(self) -> list[tuple[int, bytes]]:
        """Every (key id, wrapped key), oldest first."""
        rows = self._reader().execute("SELECT id, wrapped FROM data_keys ORDER BY id").fetchall()
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def add_data_key(self, key_id: int, wrapped: bytes) -> bool:
        """Add a wrapped data key; False if the id is taken."""

        def job(conn: sqlite3.Connection, _: _Writer) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO data_keys(id, wrapped) VALUES (?, ?)", (key_id, wrapped)
            )
            return cur.rowcount == 1

        return await self._writer.submit(job)

    # Copying.
    async def scan_namespaces(self, after: str | None, limit: int) -> list[NamespaceRecord]:
        """Every namespace of every account in id order, a page at a time."""
        rows = (
            self._reader()
            .execute(
                f"SELECT {_NAMESPACE_COLUMNS} FROM namespaces WHERE id > ? ORDER BY id LIMIT ?",
                (after or "", limit),
            )
            .fetchall()
        )
        return [NamespaceRecord(*r) for r in rows]

    async def scan_tokens(self, after: str | None, limit: int) -> list[TokenRecord]:
        """Every token of every account in id order, a page at a time."""
        rows = (
            self._reader()
            .execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id > ? ORDER BY id LIMIT ?",
                (after or "", limit),
            )
            .fetchall()
        )
        return [_row_to_token(r) for r in rows]

    async def count_entries(self) -> int:
        """How many entries are stored, expired ones included."""
        (count,) = self._reader().execute("SELECT count(*) FROM entries").fetchone()
        return int(count)

    async def last_version(self) -> int:
        """The highest version handed out and committed so far (0 for a new store)."""
        (version,) = (
            self._reader()
            .execute(
                "SELECT max(coalesce((SELECT CAST(value AS INTEGER) FROM settings "
                "WHERE name = 'last_version'), 0), coalesce((SELECT max(version) FROM entries), 0))"
            )
            .fetchone()
        )
        return int(version)

    async def import_namespaces(self, namespaces: Sequence[NamespaceRecord]) -> None:
        """Store namespaces as given, replacing by id; no per-account limit applies."""

        def job(conn: sqlite3.Connection, _: _Writer) -> None:
            for namespace in namespaces:
                try:
                    conn.execute(
                        "INSERT INTO namespaces(id, account_id, title, jurisdiction) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                        "account_id=excluded.account_id, title=excluded.title, "
                        "jurisdiction=excluded.jurisdiction",
                        (
                            namespace.id,
                            namespace.account_id,
                            namespace.title,
                            namespace.jurisdiction,
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise errors.duplicate_title(namespace.title) from None

        await self._writer.submit(job)

    async def import_entries(
        self, entries: Sequence[tuple[str, SealedEntry]], min_version: int = 0
    ) -> None:
        """Store (namespace, entry) pairs as given, versions included, all or none, replacing
        by namespace and key; later writes get versions above these and ``min_version``."""

        def job(conn: sqlite3.Connection, writer: _Writer) -> None:
            conn.executemany(
                "INSERT INTO entries(namespace_id, key, value, metadata, expiration, version) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(namespace_id, key) DO UPDATE SET "
                "value=excluded.value, metadata=excluded.metadata, "
                "expiration=excluded.expiration, version=excluded.version",
                [
                    (n, e.key.encode("utf-8"), e.value, e.metadata, e.expiration, e.version)
                    for n, e in entries
                ],
            )
            writer.reach_version(max([min_version, *(e.version for _, e in entries)]))

        await self._writer.submit(job)


def _require_namespace(conn: sqlite3.Connection, namespace_id: str, operation: str) -> str:
    """The namespace's account; 404 if there is no such namespace."""
    row = conn.execute("SELECT account_id FROM namespaces WHERE id=?", (namespace_id,)).fetchone()
    if row is None:
        raise errors.namespace_not_found(operation)
    return str(row[0])


def _check(
    conn: sqlite3.Connection, namespace_id: str, key: str, condition: WriteCondition, now: int
) -> None:
    """Raise 412 unless the key's live version meets the condition."""
    row = conn.execute(
        "SELECT version FROM entries WHERE namespace_id=? AND key=? "
        "AND (expiration IS NULL OR expiration > ?)",
        (namespace_id, key.encode("utf-8"), now),
    ).fetchone()
    current = None if row is None else int(row[0])
    if not condition.holds(current):
        raise errors.precondition_failed(key, current)
