"""What the worker processes of one node (``--workers N``) share, in the supervisor's runtime
folder (see ``workers``).

- ``versions``: a file mapped into every worker. Its first word counts worker restarts (the
  supervisor adds to it; ``/metrics`` reports it). The rest is a table of
  ``WORKER_VERSION_SLOTS`` 64-bit slots: before a worker answers a write's acknowledgement, it
  raises the slot of the written key to the write's version, and every worker's cache treats
  an entry older than its key's slot as stale. So a write acknowledged by one worker is never
  followed by an older value from another, with no messages between them. Two keys sharing a
  slot only cost a fetch. A key's slot comes from Python's ``hash()`` of the cache key the
  worker already built (a tenth of a CRC's cost on the hot path), which is the same in every
  worker because the supervisor gives them all one ``PYTHONHASHSEED`` (random per node start,
  so still secret from clients); its second word holds that seed, checked by each worker.
- ``metrics-<i>.sock``: each worker serves its own Prometheus exposition on a unix socket; the
  worker answering ``/metrics`` merges its siblings' into its own (``metrics.merge``).
- ``ready-<i>``: a worker creates it once it listens, so the supervisor tells a worker that
  could never start from one that died while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pullkv.limits import WORKER_METRICS_TIMEOUT, WORKER_VERSION_SLOTS

log = logging.getLogger("pullkv.workers")

VERSIONS_FILE = "versions"
# Words before the slots: the restart count, the workers' hash seed, then room for more.
_HEADER_WORDS = 8
_RESTARTS = 0
_HASH_SEED = 1
_WORD = 8
HASH_SEED_ENV = "PYTHONHASHSEED"

# A cached value's key, as the edge cache builds it: ("v", account, namespace, key).
ValueKey = tuple[str, str, str, str]


def versions_path(runtime: Path) -> Path:
    """The shared table's file in a runtime folder."""
    return runtime / VERSIONS_FILE


def metrics_socket(runtime: Path, index: int) -> Path:
    """Where worker ``index`` serves its own exposition."""
    return runtime / f"metrics-{index}.sock"


def ready_marker(runtime: Path, index: int) -> Path:
    """The file worker ``index`` creates once it listens."""
    return runtime / f"ready-{index}"


def encode(version: int, deleted: bool) -> int:
    """A slot's value: the version, then whether it was a delete (the lowest bit), so the
    larger value is still the newer version."""
    return version * 2 + int(deleted)


def slot_index(cache_key: ValueKey) -> int:
    """The key's slot (the same in every worker: they share one hash seed)."""
    return _HEADER_WORDS + hash(cache_key) % WORKER_VERSION_SLOTS


class WrittenVersions:
    """The shared table of one node's workers (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, (_HEADER_WORDS + WORKER_VERSION_SLOTS) * _WORD)
        # Aligned 8-byte words: a reader never sees half of a write.
        self._words = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, path: Path, hash_seed: int = 0) -> WrittenVersions:
        """A zeroed table (the supervisor makes it before starting workers, which it starts
        with ``PYTHONHASHSEED=hash_seed``)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, (_HEADER_WORDS + WORKER_VERSION_SLOTS) * _WORD)
        finally:
            os.close(fd)
        table = cls(path)
        table._words[_HASH_SEED] = hash_seed
        return table

    @property
    def hash_seed(self) -> int:
        """The ``PYTHONHASHSEED`` every worker runs with."""
        return int(self._words[_HASH_SEED])

    def close(self) -> None:
        """Unmap the table."""
        self._words.release()
        self._map.close()
        os.close(self._fd)

    def note(self, cache_key: ValueKey, version: int, deleted: bool) -> None:
        """Raise the key's slot to an acknowledged write's version (never lower it)."""
        index = slot_index(cache_key)
        value = encode(version, deleted)
        # Another worker may raise the same slot at the same time: the read and the write of
        # the maximum must not interleave with theirs, or the smaller could win.
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self._words[index] < value:
                self._words[index] = value
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def floor(self, cache_key: ValueKey) -> int:
        """The key's slot (0: no worker acknowledged a write of it, or of its slot-mates)."""
        return self._words[_HEADER_WORDS + hash(cache_key) % WORKER_VERSION_SLOTS]

    @property
    def restarts(self) -> int:
        """Worker restarts since the node started."""
        return int(self._words[_RESTARTS])

    def count_restart(self) -> None:
        """Count a restart (the supervisor alone writes this word)."""
        self._words[_RESTARTS] += 1


class SiblingsError(Exception):
    """A worker cannot join its node."""


def behind(floor: int, version: int, absent: bool) -> bool:
    """Whether a cached entry (``version``; ``absent``: "not found") is older than what a
    worker of this node acknowledged (``floor``). A "not found" answers a delete of any
    version: the key is absent either way, and an entry cannot say since when."""
    if floor == 0:
        return False
    if absent and floor & 1:
        return False
    return version < floor >> 1


@dataclass(frozen=True)
class WorkerPlace:
    """Which worker a process is: its index, how many there are, and the runtime folder."""

    index: int
    count: int
    runtime: Path


@dataclass
class Siblings:
    """One worker's view of its node: its index, how many workers there are, the runtime
    folder, and the shared table."""

    index: int
    count: int
    runtime: Path
    versions: WrittenVersions

    @classmethod
    def open(cls, place: WorkerPlace) -> Siblings:
        """Attach to the runtime folder the supervisor made; refuse a hash seed that is not
        the one every worker shares (slots would differ)."""
        table = WrittenVersions(versions_path(place.runtime))
        seed, shared = os.environ.get(HASH_SEED_ENV, ""), table.hash_seed
        if seed != str(shared):
            table.close()
            raise SiblingsError(
                f"worker {place.index} runs with {HASH_SEED_ENV}={seed or '(unset)'}, not the "
                f"node's {shared}: start workers through the supervisor (--workers)"
            )
        return cls(place.index, place.count, place.runtime, table)

    async def serve_metrics(self, render: Callable[[], bytes]) -> None:
        """Serve this worker's own exposition on its unix socket until cancelled."""
        path = metrics_socket(self.runtime, self.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by the worker this one replaces

        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(render())
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_unix_server(answer, path)
        try:
            await asyncio.Event().wait()
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def sibling_expositions(self) -> list[bytes]:
        """The other workers' expositions; a worker that does not answer (restarting) is
        left out."""
        others = [i for i in range(self.count) if i != self.index]
        answers = await asyncio.gather(*(self._fetch(i) for i in others))
        return [text for text in answers if text is not None]

    async def _fetch(self, index: int) -> bytes | None:
        path = metrics_socket(self.runtime, index)
        try:
            async with asyncio.timeout(WORKER_METRICS_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(path)
                try:
                    return await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            log.info("worker %d did not give its metrics: %s", index, exc)
            return None

    def mark_ready(self) -> None:
        """Tell the supervisor this worker listens."""
        ready_marker(self.runtime, self.index).touch()
