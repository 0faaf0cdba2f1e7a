"""The same-key write rate limit, in one process's memory (off unless a rate is set; Workers
KV's is 1 write per second per key). An origin uses it over a store only it writes (SQLite);
a store several origins share keeps the limit itself (``store.base.RatedStore``).

Policy only: the caller passes the time. Memory stays bounded because entries older than
one interval carry no information and are swept once the table grows. The next sweep waits
until the table has doubled, so a burst of distinct live keys costs amortised O(1) per write.
"""

from __future__ import annotations


class WriteRateLimiter:
    """Allows at most ``per_second`` writes per (namespace, key); 0 disables the limit."""

    def __init__(self, per_second: float, *, sweep_at: int = 100_000) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._last: dict[tuple[str, str], float] = {}
        self._sweep_at = sweep_at
        self._next_sweep = sweep_at

    @property
    def enabled(self) -> bool:
        """Whether any write can be refused."""
        return self.interval > 0

    def check(self, namespace_id: str, key: str, now: float) -> bool:
        """Whether a write to the key may happen at ``now`` (does not record it)."""
        if not self.enabled:
            return True
        last = self._last.get((namespace_id, key))
        return last is None or now - last >= self.interval

    def record(self, namespace_id: str, key: str, now: float) -> None:
        """Note an accepted write."""
        if not self.enabled:
            return
        self._last[(namespace_id, key)] = now
        if len(self._last) >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = max(self._sweep_at, 2 * len(self._last))

    def acquire(self, namespace_id: str, key: str, now: float) -> bool:
        """Check and record in one step; True if the write may go ahead."""
        if not self.check(namespace_id, key, now):
            return False
        self.record(namespace_id, key, now)
        return True

    def forget(self, namespace_id: str, key: str) -> None:
        """Undo a reservation for a write that did not happen."""
        self._last.pop((namespace_id, key), None)

    def _sweep(self, now: float) -> None:
        cutoff = now - self.interval
        self._last = {k: t for k, t in self._last.items() if t > cutoff}
