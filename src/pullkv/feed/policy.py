"""The change feed's settings, as data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FeedPolicy:
    """How a node serves and follows the change feed (``--feed-*`` flags where given)."""

    # A server sends a heartbeat at least this often (the bound is one second).
    heartbeat: float = 0.5
    # A subscriber that hears nothing for this long drops the connection and resumes from its
    # position; meanwhile its cache behaves as without a feed (the TTL bounds everything).
    silence: float = 3.0
    # How often an origin looks in its store for changes it did not commit itself (other
    # origins on the same PostgreSQL database, other processes on the same SQLite file).
    poll: float = 0.1
    # Records kept: in the store by an origin, in memory by an edge for the edges below it.
    # A subscriber further behind than this is told to reset.
    retention: int = 100_000
    # After news, a stream waits this long before sending, so that a burst of commits goes
    # out as one chunk (a subscriber's cost is mostly per chunk).
    coalesce: float = 0.005
    # Records read from a store, or sent, at a time.
    page: int = 1000
    # Reconnection backoff after a failed subscription (doubling, jittered).
    reconnect_min: float = 0.1
    reconnect_max: float = 5.0
    # How often an origin prunes its store's records to ``retention``.
    prune_every: float = 30.0
