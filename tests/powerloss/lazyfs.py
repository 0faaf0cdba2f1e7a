"""A FUSE file system that loses what was not fsynced when told to crash (LazyFS's model).

Run it as::

    python -m tests.powerloss.lazyfs ROOT MOUNTPOINT --control SOCKET [--state DIR]

(or ``python tests/powerloss/lazyfs.py ...``: the module imports only the standard library and
fusepy). It stays in the foreground until MOUNTPOINT is unmounted (``fusermount -u``).

Model. ROOT (the backing folder) is the durable state: what a disk holds after a power cut.
MOUNTPOINT shows the live state: what programs see while the machine runs. The two differ by
exactly what has not been made durable:

- A file's data and size become durable on fsync (or fdatasync) of that file.
- A directory's entries (creations, unlinks, renames in or out, hard links) become durable on
  fsync of that directory (FUSE ``fsyncdir``). A new name, whether of a new file or of a
  renamed one, is durable only after its directory is fsynced; until then a crash brings back
  the directory as it was at its last fsync (an unlinked name comes back with its durable
  data, a name that a rename replaced keeps its old file).
- A file whose name was made durable but whose data was never fsynced comes back empty; a
  file fsynced but whose name was never made durable does not come back at all.
- A mode change becomes durable with the next fsync of the file or of its directory; owners
  and timestamps are not tracked (they come back as the crash finds them).

On the control command ``crash`` everything not durable is dropped: ROOT is rewritten to hold
the durable state only, and every later operation on the mount fails with EIO (a dead
machine) until it is unmounted. Unmounting without a crash is a clean shutdown: everything
becomes durable first, as an operating system syncs at shutdown. Mounting again on ROOT is
the reboot.

How. The live state is a private copy of ROOT (the "work" folder under ``--state``), to which
every operation passes through, so reads, mmap (SQLite's -shm) and locks behave as on a real
file system. The durable state is kept apart: one "store" file per durable file (hard links of
ROOT's files at mount, so mounting costs one copy), a table of durable directory entries and
the byte ranges written since each file's last fsync. fsync copies those ranges into the store
file; fsyncdir records the directory's current entries. A crash rebuilds ROOT from the table
and the store. If this process dies without a crash or unmount, ROOT holds the durable data of
the files it had at mount, under the names they had at mount.

Control commands, one line each on the unix socket, answered ``ok`` (or ``error: ...``):
``ping``, ``crash``, ``sync`` (make everything durable now) and ``stats`` (a JSON line).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fuse import FUSE, FuseOSError, Operations

log = logging.getLogger("lazyfs")

ROOT_ID = 0
# A truncation dirties everything from the new size on: later writes past it leave holes that
# must read back as zeros, not as the older durable bytes.
TO_END = 1 << 62
COPY_CHUNK = 1 << 20
# Names that FUSE gives to files unlinked while open when mounted without hard_remove: they
# have no name on a real file system, so they never become durable entries.
HIDDEN_PREFIX = ".fuse_hidden"
STAT_KEYS = (
    "st_mode",
    "st_ino",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_blocks",
    "st_blksize",
)


class Node:
    """One inode's durable facts: its kind, its durable mode and, for a symlink, its target."""

    __slots__ = ("kind", "mode", "target")

    def __init__(self, kind: str, mode: int, target: str = "") -> None:
        self.kind = kind  # "f" file, "d" directory, "l" symlink
        self.mode = mode
        self.target = target


