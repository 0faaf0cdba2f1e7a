"""Storage engines behind one interface; ``open_store`` picks one from a URL."""

from __future__ import annotations

from pathlib import Path

from pullkv.store.base import Store

__all__ = ["Store", "describe_url", "is_store_url", "open_store", "sqlite_path_for"]

SQLITE_FILE = "pullkv.sqlite3"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def sqlite_path_for(data_dir: Path) -> Path:
    """Where the embedded engine keeps its database inside a data folder."""
    return data_dir / SQLITE_FILE


def is_store_url(url: str) -> bool:
    """Whether ``open_store`` knows the URL's engine."""
    return url.startswith(("sqlite://", *_POSTGRES_SCHEMES))


def is_postgres_url(url: str) -> bool:
    """Whether the URL names a PostgreSQL store (one several processes share)."""
    return url.startswith(_POSTGRES_SCHEMES)


def describe_url(url: str) -> str:
    """The URL as it may be shown or logged: without a password."""
    if url.startswith(_POSTGRES_SCHEMES):
        from pullkv.store.postgres import redact_url

        return redact_url(url)
    return url


def open_store(url: str, *, group_commit: bool = True) -> Store:
    """Open a store from ``sqlite:///path/to/file`` or ``postgresql://user@host/db``.

    A PostgreSQL store connects, and migrates its schema, on first use.
    """
    if url.startswith("sqlite://"):
        from pullkv.store.sqlite import SQLiteStore

        return SQLiteStore(Path(url.removeprefix("sqlite://")), group_commit=group_commit)
    if url.startswith(_POSTGRES_SCHEMES):
        from pullkv.store.postgres import PostgresStore

        return PostgresStore(url, group_commit=group_commit)
    raise ValueError(
        f"unsupported store URL {describe_url(url)!r}: expected sqlite:///path or postgresql://..."
    )
