"""A simulation's settings in one value, and the parsers for the CLI's compact forms."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pullkv.edge.breaker import BreakerPolicy
from pullkv.edge.cache import CachePolicy
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
    feed_catchup: float = 10.0  # seconds until a lost change is caught up (0: never)
    feed_relay: float = 0.001  # seconds each tier adds relaying a change
    outage: tuple[float, float] | None = None
    outage_kind: str = "unreachable"  # or "errors": the origin answers 503 at once
    refill: str = "none"  # or "jitter": stale-while-refill, jittered and batched
    refill_window: float = 30.0
    refill_batch: float = 1.0  # seconds between an edge's batched refill requests
    upstream_timeout: float = 5.0
    jitter: float = 0.0  # mean extra one-way delay, seconds
    loss: float = 0.0
    hit_time: float = 0.0003  # an edge's time to answer from its cache
    origin_time: float = 0.001  # the origin's time to read its store
    visibility_samples: int = 100
    probe_step: float = 1.0
    series_buckets: int = 200
    seed: int = 1