class LazyFS(Operations):  # type: ignore[misc]  # fusepy is untyped: Operations is Any
    """The file system: live state in a work folder, durable state in ROOT (see the module)."""

    use_ns = True
    # Operations on a file unlinked while open (hard_remove, below) come with no path: ours
    # work from the handle.
    flag_nullpath_ok = 1

    def __init__(self, root: Path, state: Path) -> None:
        self.root = root
        self.work = state / "work"
        self.store = state / "store"
        self._mutex = threading.RLock()
        self.crashed = False
        self.finished = False
        self.next_id = ROOT_ID + 1
        self.nodes: dict[int, Node] = {}
        # Durable directory entries: directory id -> name -> id. A directory never fsynced
        # since it was created has no entry here (it is durably empty).
        self.durable: dict[int, dict[str, int]] = {}
        # Ids that have a store file (durable data). A file without one is durably empty.
        self.stored: set[int] = set()
        # Byte ranges [start, end) written since the file's last fsync, by id.
        self.dirty: dict[int, list[tuple[int, int]]] = {}
        # Live inode number in the work folder -> id; open file handle -> id.
        self.ids: dict[int, int] = {}
        self.handles: dict[int, int] = {}
        self.counters = {"writes": 0, "fsyncs": 0, "fsyncdirs": 0, "crashes": 0}
        self._load()

    # --- durable state <-> folders ---------------------------------------------------------

    def _new_id(self, node: Node) -> int:
        node_id = self.next_id
        self.next_id += 1
        self.nodes[node_id] = node
        return node_id

    def _store_path(self, node_id: int) -> str:
        return os.path.join(self.store, str(node_id))

    def _load(self) -> None:
        """Read ROOT into the durable table, then build the work folder from it."""
        self.work.mkdir(parents=True)
        self.store.mkdir(parents=True)
        self.nodes[ROOT_ID] = Node("d", stat.S_IMODE(os.lstat(self.root).st_mode))
        by_inode: dict[int, int] = {}

        def scan(path: str, dir_id: int) -> None:
            entries: dict[str, int] = {}
            with os.scandir(path) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    mode = stat.S_IMODE(st.st_mode)
                    if stat.S_ISLNK(st.st_mode):
                        entries[entry.name] = self._new_id(Node("l", mode, os.readlink(entry.path)))
                    elif stat.S_ISDIR(st.st_mode):
                        child = self._new_id(Node("d", mode))
                        entries[entry.name] = child
                        scan(entry.path, child)
                    elif stat.S_ISREG(st.st_mode):
                        if st.st_ino in by_inode:  # a hard link of a file already seen
                            entries[entry.name] = by_inode[st.st_ino]
                            continue
                        child = self._new_id(Node("f", mode))
                        by_inode[st.st_ino] = child
                        entries[entry.name] = child
                        _link_or_copy(entry.path, self._store_path(child))
                        self.stored.add(child)
                    else:
                        log.warning("lazyfs: skipping %s (not a file, folder or link)", entry.path)
            self.durable[dir_id] = entries

        scan(str(self.root), ROOT_ID)
        self._build(str(self.work), copy=True)

    def _build(self, dest: str, *, copy: bool) -> None:
        """Lay the durable tree out under dest: copies of the store files for the work folder
        (recording their inode numbers), hard links of them for ROOT."""
        placed_dirs: set[int] = {ROOT_ID}
        placed_files: dict[int, str] = {}
        if copy:
            self.ids = {os.lstat(dest).st_ino: ROOT_ID}

        def build(path: str, dir_id: int) -> None:
            for name, child in sorted(self.durable.get(dir_id, {}).items()):
                node = self.nodes[child]
                target = os.path.join(path, name)
                if node.kind == "l":
                    os.symlink(node.target, target)
                elif node.kind == "d":
                    # Renames between folders synced one at a time can leave a folder named
                    # twice (or inside itself): a folder has one name, the first one laid out.
                    if child in placed_dirs:
                        continue
                    placed_dirs.add(child)
                    os.mkdir(target)
                    os.chmod(target, node.mode)
                    build(target, child)
                elif child in placed_files:
                    os.link(placed_files[child], target)
                else:
                    source = self._store_path(child)
                    if child not in self.stored:
                        Path(source).touch()
                        self.stored.add(child)
                    os.chmod(source, node.mode)
                    if copy:
                        shutil.copyfile(source, target)
                        os.chmod(target, node.mode)
                    else:
                        _link_or_copy(source, target)
                    placed_files[child] = target
                if copy:
                    self.ids[os.lstat(target).st_ino] = child

        build(dest, ROOT_ID)

    def _materialize(self) -> None:
        """Rewrite ROOT to hold exactly the durable state."""
        with os.scandir(self.root) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        os.chmod(self.root, self.nodes[ROOT_ID].mode)
        self._build(str(self.root), copy=False)

    def _close_all(self) -> None:
        for fh in list(self.handles):
            with contextlib.suppress(OSError):
                os.close(fh)
        self.handles.clear()

    def crash(self) -> None:
        """Drop everything not durable: ROOT keeps the durable state, the mount goes dead."""
        with self._mutex:
            if self.crashed or self.finished:
                return
            self.crashed = True
            self.counters["crashes"] += 1
            self._close_all()
            self._materialize()
            shutil.rmtree(self.work.parent, ignore_errors=True)

    def sync_all(self) -> None:
        """Make the whole live state durable (what a clean shutdown does)."""
        with self._mutex:
            if self.crashed or self.finished:
                return
            for dirpath, _dirnames, filenames in os.walk(self.work):
                rel = "/" + os.path.relpath(dirpath, self.work)
                self._fsyncdir(os.path.normpath(rel))
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    if name.startswith(HIDDEN_PREFIX) or os.path.islink(path):
                        continue
                    node_id = self._id_of(path)
                    self._fsync_id(node_id, path)

    # --- live-state helpers ------------------------------------------------------------------

    def _work_path(self, path: str | None) -> str:
        if path is None:  # a path operation on a file unlinked while open
            raise FuseOSError(errno.ENOENT)
        return os.path.join(self.work, path.lstrip("/"))

    def _id_of(self, work_path: str) -> int:
        st = os.lstat(work_path)
        node_id = self.ids.get(st.st_ino)
        if node_id is None:
            # Not created through this mount (cannot happen unless someone wrote into the work
            # folder): durably it is a new, empty inode.
            node_id = self._fresh(work_path)
        return node_id

    def _fresh(self, work_path: str) -> int:
        """Give a just-created live inode a new id (its inode number may be a reused one)."""
        st = os.lstat(work_path)
        if stat.S_ISDIR(st.st_mode):
            kind = "d"
        elif stat.S_ISLNK(st.st_mode):
            kind = "l"
        else:
            kind = "f"
        target = os.readlink(work_path) if kind == "l" else ""
        node_id = self._new_id(Node(kind, stat.S_IMODE(st.st_mode), target))
        self.ids[st.st_ino] = node_id
        return node_id

    def _forget_if_last(self, work_path: str) -> None:
        """Before a name goes away: if it is the inode's last one, drop the inode number, which
        the file system may hand to a new file."""
        try:
            st = os.lstat(work_path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode) or st.st_nlink <= 1:
            self.ids.pop(st.st_ino, None)

    def _mark(self, node_id: int, start: int, end: int) -> None:
        ranges = self.dirty.setdefault(node_id, [])
        if ranges:
            last_start, last_end = ranges[-1]
            # Sequential writes (appends, SQLite's WAL) extend one range.
            if last_start <= start <= last_end:
                ranges[-1] = (last_start, max(last_end, end))
                return
        ranges.append((start, end))
        if len(ranges) > 4096:
            self.dirty[node_id] = _merge(ranges)

    def _fsync_id(self, node_id: int, work_path: str | None, fh: int | None = None) -> None:
        """Copy the ranges written since the last fsync into the file's store file."""
        ranges = _merge(self.dirty.pop(node_id, []))
        close = False
        if fh is None:
            assert work_path is not None
            fh = os.open(work_path, os.O_RDONLY)
            close = True
        try:
            st = os.fstat(fh)
            size = st.st_size
            self.nodes[node_id].mode = stat.S_IMODE(st.st_mode)
            store_fd = os.open(self._store_path(node_id), os.O_RDWR | os.O_CREAT, 0o600)
            self.stored.add(node_id)
            try:
                os.ftruncate(store_fd, size)
                for start, end in ranges:
                    end = min(end, size)
                    while start < end:
                        chunk = os.pread(fh, min(COPY_CHUNK, end - start), start)
                        if not chunk:
                            break
                        os.pwrite(store_fd, chunk, start)
                        start += len(chunk)
            finally:
                os.close(store_fd)
        finally:
            if close:
                os.close(fh)

    def _fsyncdir(self, path: str) -> None:
        work_path = self._work_path(path)
        dir_id = self._id_of(work_path)
        self.nodes[dir_id].mode = stat.S_IMODE(os.lstat(work_path).st_mode)
        entries: dict[str, int] = {}
        with os.scandir(work_path) as it:
            for entry in it:
                if entry.name.startswith(HIDDEN_PREFIX):
                    continue
                child = self._id_of(entry.path)
                node = self.nodes[child]
                if node.kind != "l":
                    node.mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                entries[entry.name] = child
        self.durable[dir_id] = entries

    def stats(self) -> dict[str, Any]:
        """Counters and the amount of state not yet durable."""
        with self._mutex:
            return {
                **self.counters,
                "crashed": self.crashed,
                "dirty_files": len(self.dirty),
                "dirty_bytes": sum(e - s for r in self.dirty.values() for s, e in r if e < TO_END),
                "open_files": len(self.handles),
            }

    # --- FUSE operations -----------------------------------------------------------------------

    def __call__(self, op: str, *args: Any) -> Any:
        # One lock for everything: simple, and a crash sees a consistent cut.
        with self._mutex:
            if self.crashed and op not in ("init", "destroy", "release", "releasedir"):
                raise FuseOSError(errno.EIO)
            if self.crashed and op in ("release", "releasedir"):
                return 0
            try:
                return getattr(self, op)(*args)
            except FuseOSError:
                raise
            except OSError as e:
                raise FuseOSError(e.errno or errno.EIO) from e

    def init(self, path: str) -> None:
        """Mounted: start answering the control socket (the harness waits for it)."""
        if self.on_init is not None:
            self.on_init()

    on_init: Callable[[], object] | None = None

    def destroy(self, path: str) -> None:
        """Unmounted: a clean shutdown makes everything durable; after a crash, nothing to do."""
        with self._mutex:
            if self.crashed or self.finished:
                return
            self.sync_all()
            self._close_all()
            self._materialize()
            self.finished = True
            shutil.rmtree(self.work.parent, ignore_errors=True)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        """stat(2) of the live file."""
        st = os.fstat(fh) if fh else os.lstat(self._work_path(path))
        attrs = {key: getattr(st, key) for key in STAT_KEYS}
        attrs["st_atime"] = st.st_atime_ns
        attrs["st_mtime"] = st.st_mtime_ns
        attrs["st_ctime"] = st.st_ctime_ns
        return attrs

    def access(self, path: str, amode: int) -> int:
        """Permission checks are the kernel's (the tests run as root)."""
        if not os.path.lexists(self._work_path(path)):
            raise FuseOSError(errno.ENOENT)
        return 0

    def readdir(self, path: str, fh: int) -> Iterator[str]:
        """The live folder's names."""
        yield from (".", "..")
        yield from os.listdir(self._work_path(path))

    def readlink(self, path: str) -> str:
        """A symlink's target."""
        return os.readlink(self._work_path(path))

    def statfs(self, path: str) -> dict[str, int]:
        """The work folder's file system figures."""
        sv = os.statvfs(self.work)
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree")
        return {
            **{key: getattr(sv, key) for key in keys},
            "f_files": sv.f_files,
            "f_flag": sv.f_flag,
            "f_frsize": sv.f_frsize,
            "f_namemax": sv.f_namemax,
        }

    def chmod(self, path: str, mode: int) -> None:
        """Live only: durable with the next fsync of the file or its folder."""
        os.chmod(self._work_path(path), stat.S_IMODE(mode))

    def chown(self, path: str, uid: int, gid: int) -> None:
        """Live only (owners are not tracked durably)."""
        os.chown(self._work_path(path), uid, gid, follow_symlinks=False)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        """Live only (timestamps are not tracked durably)."""
        if times is None:
            os.utime(self._work_path(path), follow_symlinks=False)
        else:
            os.utime(self._work_path(path), ns=times, follow_symlinks=False)

    def mkdir(self, path: str, mode: int) -> None:
        """A new folder: durable once its parent is fsynced."""
        work_path = self._work_path(path)
        os.mkdir(work_path, mode)
        self._fresh(work_path)

    def rmdir(self, path: str) -> None:
        """Live only until the parent is fsynced."""
        work_path = self._work_path(path)
        st = os.lstat(work_path)
        os.rmdir(work_path)
        self.ids.pop(st.st_ino, None)

    def symlink(self, target: str, source: str) -> None:
        """fusepy's order: the link is named target and points at source."""
        work_path = self._work_path(target)
        os.symlink(source, work_path)
        self._fresh(work_path)

    def link(self, target: str, source: str) -> None:
        """A hard link named target of the file source: durable once target's folder is."""
        os.link(self._work_path(source), self._work_path(target))

    def unlink(self, path: str) -> None:
        """Live only until the parent is fsynced."""
        work_path = self._work_path(path)
        self._forget_if_last(work_path)
        os.unlink(work_path)

    def rename(self, old: str, new: str) -> None:
        """Live only until the folders involved are fsynced."""
        old_path, new_path = self._work_path(old), self._work_path(new)
        try:
            replaced = os.lstat(new_path)
        except FileNotFoundError:
            replaced = None
        moved = os.lstat(old_path)
        os.rename(old_path, new_path)
        if (
            replaced is not None
            and replaced.st_ino != moved.st_ino
            and (stat.S_ISDIR(replaced.st_mode) or replaced.st_nlink <= 1)
        ):
            self.ids.pop(replaced.st_ino, None)

    def mknod(self, path: str, mode: int, dev: int) -> None:
        """Regular files only (the kernel uses create for those in practice)."""
        if not stat.S_ISREG(mode):
            raise FuseOSError(errno.EPERM)
        work_path = self._work_path(path)
        os.close(os.open(work_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode)))
        self._fresh(work_path)

    def _open_flags(self, flags: int) -> int:
        # Always read-write so fsync can read back what a write-only handle wrote; no O_APPEND
        # so pwrite honours the kernel's offsets (it resolves appends itself).
        # O_DIRECT would need aligned buffers and O_SYNC would only slow the live copy: the
        # kernel sends fsync after each write to an O_SYNC file anyway.
        flags &= ~(os.O_ACCMODE | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_DIRECT | os.O_SYNC)
        return flags | os.O_RDWR

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        """A new file: durable (empty) once its folder is fsynced, its data once it is."""
        work_path = self._work_path(path)
        try:
            fh = os.open(work_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode))
            node_id = self._fresh(work_path)
        except FileExistsError:
            fh = os.open(work_path, os.O_RDWR)
            node_id = self._id_of(work_path)
        self.handles[fh] = node_id
        return fh

    def open(self, path: str, flags: int) -> int:
        """Open the live file; O_TRUNC dirties it all."""
        work_path = self._work_path(path)
        fh = os.open(work_path, self._open_flags(flags))
        node_id = self._id_of(work_path)
        self.handles[fh] = node_id
        if flags & os.O_TRUNC:
            self._mark(node_id, 0, TO_END)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        """Reads see the live state (durable or not)."""
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        """Live only: durable on fsync of the file."""
        written = os.pwrite(fh, data, offset)
        self._mark(self.handles[fh], offset, offset + written)
        self.counters["writes"] += 1
        return written

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        """Live only: durable on fsync of the file."""
        if fh:
            os.ftruncate(fh, length)
            node_id = self.handles[fh]
        else:
            work_path = self._work_path(path)
            os.truncate(work_path, length)
            node_id = self._id_of(work_path)
        self._mark(node_id, length, TO_END)

    def flush(self, path: str, fh: int) -> int:
        """close(2) makes nothing durable."""
        return 0

    def release(self, path: str, fh: int) -> int:
        """The last close of a handle."""
        self.handles.pop(fh, None)
        os.close(fh)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        """The file's data and size become durable (not its name)."""
        self.counters["fsyncs"] += 1
        if fh and fh in self.handles:
            self._fsync_id(self.handles[fh], None, fh)
        else:
            work_path = self._work_path(path)
            self._fsync_id(self._id_of(work_path), work_path)
        return 0

    def opendir(self, path: str) -> int:
        """Folders need no handle."""
        if not os.path.isdir(self._work_path(path)):
            raise FuseOSError(errno.ENOTDIR)
        return 0

    def releasedir(self, path: str, fh: int) -> int:
        """Nothing to release."""
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        """The folder's entries become durable as they are now."""
        self.counters["fsyncdirs"] += 1
        self._fsyncdir(path)
        return 0


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def serve_control(fs: LazyFS, path: str) -> socket.socket:
    """Answer control commands on a unix socket at path, in a daemon thread."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)

    def answer(command: str) -> str:
        if command == "ping":
            return "ok"
        if command == "crash":
            fs.crash()
            return "ok"
        if command == "sync":
            fs.sync_all()
            return "ok"
        if command == "stats":
            return json.dumps(fs.stats())
        return f"error: unknown command {command!r}"

    def handle(conn: socket.socket) -> None:
        with conn, conn.makefile("rw", encoding="utf-8") as stream:
            for line in stream:
                try:
                    reply = answer(line.strip())
                except Exception as e:  # the reply names it; the file system carries on
                    log.exception("lazyfs: control command %r failed", line.strip())
                    reply = f"error: {e}"
                stream.write(reply + "\n")
                stream.flush()

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, name="lazyfs-control", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    """Mount ROOT at MOUNTPOINT until unmounted."""
    parser = argparse.ArgumentParser(prog="lazyfs", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="backing folder (the durable state)")
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--control", required=True, help="unix socket path for commands")
    parser.add_argument(
        "--state",
        type=Path,
        help="scratch folder for the live copy and durable data (default: a new one beside ROOT;"
        " on ROOT's file system so mounting can hard-link instead of copying)",
    )
    parser.add_argument("--debug", action="store_true", help="log every FUSE request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO)

    root = args.root.resolve()
    if not root.is_dir():
        parser.error(f"{root} is not a folder")
    state = args.state or Path(tempfile.mkdtemp(prefix=".lazyfs-", dir=root.parent))
    state.mkdir(parents=True, exist_ok=True)
    # Left over by a mount whose process was killed: it describes a state that is gone.
    shutil.rmtree(state / "s", ignore_errors=True)
    fs = LazyFS(root, state / "s")
    control: list[socket.socket] = []
    fs.on_init = lambda: control.append(serve_control(fs, args.control))
    # hard_remove: unlinking an open file unlinks it (our handle keeps it readable), as on a
    # real file system, instead of renaming it to a visible .fuse_hidden name.
    options: dict[str, Any] = {
        "fsname": "lazyfs",
        "use_ino": True,
        "big_writes": True,
        "hard_remove": True,
    }
    if os.geteuid() == 0:
        options["allow_other"] = True
    try:
        FUSE(fs, str(args.mountpoint), foreground=True, nothreads=False, **options)
    finally:
        for server in control:
            server.close()
        if os.path.exists(args.control):
            os.unlink(args.control)
        if args.state is None:
            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
