"""The edge's backend: a cache in front of an upstream backend.

Reads are served from the cache while fresh; entries in their refresh window are served and
revalidated in the background; misses and expired entries are fetched with single-flight
(one upstream request per key however many readers wait), and every fetch issued in the same
event-loop turn for one namespace travels in one batched, conditional upstream request. If the
upstream fails, expired entries are served marked stale within the configured bound;
otherwise the caller gets a clear 503. Writes go up the chain and, once acknowledged, land in
this cache (a tombstone for a delete), so the writer's location reads its own writes.

A sick upstream never stalls a read that the cache can answer. The first timeout or failed
connection opens a circuit breaker (``edge.breaker``): from then on no call goes up, so
expired entries are served stale at once and everything else fails fast with a 503, while one
background probe at a time waits for the upstream to answer again. Token records and
namespace lookups are refreshed in the background; a token record is trusted without its
upstream for at most ``CachePolicy.auth_max_stale``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pullkv import errors
from pullkv.backend import Backend, CacheInfo, Fetched, Lookup, WriteResult, conditional
from pullkv.edge.breaker import BreakerPolicy, CircuitBreaker
from pullkv.edge.cache import (
    ENTRY_EXPIRATION,
    FROZEN_ENTRY,
    FROZEN_VALIDATED_AT,
    FROZEN_VERSION,
    INVALIDATED,
    ByteLRU,
    CachePolicy,
    Freshness,
    ListSlot,
    ValueSlot,
    answer_behind,
    answer_older,
    freeze_slot,
    freshness,
    list_fresh,
    list_stale_usable,
    list_ttl,
    live,
    remaining,
    stale_usable,
    supersedes,
    thaw_slot,
    upstream_failed,
)
from pullkv.edge.namespaces import NamespaceLookups
from pullkv.edge.tokens import TokenRecords
from pullkv.feed.log import FeedLog
from pullkv.feed.policy import FeedPolicy
from pullkv.metrics import FEED_INVALIDATION_OUTCOMES, Metrics
from pullkv.siblings import WrittenVersions, behind
from pullkv.store.base import NamespaceOrder, NamespaceStats
from pullkv.types import (
    ChangeRecord,
    ListedKey,
    NamespaceRecord,
    SealedEntry,
    SealedWrite,
    TokenRecord,
    WriteCondition,
)

log = logging.getLogger("pullkv.edge")
T = TypeVar("T")

ValueKey = tuple[str, str, str, str]  # ("v", account, namespace, key)
ListKey = tuple[str, str, str, str, str, int]  # ("l", account, namespace, prefix, after, limit)
Slot = ValueSlot | ListSlot
# A fresh cached entry for the hot path: the sealed entry, its age and its freshness left
# (whole seconds).
FreshEntry = tuple[SealedEntry, int, int]


@dataclass(slots=True)
class _Pending:
    """Fetches waiting to go up together for one (account, namespace)."""

    keys: dict[str, int | None] = field(default_factory=dict)
    held: dict[str, SealedEntry | None] = field(default_factory=dict)
    futures: dict[str, asyncio.Future[Fetched]] = field(default_factory=dict)
    cache_ttl: int | None = None
    # Keys asked again because a change newer than the first answer arrived meanwhile.
    again: set[str] = field(default_factory=set)


class EdgeBackend:
    """The Backend of an edge (see the module docstring)."""

    def __init__(
        self,
        upstream: Backend,
        policy: CachePolicy,
        capacity: int,
        metrics: Metrics,
        *,
        default_ttl: int,
        clock: Callable[[], float] = time.monotonic,
        epoch: Callable[[], float] = time.time,
        upstream_name: str = "the upstream",
        breaker: BreakerPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
        feed_policy: FeedPolicy | None = None,
    ) -> None:
        self.upstream = upstream
        # What this edge heard on its upstream's feed, relayed to the edges below it (None:
        # it follows no feed).
        self.feed = None if feed_policy is None else FeedLog(feed_policy)
        self.upstream_name = upstream_name
        self.policy = policy
        self.default_ttl = default_ttl  # Limits.default_cache_ttl: for reads without one
        self.metrics = metrics
        self.clock = clock
        self.epoch = epoch
        self.breaker = CircuitBreaker(breaker or BreakerPolicy())
        self._sleep = sleep  # waits between probes; injected so tests control time
        self._draw = draw  # jitter for the probe backoff
        self._prober: asyncio.Task[None] | None = None
        self._probe_now = asyncio.Event()  # a readiness check saw the upstream answer
        self.cache: ByteLRU[ValueKey | ListKey, Slot] = ByteLRU(capacity, freeze_slot, thaw_slot)
        self._inflight: dict[ValueKey, asyncio.Future[Fetched]] = {}
        # The newest change (version, deleted) heard for a key while its fetch was out: the
        # fetch's answer must not be older (held only while that fetch is out).
        self._floors: dict[ValueKey, tuple[int, bool]] = {}
        # Label children looked up once: invalidate runs for every change on the feed.
        self._invalidations = {
            outcome: metrics.feed_invalidations.labels(outcome)
            for outcome in FEED_INVALIDATION_OUTCOMES
        }
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._write_seq = 0
        self._list_generation: dict[tuple[str, str], int] = {}
        self._background: set[asyncio.Task[None]] = set()
        # With --workers N: the versions every worker of this node acknowledged, so that none
        # answers with an entry older than a write another one acknowledged (None: one process).
        self.written: WrittenVersions | None = None
        self.tokens = TokenRecords(
            lambda token_id: self._upstream_call("token", self.upstream.get_token(token_id)),
            policy,
            clock,
            upstream_down=self._upstream_down,
            spawn=self._spawn,
            upstream_name=upstream_name,
        )
        self.namespaces = NamespaceLookups(
            lambda account_id, namespace_id, operation: self._upstream_call(
                "namespace", self.upstream.namespace(account_id, namespace_id, operation)
            ),
            clock,
            default_ttl,
            upstream_down=self._upstream_down,
            spawn=self._spawn,
        )
        metrics.watch_cache(
            lambda: self.cache.bytes, lambda: len(self.cache), lambda: self.cache.evictions
        )

    async def close(self) -> None:
        """Stop background work and close the upstream."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.upstream.close()

    # Reads.
    def fresh_entry(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        ttl: int,
        known: SealedEntry | None = None,
    ) -> FreshEntry | None:
        """A cached value a read with cache TTL ``ttl`` may be answered from right now with
        no upstream contact and no background work, or None (absent, "not found", in its
        refresh window, expired, or its key past its expiration: the ordinary ``read`` then
        does what is needed). Marks the entry recently used; counts nothing.

        If the cached entry equals ``known`` (one the caller kept from an earlier call),
        ``known`` itself is returned: the caller tells by identity that nothing changed."""
        cache_key = ("v", account_id, namespace_id, key)
        # Read in its frozen form: thawing the whole slot costs as much as the rest of a hit.
        stored = self.cache.get_stored(cache_key)
        if type(stored) is not tuple:
            return None
        sealed = stored[FROZEN_ENTRY]
        if sealed is None:
            return None
        written = self.written
        if written is not None and behind(written.floor(cache_key), stored[FROZEN_VERSION], False):
            return None
        validated_at = stored[FROZEN_VALIDATED_AT]
        now = self.clock()
        age = now - validated_at
        # ``freshness(...) is Freshness.FRESH``, written out: this runs for every hot read,
        # and the call costs a tenth of it (tests check the two agree).
        if age >= ttl or age >= self.policy.refresh_interval:
            return None
        expiration = sealed[ENTRY_EXPIRATION]
        if expiration is not None and expiration <= self.epoch():
            return None
        # Equal entries share their parts, so this compares identities, not the bytes.
        if known is None or known != sealed:
            known = tuple.__new__(SealedEntry, sealed)
        # FRESH means validated_at + ttl > now, where ``remaining`` is this int().
        return known, int(age), int(validated_at + ttl - now)

    async def read(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> Lookup:
        """One key from the cache, or from the upstream through single-flight; with
        ``revalidate`` (a strong read), always checked with the origin."""
        ttl = cache_ttl if cache_ttl is not None else self.default_ttl
        if revalidate:
            lookups = await self._read_strong(account_id, namespace_id, [key], ttl)
            return lookups[key]
        cache_key: ValueKey = ("v", account_id, namespace_id, key)
        floor = 0 if self.written is None else self.written.floor(cache_key)
        slot = self.cache.get(cache_key)
        now = self.clock()
        if floor and isinstance(slot, ValueSlot) and behind(floor, slot.version, not slot.entry):
            # Another worker of this node acknowledged a newer write: this entry is gone, and
            # must not be served even stale.
            slot = None
        if isinstance(slot, ValueSlot):
            state = freshness(slot.validated_at, now, ttl, self.policy)
            if state is not Freshness.EXPIRED:
                if state is Freshness.REVALIDATE:
                    self._revalidate(cache_key, slot, ttl)
                entry = live(slot.entry, self.epoch())
                self.metrics.cache_reads.labels("hit" if entry else "negative_hit").inc()
                info = CacheInfo(
                    hit=True,
                    age=int(now - slot.validated_at),
                    ttl=remaining(slot.validated_at, now, ttl),
                    revalidating=state is Freshness.REVALIDATE,
                )
                return Lookup(entry, info)
        else:
            slot = None
        lookup = await self._read_through(cache_key, slot, ttl, now)
        if floor and behind(floor, lookup.entry.version if lookup.entry else 0, not lookup.entry):
            return await self._read_past(cache_key, ttl, floor)
        return lookup

    async def _read_past(self, cache_key: ValueKey, ttl: int, floor: int) -> Lookup:
        """A read whose answer was older than a write another worker of this node
        acknowledged (a fetch that left before it, which the read joined; or the key is gone
        since: expired, or deleted elsewhere): ask the origin. If the key is absent there, the
        cache holds "not found" as of that write's version, so later reads need not ask."""
        _, account_id, namespace_id, key = cache_key
        lookup = (await self._read_strong(account_id, namespace_id, [key], ttl))[key]
        if lookup.entry is None:
            current = self.cache.peek(cache_key)
            if not (isinstance(current, ValueSlot) and current.version >= floor >> 1):
                slot = ValueSlot(None, floor >> 1, self.clock())
                self.cache.put(cache_key, slot, slot.size(len(key.encode())))
        return lookup

    async def _read_through(
        self, cache_key: ValueKey, slot: ValueSlot | None, ttl: int, now: float
    ) -> Lookup:
        collapsed = cache_key in self._inflight
        try:
            if not self.breaker.closed:
                raise self._refused("fetch")
            fetched = await self._fetch(cache_key, slot, ttl)
        except errors.KVError as exc:
            if (
                slot is not None
                and upstream_failed(exc)
                and stale_usable(slot.validated_at, now, ttl, self.policy)
            ):
                self.metrics.cache_reads.labels("stale").inc()
                info = CacheInfo(
                    hit=True,
                    age=int(now - slot.validated_at),
                    ttl=remaining(slot.validated_at, now, ttl),
                    forward="stale",
                    stale=True,
                )
                return Lookup(live(slot.entry, self.epoch()), info)
            raise
        self.metrics.cache_reads.labels("miss").inc()
        entry = self._newest(cache_key, fetched.entry)
        info = CacheInfo(
            hit=False,
            age=int(fetched.age),  # a tier above may have held it a while
            ttl=remaining(now - fetched.age, now, ttl),
            forward="stale" if slot is not None else "miss",
            collapsed=collapsed,
        )
        return Lookup(live(entry, self.epoch()), info)

    def _newest(self, cache_key: ValueKey, answered: SealedEntry | None) -> SealedEntry | None:
        """What a reader of a fetch gets: its answer, unless the cache meanwhile holds a
        newer version (a write through this edge, a strong read), so that this location
        never answers with an older version than it already gave."""
        current = self.cache.peek(cache_key)
        # Even an entry a change made stale: it is still newer than this answer.
        if isinstance(current, ValueSlot) and answer_older(
            current.version, None if answered is None else answered.version
        ):
            return current.entry
        return answered

    async def read_many(
        self, account_id: str, namespace_id: str, keys: Sequence[str], cache_ttl: int | None
    ) -> dict[str, Lookup]:
        """Several keys: cached ones from the cache, the rest in one upstream request."""
        lookups = await asyncio.gather(
            *(self.read(account_id, namespace_id, key, cache_ttl) for key in keys)
        )
        return dict(zip(keys, lookups, strict=True))

    async def fetch(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[tuple[str, int | None]],
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> dict[str, Fetched]:
        """Conditional reads for a lower edge, answered through this cache (a regional
        tier); with ``revalidate``, this tier asks its own upstream first."""
        names = [k for k, _ in keys]
        if revalidate:
            ttl = cache_ttl if cache_ttl is not None else self.default_ttl
            lookups = await self._read_strong(account_id, namespace_id, names, ttl)
        else:
            lookups = await self.read_many(account_id, namespace_id, names, cache_ttl)
        answers = conditional(lookups, keys)
        # Each answer says how old this tier's copy is, so the edge below counts its entry's
        # age from when the origin vouched for it, not from its own fetch.
        now = self.clock()
        for key, answer in answers.items():
            slot = self.cache.peek(("v", account_id, namespace_id, key))
            if isinstance(slot, ValueSlot) and slot.validated_at != INVALIDATED:
                age = now - slot.validated_at
                if age > 0:
                    answers[key] = replace(answer, age=age)
        return answers

    async def _read_strong(
        self, account_id: str, namespace_id: str, keys: Sequence[str], ttl: int
    ) -> dict[str, Lookup]:
        """Keys as the origin has them now: one conditional request up (on the versions this
        cache holds), which every tier above passes on; the answers refresh this cache.

        No single-flight and no stale fallback: a fetch already in flight may have been
        answered from a cache above, and a stale entry is what the reader asked not to get."""
        slots: dict[str, ValueSlot | None] = {}
        for key in keys:
            slot = self.cache.peek(("v", account_id, namespace_id, key))
            slots[key] = slot if isinstance(slot, ValueSlot) else None
        held = [(key, None if slot is None else slot.version) for key, slot in slots.items()]
        started_seq = self._write_seq
        answers = await self._upstream_call(
            "fetch",
            self.upstream.fetch(account_id, namespace_id, held, ttl, revalidate=True),
        )
        now = self.clock()
        epoch = self.epoch()
        info = CacheInfo(hit=False, age=0, ttl=ttl, forward="request")
        lookups = {}
        for key, slot in slots.items():
            answer = answers.get(key)
            if answer is None:
                raise errors.store_unavailable("upstream answer missed a key")
            if answer.not_modified:
                kept = None if slot is None else slot.entry
                answer = Fetched(kept, not_modified=True, age=answer.age)
            self._store_fetched(("v", account_id, namespace_id, key), answer, now, started_seq)
            self.metrics.cache_reads.labels("miss").inc()
            lookups[key] = Lookup(live(answer.entry, epoch), info)
        return lookups

    def _fetch(
        self, cache_key: ValueKey, held: ValueSlot | None, ttl: int
    ) -> asyncio.Future[Fetched]:
        """The one upstream fetch for a key: joined if already in flight, else batched.

        The fetch is conditional on the ``held`` slot's version; a "not modified" answer
        resolves to that slot's entry, so it stays right even if the cache drops the slot
        while the fetch is out (and for readers that join without holding it)."""
        existing = self._inflight.get(cache_key)
        if existing is not None:
            return existing
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        self._inflight[cache_key] = future
        self._enqueue(cache_key, held, future, ttl)
        return future

    def _enqueue(
        self,
        cache_key: ValueKey,
        held: ValueSlot | None,
        future: asyncio.Future[Fetched],
        ttl: int | None,
    ) -> _Pending:
        """Add a key to the batch going up for its namespace at the end of this loop turn,
        conditional on the ``held`` slot (None: unconditional), answered into ``future``."""
        _, account_id, namespace_id, key = cache_key
        group = (account_id, namespace_id)
        pending = self._pending.get(group)
        if pending is None:
            pending = self._pending[group] = _Pending()
            asyncio.get_running_loop().call_soon(self._flush, group)
        pending.keys[key] = held.version if held else None
        pending.held[key] = held.entry if held else None
        pending.futures[key] = future
        pending.cache_ttl = max(pending.cache_ttl or 0, ttl or 0) or None
        return pending

    def _flush(self, group: tuple[str, str]) -> None:
        pending = self._pending.pop(group)
        self._spawn(self._send(group, pending))

    async def _send(self, group: tuple[str, str], pending: _Pending) -> None:
        account_id, namespace_id = group
        started_seq = self._write_seq
        try:
            answers = await self._upstream_call(
                "fetch",
                self.upstream.fetch(
                    account_id, namespace_id, list(pending.keys.items()), pending.cache_ttl
                ),
            )
        except BaseException as exc:
            for key, future in pending.futures.items():
                self._forget_inflight(("v", account_id, namespace_id, key), future)
                self._floors.pop(("v", account_id, namespace_id, key), None)
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # a revalidation may have no reader: not "never retrieved"
            if not isinstance(exc, Exception):
                raise
            return
        now = self.clock()
        for key, future in pending.futures.items():
            cache_key: ValueKey = ("v", account_id, namespace_id, key)
            answer = answers.get(key)
            if answer is None:
                self._forget_inflight(cache_key, future)
                self._floors.pop(cache_key, None)
                if not future.done():
                    future.set_exception(errors.store_unavailable("upstream answer missed a key"))
                    future.exception()
                continue
            if answer.not_modified:
                answer = Fetched(pending.held.get(key), not_modified=True, age=answer.age)
            floor = self._floors.pop(cache_key, None)
            if (
                floor is not None
                and key not in pending.again
                and self._inflight.get(cache_key) is future
                and answer_behind(*floor, None if answer.entry is None else answer.entry.version)
            ):
                # A change newer than this answer arrived while it was on its way: ask once
                # more (the upstream has seen the change by now), keeping the readers waiting
                # rather than giving them a version this location knows is gone.
                self._fetch_again(cache_key, future, pending.cache_ttl)
                continue
            self._forget_inflight(cache_key, future)
            self._store_fetched(cache_key, answer, now, started_seq)
            if not future.done():
                entry = self._newest(cache_key, answer.entry)
                if entry is not answer.entry:
                    answer = Fetched(entry)
                future.set_result(answer)

    def _fetch_again(
        self, cache_key: ValueKey, future: asyncio.Future[Fetched], ttl: int | None
    ) -> None:
        """Put a key back in the next batch, unconditionally, for the readers of ``future``."""
        self._enqueue(cache_key, None, future, ttl).again.add(cache_key[3])

    def _forget_inflight(self, cache_key: ValueKey, future: asyncio.Future[Fetched]) -> None:
        # Only this fetch's own entry: once the breaker abandoned it, a newer fetch of the
        # same key may have taken its place.
        if self._inflight.get(cache_key) is future:
            del self._inflight[cache_key]

    def _store_fetched(
        self, cache_key: ValueKey, answer: Fetched, now: float, started_seq: int
    ) -> None:
        current = self.cache.peek(cache_key)
        answered = None if answer.entry is None else answer.entry.version
        if isinstance(current, ValueSlot):
            if current.written_seq > started_seq and (
                answered is None or answered <= current.version
            ):
                return  # a write through this edge landed after the fetch left: it is newer
            if answer_older(current.version, answered):
                return  # never replace a newer version with an older one
        vouched = now - answer.age  # when the origin last vouched for it (through the tiers)
        if answer.not_modified:
            if isinstance(current, ValueSlot) and not current.behind:
                self.cache.update(cache_key, current._replace(validated_at=vouched))
            return
        entry = answer.entry
        slot = ValueSlot(entry, answered or 0, vouched)
        if (
            isinstance(current, ValueSlot)
            and answered is not None
            and answered < current.superseded_by
        ):
            # Still behind a change the feed announced (an upstream tier not caught up yet):
            # keep it, but ask again at the next read.
            slot = slot._replace(validated_at=INVALIDATED, superseded_by=current.superseded_by)
        self.cache.put(cache_key, slot, slot.size(len(cache_key[3].encode())))

    def _revalidate(self, cache_key: ValueKey, slot: ValueSlot, ttl: int) -> None:
        """Start one background revalidation of a key, unless one is running (or the
        breaker is open: the probe finds out when the upstream is back)."""
        if cache_key in self._inflight or not self.breaker.closed:
            return
        version_before = slot.version
        future = self._fetch(cache_key, slot, ttl)

        def done(result: asyncio.Future[Fetched]) -> None:
            if result.cancelled() or result.exception() is not None:
                self.metrics.revalidations.labels("failed").inc()
                return
            answer = result.result()
            changed = not answer.not_modified and (
                answer.entry is None or answer.entry.version != version_before
            )
            self.metrics.revalidations.labels("changed" if changed else "not_modified").inc()

        future.add_done_callback(done)

    async def list_keys(
        self, account_id: str, namespace_id: str, prefix: str, after: str | None, limit: int
    ) -> list[ListedKey]:
        """A key list, cached briefly (dropped when this edge writes to the namespace)."""
        cache_key: ListKey = ("l", account_id, namespace_id, prefix, after or "", limit)
        generation = self._list_generation.get((account_id, namespace_id), 0)
        slot = self.cache.get(cache_key)
        now = self.clock()
        fresh_for = list_ttl(self.policy, self.default_ttl)
        held = slot if isinstance(slot, ListSlot) and slot.generation == generation else None
        if held is not None and list_fresh(
            held.fetched_at, now, self.epoch(), held.rows, fresh_for
        ):
            return held.rows
        try:
            rows = await self._upstream_call(
                "list", self.upstream.list_keys(account_id, namespace_id, prefix, after, limit)
            )
        except errors.KVError as exc:
            if (
                held is not None
                and upstream_failed(exc)
                and list_stale_usable(
                    held.fetched_at, now, self.epoch(), held.rows, fresh_for, self.policy
                )
            ):
                return held.rows
            raise
        epoch = self.epoch()
        rows = [r for r in rows if r.expiration is None or r.expiration > epoch]
        new_slot = ListSlot(rows, now, generation)
        self.cache.put(cache_key, new_slot, new_slot.size())
        return rows

    async def namespace_stats(self, account_id: str, namespace_id: str) -> NamespaceStats:
        """Forwarded to the upstream: counts are the store's, not this cache's."""
        return await self._upstream_call(
            "namespaces", self.upstream.namespace_stats(account_id, namespace_id)
        )

    # Writes.
    async def write(
        self, account_id: str, namespace_id: str, writes: Sequence[SealedWrite]
    ) -> WriteResult:
        """Forward writes up the chain; cache what was acknowledged."""
        try:
            result = await self._upstream_call(
                "write", self.upstream.write(account_id, namespace_id, writes)
            )
        except errors.PreconditionFailed:
            self._forget_refused(account_id, namespace_id, writes[0].key)
            raise
        now = self.clock()
        self._write_seq += 1
        for write in writes:
            version = result.versions.get(write.key)
            if version is None:
                continue
            entry = SealedEntry(write.key, write.value, write.metadata, write.expiration, version)
            self._cache_written(("v", account_id, namespace_id, write.key), entry, version, now)
            if self.written is not None:  # before the client hears of it
                self.written.note(("v", account_id, namespace_id, write.key), version, False)
        self._bump_lists(account_id, namespace_id)
        self.metrics.writes.labels("put").inc(len(result.versions))
        return result

    async def delete(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[str],
        condition: WriteCondition | None = None,
    ) -> WriteResult:
        """Forward deletes up the chain; cache tombstones for what was acknowledged."""
        try:
            result = await self._upstream_call(
                "delete", self.upstream.delete(account_id, namespace_id, keys, condition)
            )
        except errors.PreconditionFailed:
            self._forget_refused(account_id, namespace_id, keys[0])
            raise
        now = self.clock()
        self._write_seq += 1
        for key, version in result.versions.items():
            self._cache_written(("v", account_id, namespace_id, key), None, version, now)
            if self.written is not None:  # before the client hears of it
                self.written.note(("v", account_id, namespace_id, key), version, True)
        self._bump_lists(account_id, namespace_id)
        self.metrics.writes.labels("delete").inc(len(result.versions))
        return result

    def _forget_refused(self, account_id: str, namespace_id: str, key: str) -> None:
        """A refused condition means the key moved on without this cache seeing it: drop the
        cached value, so a read-modify-write retry through this edge does not read it again."""
        self.cache.pop(("v", account_id, namespace_id, key))

    def _cache_written(
        self, cache_key: ValueKey, entry: SealedEntry | None, version: int, now: float
    ) -> None:
        current = self.cache.peek(cache_key)
        if isinstance(current, ValueSlot) and answer_older(current.version, version):
            # Acknowledgements of concurrent writes to one key may arrive out of order:
            # the one acknowledged first may be the newer.
            return
        slot = ValueSlot(entry, version, now, self._write_seq)
        if isinstance(current, ValueSlot) and version < current.superseded_by:
            # The feed already announced a newer write (by another location): this one is
            # stored, and fetched past at the next read.
            slot = slot._replace(validated_at=INVALIDATED, superseded_by=current.superseded_by)
        self.cache.put(cache_key, slot, slot.size(len(cache_key[3].encode())))

    def _bump_lists(self, account_id: str, namespace_id: str) -> None:
        group = (account_id, namespace_id)
        self._list_generation[group] = self._list_generation.get(group, 0) + 1

    # The change feed (``feed.subscriber`` calls these).
    def invalidate(self, change: ChangeRecord) -> bool:
        """Apply a change heard on the feed: the cached entry of its key goes stale if the
        change is newer than it (a late or duplicated message changes nothing), a fetch of
        the key already out is checked against it, and the namespace's cached lists go.
        True if an entry was invalidated."""
        account_id, namespace_id = change.account_id, change.namespace_id
        self._bump_lists(account_id, namespace_id)
        if change.key is None:  # the namespace was deleted
            self.namespaces.forget(account_id, namespace_id)
            self._drop_namespace(account_id, namespace_id)
            self._invalidations["namespace"].inc()
            return True
        cache_key: ValueKey = ("v", account_id, namespace_id, change.key)
        if cache_key in self._inflight:
            held = self._floors.get(cache_key)
            if held is None or held[0] < change.version:
                self._floors[cache_key] = (change.version, change.deleted)
        current = self.cache.peek(cache_key)
        if not isinstance(current, ValueSlot) or not supersedes(change.version, current.version):
            self._invalidations["ignored"].inc()
            return False
        if change.version > current.superseded_by:
            stale = current._replace(validated_at=INVALIDATED, superseded_by=change.version)
            self.cache.update(cache_key, stale)
        self._invalidations["invalidated"].inc()
        return True

    def invalidate_all(self) -> None:
        """The feed was reset (this edge may have missed changes): every cached value is
        revalidated before it is served again, and every cached list goes."""
        for cache_key in self.cache.snapshot():
            slot = self.cache.peek(cache_key)
            if isinstance(slot, ValueSlot):
                if slot.validated_at != INVALIDATED:
                    self.cache.update(cache_key, slot._replace(validated_at=INVALIDATED))
            else:
                self.cache.pop(cache_key)
        self._invalidations["reset"].inc()

    def _drop_namespace(self, account_id: str, namespace_id: str) -> None:
        for cache_key in self.cache.snapshot():
            if cache_key[1] == account_id and cache_key[2] == namespace_id:
                self.cache.pop(cache_key)
        self._bump_lists(account_id, namespace_id)

    # Namespaces: forwarded; a lookup is cached (``edge.namespaces``).
    async def namespace(
        self, account_id: str, namespace_id: str, operation: str
    ) -> NamespaceRecord:
        """The namespace if it exists in this account."""
        return await self.namespaces.get(account_id, namespace_id, operation)

    async def list_namespaces(
        self,
        account_id: str,
        order: NamespaceOrder,
        descending: bool,
        offset: int,
        limit: int,
        only: Sequence[str] | None,
    ) -> tuple[list[NamespaceRecord], int]:
        """Forwarded to the upstream."""
        return await self._upstream_call(
            "namespaces",
            self.upstream.list_namespaces(account_id, order, descending, offset, limit, only),
        )

    async def create_namespace(self, namespace: NamespaceRecord) -> NamespaceRecord:
        """Forwarded to the upstream."""
        return await self._upstream_call("namespaces", self.upstream.create_namespace(namespace))

    async def rename_namespace(
        self, account_id: str, namespace_id: str, title: str
    ) -> NamespaceRecord:
        """Forwarded to the upstream."""
        self.namespaces.forget(account_id, namespace_id)
        return await self._upstream_call(
            "namespaces", self.upstream.rename_namespace(account_id, namespace_id, title)
        )

    async def delete_namespace(self, account_id: str, namespace_id: str) -> None:
        """Forwarded to the upstream."""
        self.namespaces.forget(account_id, namespace_id)
        await self._upstream_call(
            "namespaces", self.upstream.delete_namespace(account_id, namespace_id)
        )
        # This location sees the deletion at once; others through the feed, or as their
        # entries expire.
        self._drop_namespace(account_id, namespace_id)

    # Tokens: records cached so that verifying a token needs no upstream round trip
    # (``edge.tokens``).
    async def get_token(self, token_id: str) -> TokenRecord | None:
        """A token record, from the cache when young enough."""
        return await self.tokens.get(token_id)

    async def add_token(self, token: TokenRecord) -> None:
        """Forwarded to the upstream."""
        await self._upstream_call("token", self.upstream.add_token(token))

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """Forwarded to the upstream."""
        return await self._upstream_call("token", self.upstream.list_tokens(account_id))

    async def revoke_token(self, account_id: str, token_id: str) -> bool:
        """Forwarded to the upstream; forgotten here at once."""
        self.tokens.forget(token_id)
        try:
            return await self._upstream_call(
                "token", self.upstream.revoke_token(account_id, token_id)
            )
        finally:
            # Token answers read while the revocation was on its way may predate it.
            self.tokens.revoked(token_id)

    async def data_keys(self) -> list[tuple[int, bytes]]:
        """The upstream's wrapped data keys."""
        return await self._upstream_call("keyring", self.upstream.data_keys())

    # Mechanics.
    def _upstream_down(self) -> bool:
        """Whether calls up are refused for now (the breaker is open)."""
        return not self.breaker.closed

    async def _upstream_call(self, operation: str, call: Coroutine[Any, Any, T]) -> T:
        """Make an upstream call, or refuse it at once while the breaker is open."""
        if not self.breaker.closed:
            call.close()  # never started: closing it spares a "never awaited" warning
            raise self._refused(operation)
        started = time.perf_counter()
        try:
            result = await call
        except errors.KVError as exc:
            outcome = "unavailable" if exc.status >= 500 else "refused"
            self.metrics.upstream_requests.labels(operation, outcome).inc()
            if isinstance(exc, errors.UpstreamUnreachable):
                self._unreachable(exc)
            raise
        finally:
            self.metrics.upstream_latency.labels(operation).observe(time.perf_counter() - started)
        self.metrics.upstream_requests.labels(operation, "ok").inc()
        return result

    def _refused(self, operation: str) -> errors.KVError:
        """The error for a call not made because the breaker is open."""
        self.metrics.upstream_requests.labels(operation, "circuit_open").inc()
        now = self.clock()
        return errors.upstream_circuit_open(
            self.upstream_name, self.breaker.open_for(now), self.breaker.retry_in(now)
        )

    def _unreachable(self, exc: errors.KVError) -> None:
        """A call found the upstream unreachable: open the breaker (if closed)."""
        if not self.breaker.call_failed(self.clock(), self._draw()):
            return
        log.warning("%s; serving from cache and failing fast until it answers a probe", exc.message)
        # Fetches still out are most likely waiting for the same timeout: their readers get
        # the answer now (stale entries or a 503), and a late reply still fills the cache.
        for cache_key, future in list(self._inflight.items()):
            del self._inflight[cache_key]
            if not future.done():
                future.set_exception(exc)
                future.exception()
        if self._prober is None or self._prober.done():
            self._prober = self._spawn(self._probe_until_answered())

    async def _probe_until_answered(self) -> None:
        """One probe at a time, backing off, until the upstream answers."""
        while not self.breaker.closed:
            await self._wait_for_probe()
            self.breaker.probe_started()
            if await self._probe():
                self.breaker.probe_succeeded()
                log.info("%s answers again; fetching resumes", self.upstream_name)
                return
            self.breaker.probe_failed(self.clock(), self._draw())

    async def _wait_for_probe(self) -> None:
        """Sleep until the next probe is due, or until a readiness check saw the upstream."""
        self._probe_now.clear()
        sleeping = asyncio.ensure_future(self._sleep(self.breaker.retry_in(self.clock())))
        nudged = asyncio.ensure_future(self._probe_now.wait())
        try:
            await asyncio.wait({sleeping, nudged}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeping, nudged):
                waiter.cancel()
            await asyncio.gather(sleeping, nudged, return_exceptions=True)

    async def ready(self, check: Callable[[], Awaitable[bool]]) -> bool:
        """Readiness: the upstream answers ``check`` and the breaker lets calls through.

        An answer while the breaker is open starts its probe at once, so an upstream that
        comes back is used again without waiting out the probe backoff."""
        answered = await check()
        if answered and not self.breaker.closed:
            self._probe_now.set()
        return answered and self.breaker.closed

    async def _probe(self) -> bool:
        """Whether the upstream answers a small authenticated request (any answer counts:
        a refusal or a 5xx still shows it is there, and only silence opens the breaker)."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            await self.upstream.data_keys()
        except errors.UpstreamUnreachable:
            outcome = "unavailable"
        except errors.KVError:
            outcome = "refused"
        except Exception:
            log.exception("probing %s failed", self.upstream_name)
            outcome = "unavailable"
        finally:
            self.metrics.upstream_latency.labels("probe").observe(time.perf_counter() - started)
        self.metrics.upstream_requests.labels("probe", outcome).inc()
        return outcome != "unavailable"

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
