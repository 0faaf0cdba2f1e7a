"""A history of concurrent writes and reads over a faulty change feed, checked for
monotonic reads at every location and for convergence.

One origin (a LocalBackend on SQLite with its StoreFeed), a writer's location and a reader
location (edges in front of it, following its feed), and a middle tier relaying its feed to a
lower edge. Every feed connection passes through a fault hook that loses,
duplicates and reorders messages at random. Checked over at least 10,000 operations:

- no read returns a version older than one the same location already returned (or, at the
  writer's location, than one it acknowledged) before that read began;
- once the writers stop, every location answers the newest version of every key without any
  entry reaching its TTL (the feed alone converged: gaps were noticed and replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pullkv.backend import Backend
from pullkv.edge.backend import EdgeBackend
from pullkv.edge.cache import CachePolicy
from pullkv.feed.log import FeedLog, FeedSource, StoreFeed
from pullkv.feed.policy import FeedPolicy
from pullkv.feed.stream import feed_stream
from pullkv.feed.subscriber import FeedSubscriber
from pullkv.limits import DEFAULT_LIMITS
from pullkv.metrics import Metrics
from pullkv.origin.local import LocalBackend
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import NamespaceRecord, SealedWrite

ACCOUNT = "0" * 32
NAMESPACE = "1" * 32
KEYS = [f"k{i}" for i in range(12)]
WRITES = 900
READS_PER_READER = 1600  # six readers: 9,600 reads, with the writes over 10,000 operations
LIMITS = DEFAULT_LIMITS.with_changes(writes_per_key_per_second=0)
FEED = FeedPolicy(heartbeat=0.02, silence=1.0, poll=0.01, reconnect_min=0.01)


@dataclass
class Faults:
    """Loses, duplicates and reorders the lines of a feed."""

    rng: random.Random
    loss: float = 0.1
    duplicate: float = 0.1
    reorder: float = 0.1
    counts: dict[str, int] = field(default_factory=lambda: {"lost": 0, "dup": 0, "swap": 0})

    async def apply(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
        held: str | None = None  # a line kept back to swap with the next one
        async for chunk in chunks:
            for raw in chunk.decode().splitlines():
                if self.rng.random() < self.loss:
                    self.counts["lost"] += 1
                    continue
                out = [raw, raw] if self.rng.random() < self.duplicate else [raw]
                self.counts["dup"] += len(out) - 1
                if held is not None:
                    out.insert(1 if self.rng.random() < 0.5 else 0, held)
                    held = None
                elif self.rng.random() < self.reorder:
                    self.counts["swap"] += 1
                    held = out.pop()
                for line in out:
                    yield line + "\n"


def faulty_opener(
    source: FeedSource, faults: Faults
) -> Callable[[int | None, str | None], contextlib.AbstractAsyncContextManager[AsyncIterator[str]]]:
    @contextlib.asynccontextmanager
    async def open_stream(since: int | None, feed: str | None) -> AsyncIterator[AsyncIterator[str]]:
        stream = feed_stream(source, ACCOUNT, since, feed, FEED)
        try:
            yield faults.apply(stream)
        finally:
            await stream.aclose()

    return open_stream


class Distant:
    """An upstream some random milliseconds away, so that fetches, writes and the feed
    overtake one another."""

    def __init__(self, inner: object, rng: random.Random) -> None:
        self._inner = inner
        self._rng = rng
        self.feed = getattr(inner, "feed", None)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def far(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(self._rng.random() * 0.003)
            answer = await method(*args, **kwargs)
            await asyncio.sleep(self._rng.random() * 0.003)
            return answer

        return far


@dataclass
class Location:
    """One location's reads, checked as they complete."""

    name: str
    edge: EdgeBackend
    # The newest version this location gave (or acknowledged) per key, as of now.
    given: dict[str, int] = field(default_factory=dict)
    reads: int = 0

    async def read(self, key: str) -> None:
        required = self.given.get(key, 0)  # everything completed before this read began
        lookup = await self.edge.read(ACCOUNT, NAMESPACE, key, None)
        version = 0 if lookup.entry is None else lookup.entry.version
        assert version >= required, (
            f"{self.name}: read {key} at version {version} after giving {required}"
        )
        self.given[key] = max(self.given.get(key, 0), version)
        self.reads += 1


