"""Files that survive a power cut: written aside, fsynced, renamed into place, folder fsynced.

A file's data is durable only after ``fsync`` of the file, and its name only after ``fsync`` of
the folder holding it (POSIX leaves both to the file system; ext4, XFS and LazyFS-style test
file systems really do drop the unsynced parts on power loss). ``kill -9`` proves neither,
since the page cache outlives the process. Every file pullkv writes and later relies on
(master key, admin token, lock file, backups, TLS material) goes through this module.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) contents and attributes to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = 0o777) -> None:
    """Create ``path`` and any missing parents, making each new name durable."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode)
        fsync_path(folder.parent)


def write_file(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` so that after a crash it holds all of it or what it held before.

    The bytes go to a hidden temporary file beside ``path`` (created with ``mode``), which is
    fsynced, renamed over ``path`` and made durable by an fsync of the folder. With
    ``exclusive`` an existing ``path`` is never replaced (``FileExistsError``).
    """
    make_dirs(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        if exclusive:
            # link() fails if the name exists, so two writers cannot both win.
            os.link(temporary, path)
            temporary.unlink()
        else:
            os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def remove_file(path: Path) -> None:
    """Delete ``path`` (if present) and make the deletion durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_path(path.parent)
