"""A simulation's settings in one value, and the parsers for the CLI's compact forms."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pullkv.edge.breaker import BreakerPolicy
from pullkv.edge.cache import CachePolicy
from pullkv.feed.policy import FeedPolicy
from pullkv.simulate.workload import WorkloadSpec

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``30s``, ``15m``, ``2.5h``, ``1d`` or ``80ms``."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (examples: 90, 30s, 15m, 2.5h, 80ms)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_outage(text: str) -> tuple[float, float]:
    """``START:DURATION`` (e.g. ``1h:2.5h``) as (start, duration) seconds."""
    start, sep, length = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not START:DURATION (example: 1h:2.5h)")
    return parse_duration(start), parse_duration(length)


@dataclass(frozen=True, slots=True)
class Star:
    """The geography-free topology: ``edges`` edges at ``rtt`` seconds from the origin."""

    edges: int
    rtt: float


def parse_topology(text: str) -> Star:
    """``star:EDGES:RTT`` (e.g. ``star:3:80ms``)."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] != "star" or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(f"{text!r} is not a topology (example: star:3:80ms)")
    return Star(int(parts[1]), parse_duration(parts[2]))


@dataclass(frozen=True, slots=True)
class ServerTimes:
    """What a request spends in servers and the client, beyond the network: an edge
    answering from its cache (``server_time``, a measured distribution as its quantiles),
    and what a miss spends beyond that and its round trips (``origin_time``)."""

    server_time: tuple[float, ...]
    origin_time: float


# Measured on pullkv's own Python servers by bench/bench_sim_vs_cluster.py (an origin and
# three edges on one loopback machine, 75 requests/s, httpx client; 2026-11-30 14:55 UTC,
# load average 1.5 on 2 CPUs): the 100 quantiles of a hit's latency as the client saw it,
# in ms, and a miss's median time beyond its round trip and a median hit. For comparing
# with such a cluster (bench/RESULTS-simulate.md); not the model's default, which stands for
# an edge built for speed (0.3 ms a hit, 1 ms at the origin).
# fmt: off
_LOOPBACK_HIT_MS = (
    0.81, 0.88, 0.92, 0.95, 0.98, 1.01, 1.02, 1.05, 1.06, 1.08, 1.10, 1.11, 1.13, 1.14,
    1.16, 1.17, 1.18, 1.20, 1.22, 1.23, 1.25, 1.27, 1.28, 1.29, 1.31, 1.32, 1.33, 1.35,
    1.36, 1.37, 1.38, 1.39, 1.41, 1.42, 1.43, 1.44, 1.46, 1.47, 1.47, 1.48, 1.49, 1.50,
    1.51, 1.52, 1.53, 1.54, 1.55, 1.56, 1.57, 1.58, 1.59, 1.60, 1.60, 1.61, 1.63, 1.64,
    1.65, 1.67, 1.68, 1.69, 1.71, 1.72, 1.74, 1.75, 1.77, 1.79, 1.81, 1.82, 1.85, 1.87,
    1.89, 1.92, 1.94, 1.96, 1.98, 2.01, 2.04, 2.07, 2.10, 2.12, 2.15, 2.18, 2.21, 2.25,
    2.30, 2.34, 2.39, 2.44, 2.50, 2.55, 2.62, 2.69, 2.78, 2.92, 3.03, 3.20, 3.44, 3.85,
    4.48, 6.77,
)
# fmt: on
LOOPBACK = ServerTimes(server_time=tuple(ms / 1000 for ms in _LOOPBACK_HIT_MS), origin_time=0.00311)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything one simulation run depends on (with the seed, its output is fixed)."""

    locations: int = 300
    origins: tuple[str, ...] = ("IAD",)
    tiers: int = 0
    topology: Star | None = None
    weights: str = "region"
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    trace: Path | None = None
    cache_ttl: int = 60
    policy: CachePolicy = field(default_factory=CachePolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    capacity: int = 64 * 1024 * 1024  # bytes of cache per edge
    feed: bool = False
    feed_loss: float = 0.0
    # A feed's upstream sends a heartbeat this often, as the real one does: a subscriber
    # notices a lost change by the next heartbeat (or message) and resubscribes.
    feed_heartbeat: float = FeedPolicy().heartbeat
    feed_relay: float = 0.001  # seconds each tier adds relaying a change
    # Each stream holds news this long before sending it, to batch a burst (the real one's).
    feed_coalesce: float = FeedPolicy().coalesce
    outage: tuple[float, float] | None = None
    outage_kind: str = "unreachable"  # or "errors": the origin answers 503 at once
    refill: str = "none"  # or "jitter": stale-while-refill, jittered and batched
    refill_window: float = 30.0
    refill_batch: float = 1.0  # seconds between an edge's batched refill requests
    upstream_timeout: float = 5.0
    jitter: float = 0.0  # mean extra one-way delay, seconds
    loss: float = 0.0
    hit_time: float = 0.0003  # an edge's time to answer from its cache
    # Or a distribution of it, as equally likely values (its quantiles): each read's is
    # drawn from it (``LOOPBACK``: measured on a loopback cluster); empty: ``hit_time``.
    server_time: tuple[float, ...] = ()
    origin_time: float = 0.001  # the origin's time to read its store
    visibility_samples: int = 100
    probe_step: float = 1.0
    series_buckets: int = 200
    seed: int = 1
