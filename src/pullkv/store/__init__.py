"""Storage engines behind one interface; ``open_store`` picks one from a URL."""

from __future__ import annotations

from pathlib import Path

from pullkv.store.base import Store

__all__ = ["Store", "open_store", "sqlite_path_for"]

SQLITE_FILE = "pullkv.sqlite3"


def sqlite_path_for(data_dir: Path) -> Path:
    """Where the embedded engine keeps its database inside a data folder."""
    return data_dir / SQLITE_FILE


def open_store(url: str, *, group_commit: bool = True) -> Store:
    """Open a store from ``sqlite:///path/to/file``."""
    if url.startswith("sqlite://"):
        from pullkv.store.sqlite import SQLiteStore

        return SQLiteStore(Path(url.removeprefix("sqlite://")), group_commit=group_commit)
    raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///path")
