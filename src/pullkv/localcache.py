"""An edge in the application's process: ``Client(url, token, cache=LocalCache(...))``.

Reads of a cached key are answered from this process's memory: a dictionary lookup and a
freshness check, with no request. The policy is the edge's own (``pullkv.edge.cache``): per
read ``cache_ttl``, a refresh window in which an entry is served and refreshed in the
background, negative caching, stale-if-error within ``max_stale``, one fetch per key however
many readers wait, a bytes bound (least recently used out first), and invalidation from the
namespace's change feed (``Namespace.watch``, one background watch per namespace read): a
change newer than the version held makes the entry stale, so another process's write is seen
within the feed's delay, not the TTL. A write through the client is cached at once, so its
own next read sees it.

Values are held decrypted, as the server sent them: the trade-off for sub-microsecond reads
is that this process's memory holds plaintext (it holds the token that reads them anyway).

``LocalCache`` is the storage and the decisions, safe to use from any thread; the sync
client drives fetches and refreshes on threads, the async client on tasks.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx

from pullkv.edge.cache import (
    ENTRY_OVERHEAD,
    INVALIDATED,
    ByteLRU,
    CachePolicy,
    Freshness,
    answer_older,
    freshness,
    remaining,
    stale_usable,
    supersedes,
)
from pullkv.limits import DEFAULT_LIMITS, MIB
from pullkv.types import parse_etag
from pullkv.watch import AsyncWatch, Watch

CacheKey = tuple[str, str]  # (namespace id, key)


class Cached(NamedTuple):
    """A cached key: its value as the server sent it (None: "not found"), the value as text,
    its metadata (JSON text), expiration and version, and when the server last vouched for
    it; ``superseded_by`` is a newer version the feed announced (0: none)."""

    raw: bytes | None
    text: str | None
    metadata_json: str | None
    expiration: int | None
    version: int
    validated_at: float
    superseded_by: int = 0

    def size(self, key: CacheKey) -> int:
        """Bytes charged to the cache for this entry."""
        body = 0 if self.raw is None else len(self.raw) + len(self.text or "")
        return ENTRY_OVERHEAD + len(key[1].encode()) + body + len(self.metadata_json or "")

    def metadata(self) -> Any:
        """The metadata, parsed afresh (callers may change what they get)."""
        return None if self.metadata_json is None else json.loads(self.metadata_json)


class Read(NamedTuple):
    """How a read was answered: the entry, a Cache-Status-like line, and whether the caller
    should start the key's background refresh."""

    cached: Cached
    status: str
    refresh: bool = False


@dataclass(slots=True)
class CacheStats:
    """What the cache did, for debugging and benchmarks."""

    fast_hits: int = 0  # answered by the hot path
    hits: int = 0  # answered from the cache by the slower path (refresh window, say)
    misses: int = 0
    stale: int = 0  # served stale because the server failed
    refreshes: int = 0
    invalidations: int = 0

    def hit_ratio(self) -> float:
        """Hits over reads (0 before the first read)."""
        hits = self.fast_hits + self.hits
        reads = hits + self.misses
        return hits / reads if reads else 0.0


@dataclass(slots=True)
class _Watching:
    """A namespace whose changes this cache follows."""

    stop: Callable[[], None]
    done: list[bool] = field(default_factory=lambda: [False])


