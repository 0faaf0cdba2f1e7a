"""The discrete-event simulation: edges running pullkv's cache policy in virtual time.

Each simulated edge holds a ``ByteLRU`` of ``ValueSlot``s, exactly the edge's own cache, and
decides every read with ``pullkv.edge.cache``'s functions at the simulated time:
``freshness`` (hit, background revalidation in the refresh window, or fetch),
``stale_usable`` (stale-if-error), ``list_ttl``/``list_fresh``/``list_stale_usable`` (key
lists), and, with the change feed, ``supersedes``/``answer_behind``/``answer_older`` and
``INVALIDATED``. Its upstream has a ``CircuitBreaker`` (``edge.breaker``), driven with the
simulated clock. What ``EdgeBackend`` does with them is mirrored here event by event:

- single-flight: one fetch record per key in flight; readers that find one wait on it;
- a fetch is conditional on the held version; a "not modified" answer re-vouches the slot;
- an acknowledged write is cached at every edge on its way down, with a write sequence that a
  fetch which left earlier cannot overwrite;
- a regional tier answers a lower edge's fetch through its own cache, as ``EdgeBackend.fetch``
  does (so a lower edge counts its entry's age from its own fetch);
- the first unreachable-upstream failure opens the breaker, fails every fetch in flight at
  once (stale entries are served), and one probe at a time with capped, jittered backoff
  finds the upstream again.

Time is a float of seconds. Requests come from the workload in time order; everything else
(messages between nodes, timeouts, probes) is an event in a heap, so a cache hit costs no
heap operation. Change-feed deliveries are applied lazily: an edge looks at the changes of a
key that have reached it by now whenever it touches that key, which gives the same answers
as delivering each message as an event, at a fraction of the cost.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from heapq import heappush
from typing import Any, cast

from pullkv.edge import cache as policy
from pullkv.edge.breaker import CircuitBreaker
from pullkv.edge.cache import INVALIDATED, ByteLRU, Freshness, ListSlot, ValueSlot
from pullkv.limits import Limits
from pullkv.simulate import stats
from pullkv.simulate.config import SimConfig
from pullkv.simulate.locations import Location
from pullkv.simulate.network import Network
from pullkv.simulate.workload import DELETE, LIST, READ, WRITE, Workload
from pullkv.types import SealedEntry

# Where a read's answer came from.
HIT, TIER, ORIGIN, STALE, FAILED = 0, 1, 2, 3, 4
OUTCOMES = ("edge", "tier", "origin", "stale", "failed")

# Event kinds.
_ARRIVE_ORIGIN, _ARRIVE_TIER, _REPLY, _FAIL = 0, 1, 2, 3
_PROBE, _PROBE_DONE, _COMMIT, _ACK, _WATCH, _REFILL = 4, 5, 6, 7, 8, 9
_LIST_UP, _LIST_REPLY = 10, 11

_EXPIRED = Freshness.EXPIRED
_REVALIDATE = Freshness.REVALIDATE
_EPOCH = 0.0  # no key in the simulation expires: list_fresh's epoch clock stays at 0
_KEY_BYTES = 8


class _Fetch:
    """One upstream fetch of a key by one edge: the single-flight record its readers join."""

    __slots__ = ("held_version", "key", "started", "started_seq", "waiters")

    def __init__(self, key: int, started: float, held_version: int | None, seq: int) -> None:
        self.key = key
        self.started = started
        self.held_version = held_version
        self.started_seq = seq
        # (0, start time, hot) for a client; (1, lower edge, its fetch) for a lower edge.
        self.waiters: list[tuple[int, Any, Any]] = []


# An answer travelling down: (version, exists, source, age): age is how long ago the origin
# vouched for it (0 from the origin; a tier's copy's age from its cache), as
# ``Fetched.age``: the edge below counts its entry's age from then.
_Answer = tuple[int, bool, int, float]


class _Edge:
    """One simulated edge's state: its cache, fetches in flight, breaker and counters."""

    __slots__ = (
        "breaker",
        "cache",
        "children",
        "counts",
        "failing",
        "feed_delay",
        "hist",
        "index",
        "inflight",
        "list_generation",
        "max_age",
        "refill_queue",
        "refill_until",
        "upstream",
        "write_seq",
    )

    def __init__(self, index: int, upstream: int, config: SimConfig) -> None:
        self.index = index
        self.upstream = upstream  # a node index: another edge, or an origin
        self.cache: ByteLRU[int, ValueSlot | ListSlot] = ByteLRU(config.capacity)
        self.inflight: dict[int, _Fetch] = {}
        self.breaker = CircuitBreaker(config.breaker)
        self.write_seq = 0
        self.list_generation = 0
        self.counts = [0, 0, 0, 0, 0]  # reads by outcome
        self.hist = stats.new()  # read latencies, hits excluded (added at the end)
        self.max_age = 0.0  # the oldest entry served, by its own edge's clock
        self.children: list[int] = []
        self.feed_delay = 0.0
        self.failing = False
        self.refill_until = -1.0
        self.refill_queue: dict[int, float] = {}


