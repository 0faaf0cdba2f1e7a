"""What a node says about itself at ``GET /client/v4/pullkv/info`` (``pullkv info``).

Any valid token may ask. The answer holds the node's own facts (version, role, location,
upstream, uptime, cache figures) and the asking token's account id, never another account's
data: the cache figures are totals over the whole node, as in ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pullkv import __version__
from pullkv.metrics import Metrics
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


def _reads(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("pullkv_cache_reads_total", {"result": result})
    return value or 0.0


def describe(
    facts: NodeFacts, metrics: Metrics, token: TokenRecord, clock: Callable[[], float]
) -> dict[str, Any]:
    """The info document for ``token``: cache figures are null on a node without a cache."""
    info: dict[str, Any] = {
        "version": __version__,
        "role": facts.role,
        "account_id": token.account_id,
        "token_id": token.id,
        "location": facts.location,
        "upstream": facts.upstream,
        "uptime_seconds": max(0, int(clock() - facts.started)),
        "cache": None,
    }
    if facts.cached:
        # Hot-path answers are fresh hits not counted again in pullkv_cache_reads.
        hits = sum(_reads(metrics, r) for r in _HITS) + metrics.hot_responses
        total = hits + sum(_reads(metrics, r) for r in _FORWARDED)
        info["cache"] = {
            "entries": int(metrics.registry.get_sample_value("pullkv_cache_entries") or 0),
            "bytes": int(metrics.registry.get_sample_value("pullkv_cache_bytes") or 0),
            "reads": int(total),
            "hit_ratio": round(hits / total, 4) if total else None,
        }
    return info
