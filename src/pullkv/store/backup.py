"""Online backups of the embedded engine: ``pullkv store backup``.

SQLite's backup API (``sqlite3.Connection.backup``) copies the database page by page over an
ordinary connection. We copy in one step, which reads one consistent snapshot; in WAL mode a
reader never blocks the writer, so a running server keeps committing while the backup is
made. (A copy in several steps restarts whenever another connection writes, and under a
steady write load might never finish.) The copy goes to a hidden file beside the
destination, is checked with ``PRAGMA integrity_check``, switched to a self-contained
rollback journal, made durable, and only then renamed into place: a backup file that exists
is complete.

The master key is not in the database: keep a copy of ``master.key`` apart from the backups
(a backup is useless without it, which is also why backups may be stored less carefully).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from pullkv.durable import fsync_path, make_dirs
from pullkv.errors import StoreMaintenanceError


@dataclass(frozen=True, slots=True)
class BackupReport:
    """Where the backup went and what it holds."""

    path: Path
    size: int
    namespaces: int
    entries: int
    seconds: float


def backup_sqlite(source: Path, dest: Path) -> BackupReport:
    """Copy the SQLite store at ``source`` to the new file ``dest`` (or into a folder)."""
    if not source.is_file():
        raise StoreMaintenanceError(f"no SQLite store at {source}")
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists():
        raise StoreMaintenanceError(f"{dest} already exists; back up to a new file")
    make_dirs(dest.parent)
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        src = sqlite3.connect(source, timeout=30)
        try:
            src.execute("PRAGMA query_only=ON")
            out = sqlite3.connect(partial)
            try:
                src.backup(out)  # one step: one snapshot, see the module docstring
                (check,) = out.execute("PRAGMA integrity_check").fetchone()
                if check != "ok":
                    raise StoreMaintenanceError(f"the backup failed its integrity check: {check}")
                (namespaces,) = out.execute("SELECT count(*) FROM namespaces").fetchone()
                (entries,) = out.execute("SELECT count(*) FROM entries").fetchone()
                out.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            finally:
                out.close()
        finally:
            src.close()
        fsync_path(partial)
        os.replace(partial, dest)
        fsync_path(dest.parent)
    except sqlite3.Error as exc:
        raise StoreMaintenanceError(f"backup of {source} failed: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return BackupReport(
        dest, dest.stat().st_size, int(namespaces), int(entries), time.monotonic() - started
    )