@dataclass(slots=True)
class _Watch:
    """A sampled write whose visibility is probed at every location."""

    key: int
    version: int
    committed: float
    change: _Change | None  # its feed message, with the feed on
    writer: int  # the location the write came through


# One change in the feed: (commit time, version, deleted, the hops that lost it, its
# position in the feed). The hops that lost it map an edge to (times its message was lost
# on the hop into that edge, how long until that edge's next heartbeat when it was).
_Change = tuple[float, int, bool, dict[int, tuple[float, float]] | None, int]


@dataclass(slots=True)
class Result:
    """What one run measured (``report.summarise`` turns it into summary.json)."""

    config: SimConfig
    locations: list[Location]
    tiers: list[int]
    upstream: list[int]
    counts: list[list[int]]  # per edge, reads by outcome
    hist: list[list[int]]  # per edge, read latencies (hits included)
    hot_hist: list[int]
    cold_hist: list[int]
    visibility: list[float]  # seconds, one per (sampled write, location)
    visibility_censored: int
    visibility_remote: list[float]  # the same, at locations other than the writer's
    max_hit_age: float
    max_stale_age: float
    writes: int
    writes_failed: int
    write_hist: list[int]
    lists: list[int]  # by outcome
    series_width: float
    series: dict[str, list[int]]
    outage: tuple[float, float] | None
    origin_requests: int
    origin_keys: int
    requests: int
    sim_time: float
    events: int