class LocalCache:
    """An in-process cache with the edge's policy (see the module docstring)."""

    def __init__(
        self,
        max_bytes: int = 64 * MIB,
        *,
        policy: CachePolicy | None = None,
        default_ttl: int = DEFAULT_LIMITS.default_cache_ttl,
        watch: bool = True,
        name: str = "pullkv-local",
        clock: Callable[[], float] = time.monotonic,
        epoch: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or CachePolicy()
        self.default_ttl = default_ttl
        self.watch = watch  # follow each namespace's change feed
        self.name = name
        self.clock = clock
        self.epoch = epoch
        self.stats = CacheStats()
        self._lru: ByteLRU[CacheKey, Cached] = ByteLRU(max_bytes)
        self._items = self._lru._items  # read directly by ``fresh``: the hot path
        # How long an entry is fresh for a read without a cache TTL (the default one).
        self._refresh_interval = self.policy.refresh_interval
        self._fresh_for = min(float(default_ttl), self._refresh_interval)
        self._lock = threading.RLock()  # every change to the LRU, and the in-flight table
        self._inflight: dict[CacheKey, Future[Cached]] = {}
        self._refreshing: set[CacheKey] = set()
        self._watching: dict[str, _Watching] = {}
        self._pool: ThreadPoolExecutor | None = None

    # The hot path.
    def fresh(self, namespace_id: str, key: str, ttl: int | None) -> Cached | None:
        """The entry if a read with this cache TTL may be answered from it right now with no
        request and no background work (``freshness() is FRESH``, written out: a test checks
        they agree), else None. Counts a hit."""
        cache_key = (namespace_id, key)
        item = self._items.get(cache_key)
        if item is None:
            return None
        cached: Cached = item[0]  # type: ignore[assignment]
        fresh_for = self._fresh_for if ttl is None else min(ttl, self._refresh_interval)
        if self.clock() - cached[5] >= fresh_for:  # [5]: validated_at
            return None
        expiration = cached.expiration
        if expiration is not None and expiration <= self.epoch():
            return None
        try:  # noqa: SIM105 (a try costs nothing here; contextlib.suppress would)
            self._items.move_to_end(cache_key)
        except KeyError:  # evicted by another thread meanwhile: still a right answer
            pass
        self.stats.fast_hits += 1
        return cached

    # Decisions for the slower path.
    def peek(self, cache_key: CacheKey) -> Cached | None:
        """The entry, if any, without counting or touching its recency."""
        return self._lru.peek(cache_key)

    def held(self, cache_key: CacheKey) -> Cached | None:
        """The entry unless its key has expired (then it is asked for again)."""
        cached = self._lru.peek(cache_key)
        if cached is None or cached.expiration is None or cached.expiration > self.epoch():
            return cached
        return None

    def plan(self, cache_key: CacheKey, ttl: int) -> tuple[Cached | None, Read | None]:
        """How a read the hot path could not answer goes: the entry held (unless its key
        expired), and the answer from it if the cache may give one now (``refresh`` says to
        start the one background refresh); None: fetch."""
        current = self.held(cache_key)
        if current is None:
            return None, None
        state = self.state(current, ttl)
        if state is Freshness.EXPIRED:
            return current, None
        refresh = state is Freshness.REVALIDATE and self.start_refresh(cache_key)
        self.stats.hits += 1
        return current, Read(current, self.status(current, ttl), refresh)

    def fetched(self, current: Cached | None, got: Cached, ttl: int) -> Read:
        """The answer of a read that fetched ``got``."""
        self.stats.misses += 1
        return Read(got, self.status(got, ttl, forward="miss" if current is None else "stale"))

    def failed(self, current: Cached | None, exc: BaseException, ttl: int) -> Read | None:
        """The stale answer a failed fetch may be replaced by (stale-if-error), or None."""
        if current is None or not _server_failed(exc) or not self.stale_ok(current, ttl):
            return None
        self.stats.stale += 1
        return Read(current, self.status(current, ttl, forward="stale"))

    def state(self, cached: Cached, ttl: int) -> Freshness:
        """What a read with ``ttl`` may do with an entry (the edge's rule)."""
        return freshness(cached.validated_at, self.clock(), ttl, self.policy)

    def stale_ok(self, cached: Cached, ttl: int) -> bool:
        """Whether an entry may stand in for a failing server (the edge's rule)."""
        return stale_usable(cached.validated_at, self.clock(), ttl, self.policy)

    def live(self, cached: Cached) -> bool:
        """Whether the entry holds a value whose key has not expired."""
        if cached.raw is None:
            return False
        return cached.expiration is None or cached.expiration > self.epoch()

    def status(self, cached: Cached, ttl: int, *, forward: str | None = None) -> str:
        """A ``Cache-Status``-like description of how a read was answered (RFC 9211)."""
        now = self.clock()
        parts = [self.name]
        if forward is None:
            parts.append("hit")
        else:
            parts.append(f"fwd={forward}")
        parts.append(f"ttl={remaining(cached.validated_at, now, ttl)}")
        if forward == "stale":
            parts.append('detail="stale-if-error"')
        return "; ".join(parts)

    def store(self, cache_key: CacheKey, fetched: Cached) -> Cached:
        """Keep a fetched answer unless the cache meanwhile holds a newer version; return
        what a reader should get (the newer of the two)."""
        with self._lock:
            current = self._lru.peek(cache_key)
            if current is not None:
                answered = None if fetched.raw is None else fetched.version
                if answer_older(current.version, answered):
                    return current
                if current.superseded_by > fetched.version and fetched.raw is not None:
                    # Still behind an announced change: keep it stale.
                    fetched = fetched._replace(
                        validated_at=INVALIDATED, superseded_by=current.superseded_by
                    )
            self._lru.put(cache_key, fetched, fetched.size(cache_key))
            return fetched

    def written(
        self,
        namespace_id: str,
        key: str,
        raw: bytes | None,
        metadata_json: str | None,
        expiration: int | None,
        version: int,
    ) -> None:
        """A write through this client was acknowledged: its next read sees it at once."""
        text = None if raw is None else raw.decode("utf-8", errors="replace")
        entry = Cached(raw, text, metadata_json, expiration, version, self.clock())
        with self._lock:
            current = self._lru.peek((namespace_id, key))
            if current is not None:
                if answer_older(current.version, version):
                    return  # acknowledgements of concurrent writes can arrive out of order
                if current.superseded_by > version:
                    # The feed already announced a newer write from elsewhere: keep it stale.
                    entry = entry._replace(
                        validated_at=INVALIDATED, superseded_by=current.superseded_by
                    )
            self._lru.put((namespace_id, key), entry, entry.size((namespace_id, key)))

    def forget(self, namespace_id: str, key: str) -> None:
        """Drop a key (a write whose version is unknown, a refused condition)."""
        with self._lock:
            self._lru.pop((namespace_id, key))

    def invalidate(self, namespace_id: str, key: str | None, version: int) -> bool:
        """Apply a change from the feed: the entry goes stale if the change is newer than it
        (``supersedes``, the edge's rule); a namespace deletion drops the namespace."""
        with self._lock:
            if key is None:
                self.drop_namespace(namespace_id)
                return True
            current = self._lru.peek((namespace_id, key))
            if current is None or not supersedes(version, current.version):
                return False
            if version > current.superseded_by:
                stale = current._replace(validated_at=INVALIDATED, superseded_by=version)
                self._lru.update((namespace_id, key), stale)
            self.stats.invalidations += 1
            return True

    def drop_namespace(self, namespace_id: str) -> None:
        """Forget every entry of a namespace (a reset of its feed, or its deletion)."""
        with self._lock:
            for cache_key in self._lru.snapshot():
                if cache_key[0] == namespace_id:
                    self._lru.pop(cache_key)

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes(self) -> int:
        """Bytes charged for what is held (at most ``max_bytes``)."""
        return self._lru.bytes

    # Mechanics shared by the drivers: in-flight fetches and watches.
    def flight(self, cache_key: CacheKey) -> tuple[Future[Cached], bool]:
        """The one fetch of a key: (its future, whether the caller must make it)."""
        with self._lock:
            existing = self._inflight.get(cache_key)
            if existing is not None:
                return existing, False
            future: Future[Cached] = Future()
            self._inflight[cache_key] = future
            return future, True

    def landed(self, cache_key: CacheKey, future: Future[Cached]) -> None:
        """A fetch finished: later readers start their own."""
        with self._lock:
            if self._inflight.get(cache_key) is future:
                del self._inflight[cache_key]

    def start_refresh(self, cache_key: CacheKey) -> bool:
        """Whether the caller should start the one background refresh of a key."""
        with self._lock:
            if cache_key in self._refreshing or cache_key in self._inflight:
                return False
            self._refreshing.add(cache_key)
            return True

    def refresh_done(self, cache_key: CacheKey) -> None:
        """A background refresh finished."""
        with self._lock:
            self._refreshing.discard(cache_key)
            self.stats.refreshes += 1

    def pool(self) -> ThreadPoolExecutor:
        """Threads for the sync client's background refreshes."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(2, thread_name_prefix="pullkv-cache")
            return self._pool

    def watching(self, namespace_id: str) -> bool:
        """Whether this cache already follows the namespace's feed."""
        return namespace_id in self._watching or not self.watch

    def watched(self, namespace_id: str, stop: Callable[[], None]) -> None:
        """Note a watch of a namespace and how to stop it."""
        with self._lock:
            self._watching[namespace_id] = _Watching(stop)

    def close(self) -> None:
        """Stop every watch and the refresh threads."""
        with self._lock:
            watches, self._watching = list(self._watching.values()), {}
            pool, self._pool = self._pool, None
        for watching in watches:
            watching.stop()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def to_cached(
    raw: bytes | None,
    metadata: Any,
    expiration: int | None,
    etag: str | None,
    validated_at: float,
) -> Cached:
    """An entry from a server's answer (``raw`` None: "not found")."""
    version = parse_etag(etag or "") or 0
    if raw is None:
        return Cached(None, None, None, None, version, validated_at)
    text = raw.decode("utf-8", errors="replace")
    metadata_json = None if metadata is None else json.dumps(metadata, separators=(",", ":"))
    return Cached(raw, text, metadata_json, expiration, version, validated_at)


def value_of(cached: Cached, kind: str) -> Any:
    """The value as a read of type ``kind`` returns it (None when not found)."""
    if cached.raw is None:
        return None
    if kind == "text":
        return cached.text
    if kind == "bytes":
        return cached.raw
    return json.loads(cached.text or "null")


def _server_failed(exc: BaseException) -> bool:
    """Whether an error means the server could not answer (not a refusal): the case in
    which a held entry may be served stale."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status >= 500
    return isinstance(exc, httpx.TransportError)


class CachedReads:
    """The sync client's reads of one namespace through a LocalCache: fetches, refreshes
    (on the cache's threads) and the namespace's watch (on a thread of its own)."""

    def __init__(
        self,
        cache: LocalCache,
        namespace_id: str,
        fetch: Callable[[str, int | None], Cached],
        open_watch: Callable[[Callable[[], None]], Watch],
    ) -> None:
        self.cache = cache
        self.namespace_id = namespace_id
        self._fetch = fetch
        self._open_watch = open_watch

    def read(self, key: str, cache_ttl: int | None) -> tuple[Cached, str]:
        """A read the hot path could not answer: the entry and how it was answered."""
        cache = self.cache
        self._ensure_watch()
        cache_key = (self.namespace_id, key)
        ttl = cache_ttl or cache.default_ttl
        current, answer = cache.plan(cache_key, ttl)
        if answer is not None:
            if answer.refresh:
                cache.pool().submit(self._refresh, key, cache_ttl)
            return answer.cached, answer.status
        future, mine = cache.flight(cache_key)
        if mine:
            try:
                future.set_result(cache.store(cache_key, self._fetch(key, cache_ttl)))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                cache.landed(cache_key, future)
        try:
            got = future.result()
        except Exception as exc:
            stale = cache.failed(current, exc, ttl)
            if stale is None:
                raise
            return stale.cached, stale.status
        answer = cache.fetched(current, got, ttl)
        return answer.cached, answer.status

    def _refresh(self, key: str, cache_ttl: int | None) -> None:
        cache_key = (self.namespace_id, key)
        try:
            self.cache.store(cache_key, self._fetch(key, cache_ttl))
        except Exception:  # the entry stays; its TTL and stale-if-error still apply
            pass
        finally:
            self.cache.refresh_done(cache_key)

    def _ensure_watch(self) -> None:
        cache = self.cache
        if cache.watching(self.namespace_id):
            return
        namespace_id = self.namespace_id
        stopped = threading.Event()
        watch = self._open_watch(lambda: cache.drop_namespace(namespace_id))

        def follow() -> None:
            while not stopped.is_set():
                try:
                    for event in watch:
                        cache.invalidate(namespace_id, event.key, event.version)
                except Exception:
                    # Refused (a token without read access to the whole namespace is still
                    # answered by TTLs) or closed: wait a little and try again unless stopped.
                    cache.drop_namespace(namespace_id)
                    stopped.wait(1.0)

        def stop() -> None:
            stopped.set()
            watch.close()

        cache.watched(namespace_id, stop)
        threading.Thread(target=follow, name="pullkv-cache-watch", daemon=True).start()


class AsyncCachedReads:
    """The async client's reads of one namespace through a LocalCache: fetches, refreshes
    and the namespace's watch run as tasks on the client's event loop."""

    def __init__(
        self,
        cache: LocalCache,
        namespace_id: str,
        fetch: Callable[[str, int | None], Awaitable[Cached]],
        open_watch: Callable[[Callable[[], None]], AsyncWatch],
    ) -> None:
        self.cache = cache
        self.namespace_id = namespace_id
        self._fetch = fetch
        self._open_watch = open_watch
        self._flights: dict[str, asyncio.Future[Cached]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: str, cache_ttl: int | None) -> tuple[Cached, str]:
        """As ``CachedReads.read``, with tasks."""
        cache = self.cache
        self._ensure_watch()
        cache_key = (self.namespace_id, key)
        ttl = cache_ttl or cache.default_ttl
        current, answer = cache.plan(cache_key, ttl)
        if answer is not None:
            if answer.refresh:
                self._spawn(self._refresh(key, cache_ttl))
            return answer.cached, answer.status
        future = self._flights.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._flights[key] = future
            try:
                future.set_result(cache.store(cache_key, await self._fetch(key, cache_ttl)))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                del self._flights[key]
        try:
            got = await asyncio.shield(future)
        except Exception as exc:
            stale = cache.failed(current, exc, ttl)
            if stale is None:
                raise
            return stale.cached, stale.status
        answer = cache.fetched(current, got, ttl)
        return answer.cached, answer.status

    async def _refresh(self, key: str, cache_ttl: int | None) -> None:
        cache_key = (self.namespace_id, key)
        try:
            self.cache.store(cache_key, await self._fetch(key, cache_ttl))
        except Exception:
            pass
        finally:
            self.cache.refresh_done(cache_key)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_watch(self) -> None:
        cache = self.cache
        if cache.watching(self.namespace_id):
            return
        namespace_id = self.namespace_id
        watch = self._open_watch(lambda: cache.drop_namespace(namespace_id))

        async def follow() -> None:
            while True:
                try:
                    async for event in watch:
                        cache.invalidate(namespace_id, event.key, event.version)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    cache.drop_namespace(namespace_id)
                    await asyncio.sleep(1.0)

        task = asyncio.get_running_loop().create_task(follow())
        self._tasks.add(task)

        def stop() -> None:
            task.cancel()

        cache.watched(namespace_id, stop)
