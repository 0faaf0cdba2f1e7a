"""The in-process cache (pullkv.localcache) driven directly: its hot path agrees with the
edge's freshness rule, the bytes bound holds, the feed's changes invalidate by version, a
write is read back at once, fills never go backwards, stale-if-error and single-flight work.
Fetches are functions here and the clocks are fake."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from pullkv.edge.cache import CachePolicy, Freshness, freshness
from pullkv.errors import ServerError
from pullkv.localcache import Cached, CachedReads, LocalCache, to_cached, value_of
from tests.unit.helpers import FakeClock

NS = "n" * 32
POLICY = CachePolicy(refresh_interval=30.0, max_stale=100.0)


def make(max_bytes: int = 1 << 20) -> tuple[LocalCache, FakeClock, FakeClock]:
    clock, epoch = FakeClock(100.0), FakeClock(1_700_000_000.0)
    cache = LocalCache(max_bytes, policy=POLICY, watch=False, clock=clock, epoch=epoch)
    return cache, clock, epoch


class Origin:
    """A fetch function over a dict, counting calls, able to fail or hold."""

    def __init__(self, cache: LocalCache) -> None:
        self.cache = cache
        self.values: dict[str, tuple[bytes, int]] = {}
        self.calls = 0
        self.fail = False
        self.gate: threading.Event | None = None

    def fetch(self, key: str, cache_ttl: int | None) -> Cached:
        self.calls += 1
        started = self.cache.clock()
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise ServerError(503, 10500, "down")
        held = self.values.get(key)
        if held is None:
            return to_cached(None, None, None, None, started)
        return to_cached(held[0], {"m": 1}, None, f'"{held[1]}"', started)

    def reads(self) -> CachedReads:
        def no_watch(on_reset: Callable[[], None]) -> object:
            raise AssertionError("watching is off")

        return CachedReads(self.cache, NS, self.fetch, no_watch)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [None, 30, 45, 60, 3600])
@pytest.mark.parametrize("age", [0.0, 10.0, 29.999, 30.0, 44.9, 59.9, 60.0, 61.0])
def test_the_hot_path_agrees_with_the_edges_rule(ttl: int | None, age: float) -> None:
    cache, clock, _ = make()
    cache.written(NS, "k", b"v", None, None, 7)
    clock.advance(age)
    got = cache.fresh(NS, "k", ttl)
    rule = freshness(100.0, clock(), ttl or cache.default_ttl, POLICY) is Freshness.FRESH
    assert (got is not None) == rule


def test_expired_keys_are_not_answered_by_the_hot_path() -> None:
    cache, _, epoch = make()
    cache.written(NS, "k", b"v", None, int(epoch()) + 60, 7)
    assert cache.fresh(NS, "k", None) is not None
    epoch.advance(60)
    assert cache.fresh(NS, "k", None) is None and cache.held((NS, "k")) is None


def test_values_by_type() -> None:
    entry = to_cached(b'{"a": 1}', None, None, '"3"', 0.0)
    assert value_of(entry, "text") == '{"a": 1}'
    assert value_of(entry, "bytes") == b'{"a": 1}'
    assert value_of(entry, "json") == {"a": 1}
    assert value_of(to_cached(None, None, None, None, 0.0), "json") is None


def test_the_bytes_bound_holds() -> None:
    cache, _, _ = make(max_bytes=20_000)
    for i in range(100):
        cache.written(NS, f"k{i}", b"x" * 1000, None, None, i + 1)
    assert cache.bytes <= 20_000 and 5 < len(cache) < 20
    assert cache.fresh(NS, "k99", None) is not None and cache.fresh(NS, "k0", None) is None


def test_changes_invalidate_by_version_only() -> None:
    cache, _, _ = make()
    cache.written(NS, "k", b"v", None, None, 10)
    assert not cache.invalidate(NS, "k", 9)  # late
    assert not cache.invalidate(NS, "k", 10)  # duplicated (our own write, echoed)
    assert cache.fresh(NS, "k", None) is not None
    assert cache.invalidate(NS, "k", 11)
    assert cache.fresh(NS, "k", None) is None
    cache.written(NS, "k", b"mine", None, None, 10)  # an acknowledgement older than the change
    assert cache.fresh(NS, "k", None) is None  # kept, but still stale
    cache.invalidate(NS, None, 12)  # the namespace was deleted
    assert cache.peek((NS, "k")) is None


def test_reads_hit_refresh_in_the_background_and_miss() -> None:
    cache, clock, _ = make()
    origin = Origin(cache)
    reads = origin.reads()
    origin.values["k"] = (b"v1", 1)
    cached, status = reads.read("k", None)
    assert value_of(cached, "text") == "v1" and status.startswith("pullkv-local; fwd=miss")
    assert cache.fresh(NS, "k", None) is not None and origin.calls == 1
    origin.values["k"] = (b"v2", 2)
    clock.advance(40)  # the refresh window: served, refreshed on a thread
    cached, status = reads.read("k", None)
    assert value_of(cached, "text") == "v1" and status.startswith("pullkv-local; hit")
    deadline = time.monotonic() + 5
    while origin.calls < 2 or cache.stats.refreshes < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert value_of(reads.read("k", None)[0], "text") == "v2"
    cache.close()


def test_not_found_is_cached() -> None:
    cache, _, _ = make()
    origin = Origin(cache)
    reads = origin.reads()
    assert reads.read("nope", None)[0].raw is None
    assert cache.fresh(NS, "nope", None) is not None and origin.calls == 1


def test_stale_if_error_within_bounds() -> None:
    cache, clock, _ = make()
    origin = Origin(cache)
    reads = origin.reads()
    origin.values["k"] = (b"v1", 1)
    reads.read("k", None)
    origin.fail = True
    clock.advance(61)  # past the TTL: fetched, which fails: served stale
    cached, status = reads.read("k", None)
    assert value_of(cached, "text") == "v1" and 'detail="stale-if-error"' in status
    clock.advance(100)  # past TTL + max_stale
    with pytest.raises(ServerError):
        reads.read("k", None)
    assert cache.stats.stale == 1


def test_a_refusal_is_not_hidden_by_a_stale_entry() -> None:
    cache, clock, _ = make()
    origin = Origin(cache)
    reads = origin.reads()
    origin.values["k"] = (b"v1", 1)
    reads.read("k", None)
    clock.advance(61)

    def refuse(key: str, cache_ttl: int | None) -> Cached:
        raise httpx.HTTPStatusError("403", request=None, response=None)  # type: ignore[arg-type]

    refusing = CachedReads(cache, NS, refuse, lambda on_reset: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(httpx.HTTPStatusError):
        refusing.read("k", None)


def test_one_fetch_however_many_threads_wait() -> None:
    cache, _, _ = make()
    origin = Origin(cache)
    reads = origin.reads()
    origin.values["k"] = (b"v", 1)
    origin.gate = threading.Event()
    results: list[str | None] = []
    threads = [
        threading.Thread(target=lambda: results.append(value_of(reads.read("k", None)[0], "text")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    origin.gate.set()
    for thread in threads:
        thread.join(5)
    assert results == ["v"] * 8 and origin.calls == 1


def test_a_fill_never_replaces_a_newer_write() -> None:
    cache, _, _ = make()
    cache.written(NS, "k", b"new", None, None, 5)
    kept = cache.store((NS, "k"), to_cached(b"old", None, None, '"4"', 100.0))
    assert kept.raw == b"new" and value_of(cache.peek((NS, "k")) or kept, "text") == "new"