async def test_monotonic_reads_and_convergence_over_a_faulty_feed(tmp_path: Path) -> None:
    rng = random.Random(11)
    store = SQLiteStore(tmp_path / "origin.sqlite3")
    await store.create_namespace(NamespaceRecord(NAMESPACE, ACCOUNT, "history"), 1000)
    origin = LocalBackend(store, LIMITS, lambda: 1_700_000_000.0)
    feed = StoreFeed(store, "f", FEED)
    origin.feed = feed
    await feed.open()

    def edge(upstream: LocalBackend | EdgeBackend) -> EdgeBackend:
        far = cast(Backend, Distant(upstream, random.Random(rng.random())))
        return EdgeBackend(far, CachePolicy(), 1 << 24, Metrics(), default_ttl=60, feed_policy=FEED)

    writer, reader, middle = edge(origin), edge(origin), edge(origin)
    lower = edge(middle)
    names = ("writer", "reader", "middle", "lower")
    faults = {name: Faults(random.Random(rng.random())) for name in names}

    def relay(target: EdgeBackend) -> FeedLog:
        assert target.feed is not None
        return target.feed

    subscribers = [
        FeedSubscriber(
            faulty_opener(source, faults[name]),
            relay(target),
            target.invalidate,
            target.invalidate_all,
            FEED,
            Metrics(),
        )
        for name, source, target in (
            ("writer", feed, writer),
            ("reader", feed, reader),
            ("middle", feed, middle),
            ("lower", relay(middle), lower),
        )
    ]
    background = [asyncio.ensure_future(feed.run())]
    background += [asyncio.ensure_future(s.run()) for s in subscribers]
    locations = [
        Location("writer", writer),
        Location("reader", reader),
        Location("middle", middle),
        Location("lower", lower),
    ]
    written = {key: 0 for key in KEYS}

    async def write(number: int) -> None:
        for i in range(WRITES // 3):
            key = rng.choice(KEYS)
            value = f"{number}-{i}".encode()
            if rng.random() < 0.5:  # through the writer's location
                result = await writer.write(
                    ACCOUNT, NAMESPACE, [SealedWrite(key, value, None, None)]
                )
                version = result.versions[key]
                mine = locations[0]
                mine.given[key] = max(mine.given.get(key, 0), version)  # acknowledged here
            else:  # at the origin, as another location would
                result = await origin.write(
                    ACCOUNT, NAMESPACE, [SealedWrite(key, value, None, None)]
                )
                version = result.versions[key]
            written[key] = max(written[key], version)
            await asyncio.sleep(rng.random() * 0.002)

    async def read(location: Location) -> None:
        for _ in range(READS_PER_READER):
            await location.read(rng.choice(KEYS))
            if rng.random() < 0.3:
                await asyncio.sleep(rng.random() * 0.001)

    try:
        await asyncio.gather(
            *(write(n) for n in range(3)),
            *(read(loc) for loc in locations),
            *(read(loc) for loc in locations[1::2]),
        )
        operations = sum(loc.reads for loc in locations) + WRITES // 3 * 3
        assert operations >= 10_000
        assert all(
            f.counts["lost"] and f.counts["dup"] and f.counts["swap"] for f in faults.values()
        )

        # Convergence, by the feed alone: no entry ages (the TTL is 60 s and the test takes
        # a few seconds), so only invalidations can bring the newest versions.
        _, high = await store.change_bounds()
        for _ in range(500):
            if all(s.state.position == high for s in subscribers):
                break
            await asyncio.sleep(0.02)
        for location in locations:
            for key in KEYS:
                lookup = await location.edge.read(ACCOUNT, NAMESPACE, key, None)
                got = 0 if lookup.entry is None else lookup.entry.version
                assert got == written[key], f"{location.name} has {key} at {got}"
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for edge_backend in (lower, middle, reader, writer):
            for task in list(edge_backend._background):
                task.cancel()
        await store.close()
