"""A circuit breaker for an edge's upstream: policy as data, state changed at given times.

Closed, every upstream call goes out. One timeout or failed connection opens it: calls are
then refused at once (the edge serves stale entries or a fast 503 instead of waiting out the
timeout again), and a single background probe checks the upstream now and then, waiting
longer after each failed probe (exponential backoff, capped, with jitter so many edges do not
probe a recovering upstream in step). The first probe that gets an answer closes it.

Nothing here does I/O or reads a clock: the caller passes ``now`` (monotonic seconds) and the
random draw for the jitter, so tests drive every transition exactly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When to probe an upstream that stopped answering."""

    first_probe: float = 0.5  # seconds from opening to the first probe
    backoff: float = 2.0  # each failed probe multiplies the wait by this
    max_probe_interval: float = 5.0  # the wait never grows past this
    jitter: float = 0.2  # up to this fraction of a wait is taken off at random

    def probe_delay(self, failed_probes: int, draw: float) -> float:
        """Seconds until the next probe after ``failed_probes`` failures; ``draw`` in [0, 1)."""
        # Capped before multiplying out, so a long outage cannot overflow the float.
        exponent = min(failed_probes, 64)
        wait = min(self.max_probe_interval, self.first_probe * self.backoff**exponent)
        return wait * (1.0 - self.jitter * draw)


class BreakerState(enum.Enum):
    """Whether calls go to the upstream."""

    CLOSED = "closed"
    OPEN = "open"


class CircuitBreaker:
    """The breaker of one upstream (see the module docstring)."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.state = BreakerState.CLOSED
        self.opened_at = 0.0
        self.next_probe_at = 0.0
        self.failed_probes = 0
        self.probing = False
        self.trips = 0  # times it opened since start

    @property
    def closed(self) -> bool:
        """Whether calls may go to the upstream."""
        return self.state is BreakerState.CLOSED

    def call_failed(self, now: float, draw: float) -> bool:
        """A call found the upstream unreachable; True if this opened the breaker."""
        if self.state is BreakerState.OPEN:
            return False  # calls that left before it opened: the probes decide now
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.failed_probes = 0
        self.next_probe_at = now + self.policy.probe_delay(0, draw)
        self.trips += 1
        return True

    def probe_due(self, now: float) -> bool:
        """Whether a probe should start now (open, none running, its time has come)."""
        return not self.closed and not self.probing and now >= self.next_probe_at

    def probe_started(self) -> None:
        """A probe is on its way; no other starts until it ends."""
        self.probing = True

    def probe_failed(self, now: float, draw: float) -> None:
        """The probe found the upstream still unreachable: wait longer for the next one."""
        self.probing = False
        self.failed_probes += 1
        self.next_probe_at = now + self.policy.probe_delay(self.failed_probes, draw)

    def probe_succeeded(self) -> None:
        """The upstream answered: calls go out again."""
        self.probing = False
        self.failed_probes = 0
        self.state = BreakerState.CLOSED

    def retry_in(self, now: float) -> float:
        """Seconds until the next probe (0 when due or closed)."""
        return 0.0 if self.closed else max(0.0, self.next_probe_at - now)

    def open_for(self, now: float) -> float:
        """Seconds the breaker has been open (0 when closed)."""
        return 0.0 if self.closed else now - self.opened_at
