"""Unit tests for pullkv.edge.backend: the edge cache in front of a real upstream.

The upstream is a real LocalBackend over a SQLite store, wrapped by ``CountingUpstream``,
which counts calls per method, can be switched "down" (503) or "unreachable" (a timeout or
failed connection, which opens the edge's circuit breaker) and can hold answers at a gate (an
asyncio.Event) to keep a call in flight: held, then released while unreachable, is a call
that timed out. The breaker's waits between probes go through ``ManualSleep``. Both the edge's
monotonic clock and the epoch clock (key expirations; also the upstream's clock) are fake, so
every cache transition happens at an exact time. Values are opaque bytes here: this layer
never opens them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from pullkv import errors
from pullkv.backend import CacheInfo, Fetched, Lookup, WriteResult
from pullkv.edge.backend import EdgeBackend
from pullkv.edge.breaker import BreakerPolicy
from pullkv.edge.cache import ENTRY_OVERHEAD, CachePolicy, list_ttl
from pullkv.limits import DEFAULT_LIMITS, EDGE_UNKNOWN_TOKENS, Limits
from pullkv.metrics import Metrics
from pullkv.origin.local import LocalBackend
from pullkv.store.base import NamespaceOrder, NamespaceStats
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import ListedKey, NamespaceRecord, SealedWrite, TokenRecord, WriteCondition
from tests.unit.helpers import FakeClock, raises_kv

ACCOUNT = "0" * 32
MONO = 500.0
EPOCH = 1_700_000_000.0
UNLIMITED = DEFAULT_LIMITS.with_changes(writes_per_key_per_second=0)

# A refresh window from 30 s to the TTL (60 s by default: UNLIMITED.default_cache_ttl); a
# short list TTL; a bounded stale.
POLICY = CachePolicy(
    refresh_interval=30.0,
    max_stale=100.0,
    list_ttl=20.0,
    token_refresh=20.0,
    token_max_age=45.0,
)


# Probes 1 s after opening, then 2, 4, capped at 5; a draw of 0.5 takes 10% off each wait.
BREAKER = BreakerPolicy(first_probe=1.0, backoff=2.0, max_probe_interval=5.0, jitter=0.2)


class CountingUpstream:
    """A Backend over a LocalBackend that counts calls, can fail, and can hold fetches."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.feed = None
        self.calls: Counter[str] = Counter()
        self.fetches: list[list[tuple[str, int | None]]] = []
        self.answers: list[dict[str, Fetched]] = []
        self.revalidated: list[bool] = []  # each fetch's revalidate flag
        self.down = False
        self.unreachable = False
        self.gates: dict[str, asyncio.Event] = {}  # method -> gate its answers wait at
        self.held: Counter[str] = Counter()  # answers waiting at a gate, by method

    def _call(self, method: str) -> None:
        self.calls[method] += 1
        if self.unreachable:
            raise errors.upstream_unreachable("test upstream did not answer in time")
        if self.down:
            raise errors.upstream_unavailable("test upstream is down")

    def hold(self, method: str = "fetch") -> asyncio.Event:
        """Hold every answer of ``method`` until the returned event is set."""
        gate = self.gates[method] = asyncio.Event()
        return gate

    async def _deliver(self, method: str) -> None:
        # The answer is read; it is "on the wire" until the method's gate opens.
        gate = self.gates.get(method)
        if gate is not None:
            self.held[method] += 1
            try:
                await gate.wait()
            finally:
                self.held[method] -= 1
        if self.unreachable:  # became unreachable while the answer was out: a timeout
            raise errors.upstream_unreachable("test upstream did not answer in time")

    async def close(self) -> None:
        self.calls["close"] += 1
        await self.inner.close()

    async def namespace(
        self, account_id: str, namespace_id: str, operation: str
    ) -> NamespaceRecord:
        self._call("namespace")
        found = await self.inner.namespace(account_id, namespace_id, operation)
        await self._deliver("namespace")
        return found

    async def list_namespaces(
        self,
        account_id: str,
        order: NamespaceOrder,
        descending: bool,
        offset: int,
        limit: int,
        only: Sequence[str] | None,
    ) -> tuple[list[NamespaceRecord], int]:
        self._call("list_namespaces")
        return await self.inner.list_namespaces(account_id, order, descending, offset, limit, only)

    async def create_namespace(self, namespace: NamespaceRecord) -> NamespaceRecord:
        self._call("create_namespace")
        return await self.inner.create_namespace(namespace)

    async def rename_namespace(
        self, account_id: str, namespace_id: str, title: str
    ) -> NamespaceRecord:
        self._call("rename_namespace")
        return await self.inner.rename_namespace(account_id, namespace_id, title)

    async def delete_namespace(self, account_id: str, namespace_id: str) -> None:
        self._call("delete_namespace")
        await self.inner.delete_namespace(account_id, namespace_id)

    async def read(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> Lookup:
        self._call("read")
        return await self.inner.read(
            account_id, namespace_id, key, cache_ttl, revalidate=revalidate
        )

    async def read_many(
        self, account_id: str, namespace_id: str, keys: Sequence[str], cache_ttl: int | None
    ) -> dict[str, Lookup]:
        self._call("read_many")
        return await self.inner.read_many(account_id, namespace_id, keys, cache_ttl)

    async def fetch(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[tuple[str, int | None]],
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> dict[str, Fetched]:
        self._call("fetch")
        self.fetches.append(list(keys))
        self.revalidated.append(revalidate)
        answers = await self.inner.fetch(
            account_id, namespace_id, keys, cache_ttl, revalidate=revalidate
        )
        self.answers.append(answers)
        await self._deliver("fetch")
        return answers

    async def list_keys(
        self, account_id: str, namespace_id: str, prefix: str, after: str | None, limit: int
    ) -> list[ListedKey]:
        self._call("list_keys")
        return await self.inner.list_keys(account_id, namespace_id, prefix, after, limit)

    async def write(
        self, account_id: str, namespace_id: str, writes: Sequence[SealedWrite]
    ) -> WriteResult:
        self._call("write")
        return await self.inner.write(account_id, namespace_id, writes)

    async def namespace_stats(self, account_id: str, namespace_id: str) -> NamespaceStats:
        """Forwarded uncounted."""
        return await self.inner.namespace_stats(account_id, namespace_id)

    async def delete(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[str],
        condition: WriteCondition | None = None,
    ) -> WriteResult:
        self._call("delete")
        return await self.inner.delete(account_id, namespace_id, keys, condition)

    async def get_token(self, token_id: str) -> TokenRecord | None:
        self._call("get_token")
        record = await self.inner.get_token(token_id)
        await self._deliver("get_token")
        return record

    async def add_token(self, token: TokenRecord) -> None:
        self._call("add_token")
        await self.inner.add_token(token)

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        self._call("list_tokens")
        return await self.inner.list_tokens(account_id)

    async def revoke_token(self, account_id: str, token_id: str) -> bool:
        self._call("revoke_token")
        return await self.inner.revoke_token(account_id, token_id)

    async def data_keys(self) -> list[tuple[int, bytes]]:
        self._call("data_keys")
        keys = await self.inner.data_keys()
        await self._deliver("data_keys")
        return keys


class ManualSleep:
    """Stands in for asyncio.sleep in the edge: records each wait, returns when woken."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._sleepers: list[asyncio.Future[None]] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append(future)
        await future

    @property
    def sleeping(self) -> int:
        return sum(1 for f in self._sleepers if not f.done())

    def wake(self) -> None:
        for future in self._sleepers:
            if not future.done():
                future.set_result(None)
        self._sleepers.clear()


@dataclass
class World:
    edge: EdgeBackend
    up: CountingUpstream
    local: LocalBackend
    store: SQLiteStore
    clock: FakeClock  # the edge's monotonic clock
    epoch: FakeClock  # epoch seconds: key expirations, at the edge and the upstream
    metrics: Metrics
    ns: str
    sleeper: ManualSleep

    async def read(self, key: str, cache_ttl: int | None = None, ns: str | None = None) -> Lookup:
        return await self.edge.read(ACCOUNT, ns or self.ns, key, cache_ttl)

    async def value(self, key: str, cache_ttl: int | None = None) -> bytes | None:
        entry = (await self.read(key, cache_ttl)).entry
        return None if entry is None else entry.value

    async def put(
        self, key: str, value: bytes, expiration: int | None = None, ns: str | None = None
    ) -> int:
        """Write through the edge."""
        result = await self.edge.write(
            ACCOUNT, ns or self.ns, [SealedWrite(key, value, None, expiration)]
        )
        return result.versions[key]

    async def put_direct(
        self, key: str, value: bytes, expiration: int | None = None, ns: str | None = None
    ) -> int:
        """Write at the upstream, behind the edge's back (as another location would)."""
        result = await self.local.write(
            ACCOUNT, ns or self.ns, [SealedWrite(key, value, None, expiration)]
        )
        return result.versions[key]

    async def new_namespace(self, title: str) -> str:
        namespace = NamespaceRecord(uuid.uuid4().hex, ACCOUNT, title)
        await self.local.create_namespace(namespace)
        return namespace.id

    async def names(
        self, prefix: str = "", after: str | None = None, limit: int = 1000
    ) -> list[str]:
        rows = await self.edge.list_keys(ACCOUNT, self.ns, prefix, after, limit)
        return [r.key for r in rows]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


async def make_world(
    tmp_path: Path,
    policy: CachePolicy = POLICY,
    capacity: int = 1 << 22,
    limits: Limits = UNLIMITED,
) -> World:
    store = SQLiteStore(tmp_path / "origin.sqlite3")
    epoch = FakeClock(EPOCH)
    clock = FakeClock(MONO)
    local = LocalBackend(store, limits, epoch)
    up = CountingUpstream(local)
    metrics = Metrics()
    sleeper = ManualSleep()
    edge = EdgeBackend(
        up,
        policy,
        capacity,
        metrics,
        default_ttl=limits.default_cache_ttl,
        clock=clock,
        epoch=epoch,
        upstream_name="http://up.test",
        breaker=BREAKER,
        sleep=sleeper,
        draw=lambda: 0.5,
    )
    world = World(edge, up, local, store, clock, epoch, metrics, "", sleeper)
    world.ns = await world.new_namespace("test")
    return world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    made = await make_world(tmp_path)
    yield made
    await made.edge.close()


async def turns(n: int = 10) -> None:
    """Let ready callbacks and background tasks run, without real sleeping."""
    for _ in range(n):
        await asyncio.sleep(0)


async def settle(edge: EdgeBackend) -> None:
    """Run the loop until the edge has no background work left."""
    for _ in range(200):
        await asyncio.sleep(0)
        if not edge._background and not edge._pending and not edge._inflight:
            return
    raise AssertionError("the edge's background work did not finish")


async def until(condition: Callable[[], bool], limit: int = 200) -> None:
    """Turn the loop until ``condition()`` holds."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


# Miss, hit, refresh window, expiry.
async def test_miss_then_hit(world: World) -> None:
    version = await world.put_direct("k", b"v1")
    first = await world.read("k")
    assert first.entry is not None and first.entry.value == b"v1"
    assert first.entry.version == version
    assert first.cache == CacheInfo(hit=False, age=0, ttl=60, forward="miss")
    assert world.up.calls["fetch"] == 1 and world.up.fetches == [[("k", None)]]

    world.clock.advance(10)
    second = await world.read("k")
    assert second.entry == first.entry
    assert second.cache == CacheInfo(hit=True, age=10, ttl=50)
    assert world.up.calls["fetch"] == 1
    world.clock.advance(19.5)
    third = await world.read("k")
    assert third.cache is not None and third.cache.age == 29 and third.cache.ttl == 30
    assert not third.cache.revalidating
    assert world.up.calls["fetch"] == 1
    assert world.sample("pullkv_cache_reads_total", result="miss") == 1
    assert world.sample("pullkv_cache_reads_total", result="hit") == 2


async def test_refresh_window_serves_at_once_and_revalidates_not_modified(world: World) -> None:
    version = await world.put_direct("k", b"v1")
    await world.read("k")
    world.clock.advance(40)
    lookup = await world.read("k")
    assert lookup.entry is not None and lookup.entry.value == b"v1"
    assert lookup.cache == CacheInfo(hit=True, age=40, ttl=20, revalidating=True)
    # A second read in the window while the revalidation runs starts no other.
    again = await world.read("k")
    assert again.cache is not None and again.cache.revalidating
    await settle(world.edge)
    assert world.up.calls["fetch"] == 2
    assert world.up.fetches[1] == [("k", version)]  # conditional: carries the version held
    assert world.up.answers[1]["k"].not_modified
    assert world.sample("pullkv_cache_revalidations_total", outcome="not_modified") == 1
    assert world.sample("pullkv_cache_revalidations_total", outcome="changed") == 0

    # validated_at was refreshed: 10 s later the entry is 10 s old and fresh again.
    world.clock.advance(10)
    later = await world.read("k")
    assert later.entry is not None and later.entry.value == b"v1"
    assert later.cache == CacheInfo(hit=True, age=10, ttl=50)
    # Well past the original TTL, still served without a synchronous fetch.
    world.clock.advance(15)
    assert (await world.read("k")).cache == CacheInfo(hit=True, age=25, ttl=35)
    assert world.up.calls["fetch"] == 2


async def test_refresh_window_changed_value_replaces_entry(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    v2 = await world.put_direct("k", b"v2")
    world.clock.advance(30)  # the refresh interval itself opens the window
    lookup = await world.read("k")
    assert lookup.entry is not None and lookup.entry.value == b"v1"  # served at once, old
    assert lookup.cache is not None and lookup.cache.revalidating
    await settle(world.edge)
    assert world.sample("pullkv_cache_revalidations_total", outcome="changed") == 1
    after = await world.read("k")
    assert after.entry is not None and after.entry.value == b"v2" and after.entry.version == v2
    assert after.cache == CacheInfo(hit=True, age=0, ttl=60)
    assert world.up.calls["fetch"] == 2


async def test_refresh_window_sees_upstream_delete(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    await world.local.delete(ACCOUNT, world.ns, ["k"])
    world.clock.advance(45)
    assert await world.value("k") == b"v1"
    await settle(world.edge)
    assert world.sample("pullkv_cache_revalidations_total", outcome="changed") == 1
    gone = await world.read("k")
    assert gone.entry is None and gone.cache is not None and gone.cache.hit
    assert world.sample("pullkv_cache_reads_total", result="negative_hit") == 1


async def test_failed_revalidation_is_counted_and_entry_kept(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    world.up.down = True
    world.clock.advance(40)
    assert await world.value("k") == b"v1"
    await settle(world.edge)
    assert world.sample("pullkv_cache_revalidations_total", outcome="failed") == 1
    world.clock.advance(5)
    lookup = await world.read("k")  # still in the window: served, another try started
    assert lookup.entry is not None and lookup.cache is not None and lookup.cache.revalidating
    assert lookup.cache.age == 45
    await settle(world.edge)
    assert world.sample("pullkv_cache_revalidations_total", outcome="failed") == 2


async def test_expired_entry_is_fetched_synchronously(world: World) -> None:
    version = await world.put_direct("k", b"v1")
    await world.read("k")
    world.clock.advance(60)  # age == ttl: expired
    lookup = await world.read("k")
    assert lookup.entry is not None and lookup.entry.value == b"v1"
    assert lookup.cache == CacheInfo(hit=False, age=0, ttl=60, forward="stale")
    assert world.up.fetches[-1] == [("k", version)]
    assert world.up.answers[-1]["k"].not_modified
    assert world.sample("pullkv_cache_revalidations_total", outcome="not_modified") == 0
    # not_modified refreshed the entry: fresh again.
    world.clock.advance(1)
    assert (await world.read("k")).cache == CacheInfo(hit=True, age=1, ttl=59)

    v2 = await world.put_direct("k", b"v2")
    world.clock.advance(100)
    changed = await world.read("k")
    assert changed.entry is not None and changed.entry.value == b"v2"
    assert changed.entry.version == v2
    assert changed.cache is not None and changed.cache.forward == "stale"
    assert world.up.calls["fetch"] == 3


async def test_negative_caching(world: World) -> None:
    missing = await world.read("nope")
    assert missing.entry is None
    assert missing.cache == CacheInfo(hit=False, age=0, ttl=60, forward="miss")
    await world.put_direct("nope", b"now here")  # another location writes it
    world.clock.advance(29)
    hit = await world.read("nope")
    assert hit.entry is None and hit.cache == CacheInfo(hit=True, age=29, ttl=31)
    assert world.up.calls["fetch"] == 1
    # In its refresh window the negative entry is served, and revalidated in the background.
    world.clock.advance(1)
    window = await world.read("nope")
    assert window.entry is None and window.cache is not None and window.cache.revalidating
    await settle(world.edge)
    assert world.up.fetches[-1] == [("nope", 0)]
    assert world.sample("pullkv_cache_revalidations_total", outcome="changed") == 1
    assert await world.value("nope") == b"now here"
    assert world.up.calls["fetch"] == 2


async def test_negative_caching_until_ttl(tmp_path: Path) -> None:
    world = await make_world(tmp_path, CachePolicy(refresh_interval=60.0))
    try:
        assert await world.value("nope") is None
        await world.put_direct("nope", b"here")
        world.clock.advance(59.9)
        assert await world.value("nope") is None
        assert world.up.calls["fetch"] == 1
        world.clock.advance(0.1)
        lookup = await world.read("nope")
        assert lookup.entry is not None and lookup.entry.value == b"here"
        assert lookup.cache is not None and lookup.cache.forward == "stale"
        assert world.up.fetches == [[("nope", None)], [("nope", 0)]]
        assert world.up.calls["fetch"] == 2
    finally:
        await world.edge.close()


async def test_per_read_cache_ttl(world: World) -> None:
    await world.put_direct("k", b"v1")
    first = await world.read("k", cache_ttl=300)
    assert first.cache is not None and first.cache.ttl == 300
    world.clock.advance(25)
    short = await world.read("k", cache_ttl=30)
    assert short.cache == CacheInfo(hit=True, age=25, ttl=5)
    world.clock.advance(5)
    # Expired for a 30 s read, while a 300 s read still accepts it (in its refresh window).
    long = await world.read("k", cache_ttl=300)
    assert long.cache == CacheInfo(hit=True, age=30, ttl=270, revalidating=True)
    await settle(world.edge)
    assert world.up.calls["fetch"] == 2
    world.clock.advance(30)
    expired = await world.read("k", cache_ttl=30)
    assert expired.cache is not None and expired.cache.forward == "stale"
    assert world.up.calls["fetch"] == 3


async def test_cache_ttl_longer_than_default_serves_past_default(tmp_path: Path) -> None:
    world = await make_world(tmp_path, CachePolicy(refresh_interval=1000.0))
    try:
        await world.put_direct("k", b"v1")
        await world.read("k", cache_ttl=300)
        await world.put_direct("k", b"v2")
        world.clock.advance(299)
        assert await world.value("k", cache_ttl=300) == b"v1"
        assert world.up.calls["fetch"] == 1
        assert await world.value("k") == b"v2"  # the default 60 s TTL has long passed
        assert world.up.calls["fetch"] == 2
    finally:
        await world.edge.close()


# Single-flight and batching.
async def test_single_flight_collapses_concurrent_reads(world: World) -> None:
    await world.put_direct("hot", b"value")
    gate = world.up.hold()
    tasks = [asyncio.ensure_future(world.read("hot")) for _ in range(200)]
    await until(lambda: world.up.held["fetch"] == 1)
    await turns()
    assert world.up.calls["fetch"] == 1
    assert not any(t.done() for t in tasks)
    gate.set()
    lookups = await asyncio.gather(*tasks)
    assert world.up.calls["fetch"] == 1 and world.up.fetches == [[("hot", None)]]
    assert {(lk.entry.value if lk.entry else None) for lk in lookups} == {b"value"}
    assert len({lk.entry for lk in lookups}) == 1
    infos = [lk.cache for lk in lookups]
    assert all(i is not None and i.forward == "miss" and not i.hit for i in infos)
    assert sum(1 for i in infos if i is not None and i.collapsed) == 199
    assert infos[0] is not None and not infos[0].collapsed
    assert world.sample("pullkv_cache_reads_total", result="miss") == 200
    # The answer is cached for everyone after.
    assert (await world.read("hot")).cache == CacheInfo(hit=True, age=0, ttl=60)
    assert world.up.calls["fetch"] == 1


async def test_single_flight_of_a_missing_key(world: World) -> None:
    lookups = await asyncio.gather(*(world.read("absent") for _ in range(50)))
    assert world.up.calls["fetch"] == 1
    assert all(lk.entry is None for lk in lookups)


async def test_reads_during_revalidation_join_it(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    gate = world.up.hold()
    world.clock.advance(40)
    for _ in range(20):
        lookup = await world.read("k")
        assert lookup.cache is not None and lookup.cache.revalidating
    await until(lambda: world.up.held["fetch"] == 1)
    gate.set()
    await settle(world.edge)
    assert world.up.calls["fetch"] == 2


async def test_expired_readers_join_one_fetch(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    await world.put_direct("k", b"v2")
    world.clock.advance(60)
    lookups = await asyncio.gather(*(world.read("k") for _ in range(30)))
    assert world.up.calls["fetch"] == 2
    assert {lk.entry.value for lk in lookups if lk.entry} == {b"v2"}
    assert all(lk.cache is not None and lk.cache.forward == "stale" for lk in lookups)
    assert sum(1 for lk in lookups if lk.cache is not None and lk.cache.collapsed) == 29


async def test_cold_reads_of_one_namespace_are_batched(world: World) -> None:
    keys = [f"key-{i}" for i in range(10)]
    for key in keys[:5]:
        await world.put_direct(key, key.encode())
    lookups = await asyncio.gather(*(world.read(key) for key in keys))
    assert world.up.calls["fetch"] == 1
    assert sorted(world.up.fetches[0]) == sorted((key, None) for key in keys)
    for key, lookup in zip(keys, lookups, strict=True):
        expected = key.encode() if key in keys[:5] else None
        assert (lookup.entry.value if lookup.entry else None) == expected
        assert lookup.cache is not None and lookup.cache.forward == "miss"
        assert not lookup.cache.collapsed
    for key in keys:
        assert (await world.read(key)).cache == CacheInfo(hit=True, age=0, ttl=60)
    assert world.up.calls["fetch"] == 1


async def test_read_many_is_one_upstream_fetch(world: World) -> None:
    keys = [f"key-{i}" for i in range(10)]
    for key in keys:
        await world.put_direct(key, key.encode())
    await world.read("key-3")  # one already cached
    assert world.up.calls["fetch"] == 1
    result = await world.edge.read_many(ACCOUNT, world.ns, keys, None)
    assert list(result) == keys
    assert world.up.calls["fetch"] == 2
    assert sorted(world.up.fetches[1]) == sorted((k, None) for k in keys if k != "key-3")
    assert all(lk.entry is not None and lk.entry.value == k.encode() for k, lk in result.items())
    assert result["key-3"].cache is not None and result["key-3"].cache.hit
    again = await world.edge.read_many(ACCOUNT, world.ns, keys, None)
    assert all(lk.cache is not None and lk.cache.hit for lk in again.values())
    assert world.up.calls["fetch"] == 2


async def test_batches_are_per_namespace(world: World) -> None:
    other = await world.new_namespace("other")
    await asyncio.gather(
        world.read("a"), world.read("b"), world.read("a", ns=other), world.read("c", ns=other)
    )
    assert world.up.calls["fetch"] == 2
    assert sorted(sorted(f) for f in world.up.fetches) == [
        [("a", None), ("b", None)],
        [("a", None), ("c", None)],
    ]


async def test_edge_fetch_answers_lower_tiers_conditionally(world: World) -> None:
    version = await world.put_direct("k", b"v1")
    await world.read("k")
    answers = await world.edge.fetch(ACCOUNT, world.ns, [("k", version), ("none", None)], None)
    assert answers["k"] == Fetched(None, not_modified=True)
    assert answers["none"] == Fetched(None)
    assert world.up.calls["fetch"] == 2  # "none" was cold; "k" came from the cache
    full = await world.edge.fetch(ACCOUNT, world.ns, [("k", version - 1)], None)
    assert full["k"].entry is not None and full["k"].entry.value == b"v1"
    assert world.up.calls["fetch"] == 2


# Stale-if-error.
async def test_stale_if_error_within_bound(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    world.up.down = True
    world.clock.advance(60)
    lookup = await world.read("k")
    assert lookup.entry is not None and lookup.entry.value == b"v1"
    assert lookup.cache == CacheInfo(
        hit=True, age=60, ttl=0, forward="stale", stale=True, collapsed=False
    )
    assert 'detail="stale-if-error"' in lookup.cache.header()
    assert world.sample("pullkv_cache_reads_total", result="stale") == 1
    world.clock.advance(99.9)  # age 159.9 < ttl + max_stale
    late = await world.read("k")
    assert late.entry is not None and late.cache is not None and late.cache.stale
    assert late.cache.ttl == -100
    world.clock.advance(0.1)  # age 160 == ttl + max_stale: no longer usable
    with raises_kv(503, errors.UNAVAILABLE):
        await world.read("k")
    assert (
        world.sample("pullkv_upstream_requests_total", operation="fetch", outcome="unavailable")
        == 3
    )


async def test_stale_if_error_recovers_when_upstream_returns(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    world.up.down = True
    world.clock.advance(70)
    assert (await world.read("k")).cache is not None
    world.up.down = False
    await world.put_direct("k", b"v2")
    lookup = await world.read("k")
    assert lookup.entry is not None and lookup.entry.value == b"v2"
    assert lookup.cache == CacheInfo(hit=False, age=0, ttl=60, forward="stale")


async def test_stale_negative_entry_is_served_as_not_found(world: World) -> None:
    assert await world.value("nope") is None
    world.up.down = True
    world.clock.advance(61)
    lookup = await world.read("nope")
    assert lookup.entry is None and lookup.cache is not None and lookup.cache.stale


async def test_uncached_key_with_upstream_down_is_503(world: World) -> None:
    await world.put_direct("k", b"v1")
    world.up.down = True
    with raises_kv(503, errors.UNAVAILABLE):
        await world.read("k")
    with raises_kv(503, errors.UNAVAILABLE):
        await world.edge.read_many(ACCOUNT, world.ns, ["k", "j"], None)
    world.up.down = False
    assert await world.value("k") == b"v1"  # nothing was cached from the failures


async def test_upstream_refusal_is_never_masked_by_stale_data(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    await world.local.delete_namespace(ACCOUNT, world.ns)  # gone at the origin
    world.clock.advance(60)
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.read("k")
    assert world.sample("pullkv_cache_reads_total", result="stale") == 0
    assert world.sample("pullkv_upstream_requests_total", operation="fetch", outcome="refused") == 1


async def test_unknown_namespace_is_404_and_not_cached(world: World) -> None:
    ghost = "f" * 32
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.read("k", ns=ghost)
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.read("k", ns=ghost)
    assert world.up.calls["fetch"] == 2


# Writes.
async def test_write_through_is_read_from_cache(world: World) -> None:
    version = await world.put("k", b"written")
    lookup = await world.read("k")
    assert lookup.entry is not None and lookup.entry.value == b"written"
    assert lookup.entry.version == version
    assert lookup.cache == CacheInfo(hit=True, age=0, ttl=60)
    assert world.up.calls["fetch"] == 0 and world.up.calls["write"] == 1
    assert world.sample("pullkv_writes_total", operation="put") == 1
    # Replacing a cached value.
    await world.read("k")
    v2 = await world.put("k", b"again")
    again = await world.read("k")
    assert again.entry is not None and again.entry.value == b"again" and again.entry.version == v2
    assert world.up.calls["fetch"] == 0


async def test_write_with_metadata_and_expiration_is_cached_as_written(world: World) -> None:
    expiration = int(EPOCH) + 120
    result = await world.edge.write(
        ACCOUNT, world.ns, [SealedWrite("m", b"val", b"sealed-meta", expiration)]
    )
    lookup = await world.read("m")
    assert lookup.entry is not None
    assert (lookup.entry.value, lookup.entry.metadata, lookup.entry.expiration) == (
        b"val",
        b"sealed-meta",
        expiration,
    )
    assert lookup.entry.version == result.versions["m"]
    assert world.up.calls["fetch"] == 0


async def test_refused_write_is_not_cached(tmp_path: Path) -> None:
    limits = DEFAULT_LIMITS.with_changes(writes_per_key_per_second=1)  # Workers KV's rate
    world = await make_world(tmp_path, limits=limits)
    try:
        await world.put("k", b"one")
        result = await world.edge.write(ACCOUNT, world.ns, [SealedWrite("k", b"two", None, None)])
        assert result.refused == ["k"] and result.versions == {}
        assert await world.value("k") == b"one"
    finally:
        await world.edge.close()


async def test_failed_write_leaves_cache_alone(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    world.up.down = True
    with raises_kv(503):
        await world.put("k", b"v2")
    world.up.down = False
    assert await world.value("k") == b"v1"
    assert world.sample("pullkv_writes_total", operation="put") == 0


async def test_fetch_in_flight_does_not_overwrite_newer_write(world: World) -> None:
    await world.put_direct("k", b"old")
    gate = world.up.hold()
    reader = asyncio.ensure_future(world.read("k"))
    await until(lambda: world.up.held["fetch"] == 1)  # the old value is on its way
    version = await world.put("k", b"new")
    gate.set()
    first = await reader
    # Concurrent with the write, but answered after it: this location already gave the new
    # version (the write's acknowledgement), so never the older one again.
    assert first.entry is not None and first.entry.value == b"new"
    lookup = await world.read("k")
    assert lookup.entry is not None and lookup.entry.value == b"new"
    assert lookup.entry.version == version
    assert lookup.cache is not None and lookup.cache.hit
    assert world.up.calls["fetch"] == 1


async def test_revalidation_in_flight_does_not_overwrite_newer_write(world: World) -> None:
    await world.put_direct("k", b"old")
    await world.read("k")
    await world.put_direct("k", b"other location")
    gate = world.up.hold()
    world.clock.advance(40)
    assert await world.value("k") == b"old"  # starts the background revalidation
    await until(lambda: world.up.held["fetch"] == 1)
    await world.put("k", b"new")
    gate.set()
    await settle(world.edge)
    assert await world.value("k") == b"new"
    assert world.up.calls["fetch"] == 2


async def test_delete_caches_a_tombstone(world: World) -> None:
    await world.put_direct("k", b"v1")
    assert await world.value("k") == b"v1"
    result = await world.edge.delete(ACCOUNT, world.ns, ["k", "never-was"])
    assert set(result.versions) == {"k", "never-was"}
    for key in ("k", "never-was"):
        lookup = await world.read(key)
        assert lookup.entry is None and lookup.cache == CacheInfo(hit=True, age=0, ttl=60)
    assert world.up.calls["fetch"] == 1 and world.up.calls["delete"] == 1
    assert world.sample("pullkv_writes_total", operation="delete") == 2
    assert world.sample("pullkv_cache_reads_total", result="negative_hit") == 2
    # A later write of the key replaces the tombstone.
    await world.put("k", b"v2")
    assert await world.value("k") == b"v2"
    assert world.up.calls["fetch"] == 1


async def test_delete_in_flight_fetch_does_not_resurrect(world: World) -> None:
    await world.put_direct("k", b"old")
    gate = world.up.hold()
    reader = asyncio.ensure_future(world.read("k"))
    await until(lambda: world.up.held["fetch"] == 1)
    await world.edge.delete(ACCOUNT, world.ns, ["k"])
    gate.set()
    await reader
    assert await world.value("k") is None


# Key expiration (epoch clock).
async def test_expired_key_reads_as_none(world: World) -> None:
    expiration = int(EPOCH) + 100
    await world.put("k", b"v", expiration)
    assert await world.value("k") == b"v"
    world.epoch.advance(99)
    assert await world.value("k") == b"v"
    world.epoch.advance(1)  # expiration <= now
    lookup = await world.read("k")
    assert lookup.entry is None and lookup.cache is not None and lookup.cache.hit
    assert world.up.calls["fetch"] == 0


async def test_expired_key_fetched_reads_as_none(world: World) -> None:
    await world.put_direct("k", b"v", int(EPOCH) + 100)
    assert await world.value("k") == b"v"
    world.epoch.advance(100)
    world.clock.advance(60)  # refetch: the upstream no longer has it
    assert await world.value("k") is None
    assert world.up.calls["fetch"] == 2


async def test_stale_entry_past_its_key_expiration_is_none(world: World) -> None:
    await world.put("k", b"v", int(EPOCH) + 100)
    world.up.down = True
    world.clock.advance(70)
    world.epoch.advance(100)
    lookup = await world.read("k")
    assert lookup.entry is None and lookup.cache is not None and lookup.cache.stale


# Lists.
async def test_list_is_cached_for_list_ttl(world: World) -> None:
    assert list_ttl(POLICY, UNLIMITED.default_cache_ttl) == 20.0
    await world.put_direct("a", b"1")
    await world.put_direct("b", b"2")
    assert await world.names() == ["a", "b"]
    assert world.up.calls["list_keys"] == 1
    await world.put_direct("c", b"3")  # elsewhere: not seen until the list TTL passes
    world.clock.advance(19.9)
    assert await world.names() == ["a", "b"]
    assert world.up.calls["list_keys"] == 1
    world.clock.advance(0.1)
    assert await world.names() == ["a", "b", "c"]
    assert world.up.calls["list_keys"] == 2


async def test_list_ttl_is_capped_by_default_ttl(tmp_path: Path) -> None:
    policy = CachePolicy(list_ttl=600.0)
    world = await make_world(tmp_path, policy, limits=UNLIMITED.with_changes(default_cache_ttl=30))
    try:
        await world.names()
        world.clock.advance(29.9)
        await world.names()
        assert world.up.calls["list_keys"] == 1
        world.clock.advance(0.1)
        await world.names()
        assert world.up.calls["list_keys"] == 2
    finally:
        await world.edge.close()


async def test_list_pages_are_cached_separately(world: World) -> None:
    for key in ("a1", "a2", "b1"):
        await world.put_direct(key, b"x")
    assert await world.names("a") == ["a1", "a2"]
    assert await world.names("", limit=1) == ["a1"]
    assert await world.names("", after="a1", limit=1) == ["a2"]
    assert world.up.calls["list_keys"] == 3
    assert await world.names("a") == ["a1", "a2"]
    assert await world.names("", limit=1) == ["a1"]
    assert await world.names("", after="a1", limit=1) == ["a2"]
    assert world.up.calls["list_keys"] == 3


async def test_list_dropped_on_write_through_this_edge(world: World) -> None:
    other = await world.new_namespace("other")
    await world.names()
    await world.edge.list_keys(ACCOUNT, other, "", None, 1000)
    await world.put("new", b"x")
    assert await world.names() == ["new"]
    assert world.up.calls["list_keys"] == 3
    # Another namespace's cached list is kept.
    await world.edge.list_keys(ACCOUNT, other, "", None, 1000)
    assert world.up.calls["list_keys"] == 3
    await world.edge.delete(ACCOUNT, world.ns, ["new"])
    assert await world.names() == []
    assert world.up.calls["list_keys"] == 4


async def test_cached_page_with_expired_key_is_refetched(world: World) -> None:
    await world.put_direct("a", b"1", int(EPOCH) + 100)
    await world.put_direct("b", b"2")
    assert await world.names() == ["a", "b"]
    world.epoch.advance(99)
    assert await world.names() == ["a", "b"]
    assert world.up.calls["list_keys"] == 1
    world.epoch.advance(1)
    assert await world.names() == ["b"]
    assert world.up.calls["list_keys"] == 2


async def test_list_served_stale_when_upstream_down(world: World) -> None:
    await world.put_direct("a", b"1")
    assert await world.names() == ["a"]
    world.up.down = True
    world.clock.advance(20 + 99)  # past the list TTL, within max_stale
    assert await world.names() == ["a"]
    world.clock.advance(1)
    with raises_kv(503):
        await world.names()
    with raises_kv(503):
        await world.names("other-prefix")


async def test_stale_list_with_expired_key_is_not_served(world: World) -> None:
    # Expired keys are never listed: with the upstream down, a cached page holding one is
    # neither shown as it is nor trimmed (a short page would look like the end): 503.
    await world.put_direct("a", b"1", int(EPOCH) + 100)
    await world.put_direct("b", b"2")
    assert await world.names() == ["a", "b"]
    world.up.down = True
    world.epoch.advance(100)
    with raises_kv(503, errors.UNAVAILABLE):
        await world.names()


async def test_list_of_unknown_namespace_is_404(world: World) -> None:
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.edge.list_keys(ACCOUNT, "f" * 32, "", None, 10)


# Bounded cache.
async def test_cache_is_bytes_bounded(tmp_path: Path) -> None:
    item = ENTRY_OVERHEAD + len("key-0") + 1000
    world = await make_world(tmp_path, capacity=3 * item)
    try:
        for i in range(6):
            await world.put_direct(f"key-{i}", b"x" * 1000)
        for i in range(6):
            assert await world.value(f"key-{i}") == b"x" * 1000
            assert world.edge.cache.bytes <= world.edge.cache.capacity
        assert len(world.edge.cache) == 3 and world.edge.cache.bytes == 3 * item
        assert world.edge.cache.evictions == 3
        assert world.sample("pullkv_cache_evictions") == 3
        assert world.sample("pullkv_cache_bytes") == 3 * item
        assert world.sample("pullkv_cache_entries") == 3
        assert world.up.calls["fetch"] == 6
        assert await world.value("key-5") == b"x" * 1000  # recent: cached
        assert world.up.calls["fetch"] == 6
        assert await world.value("key-0") == b"x" * 1000  # evicted: fetched again
        assert world.up.calls["fetch"] == 7
    finally:
        await world.edge.close()


async def test_value_bigger_than_cache_is_not_cached(tmp_path: Path) -> None:
    world = await make_world(tmp_path, capacity=2000)
    try:
        await world.put_direct("small", b"s")
        await world.value("small")
        await world.put_direct("big", b"b" * 5000)
        assert await world.value("big") == b"b" * 5000
        assert await world.value("big") == b"b" * 5000
        assert world.up.calls["fetch"] == 3
        assert world.edge.cache.bytes <= 2000
        assert (await world.read("small")).cache == CacheInfo(True, 0, 60)  # not evicted
        # A big write through the edge replaces (drops) a cached smaller value.
        await world.put("small", b"S" * 5000)
        assert await world.value("small") == b"S" * 5000
        assert world.up.calls["fetch"] == 4
    finally:
        await world.edge.close()


async def test_eviction_during_conditional_fetch_keeps_the_value(tmp_path: Path) -> None:
    # An expired entry is refetched conditionally; if the cache drops the entry while the
    # fetch is out, a "not modified" answer must still yield the value, never "not found".
    item = ENTRY_OVERHEAD + 1 + 100
    world = await make_world(tmp_path, capacity=2 * item)
    try:
        await world.put_direct("k", b"k" * 100)
        await world.read("k")
        world.clock.advance(60)
        gate = world.up.hold()
        reader = asyncio.ensure_future(world.read("k"))
        await until(lambda: world.up.held["fetch"] == 1)
        late = asyncio.ensure_future(world.read("k"))  # joins the conditional fetch
        await turns()
        await world.put("a", b"a" * 100)
        await world.put("b", b"b" * 100)  # evicts k
        assert world.edge.cache.peek(("v", ACCOUNT, world.ns, "k")) is None
        gate.set()
        for lookup in await asyncio.gather(reader, late):
            assert lookup.entry is not None and lookup.entry.value == b"k" * 100
        assert world.up.answers[-1]["k"].not_modified
    finally:
        await world.edge.close()


async def test_reader_joining_revalidation_after_eviction_gets_the_value(tmp_path: Path) -> None:
    item = ENTRY_OVERHEAD + 1 + 100
    world = await make_world(tmp_path, capacity=2 * item)
    try:
        await world.put_direct("k", b"k" * 100)
        await world.read("k")
        world.clock.advance(40)
        gate = world.up.hold()
        assert await world.value("k") == b"k" * 100  # background revalidation starts
        await until(lambda: world.up.held["fetch"] == 1)
        await world.put("a", b"a" * 100)
        await world.put("b", b"b" * 100)  # evicts k
        reader = asyncio.ensure_future(world.read("k"))  # a cold read joins the revalidation
        await turns()
        gate.set()
        lookup = await reader
        assert lookup.entry is not None and lookup.entry.value == b"k" * 100
        assert world.up.calls["fetch"] == 2
    finally:
        await world.edge.close()


# Namespaces.
async def test_delete_namespace_drops_its_cached_entries(world: World) -> None:
    other = await world.new_namespace("other")
    await world.put_direct("k", b"mine")
    await world.put_direct("k", b"theirs", ns=other)
    await world.read("k")
    await world.read("k", ns=other)
    await world.names()
    assert len(world.edge.cache) == 3
    await world.edge.delete_namespace(ACCOUNT, world.ns)
    assert len(world.edge.cache) == 1
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.read("k")
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.names()
    kept = await world.read("k", ns=other)
    assert kept.entry is not None and kept.entry.value == b"theirs" and kept.cache is not None
    assert kept.cache.hit
    assert world.up.calls["fetch"] == 3


async def test_namespace_lookup_cached_and_stale_if_error(world: World) -> None:
    found = await world.edge.namespace(ACCOUNT, world.ns, "get")
    assert found.id == world.ns
    world.clock.advance(59)
    assert await world.edge.namespace(ACCOUNT, world.ns, "get") == found
    assert world.up.calls["namespace"] == 1
    world.clock.advance(1)
    # Past the TTL: answered from the cache at once, refreshed in the background.
    gate = world.up.hold("namespace")
    assert await world.edge.namespace(ACCOUNT, world.ns, "get") == found
    assert await world.edge.namespace(ACCOUNT, world.ns, "get") == found
    await until(lambda: world.up.held["namespace"] == 1)
    gate.set()
    await settle(world.edge)
    assert world.up.calls["namespace"] == 2
    del world.up.gates["namespace"]
    world.up.down = True
    world.clock.advance(600)
    assert await world.edge.namespace(ACCOUNT, world.ns, "get") == found
    with raises_kv(503):
        await world.edge.namespace(ACCOUNT, "f" * 32, "get")
    world.up.down = False
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.edge.namespace(ACCOUNT, "f" * 32, "get")


# Tokens.
def token(token_id: str = "tok", revoked_at: int | None = None) -> TokenRecord:
    return TokenRecord(token_id, ACCOUNT, "test", b"salt", b"hash", revoked_at=revoked_at)


async def test_token_cached_within_refresh(world: World) -> None:
    await world.store.add_token(token())
    assert await world.edge.get_token("tok") == token()
    world.clock.advance(19.9)
    assert await world.edge.get_token("tok") == token()
    assert world.up.calls["get_token"] == 1
    assert await world.edge.get_token("unknown") is None
    assert await world.edge.get_token("unknown") is None  # "no such token" is cached too
    assert world.up.calls["get_token"] == 2


async def test_made_up_tokens_never_push_out_real_ones(world: World) -> None:
    await world.store.add_token(token())
    assert await world.edge.get_token("tok") == token()
    for number in range(EDGE_UNKNOWN_TOKENS + 500):
        assert await world.edge.get_token(f"made-up-{number}") is None
    assert world.up.calls["get_token"] == 1 + EDGE_UNKNOWN_TOKENS + 500
    assert await world.edge.get_token("tok") == token()  # still held: no upstream call
    assert world.up.calls["get_token"] == 1 + EDGE_UNKNOWN_TOKENS + 500
    assert world.edge.tokens.unknown == EDGE_UNKNOWN_TOKENS


async def test_a_token_created_after_a_miss_is_found_once_the_miss_is_old(world: World) -> None:
    assert await world.edge.get_token("tok") is None
    await world.store.add_token(token())
    assert await world.edge.get_token("tok") is None  # the miss is remembered briefly
    world.clock.advance(POLICY.token_refresh)
    assert await world.edge.get_token("tok") == token()


async def test_token_refreshed_in_background(world: World) -> None:
    await world.store.add_token(token())
    await world.edge.get_token("tok")
    await world.store.revoke_token(ACCOUNT, "tok", int(EPOCH))
    world.clock.advance(20)
    assert await world.edge.get_token("tok") == token()  # served at once, refresh started
    assert await world.edge.get_token("tok") == token()  # one refresh at a time
    await settle(world.edge)
    assert world.up.calls["get_token"] == 2
    refreshed = await world.edge.get_token("tok")
    assert refreshed is not None and refreshed.revoked_at == int(EPOCH)
    assert world.up.calls["get_token"] == 2
    # The refresh restarted the record's age.
    world.clock.advance(19.9)
    await world.edge.get_token("tok")
    assert world.up.calls["get_token"] == 2


async def test_token_refetched_after_max_age(world: World) -> None:
    await world.store.add_token(token())
    await world.edge.get_token("tok")
    await world.store.revoke_token(ACCOUNT, "tok", int(EPOCH))
    world.clock.advance(45)
    record = await world.edge.get_token("tok")
    assert record is not None and record.revoked_at == int(EPOCH)
    assert world.up.calls["get_token"] == 2


async def test_token_served_from_cache_when_upstream_down(world: World) -> None:
    await world.store.add_token(token())
    await world.edge.get_token("tok")
    world.up.down = True
    world.clock.advance(30)
    assert await world.edge.get_token("tok") == token()
    await settle(world.edge)  # the failed background refresh keeps the record
    world.clock.advance(100)
    assert await world.edge.get_token("tok") == token()
    with raises_kv(503):
        await world.edge.get_token("never-seen")


async def test_revoke_through_edge_forgets_token(world: World) -> None:
    await world.store.add_token(token())
    await world.edge.get_token("tok")
    assert await world.edge.revoke_token(ACCOUNT, "tok")
    record = await world.edge.get_token("tok")
    assert record is not None and record.revoked_at is not None
    assert world.up.calls["get_token"] == 2


async def test_token_refresh_in_flight_does_not_undo_a_revocation(world: World) -> None:
    await world.store.add_token(token())
    await world.edge.get_token("tok")
    world.clock.advance(20)
    gate = world.up.hold("get_token")
    assert await world.edge.get_token("tok") == token()  # starts a background refresh
    await until(lambda: world.up.held["get_token"] == 1)  # it read the active record
    assert await world.edge.revoke_token(ACCOUNT, "tok")
    gate.set()
    await settle(world.edge)
    record = await world.edge.get_token("tok")
    assert record is not None and record.revoked_at is not None


async def test_close_cancels_background_work_and_closes_upstream(tmp_path: Path) -> None:
    world = await make_world(tmp_path)
    await world.put_direct("k", b"v")
    await world.read("k")
    world.up.hold()
    world.clock.advance(40)
    await world.read("k")
    await until(lambda: world.up.held["fetch"] == 1)
    await world.edge.close()
    assert world.up.calls["close"] == 1
    assert not world.edge._background


# A sick upstream: the circuit breaker.
async def trip(world: World) -> None:
    """Open the edge's breaker: a call finds the upstream unreachable."""
    world.up.unreachable = True
    with raises_kv(503, errors.UNAVAILABLE, match="did not answer in time"):
        await world.edge.data_keys()
    assert not world.edge.breaker.closed


async def test_timeout_opens_breaker_then_stale_is_served_without_asking(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    world.clock.advance(60)  # expired, stale-usable
    gate = world.up.hold("fetch")
    reader = asyncio.create_task(world.read("k"))
    await until(lambda: world.up.held["fetch"] == 1)
    assert not reader.done()  # the first read waits for its fetch
    world.up.unreachable = True
    gate.set()  # ... which times out
    first = await reader
    assert first.entry is not None and first.entry.value == b"v1"
    assert first.cache is not None and first.cache.stale
    assert not world.edge.breaker.closed
    fetches = world.up.calls["fetch"]
    # From now on nothing waits: every read of a stale-usable entry is answered at once.
    for _ in range(5):
        world.clock.advance(1)
        lookup = await asyncio.wait_for(world.read("k"), 0.5)
        assert lookup.entry is not None and lookup.cache is not None and lookup.cache.stale
    assert world.up.calls["fetch"] == fetches
    assert world.sample("pullkv_cache_reads_total", result="stale") == 6
    assert (
        world.sample("pullkv_upstream_requests_total", operation="fetch", outcome="circuit_open")
        == 5
    )


async def test_readers_waiting_on_a_fetch_are_answered_when_the_breaker_opens(
    world: World,
) -> None:
    await world.put_direct("a", b"va")
    await world.read("a")
    world.clock.advance(60)
    gate = world.up.hold("fetch")
    stale_reader = asyncio.create_task(world.read("a"))
    cold_reader = asyncio.create_task(world.read("cold"))
    await until(lambda: world.up.held["fetch"] == 1)
    await trip(world)  # another call times out while this fetch is still out
    stale = await asyncio.wait_for(stale_reader, 0.5)
    assert stale.entry is not None and stale.entry.value == b"va" and stale.cache is not None
    assert stale.cache.stale
    with raises_kv(503, errors.UNAVAILABLE):
        await asyncio.wait_for(cold_reader, 0.5)
    # The abandoned fetch still comes back; a late answer fills the cache.
    world.up.unreachable = False
    gate.set()
    await until(lambda: world.up.held["fetch"] == 0)
    await turns()
    fresh = await world.read("a")
    assert fresh.entry is not None and fresh.cache is not None and not fresh.cache.stale
    assert fresh.cache.age == 0


async def test_cold_read_fails_fast_naming_the_upstream(world: World) -> None:
    await trip(world)
    fetches = world.up.calls["fetch"]
    with raises_kv(503, errors.UNAVAILABLE, match="http://up.test is not answering") as info:
        await asyncio.wait_for(world.read("cold"), 0.5)
    assert info.value.message.endswith("and this request needs it")
    with raises_kv(503, errors.UNAVAILABLE):
        await world.edge.read_many(ACCOUNT, world.ns, ["x", "y"], None)
    assert world.up.calls["fetch"] == fetches  # refused without asking


async def test_writes_and_management_fail_fast_while_open(world: World) -> None:
    await trip(world)
    with raises_kv(503, errors.UNAVAILABLE, match="not answering"):
        await world.edge.write(ACCOUNT, world.ns, [SealedWrite("k", b"v", None, None)])
    with raises_kv(503, errors.UNAVAILABLE):
        await world.edge.delete(ACCOUNT, world.ns, ["k"])
    with raises_kv(503, errors.UNAVAILABLE):
        await world.edge.list_keys(ACCOUNT, world.ns, "", None, 10)
    with raises_kv(503, errors.UNAVAILABLE):
        await world.edge.create_namespace(NamespaceRecord("e" * 32, ACCOUNT, "new"))
    assert world.up.calls["write"] == world.up.calls["delete"] == 0
    assert world.up.calls["list_keys"] == world.up.calls["create_namespace"] == 0


async def test_fresh_and_revalidating_entries_ask_nothing_while_open(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    await trip(world)
    world.clock.advance(40)  # in the refresh window
    lookup = await world.read("k")
    assert lookup.entry is not None and lookup.cache is not None and lookup.cache.hit
    await turns()
    assert world.up.calls["fetch"] == 1  # no revalidation sent into a known outage


async def test_stale_list_is_served_at_once_while_open(world: World) -> None:
    await world.put_direct("k", b"v1")
    assert await world.names() == ["k"]
    await trip(world)
    world.clock.advance(30)  # past the list TTL, within its stale bound
    assert await asyncio.wait_for(world.names(), 0.5) == ["k"]
    assert world.up.calls["list_keys"] == 1


async def test_one_probe_at_a_time_with_capped_backoff_then_recovery(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    await trip(world)
    probes = world.up.calls["data_keys"]  # the call that tripped it
    waits = []
    for attempt in range(6):
        await until(lambda: world.sleeper.sleeping == 1)
        waits.append(world.sleeper.delays[-1])
        # Reads meanwhile start no probe of their own.
        world.clock.advance(waits[-1])
        await world.read("k")
        with raises_kv(503):
            await world.read("cold")
        assert world.up.calls["data_keys"] == probes + attempt
        world.sleeper.wake()

        def probed(a: int = attempt) -> bool:
            return world.up.calls["data_keys"] == probes + a + 1

        await until(probed)
    assert waits == pytest.approx([0.9, 1.8, 3.6, 4.5, 4.5, 4.5])
    assert (
        world.sample("pullkv_upstream_requests_total", operation="probe", outcome="unavailable")
        == 6
    )
    # The upstream comes back; the next probe closes the breaker and fetching resumes.
    await until(lambda: world.sleeper.sleeping == 1)
    world.up.unreachable = False
    await world.put_direct("k", b"v2")
    world.clock.advance(4.5)
    world.sleeper.wake()
    await until(lambda: world.edge.breaker.closed)
    assert world.sample("pullkv_upstream_requests_total", operation="probe", outcome="ok") == 1
    world.clock.advance(60)
    assert await world.value("k") == b"v2"
    await settle(world.edge)  # the prober ended too
    assert world.sleeper.sleeping == 0


async def test_a_probe_that_gets_any_answer_closes_the_breaker(world: World) -> None:
    await trip(world)
    world.up.unreachable = False
    world.up.down = True  # the upstream answers, with a 503 of its own
    await until(lambda: world.sleeper.sleeping == 1)
    world.sleeper.wake()
    await until(lambda: world.edge.breaker.closed)
    # A 5xx answer is an answer: it does not open the breaker again.
    with raises_kv(503, errors.UNAVAILABLE, match="test upstream is down"):
        await world.read("cold")
    assert world.edge.breaker.closed and world.edge.breaker.trips == 1


async def test_readiness_follows_the_breaker_and_an_answer_probes_at_once(
    world: World,
) -> None:
    async def answers() -> bool:
        return True

    async def silent() -> bool:
        return False

    assert await world.edge.ready(answers)
    assert not await world.edge.ready(silent)
    await trip(world)
    await until(lambda: world.sleeper.sleeping == 1)
    assert not await world.edge.ready(silent)
    await turns()
    assert world.sleeper.sleeping == 1  # no answer: the probe keeps its time
    world.up.unreachable = False
    assert not await world.edge.ready(answers)  # the breaker is still open...
    await until(lambda: world.edge.breaker.closed)  # ...but probes now, not in 0.9 s
    assert world.up.calls["data_keys"] == 2
    assert await world.edge.ready(answers)


async def test_close_stops_the_prober(world: World) -> None:
    await trip(world)
    await until(lambda: world.sleeper.sleeping == 1)
    await world.edge.close()
    assert not world.edge._background


# Tokens and namespaces while the upstream is sick.
async def test_token_refresh_never_blocks_while_the_record_is_usable(world: World) -> None:
    await world.store.add_token(token())
    await world.edge.get_token("tok")
    world.clock.advance(30)  # past token_refresh, within token_max_age
    gate = world.up.hold("get_token")  # the upstream is frozen
    assert await asyncio.wait_for(world.edge.get_token("tok"), 0.5) == token()
    await until(lambda: world.up.held["get_token"] == 1)
    world.up.unreachable = True
    gate.set()  # the background refresh times out: that opens the breaker
    await until(lambda: not world.edge.breaker.closed)
    world.clock.advance(30)  # past token_max_age: trusted, the upstream cannot be asked
    assert await asyncio.wait_for(world.edge.get_token("tok"), 0.5) == token()
    assert world.up.calls["get_token"] == 2


async def test_token_past_max_age_trusted_until_auth_max_stale_while_open(
    world: World,
) -> None:
    await world.store.add_token(token())
    await world.edge.get_token("tok")
    await trip(world)
    world.clock.advance(599.9)  # auth_max_stale (600 s by default) after the confirmation
    assert await world.edge.get_token("tok") == token()
    world.clock.advance(0.1)
    with raises_kv(503, errors.UNAVAILABLE, match="has not confirmed this token for 600 s"):
        await world.edge.get_token("tok")
    with raises_kv(503, errors.UNAVAILABLE, match="not answering"):
        await world.edge.get_token("never-seen")
    assert world.up.calls["get_token"] == 1
    # Back up: the first check confirms the record again.
    world.up.unreachable = False
    await until(lambda: world.sleeper.sleeping == 1)
    world.sleeper.wake()
    await until(lambda: world.edge.breaker.closed)
    assert await world.edge.get_token("tok") == token()
    assert world.up.calls["get_token"] == 2


async def test_token_check_that_times_out_falls_back_to_the_held_record(world: World) -> None:
    await world.store.add_token(token())
    await world.edge.get_token("tok")
    world.clock.advance(45)  # too old to use unchecked while the upstream answers
    world.up.unreachable = True
    assert await world.edge.get_token("tok") == token()  # the check timed out: trusted
    assert not world.edge.breaker.closed
    assert world.up.calls["get_token"] == 2


async def test_auth_max_stale_zero_refuses_unconfirmed_records(tmp_path: Path) -> None:
    world = await make_world(tmp_path, replace(POLICY, auth_max_stale=0.0))
    try:
        await world.store.add_token(token())
        await world.edge.get_token("tok")
        await trip(world)
        world.clock.advance(20)  # within token_max_age: the usual revocation window
        assert await world.edge.get_token("tok") == token()
        world.clock.advance(25)
        with raises_kv(503, errors.UNAVAILABLE, match="--auth-max-stale 0"):
            await world.edge.get_token("tok")
    finally:
        await world.edge.close()


async def test_namespace_lookup_never_waits_while_one_is_held(world: World) -> None:
    found = await world.edge.namespace(ACCOUNT, world.ns, "put")
    await trip(world)
    world.clock.advance(3600)
    assert await asyncio.wait_for(world.edge.namespace(ACCOUNT, world.ns, "put"), 0.5) == found
    await turns()
    assert world.up.calls["namespace"] == 1
    with raises_kv(503, errors.UNAVAILABLE, match="not answering"):
        await world.edge.namespace(ACCOUNT, "f" * 32, "put")


async def test_namespace_deleted_upstream_is_forgotten_by_the_refresh(world: World) -> None:
    await world.edge.namespace(ACCOUNT, world.ns, "put")
    await world.local.delete_namespace(ACCOUNT, world.ns)
    world.clock.advance(60)
    await world.edge.namespace(ACCOUNT, world.ns, "put")  # held, refreshed in the background
    await settle(world.edge)
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.edge.namespace(ACCOUNT, world.ns, "put")


# Strong reads (Cache-Control: no-cache): one conditional round trip to the origin.
async def test_strong_read_sees_a_write_the_cache_does_not(world: World) -> None:
    first = await world.put_direct("k", b"v1")
    await world.read("k")
    second = await world.put_direct("k", b"v2")
    assert await world.value("k") == b"v1"  # the cached answer, still fresh
    strong = await world.edge.read(ACCOUNT, world.ns, "k", None, revalidate=True)
    assert strong.entry is not None and strong.entry.version == second
    assert strong.cache == CacheInfo(hit=False, age=0, ttl=60, forward="request")
    # Asked conditionally on the version held, with the flag for the tiers above.
    assert world.up.fetches[-1] == [("k", first)] and world.up.revalidated[-1] is True
    assert await world.value("k") == b"v2"  # and the cache now holds it


async def test_strong_read_of_an_unchanged_key_is_not_modified(world: World) -> None:
    version = await world.put_direct("k", b"v1")
    await world.read("k")
    strong = await world.edge.read(ACCOUNT, world.ns, "k", 30, revalidate=True)
    assert strong.entry is not None and strong.entry.value == b"v1"
    assert world.up.answers[-1]["k"].not_modified
    assert strong.cache is not None and strong.cache.header() == (
        "pullkv; fwd=request; stored; ttl=30"
    )
    assert world.up.fetches[-1] == [("k", version)]


async def test_strong_read_of_a_deleted_or_missing_key(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    await world.local.delete(ACCOUNT, world.ns, ["k"])
    assert (await world.edge.read(ACCOUNT, world.ns, "k", None, revalidate=True)).entry is None
    assert (await world.edge.read(ACCOUNT, world.ns, "nope", None, revalidate=True)).entry is None
    assert await world.value("k") is None


async def test_strong_read_is_never_answered_stale(world: World) -> None:
    await world.put_direct("k", b"v1")
    await world.read("k")
    world.up.down = True
    with pytest.raises(errors.KVError):
        await world.edge.read(ACCOUNT, world.ns, "k", None, revalidate=True)
    assert await world.value("k") == b"v1"  # plain reads still answer from the cache


async def test_strong_read_through_a_middle_tier_reaches_the_origin(world: World) -> None:
    lower = EdgeBackend(
        world.edge, POLICY, 1 << 20, Metrics(), default_ttl=60, clock=world.clock, epoch=world.epoch
    )
    try:
        await world.put_direct("k", b"v1")
        assert (await lower.read(ACCOUNT, world.ns, "k", None)).entry is not None
        second = await world.put_direct("k", b"v2")
        plain = await lower.read(ACCOUNT, world.ns, "k", None)
        assert plain.entry is not None and plain.entry.value == b"v1"
        strong = await lower.read(ACCOUNT, world.ns, "k", None, revalidate=True)
        assert strong.entry is not None and strong.entry.version == second
        assert world.up.revalidated[-1] is True  # the middle tier passed it on
        assert await world.value("k") == b"v2"  # and refreshed its own cache
    finally:
        await lower.close()
