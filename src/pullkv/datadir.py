"""A server's data folder: made ready for use, and held by one server process at a time.

Two servers on one SQLite data folder would each write an admin token and a store of their
own making; the second is refused while the first lives. The lock is an ``flock`` on
``<data>/pullkv.lock``: the kernel drops it when the holder dies, however it dies, so a kill -9
or power cut never leaves a stale lock behind. The file records the holder's pid for the
message the next process prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pullkv.durable import fsync_path, make_dirs

LOCK_FILE = "pullkv.lock"


class DataDirError(Exception):
    """The data folder cannot be used; the message names it and says why."""


def prepare(data_dir: Path) -> None:
    """Create the data folder if needed (durably, mode 0700) and check that it is writable."""
    try:
        make_dirs(data_dir, 0o700)
    except OSError as exc:
        raise DataDirError(
            f"cannot use the data folder {data_dir}: {exc.strerror or exc}"
        ) from None
    if not data_dir.is_dir():
        raise DataDirError(f"cannot use the data folder {data_dir}: it is not a folder")
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise DataDirError(f"cannot use the data folder {data_dir}: it is not writable")
    with contextlib.suppress(OSError):
        data_dir.chmod(0o700)


class DataDirLock:
    """An exclusive hold on a data folder for the life of this process (or until released)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Hold ``data_dir``, or raise ``DataDirError`` naming the process that holds it."""
        path = data_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DataDirError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirError(
                f"the data folder {data_dir} is in use by pid {holder}: stop that server "
                "first, or give this one another --data folder"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
            fsync_path(data_dir)
        except OSError as exc:
            os.close(fd)
            raise DataDirError(f"cannot write the lock file {path}: {exc.strerror}") from None
        return cls(path, fd)

    def fileno(self) -> int:
        """The locked descriptor: a child process given it holds the lock too, until the last
        holder closes it (the workers of ``--workers N``)."""
        if self._fd is None:
            raise DataDirError(f"{self.path} was released")
        return self._fd

    def release(self) -> None:
        """Let another process use the folder."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None
