"""The ``pullkv store`` commands: migrate a schema, copy a store between engines, back up.

A thin layer: the work is in :mod:`pullkv.store.pg_schema`, :mod:`pullkv.store.copy` and
:mod:`pullkv.store.backup`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from pullkv import errors
from pullkv.cli.context import emit
from pullkv.cli.options import data_option, store_option


def _resolve(value: str, *, must_exist: bool) -> str:
    """A store URL from a URL or a data folder (meaning the SQLite file in it)."""
    from pullkv.store import is_store_url, sqlite_path_for

    if is_store_url(value):
        url = value
    elif Path(value).is_dir():
        url = f"sqlite://{sqlite_path_for(Path(value))}"
    else:
        raise click.BadParameter(
            f"{value!r} is neither a store URL (sqlite:///path, postgresql://...) nor a folder"
        )
    if must_exist and url.startswith("sqlite://"):
        path = Path(url.removeprefix("sqlite://"))
        if not path.is_file():
            raise click.BadParameter(f"no SQLite store at {path}")
    return url


def _fail(exc: Exception) -> click.ClickException:
    message = exc.message if isinstance(exc, errors.KVError) else str(exc)
    return click.ClickException(message)


@click.group()
def store() -> None:
    """Upgrade, copy and back up stores (SQLite files and PostgreSQL databases)."""


@store.command("migrate")
@store_option("Store URL (PULLKV_STORE), e.g. postgresql://user@host/db.", required=True)
def store_migrate(store_url: str) -> None:
    """Create or upgrade a store's schema (origins also do this when they start)."""
    from pullkv.store import describe_url, open_store

    if store_url.startswith("sqlite://"):

        async def touch() -> None:
            await open_store(store_url).close()  # the SQLite engine creates its schema

        asyncio.run(touch())
        emit({"applied": [], "version": None}, "SQLite store is up to date")
        return

    import psycopg

    from pullkv.store.pg_schema import migrate, schema_version

    async def run() -> tuple[list[int], int]:
        async with await psycopg.AsyncConnection.connect(store_url, autocommit=True) as conn:
            applied = await migrate(conn)
            return [m.version for m in applied], await schema_version(conn)

    try:
        applied, version = asyncio.run(run())
    except (psycopg.Error, errors.KVError) as exc:
        raise _fail(exc) from None
    human = (
        f"Applied migrations {', '.join(map(str, applied))}; "
        if applied
        else "No migrations to apply; "
    ) + f"{describe_url(store_url)} is at schema version {version}"
    emit({"applied": applied, "version": version}, human)


class _ProgressBar:
    """A click progress bar on stderr that learns its length from the copy."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, total: int, done: int) -> None:
        self.bar = click.progressbar(
            length=max(total, done),
            label="Copying entries",
            file=sys.stderr,
            show_pos=True,
        )
        self.bar.__enter__()
        self.bar.update(done)

    def step(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@store.command("copy")
@click.option(
    "--from",
    "source",
    required=True,
    help="The store to copy: a URL, or a data folder for its SQLite file.",
)
@click.option(
    "--to",
    "dest",
    required=True,
    help="The new store: a URL (an empty database, schema or new file).",
)
def store_copy(source: str, dest: str) -> None:
    """Copy a whole store to another engine; re-run to resume; verifies at the end.

    Stop the origins on the source first. Ciphertext is copied as is: run the new store with
    the same master key.
    """
    from pullkv.store import describe_url, open_store
    from pullkv.store.copy import CopyReport, copy_store

    source_url = _resolve(source, must_exist=True)
    dest_url = _resolve(dest, must_exist=False)
    if source_url == dest_url:
        raise click.BadParameter("--from and --to are the same store")
    bar = _ProgressBar()

    async def run() -> CopyReport:
        src = open_store(source_url)
        try:
            dst = open_store(dest_url)
            try:
                return await copy_store(src, dst, progress=bar.step, on_total=bar.start)
            finally:
                await dst.close()
        finally:
            await src.close()

    try:
        report = asyncio.run(run())
    except (errors.StoreMaintenanceError, errors.KVError) as exc:
        raise _fail(exc) from None
    finally:
        bar.close()
    counts = ", ".join(f"{n} {name}" for name, n in report.counts.items())
    if report.already_complete:
        what = "Already copied; verified again"
    elif report.resumed_after is not None:
        what = f"Resumed and copied {report.entries_copied} more entries"
    else:
        what = f"Copied {report.entries_copied} entries"
    human = (
        f"{what} from {describe_url(source_url)} to {describe_url(dest_url)} in "
        f"{report.seconds:.1f} s. Verified: {counts}; entries checksum "
        f"{report.digest.tables['entries'].sha256[:16]}"
    )
    emit(
        {
            "entries_copied": report.entries_copied,
            "resumed": report.resumed_after is not None,
            "already_complete": report.already_complete,
            "seconds": round(report.seconds, 3),
            "counts": report.counts,
            "checksums": {name: t.sha256 for name, t in report.digest.tables.items()},
        },
        human,
    )


@store.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@data_option("Data folder whose SQLite store to back up (PULLKV_DATA).")
@store_option("A SQLite store URL instead of --data (sqlite:///path/to/file).", envvar=None)
def store_backup(dest: Path, data_dir: Path, store_url: str | None) -> None:
    """Back up a SQLite store to the new file DEST, safely while its server runs.

    The master key is not part of the backup: keep a copy of master.key elsewhere.
    """
    from pullkv.store import sqlite_path_for
    from pullkv.store.backup import backup_sqlite

    if store_url is not None and not store_url.startswith("sqlite://"):
        raise click.BadParameter(
            "backup is for SQLite stores; back up PostgreSQL with its own tools "
            "(pg_dump, pg_basebackup: see docs/postgresql.md)",
            param_hint="--store",
        )
    source = Path(store_url.removeprefix("sqlite://")) if store_url else sqlite_path_for(data_dir)
    try:
        report = backup_sqlite(source, dest)
    except errors.StoreMaintenanceError as exc:
        raise _fail(exc) from None
    emit(
        {
            "path": str(report.path),
            "bytes": report.size,
            "namespaces": report.namespaces,
            "entries": report.entries,
            "seconds": round(report.seconds, 3),
        },
        f"Backed up {source} to {report.path} ({report.size} bytes, {report.namespaces} "
        f"namespaces, {report.entries} entries) in {report.seconds:.1f} s. "
        "Keep master.key apart from it: the backup cannot be read without it.",
    )
