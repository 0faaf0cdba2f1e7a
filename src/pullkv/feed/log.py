"""Where a node's change feed comes from, and how servers wait for more of it.

An origin's feed is its store's change records (``StoreFeed``): the recent ones kept in
memory by one poller, older ones read from the store when a subscriber catches up from
further back. An edge's feed is what it has heard from its upstream (``FeedLog``), kept in
memory so that edges below it subscribe to it rather than to the origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from pullkv.feed.policy import FeedPolicy
from pullkv.store.base import Store
from pullkv.types import ChangeRecord

log = logging.getLogger("pullkv.feed")


class FeedSource(Protocol):
    """What the feed's server reads (``feed.stream``)."""

    policy: FeedPolicy
    streams: int  # streams being served from it (pullkv_feed_streams)

    @property
    def feed_id(self) -> str:
        """The sequence space's name: positions of another one mean nothing here."""

    @property
    def high(self) -> int:
        """The last position this source knows of."""

    @property
    def live(self) -> bool:
        """Whether the source is following its own origin (an edge whose upstream fell
        silent sends no heartbeats, so the edges below fall back to their TTLs too)."""

    @property
    def closed(self) -> bool:
        """Whether the node is shutting down: streams end."""

    async def records_after(self, since: int, limit: int) -> list[ChangeRecord] | None:
        """Records after position ``since`` (at most ``limit``), or None when ``since`` is
        older than what is retained."""

    async def wait(self, position: int, timeout: float) -> None:
        """Return once the source has more than ``position``, at ``timeout`` or on close."""

    async def ready(self, timeout: float) -> None:
        """Return once the source follows its origin (at most ``timeout`` later): an edge
        that just started has not heard its upstream yet."""

    def stop_streams(self) -> None:
        """End every stream served from this source (the node is shutting down)."""


# Reads the records in (since, until] of sequence space ``feed`` from further up; None if
# they cannot be had there either.
Backfill = Callable[[int, str, int], Awaitable[list[ChangeRecord] | None]]


class FeedLog:
    """Recent change records in memory, in sequence order, and waiting for more.

    Every record in (``floor``, ``high``] that was appended is held; positions in between
    without a record had none (for this node's account). With a ``backfill``, positions
    older than the floor are read from further up (an edge that restarted asks its
    upstream), so a subscriber resuming from before this log began is not reset.
    """

    def __init__(
        self,
        policy: FeedPolicy,
        feed_id: str = "",
        high: int = 0,
        backfill: Backfill | None = None,
    ) -> None:
        self.policy = policy
        self.backfill = backfill
        self.capacity = max(policy.retention, 1)
        self.feed_id = feed_id
        self.floor = high
        self.high = high
        self.live = False
        self.closed = False
        self.streams = 0
        self._records: deque[ChangeRecord] = deque()
        self._changed = asyncio.Event()

    def reset(self, feed_id: str, high: int) -> None:
        """Start over at ``high`` in the sequence space ``feed_id`` (nothing retained)."""
        self.feed_id = feed_id
        self._records.clear()
        self.floor = self.high = high
        self._wake()

    def extend(self, records: list[ChangeRecord], high: int) -> None:
        """Append records (each after ``self.high``) and advance to ``high``."""
        held = self._records
        for record in records:
            if record.seq > self.high:
                held.append(record)
                self.high = record.seq
        while len(held) > self.capacity:
            self.floor = held.popleft().seq
        self.high = max(self.high, high)
        self._wake()

    def set_live(self, live: bool) -> None:
        """Say whether the log follows its origin right now."""
        self.live = live
        self._wake()

    def stop_streams(self) -> None:
        """End every stream served from this log (the node is shutting down)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def records_after(self, since: int, limit: int) -> list[ChangeRecord] | None:
        """Records after ``since`` (None if ``since`` is older than the log and cannot be
        backfilled, or ahead of it)."""
        if since > self.high:
            return None
        if since < self.floor:
            if self.backfill is None:
                return None
            older = await self.backfill(since, self.feed_id, self.floor)
            if older is None:
                return None
            if (older and older[-1].seq >= self.floor) or len(older) >= limit:
                return older[:limit]
            return (older + (await self.records_after(self.floor, limit) or []))[:limit]
        newer: list[ChangeRecord] = []
        # Subscribers are nearly always near the end: walk back from there.
        for record in reversed(self._records):
            if record.seq <= since:
                break
            newer.append(record)
        newer.reverse()
        return newer[:limit]

    async def ready(self, timeout: float) -> None:
        """Until the log follows its upstream, ``timeout`` passes or it closes."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.live and not self.closed:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    async def wait(self, position: int, timeout: float) -> None:
        """Until the log moves past ``position``, ``timeout`` passes or it closes."""
        if self.high > position or self.closed:
            return
        # asyncio.timeout, not wait_for: no inner task, which 3.11's wait_for can leave
        # running when the caller is cancelled as the timeout fires.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()