class Simulation:
    """One run: build with a config, nodes and a workload; ``run()`` returns a Result."""

    def __init__(
        self,
        config: SimConfig,
        locations: list[Location],
        network: Network,
        upstream: list[int],
        tiers: list[int],
        workload: Workload,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.locations = locations
        self.net = network
        self.n = len(locations)
        self.tiers = tiers
        self.upstream = upstream
        self.workload = workload
        self.progress = progress
        self.cache_policy = config.policy
        self.feed = config.feed
        self.ttl = config.cache_ttl
        self.edges = [_Edge(i, upstream[i], config) for i in range(self.n)]
        for e in self.edges:
            if e.upstream < self.n:
                self.edges[e.upstream].children.append(e.index)
        for e in self.edges:
            e.feed_delay = self._feed_delay(e.index)
        self.rng = random.Random(f"engine:{config.seed}")
        # Without jitter or loss a message's delay is half the round trip: a table lookup
        # instead of a call on the hot paths.
        self.half = [[r / 2 for r in row] for row in network.rtt]
        self.exact_delays = network.jitter == 0 and network.loss == 0
        self.heap: list[tuple[float, int, int, Any, Any]] = []
        self.seq = itertools.count()
        self.events = 0
        nkeys = max(workload.keys, 1)
        # The origin's store: every workload key exists at version 1 at the start; the keys
        # past ``workload.keys`` (the "missing" reads) never exist.
        self.versions = [1] * nkeys + [0] * nkeys
        self.exists = bytearray(b"\1" * nkeys + b"\0" * nkeys)
        self.entries: list[SealedEntry | None] = [None] * (2 * nkeys)
        self.version_clock = 1
        self.changes: dict[int, list[_Change]] = {}
        self.commit_times: list[float] = []  # every change's commit, in feed order
        # Per edge, its chain from the top down: (node, delay of the hop into it, round trip
        # to its upstream, the change's delay to it without loss).
        self.feed_chain = [
            [
                (
                    node,
                    self.net.rtt[self.upstream[node]][node] / 2
                    + config.feed_coalesce
                    + (config.feed_relay if self.upstream[node] < self.n else 0.0),
                    self.net.rtt[node][self.upstream[node]],
                    self.edges[node].feed_delay,
                )
                for node in reversed(self._chain(e.index))
            ]
            for e in self.edges
        ]
        self.watches = 0
        horizon = max(workload.duration, 1.0)
        self.series_width = horizon / config.series_buckets
        b = config.series_buckets + 1
        self.series: dict[str, list[int]] = {
            name: [0] * b
            for name in ("fresh", "stale", "failed", "origin_requests", "origin_keys", "writes")
        }
        self.outage = config.outage
        self.last_bucket = config.series_buckets
        self.s_fresh = self.series["fresh"]
        self.s_stale = self.series["stale"]
        self.hot_hist = stats.new()
        self.cold_hist = stats.new()
        self.hot_hits = 0
        self.cold_hits = 0
        self.visibility: list[float] = []
        self.visibility_remote: list[float] = []  # at locations other than the writer's
        self.visibility_censored = 0
        self.max_stale_age = 0.0
        self.writes = 0
        self.writes_failed = 0
        self.write_hist = stats.new()
        self.lists = [0, 0, 0, 0, 0]
        self.origin_requests = 0
        self.origin_keys = 0
        # With a measured distribution of server time, each read's is drawn from it when
        # the run ends (``_result``); until then no constant is added.
        self.server_time = config.server_time
        self.hit_time = 0.0 if config.server_time else config.hit_time
        self.list_ttl = policy.list_ttl(self.cache_policy, config.cache_ttl)
        expected_writes = workload.requests * config.workload.write_fraction
        self.watch_p = (
            min(1.0, config.visibility_samples / expected_writes) if expected_writes else 0
        )
        self.watch_limit = 2 * self.ttl + self.cache_policy.refresh_interval + 60.0

    # Topology.
    def _chain(self, e: int) -> list[int]:
        """The edges from ``e`` up to (not including) its origin."""
        chain = [e]
        while self.upstream[chain[-1]] < self.n:
            chain.append(self.upstream[chain[-1]])
        return chain

    def _origin_of(self, e: int) -> int:
        chain = self._chain(e)
        return self.upstream[chain[-1]]

    def _feed_delay(self, e: int) -> float:
        """How long a change takes from its commit to reach edge ``e`` (relayed down)."""
        chain = self._chain(e)
        coalesce = self.config.feed_coalesce
        delay = self.net.rtt[self.upstream[chain[-1]]][chain[-1]] / 2 + coalesce
        for lower, upper in itertools.pairwise(chain):
            delay += self.net.rtt[upper][lower] / 2 + self.config.feed_relay + coalesce
        return delay

    # Events.
    def _push(self, t: float, kind: int, a: Any, b: Any) -> None:
        heappush(self.heap, (t, next(self.seq), kind, a, b))

    def _origin_down(self, t: float) -> bool:
        o = self.outage
        return o is not None and o[0] <= t < o[0] + o[1]

    def _bucket(self, t: float) -> int:
        i = int(t / self.series_width)
        return i if i < self.config.series_buckets else self.config.series_buckets

    # The feed, applied lazily (module docstring).
    def _delivered(self, e: _Edge, key: int, now: float) -> tuple[int, bool, float] | None:
        """The newest change of ``key`` that has reached edge ``e`` by ``now``: its
        version, whether it was a delete, and when it arrived."""
        changes = self.changes.get(key)
        if not changes:
            return None
        delay = e.feed_delay
        for change in reversed(changes):
            committed, version, deleted, lost, _ = change
            arrived = committed + delay if lost is None else self._arrival(e.index, change)
            if arrived <= now:
                return version, deleted, arrived
        return None

    def _arrival(self, index: int, change: _Change) -> float:
        """When a change reaches edge ``index``, hops that lost it included.

        As the real feed: a subscriber notices a lost message when the next message or
        heartbeat on its stream shows a position that does not follow its own, resubscribes
        from its position (one round trip to its upstream), and is replayed what it missed,
        followed at once by a heartbeat (so a replay lost again is noticed at once and costs
        one more round trip). A tier relays what it was replayed down to its own edges.
        """
        committed, _, _, lost, position = change
        if lost is None:
            return committed + self.edges[index].feed_delay
        times = self.commit_times
        following = times[position + 1] if position + 1 < len(times) else math.inf
        t = committed
        for node, hop, rtt, lossless in self.feed_chain[index]:
            t += hop
            hit = lost.get(node)
            if hit is not None:
                losses, beat = hit
                # The next message on this stream: the next change, relayed in order
                # behind this one, or the next heartbeat.
                noticed = min(t + beat, max(t, following + lossless))
                t = noticed + losses * rtt
        return t

    def _apply_feed(self, e: _Edge, key: int, slot: ValueSlot, now: float) -> ValueSlot:
        if slot.validated_at == INVALIDATED:
            return slot  # already marked: nothing newer can make it more so
        change = self._delivered(e, key, now)
        if change is not None and policy.supersedes(change[0], slot.version):
            # ValueSlot(...) rather than _replace: a third of the cost, on a hot path.
            slot = ValueSlot(
                slot.entry, slot.version, INVALIDATED, slot.written_seq, slot.superseded_by
            )
            e.cache.update(key, slot)
        return slot

    # Reads.
    def _read(self, e: _Edge, key: int, now: float, waiter: tuple[int, Any, Any]) -> None:
        """A read at edge ``e``: by a client (waiter kind 0) or a lower edge (kind 1)."""
        stored = e.cache.get(key)
        slot = stored if isinstance(stored, ValueSlot) else None
        if slot is not None:
            if self.feed and key in self.changes:
                slot = self._apply_feed(e, key, slot, now)
            va = slot.validated_at
            state = policy.freshness(va, now, self.ttl, self.cache_policy)
            if state is not _EXPIRED:
                age = now - va
                if age > e.max_age:
                    e.max_age = age
                if state is _REVALIDATE and key not in e.inflight and e.breaker.closed:
                    self._start_fetch(e, key, slot, now)
                if waiter[0] == 0:  # a client's hit, the common case, counted here
                    e.counts[HIT] += 1
                    if waiter[2]:
                        self.hot_hits += 1
                    else:
                        self.cold_hits += 1
                    b = int(now / self.series_width)
                    self.s_fresh[b if b < self.last_bucket else self.last_bucket] += 1
                else:
                    age = now - slot.validated_at
                    self._answer(e, waiter, (slot.version, slot.entry is not None, HIT, age), now)
                return
            if (e.refill_until > now or key in e.refill_queue) and policy.stale_usable(
                va, now, self.ttl, self.cache_policy
            ):
                # A recovering upstream: answer stale and refill in the background, each key
                # after a random delay of up to the refill window, in batches.
                if key not in e.refill_queue and key not in e.inflight:
                    e.refill_queue[key] = now + self.rng.uniform(0, self.config.refill_window)
                self._serve_stale(e, waiter, slot, now)
                return
        if not e.breaker.closed:
            self._fail_read(e, key, waiter, now)
            return
        fetch = e.inflight.get(key)
        if fetch is None:
            fetch = self._start_fetch(e, key, slot, now)
        fetch.waiters.append(waiter)

    def _answer(self, e: _Edge, waiter: tuple[int, Any, Any], answer: _Answer, now: float) -> None:
        """Give a read its answer: record a client's, send a lower edge's down."""
        kind, a, b = waiter
        if kind == 0:
            source = answer[2]
            e.counts[source] += 1
            if source == HIT:
                if b:
                    self.hot_hits += 1
                else:
                    self.cold_hits += 1
            else:
                latency = now - a + self.hit_time
                i = stats.bin_of(latency)
                e.hist[i] += 1
                (self.hot_hist if b else self.cold_hist)[i] += 1
            i = int(now / self.series_width)
            (self.s_stale if source == STALE else self.s_fresh)[
                i if i < self.last_bucket else self.last_bucket
            ] += 1
        else:
            source = answer[2]
            relayed = (answer[0], answer[1], TIER if source == HIT else source, answer[3])
            i, j = e.index, a.index
            delay = self.half[i][j] if self.exact_delays else self.net.one_way(i, j)
            heappush(self.heap, (now + delay, next(self.seq), _REPLY, a, (b, relayed)))

    def _serve_stale(
        self, e: _Edge, waiter: tuple[int, Any, Any], slot: ValueSlot, now: float
    ) -> None:
        age = now - slot.validated_at
        if age > self.max_stale_age:
            self.max_stale_age = age
        self._answer(e, waiter, (slot.version, slot.entry is not None, STALE, age), now)

    def _fail_read(self, e: _Edge, key: int, waiter: tuple[int, Any, Any], now: float) -> None:
        """The upstream failed or is refused: a stale entry within bounds, else an error."""
        slot = e.cache.peek(key)
        if isinstance(slot, ValueSlot):
            if self.feed and key in self.changes:
                slot = self._apply_feed(e, key, slot, now)
            if policy.stale_usable(slot.validated_at, now, self.ttl, self.cache_policy):
                self._serve_stale(e, waiter, slot, now)
                return
        kind, a, b = waiter
        if kind == 0:
            e.counts[FAILED] += 1
            self.series["failed"][self._bucket(now)] += 1
        else:
            self._push(now + self.net.one_way(e.index, a.index), _FAIL, a, (b, False))

    def _start_fetch(self, e: _Edge, key: int, held: ValueSlot | None, now: float) -> _Fetch:
        fetch = _Fetch(key, now, None if held is None else held.version, e.write_seq)
        e.inflight[key] = fetch
        self._send(e, [fetch], now)
        return fetch

    def _send(self, e: _Edge, fetches: list[_Fetch], now: float) -> None:
        up = e.upstream
        t = now + (self.half[e.index][up] if self.exact_delays else self.net.one_way(e.index, up))
        if up >= self.n:
            heappush(self.heap, (t, next(self.seq), _ARRIVE_ORIGIN, e, fetches))
        else:
            tier = self.edges[up]
            for fetch in fetches:
                heappush(
                    self.heap, (t, next(self.seq), _ARRIVE_TIER, tier, (fetch.key, (1, e, fetch)))
                )

    def _arrive_origin(self, e: _Edge, fetches: list[_Fetch], now: float) -> None:
        if self._origin_down(now):
            for fetch in fetches:
                if self.config.outage_kind == "errors":
                    back = now + self.net.one_way(e.upstream, e.index)
                    self._push(back, _FAIL, e, (fetch, False))
                else:
                    back = max(now, fetch.started + self.config.upstream_timeout)
                    self._push(back, _FAIL, e, (fetch, True))
            return
        bucket = self._bucket(now)
        self.origin_requests += 1
        self.origin_keys += len(fetches)
        self.series["origin_requests"][bucket] += 1
        self.series["origin_keys"][bucket] += len(fetches)
        delay = (
            self.half[e.upstream][e.index]
            if self.exact_delays
            else self.net.one_way(e.upstream, e.index)
        )
        back = now + self.config.origin_time + delay
        versions, exists, heap, seq = self.versions, self.exists, self.heap, self.seq
        for fetch in fetches:
            k = fetch.key
            heappush(
                heap,
                (back, next(seq), _REPLY, e, (fetch, (versions[k], bool(exists[k]), ORIGIN, 0.0))),
            )

    def _reply(self, e: _Edge, payload: tuple[_Fetch, _Answer], now: float) -> None:
        fetch, answer = payload
        key = fetch.key
        if e.inflight.get(key) is fetch:
            del e.inflight[key]
        if answer[2] == ORIGIN and e.failing:
            self._recovered(e, now)
        version, exists, _, age = answer
        vouched = now - age  # as EdgeBackend._store_fetched: from when the origin vouched
        answered: int | None = version if exists else None
        if self.feed and key in self.changes:
            change = self._delivered(e, key, now)
            if (
                change is not None
                and change[2] > fetch.started
                and policy.answer_behind(change[0], change[1], answered)
                and fetch.waiters
            ):
                # A change arrived while the fetch was out, and the answer predates it.
                again = e.inflight.get(key)
                if again is None:
                    held = e.cache.peek(key)
                    again = self._start_fetch(
                        e, key, held if isinstance(held, ValueSlot) else None, now
                    )
                again.waiters += fetch.waiters
                fetch.waiters = []
                return
        current = e.cache.peek(key)
        held = current if isinstance(current, ValueSlot) else None
        if held is not None and held.written_seq > fetch.started_seq:
            pass  # a write through this edge landed after the fetch left: it is newer
        elif exists and fetch.held_version == version:
            if held is not None:
                e.cache.update(
                    key,
                    ValueSlot(held.entry, version, vouched, held.written_seq, held.superseded_by),
                )
        elif held is None or not policy.answer_older(held.version, answered):
            slot = ValueSlot(
                self._entry(key, version) if exists else None, version if exists else 0, vouched
            )
            e.cache.put(key, slot, slot.size(_KEY_BYTES))
        waiters, fetch.waiters = fetch.waiters, []
        for waiter in waiters:
            self._answer(e, waiter, answer, now)

    def _entry(self, key: int, version: int) -> SealedEntry:
        entry = self.entries[key]
        if entry is None or entry.version != version:
            size = self.workload.size(key)
            entry = SealedEntry(f"k{key}", _blob(size), None, None, version)
            if self.versions[key] == version:
                self.entries[key] = entry
        return entry

    def _failed(self, e: _Edge, fetch: _Fetch, unreachable: bool, now: float) -> None:
        key = fetch.key
        if e.inflight.get(key) is fetch:
            del e.inflight[key]
        e.failing = True
        failed = [fetch]
        if unreachable and e.breaker.call_failed(now, self.rng.random()):
            # As EdgeBackend._unreachable: every fetch still out fails now.
            failed += list(e.inflight.values())
            e.inflight.clear()
            self._push(e.breaker.next_probe_at, _PROBE, e, None)
        for f in failed:
            waiters, f.waiters = f.waiters, []
            for waiter in waiters:
                self._fail_read(e, f.key, waiter, now)

    def _recovered(self, e: _Edge, now: float) -> None:
        e.failing = False
        if self.config.refill == "jitter":
            e.refill_until = now + self.config.refill_window
            self._push(now + self.config.refill_batch, _REFILL, e, None)

    def _refill(self, e: _Edge, now: float) -> None:
        """Send the refills that are due, in one batched request."""
        due = [k for k, t in e.refill_queue.items() if t <= now]
        for k in due:
            del e.refill_queue[k]
        fetches = []
        for k in due:
            if k in e.inflight or not e.breaker.closed:
                continue
            held = e.cache.peek(k)
            fetch = _Fetch(
                k, now, held.version if isinstance(held, ValueSlot) else None, e.write_seq
            )
            e.inflight[k] = fetch
            fetches.append(fetch)
        if fetches:
            self._send(e, fetches, now)
        if e.refill_queue or now < e.refill_until:
            self._push(now + self.config.refill_batch, _REFILL, e, None)

    def _probe(self, e: _Edge, now: float) -> None:
        if e.breaker.closed or e.breaker.probing:
            return
        e.breaker.probe_started()
        arrive = now + self.net.one_way(e.index, e.upstream)
        if self._origin_down(arrive) and self.config.outage_kind != "errors":
            self._push(now + self.config.upstream_timeout, _PROBE_DONE, e, False)
        else:
            self._push(arrive + self.net.one_way(e.upstream, e.index), _PROBE_DONE, e, True)

    def _probe_done(self, e: _Edge, ok: bool, now: float) -> None:
        if ok:
            e.breaker.probe_succeeded()
            self._recovered(e, now)
        else:
            e.breaker.probe_failed(now, self.rng.random())
            self._push(e.breaker.next_probe_at, _PROBE, e, None)

    # Lists: cached per edge by prefix, as EdgeBackend.list_keys (no single-flight there).
    def _list(self, e: _Edge, prefix: int, now: float, waiter: tuple[int, Any, Any]) -> None:
        slot = e.cache.get(-1 - prefix)
        held = slot if isinstance(slot, ListSlot) and slot.generation == e.list_generation else None
        if held is not None and policy.list_fresh(
            held.fetched_at, now, _EPOCH, held.rows, self.list_ttl
        ):
            self._list_done(e, waiter, HIT, now)
            return
        if not e.breaker.closed:
            self._list_failed(e, prefix, waiter, now)
            return
        t = now + self.net.one_way(e.index, e.upstream)
        self._push(t, _LIST_UP, e, (prefix, waiter))

    def _list_up(self, e: _Edge, prefix: int, waiter: tuple[int, Any, Any], now: float) -> None:
        """A list request arriving at ``e``'s upstream: a tier's cache, or the origin."""
        up = e.upstream
        back_to = (1, e, (prefix, waiter))
        if up < self.n:
            self._list(self.edges[up], prefix, now, back_to)
            return
        if self._origin_down(now):
            wait = self.config.upstream_timeout if self.config.outage_kind != "errors" else 0.0
            self._push(
                now + wait + self.net.one_way(up, e.index), _LIST_REPLY, e, (prefix, waiter, False)
            )
            return
        self.origin_requests += 1
        self.series["origin_requests"][self._bucket(now)] += 1
        back = now + self.config.origin_time + self.net.one_way(up, e.index)
        self._push(back, _LIST_REPLY, e, (prefix, waiter, True))

    def _list_reply(
        self, e: _Edge, prefix: int, waiter: tuple[int, Any, Any], ok: bool, now: float
    ) -> None:
        if not ok:
            self._list_failed(e, prefix, waiter, now)
            return
        slot = ListSlot([], now, e.list_generation)
        e.cache.put(-1 - prefix, slot, slot.size())
        self._list_done(e, waiter, ORIGIN, now)

    def _list_failed(self, e: _Edge, prefix: int, waiter: tuple[int, Any, Any], now: float) -> None:
        slot = e.cache.peek(-1 - prefix)
        if isinstance(slot, ListSlot) and policy.list_stale_usable(
            slot.fetched_at, now, _EPOCH, slot.rows, self.list_ttl, self.cache_policy
        ):
            self._list_done(e, waiter, STALE, now)
        elif waiter[0] == 0:
            self.lists[FAILED] += 1
        else:
            lower = waiter[1]
            self._push(
                now + self.net.one_way(e.index, lower.index),
                _LIST_REPLY,
                lower,
                (prefix, waiter[2][1], False),
            )

    def _list_done(self, e: _Edge, waiter: tuple[int, Any, Any], source: int, now: float) -> None:
        if waiter[0] == 0:
            self.lists[source] += 1
        else:
            lower, (prefix, inner) = waiter[1], waiter[2]
            back = now + self.net.one_way(e.index, lower.index)
            self._push(back, _LIST_REPLY, lower, (prefix, inner, True))

    # Writes.
    def _write(self, e: _Edge, key: int, op: int, size: int, now: float) -> None:
        t = now
        for node in self._chain(e.index):
            t += self.net.one_way(node, self.upstream[node])
        self._push(t, _COMMIT, e, (key, op, size, now))

    def _commit(self, e: _Edge, key: int, op: int, size: int, started: float, now: float) -> None:
        chain = self._chain(e.index)
        origin = self.upstream[chain[-1]]
        if self._origin_down(now):
            self.writes_failed += 1
            return
        self.writes += 1
        self.series["writes"][self._bucket(now)] += 1
        self.version_clock += 1
        version = self.version_clock
        self.versions[key] = version
        self.exists[key] = op == WRITE
        if op == WRITE and size and key < len(self.workload.sizes):
            self.workload.sizes[key] = size
        if self.feed:
            self.changes.setdefault(key, []).append(
                (now, version, op == DELETE, self._lost(), len(self.commit_times))
            )
            self.commit_times.append(now)
        # Acknowledged down the chain; each edge on the way caches what it acknowledges.
        t = now
        above = origin
        for node in reversed(chain):
            t += self.net.one_way(above, node)
            self._push(
                t,
                _ACK,
                self.edges[node],
                (key, version, op == WRITE, started if node == e.index else -1.0),
            )
            above = node
        if op == WRITE and self.watch_p and self.rng.random() < self.watch_p:
            self.watches += 1
            change = self.changes[key][-1] if self.feed else None
            watch = _Watch(key, version, now, change, e.index)
            for index in range(self.n):
                self._push(now, _WATCH, watch, index)

    def _lost(self) -> dict[int, tuple[float, float]] | None:
        """The hops that lose a change's message: each edge's hop from its upstream, lost
        with probability ``feed_loss`` (a replay too), and for each how far off the edge's
        next heartbeat was (the heartbeat's phase on that stream is uniform)."""
        p = self.config.feed_loss
        if p <= 0:
            return None
        random_ = self.rng.random
        beat = self.config.feed_heartbeat
        n = self.n
        if p >= 1:
            return {i: (math.inf, beat) for i in range(n)}
        lost: dict[int, tuple[float, float]] = {}
        log_keep = math.log1p(-p)
        # Jump from one lost hop to the next (geometric gaps) instead of a draw per edge.
        i = int(math.log(1.0 - random_()) / log_keep)
        while i < n:
            losses = 1
            while random_() < p:
                losses += 1
            lost[i] = (float(losses), random_() * beat)
            i += 1 + int(math.log(1.0 - random_()) / log_keep)
        return lost or None

    def _ack(
        self, e: _Edge, key: int, version: int, exists: bool, started: float, now: float
    ) -> None:
        e.write_seq += 1
        entry = self._entry(key, version) if exists else None
        slot = ValueSlot(entry, version, now, e.write_seq)
        e.cache.put(key, slot, slot.size(_KEY_BYTES))
        e.list_generation += 1
        if started >= 0:
            self.write_hist[stats.bin_of(now - started)] += 1

    # Visibility probes: what a read at each location would get, without touching anything.
    def _would_read(
        self, index: int, key: int, now: float, change: _Change | None
    ) -> tuple[int, float, float]:
        """The version a read at ``index`` starting ``now`` would get, how long it would
        take, and the next time that could change without any fetch (an entry on the way
        expiring, or the watched change reaching it)."""
        delay = self.hit_time
        node = index
        ttl = self.ttl
        changes = self.feed and key in self.changes
        soonest = math.inf
        while True:
            e = self.edges[node]
            slot = e.cache.peek(key)
            if isinstance(slot, ValueSlot):
                if changes:
                    slot = self._apply_feed(e, key, slot, now)
                va = slot.validated_at
                if policy.freshness(va, now, ttl, self.cache_policy) is not _EXPIRED:
                    if change is not None and slot.version < change[1]:
                        soonest = min(soonest, self._arrival(node, change))
                    return slot.version, delay, min(soonest, va + ttl)
            up = e.upstream
            delay += self.net.rtt[node][up]
            if up >= self.n:
                return self.versions[key], delay + self.config.origin_time, soonest
            node = up

    def _watch(self, watch: _Watch, index: int, now: float) -> None:
        version, delay, soonest = self._would_read(index, watch.key, now, watch.change)
        if version >= watch.version or now - watch.committed >= self.watch_limit:
            seen = now + delay - watch.committed
            if version < watch.version:
                self.visibility_censored += 1
                seen = now - watch.committed
            self.visibility.append(seen)
            if index != watch.writer:
                self.visibility_remote.append(seen)
            return
        # Probe again when something on the way changes by itself (exact), and at least
        # every probe step (fetches by other reads change caches too).
        step = now + self.config.probe_step
        self._push(soonest + 1e-9 if soonest < step else step, _WATCH, watch, index)

    # The loop.
    def _handlers(self) -> list[Callable[[Any, Any, float], None]]:
        """Each event kind's handler, indexed by kind, all called as (a, b, time)."""
        return [
            self._arrive_origin,
            lambda tier, b, t: self._read(tier, b[0], t, b[1]),
            self._reply,
            lambda e, b, t: self._failed(e, b[0], b[1], t),
            lambda e, _, t: self._probe(e, t),
            self._probe_done,
            lambda e, b, t: self._commit(e, b[0], b[1], b[2], b[3], t),
            lambda e, b, t: self._ack(e, b[0], b[1], b[2], b[3], t),
            self._watch,
            lambda e, _, t: self._refill(e, t),
            lambda e, b, t: self._list_up(e, b[0], b[1], t),
            lambda e, b, t: self._list_reply(e, b[0], b[1], b[2], t),
        ]

    def run(self) -> Result:
        """Run the workload to its end, then let every message in flight land."""
        # Every request allocates short-lived tuples, and the caches hold millions of
        # long-lived objects: at the default thresholds the collector would walk them all
        # every few thousand requests (a fifth of the run's time). Nothing here makes
        # reference cycles that need collecting promptly, so collect rarely while running.
        thresholds = gc.get_threshold()
        gc.set_threshold(200_000, 50, 1_000)
        try:
            return self._run()
        finally:
            gc.set_threshold(*thresholds)

    def _run(self) -> Result:
        heap = self.heap
        heappop = heapq.heappop
        handlers = self._handlers()
        reply, read, arrive_origin = self._reply, self._read, self._arrive_origin
        edges = self.edges
        hot = self.workload.hot
        total = self.workload.requests
        step = max(1, total // 100)
        mark = step if self.progress is not None else total + 1
        events = 0
        now = 0.0
        for done, (now, loc, op, key, size) in enumerate(self.workload, 1):
            # The three kinds that make up nearly all events are called directly: no
            # handler table lookup, no adapter frame.
            while heap and heap[0][0] <= now:
                t, _, kind, a, b = heappop(heap)
                events += 1
                if kind == _REPLY:
                    reply(a, b, t)
                elif kind == _ARRIVE_TIER:
                    read(a, b[0], t, b[1])
                elif kind == _ARRIVE_ORIGIN:
                    arrive_origin(a, b, t)
                else:
                    handlers[kind](a, b, t)
            e = edges[loc]
            if op == READ:
                read(e, key, now, (0, now, hot[key]))
            elif op == LIST:
                self._list(e, key, now, (0, now, 0))
            else:
                self._write(e, key, op, size, now)
            if done == mark:
                mark += step
                if self.progress is not None:
                    self.progress(done, total)
        self.events += events
        end = now + self.watch_limit + self.config.upstream_timeout + 60.0
        while heap and heap[0][0] <= end:
            t, _, kind, a, b = heappop(heap)
            self.events += 1
            handlers[kind](a, b, t)
        if self.progress is not None:
            self.progress(total, total)
        return self._result(now)

    def _result(self, now: float) -> Result:
        hit_bin = stats.bin_of(self.hit_time)
        hists = []
        for e in self.edges:
            h = list(e.hist)
            h[hit_bin] += e.counts[HIT]
            hists.append(h)
        self.hot_hist[hit_bin] += self.hot_hits
        self.cold_hist[hit_bin] += self.cold_hits
        if self.server_time:
            # Each read's latency plus a server time drawn from the measured distribution:
            # the histograms convolved with it, and one draw per visibility sample.
            times = self.server_time
            hists = [stats.spread(h, times) for h in hists]
            self.hot_hist = stats.spread(self.hot_hist, times)
            self.cold_hist = stats.spread(self.cold_hist, times)
            draw = random.Random(f"server-time:{self.config.seed}").choice
            self.visibility = [v + draw(times) for v in self.visibility]
            self.visibility_remote = [v + draw(times) for v in self.visibility_remote]
        return Result(
            config=self.config,
            locations=self.locations,
            tiers=self.tiers,
            upstream=self.upstream,
            counts=[list(e.counts) for e in self.edges],
            hist=hists,
            hot_hist=self.hot_hist,
            cold_hist=self.cold_hist,
            visibility=self.visibility,
            visibility_censored=self.visibility_censored,
            visibility_remote=self.visibility_remote,
            max_hit_age=max((e.max_age for e in self.edges), default=0.0),
            max_stale_age=self.max_stale_age,
            writes=self.writes,
            writes_failed=self.writes_failed,
            write_hist=self.write_hist,
            lists=self.lists,
            series_width=self.series_width,
            series=self.series,
            outage=self.outage,
            origin_requests=self.origin_requests,
            origin_keys=self.origin_keys,
            requests=self.workload.requests,
            sim_time=now,
            events=self.events,
        )


_BLOBS: dict[int, bytes] = {}
_ZEROS: list[memoryview] = []


def _blob(size: int) -> bytes:
    """A value of ``size`` bytes: only its length matters (``ValueSlot.size`` charges the
    cache for it), so every value is a view of one shared zero buffer, not a copy."""
    blob = _BLOBS.get(size)
    if blob is None:
        if not _ZEROS:
            _ZEROS.append(memoryview(bytes(Limits().max_value_bytes)))
        blob = _BLOBS[size] = cast(bytes, _ZEROS[0][:size])
    return blob
