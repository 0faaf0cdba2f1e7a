"""What a node says about itself at ``GET /client/v4/pullkv/info`` (``pullkv info``).

Any valid token may ask. The answer holds the node's own facts (version, role, location,
upstream, uptime, cache figures, which worker answered) and the asking token's account id,
never another account's data: the cache figures are totals over the whole node, as in
``/metrics`` (with ``--workers N``, over every worker).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pullkv import __version__
from pullkv.metrics import SeriesKey
from pullkv.types import TokenRecord

# Cached reads answered without asking the upstream (pullkv_cache_reads results).
_HITS = ("hit", "negative_hit")
_FORWARDED = ("miss", "stale")


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What a node knows of itself from its configuration and start."""

    role: str
    started: float
    location: str | None = None
    upstream: str | None = None
    cached: bool = False


def describe(
    facts: NodeFacts,
    samples: Mapping[SeriesKey, float],
    token: TokenRecord,
    clock: Callable[[], float],
    worker: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """The info document for ``token`` from the node's metric ``samples``
    (``metrics.samples``); ``worker`` is (this worker's index, how many). Cache figures are
    null on a node without a cache."""

    def sample(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    info: dict[str, Any] = {
        "version": __version__,
        "role": facts.role,
        "account_id": token.account_id,
        "token_id": token.id,
        "location": facts.location,
        "upstream": facts.upstream,
        "uptime_seconds": max(0, int(clock() - facts.started)),
        "cache": None,
        "worker": {"index": worker[0], "workers": worker[1], "pid": os.getpid()},
    }
    if facts.cached:
        # Hot-path answers are fresh hits not counted again in pullkv_cache_reads.
        reads = "pullkv_cache_reads_total"
        hits = sum(sample(reads, result=r) for r in _HITS) + sample("pullkv_hot_responses_total")
        total = hits + sum(sample(reads, result=r) for r in _FORWARDED)
        info["cache"] = {
            "entries": int(sample("pullkv_cache_entries")),
            "bytes": int(sample("pullkv_cache_bytes")),
            "reads": int(total),
            "hit_ratio": round(hits / total, 4) if total else None,
        }
    return info