class StoreFeed:
    """An origin's feed: its store's change records (see the module docstring).

    One poller (``run``) reads new records into a ``FeedLog`` at once when this process
    commits a write (``wake``) and every ``policy.poll`` seconds otherwise, and prunes the
    store's records to ``policy.retention``.
    """

    def __init__(self, store: Store, feed_id: str, policy: FeedPolicy) -> None:
        self.store = store
        self.policy = policy
        self.log = FeedLog(policy, feed_id)
        self.log.live = True
        self.streams = 0
        self._poke = asyncio.Event()

    @property
    def feed_id(self) -> str:
        """The store's sequence space."""
        return self.log.feed_id

    @property
    def high(self) -> int:
        """The last sequence number read from the store."""
        return self.log.high

    @property
    def live(self) -> bool:
        """Always: the store is the feed's origin."""
        return True

    @property
    def closed(self) -> bool:
        """Whether the node is shutting down."""
        return self.log.closed

    async def open(self) -> None:
        """Begin at the store's current end (``run`` then follows it)."""
        _, high = await self.store.change_bounds()
        self.log.reset(self.log.feed_id, high)

    def stop_streams(self) -> None:
        """End every stream served from this feed (the node is shutting down)."""
        self.log.stop_streams()

    def wake(self) -> None:
        """This process committed a write: read the store's new records now."""
        self._poke.set()

    async def records_after(self, since: int, limit: int) -> list[ChangeRecord] | None:
        """From memory, or from the store for a subscriber catching up from further back."""
        if since > self.log.high:
            await self.read_new()  # another origin on the same database may be ahead of us
        if since >= self.log.floor:
            return await self.log.records_after(since, limit)
        floor, high = await self.store.change_bounds()
        if since < floor or since > high:
            return None
        return await self.store.changes_after(since, min(limit, self.log.floor - since))

    async def wait(self, position: int, timeout: float) -> None:
        """Until a record past ``position`` is read, ``timeout`` passes or the node closes."""
        await self.log.wait(position, timeout)

    async def ready(self, timeout: float) -> None:
        """At once: the store is the feed's origin."""

    async def read_new(self) -> None:
        """Read every record committed since the last read into the log."""
        while True:
            records = await self.store.changes_after(self.log.high, self.policy.page)
            if not records:
                return
            self.log.extend(records, records[-1].seq)
            if len(records) < self.policy.page:
                return

    async def run(self) -> None:
        """Read new records as they commit, and prune old ones, until cancelled."""
        loop = asyncio.get_running_loop()
        pruned_at = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.policy.poll):
                    await self._poke.wait()
            self._poke.clear()
            try:
                await self.read_new()
                if loop.time() - pruned_at >= self.policy.prune_every:
                    pruned_at = loop.time()
                    await self.store.prune_changes(self.policy.retention)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store hiccup: the next poll tries again
                log.warning("reading the change feed from the store failed: %s", exc)
