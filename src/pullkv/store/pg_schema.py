"""The PostgreSQL engine's schema, as numbered migrations that pullkv applies itself.

Each migration runs once, in order, inside one transaction with the others pending (DDL is
transactional in PostgreSQL, so a failed upgrade leaves the schema as it was), and is recorded
in ``schema_migrations``. An advisory lock makes origins that start together on a new database
take turns: the first applies the migrations, the others find them done. A database whose
schema is newer than this pullkv knows is refused rather than guessed at.

Tables go to the first schema of the connection's ``search_path``, so one database can hold
several stores (``?options=-csearch_path%3Dname`` in the URL) — the tests use that.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

from pullkv import errors


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: its number, a name for people, and the SQL."""

    version: int
    name: str
    sql: str


# Text that is compared or sorted is COLLATE "C" (byte order, as SQLite's BINARY), never the
# database's collation: ids and titles sort the same on every engine and every server.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "tables of namespaces, entries, tokens, data keys, settings and the version clock",
        """
        CREATE TABLE settings (name text COLLATE "C" PRIMARY KEY, value text NOT NULL);
        CREATE TABLE namespaces (
            id text COLLATE "C" PRIMARY KEY,
            account_id text COLLATE "C" NOT NULL,
            title text COLLATE "C" NOT NULL,
            jurisdiction text,
            UNIQUE (account_id, title)
        );
        -- Keys are bytea: bytea compares bytes, so list order is UTF-8 byte order.
        CREATE TABLE entries (
            namespace_id text COLLATE "C" NOT NULL,
            key bytea NOT NULL,
            value bytea NOT NULL,
            metadata bytea,
            expiration bigint,
            version bigint NOT NULL,
            PRIMARY KEY (namespace_id, key)
        ) WITH (fillfactor = 90);
        -- Ciphertext does not compress: store it out of line without trying.
        ALTER TABLE entries
            ALTER COLUMN value SET STORAGE EXTERNAL,
            ALTER COLUMN metadata SET STORAGE EXTERNAL;
        CREATE INDEX entries_expiration ON entries (expiration) WHERE expiration IS NOT NULL;
        CREATE TABLE tokens (
            id text COLLATE "C" PRIMARY KEY,
            account_id text COLLATE "C" NOT NULL,
            name text NOT NULL,
            salt bytea NOT NULL,
            secret_hash bytea NOT NULL,
            namespaces text,
            read_only boolean NOT NULL,
            admin boolean NOT NULL,
            edge boolean NOT NULL DEFAULT false,
            created_at bigint NOT NULL,
            revoked_at bigint
        );
        CREATE INDEX tokens_account ON tokens (account_id);
        CREATE TABLE data_keys (id integer PRIMARY KEY, wrapped bytea NOT NULL);
        -- One row: the highest version handed out by any origin (see postgres.py).
        CREATE TABLE version_clock (
            id smallint PRIMARY KEY CHECK (id = 1),
            version bigint NOT NULL
        );
        INSERT INTO version_clock (id, version) VALUES (1, 0);
        """,
    ),
    Migration(
        2,
        "when each recently written key may be written again (the same-key write rate)",
        """
        -- Rows are written and compared on the database's clock, never an origin's, so
        -- origins with skewed clocks still agree; purge_expired drops the rows past due.
        CREATE TABLE key_writes (
            namespace_id text COLLATE "C" NOT NULL,
            key bytea NOT NULL,
            not_before timestamptz NOT NULL,
            PRIMARY KEY (namespace_id, key)
        );
        """,
    ),
    Migration(
        3,
        "the change feed: a record of every committed change, numbered without gaps",
        """
        -- Numbers are handed out by the write transactions under the clock row's lock, never
        -- by a SEQUENCE (which leaves gaps and is not in commit order): feed_seq holds the
        -- last one committed, even after pruning has removed its record (see postgres.py).
        ALTER TABLE version_clock ADD COLUMN feed_seq bigint NOT NULL DEFAULT 0;
        -- key NULL: the whole namespace was deleted.
        CREATE TABLE changes (
            seq bigint PRIMARY KEY,
            account_id text COLLATE "C" NOT NULL,
            namespace_id text COLLATE "C" NOT NULL,
            key bytea,
            version bigint NOT NULL,
            deleted boolean NOT NULL
        );
        """,
    ),
)

LATEST = MIGRATIONS[-1].version

# pg_advisory_xact_lock key: "pullkv" in ASCII, so other applications' locks do not collide.
_LOCK_KEY = 0x70756C6C6B76

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(conn: psycopg.AsyncConnection[TupleRow]) -> list[Migration]:
    """Bring the schema up to date; return the migrations this call applied.

    ``conn`` must be in autocommit mode (no transaction open): the work is one transaction.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(_LEDGER)
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {int(row[0]) for row in await cur.fetchall()}
        newest = max(done, default=0)
        if newest > LATEST:
            raise errors.store_unavailable(
                f"the database schema is at version {newest}, newer than this pullkv knows "
                f"({LATEST}); upgrade pullkv"
            )
        applied = []
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration)
        return applied


async def schema_version(conn: psycopg.AsyncConnection[TupleRow]) -> int:
    """The newest migration applied to the connection's schema (0 for none)."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0
