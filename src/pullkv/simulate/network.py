"""Round-trip times between simulated nodes, from distance, calibrated on measured pairs.

The model: ``rtt = 2 * d / v * INFLATION + OVERHEAD`` where ``d`` is the great-circle
distance, ``v`` the speed of light in fibre (2/3 c, 199.9 km per millisecond), INFLATION how
much longer real routes are than the great circle, and OVERHEAD the fixed cost of the hops at
both ends (switching, queueing, the metro network). Two nodes in one city are ``SAME_CITY``
apart.

Calibration: INFLATION and OVERHEAD minimise the squared relative error over
``CALIBRATION``, round-trip times measured between WonderProxy's servers (Paul Reinheimer,
"Miles per Millisecond", WonderProxy blog, 2011: its table of pings between ten cities; each
pair here is the mean of its two directions). ``calibration_errors()`` gives the model's
error on each pair; docs/simulation.md lists them. The error is at most ``MAX_ERROR`` on any
pair and at most ``MEAN_ERROR`` on average (tests check both): the model knows distance, not
routes, so a pair whose traffic takes a detour (Sydney–Brisbane) is where it is furthest off.

Jitter and loss are options: each one-way message gets an exponential extra delay of the
given mean, and is lost with the given probability, costing a retransmission timeout
(``RETRANSMIT``, TCP's minimum, plus the round trip) each time it is lost.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from pullkv.simulate.locations import Location, great_circle_km

FIBRE_KM_PER_MS = 299_792.458 * 2 / 3 / 1000
INFLATION = 1.55
OVERHEAD_MS = 10.0
SAME_CITY_MS = 1.0
RETRANSMIT = 0.2  # seconds: Linux's minimum TCP retransmission timeout
MAX_ERROR = 0.45
MEAN_ERROR = 0.20


@dataclass(frozen=True, slots=True)
class Measured:
    """A published round-trip time between two cities' airports."""

    a: str
    b: str
    rtt_ms: float
    source: str


_WP = "WonderProxy 2011"
CALIBRATION: tuple[Measured, ...] = (
    Measured("MXP", "ZRH", 11.17, _WP),  # Milan–Zurich
    Measured("DFW", "JFK", (36.80 + 39.46) / 2, _WP),  # Dallas–New York
    Measured("SYD", "BNE", (33.45 + 42.98) / 2, _WP),  # Sydney–Brisbane
    Measured("BWI", "DFW", (35.64 + 34.53) / 2, _WP),  # Baltimore–Dallas
    Measured("DFW", "SJC", (44.00 + 44.57) / 2, _WP),  # Dallas–Fremont
    Measured("JFK", "SJC", (78.43 + 77.49) / 2, _WP),  # New York–Fremont
    Measured("BWI", "SJC", (79.68 + 79.39) / 2, _WP),  # Baltimore–Fremont
    Measured("MXP", "CDG", (21.61 + 21.29) / 2, _WP),  # Milan–Paris
    Measured("CDG", "DME", (56.74 + 56.13) / 2, _WP),  # Paris–Moscow
    Measured("MXP", "DME", 67.08, _WP),  # Milan–Moscow
    Measured("DME", "ZRH", 60.29, _WP),  # Moscow–Zurich
    Measured("JFK", "CDG", (78.33 + 77.31) / 2, _WP),  # New York–Paris
    Measured("JFK", "MXP", (112.17 + 111.60) / 2, _WP),  # New York–Milan
    Measured("SYD", "SJC", (191.96 + 184.91) / 2, _WP),  # Sydney–Fremont
)


def model_rtt_ms(distance_km: float) -> float:
    """The modelled round-trip time, in milliseconds, over a great-circle distance."""
    if distance_km < 1.0:
        return SAME_CITY_MS
    return 2 * distance_km / FIBRE_KM_PER_MS * INFLATION + OVERHEAD_MS


def calibration_errors() -> list[tuple[Measured, float, float]]:
    """Each calibration pair with the model's RTT (ms) and its relative error."""
    from pullkv.simulate.locations import lookup

    rows = []
    for pair in CALIBRATION:
        model = model_rtt_ms(great_circle_km(lookup(pair.a), lookup(pair.b)))
        rows.append((pair, model, (model - pair.rtt_ms) / pair.rtt_ms))
    return rows


class Network:
    """Round-trip times between nodes, and the one-way delays of messages over them."""

    def __init__(
        self,
        rtt: Sequence[Sequence[float]],
        *,
        jitter: float = 0.0,
        loss: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.rtt = [list(row) for row in rtt]  # seconds
        self.jitter = jitter
        self.loss = loss
        self._rng = rng or random.Random(0)

    @classmethod
    def from_locations(
        cls,
        nodes: Sequence[Location],
        *,
        jitter: float = 0.0,
        loss: float = 0.0,
        rng: random.Random | None = None,
    ) -> Network:
        """The network between located nodes, by the calibrated model."""
        rtt = [[model_rtt_ms(great_circle_km(a, b)) / 1000 for b in nodes] for a in nodes]
        return cls(rtt, jitter=jitter, loss=loss, rng=rng)

    @classmethod
    def star(
        cls,
        edges: int,
        rtt: float,
        *,
        jitter: float = 0.0,
        loss: float = 0.0,
        rng: random.Random | None = None,
    ) -> Network:
        """``edges`` edges, each ``rtt`` seconds from the origin (the last node) and from
        each other."""
        n = edges + 1
        matrix = [[0.0 if i == j else rtt for j in range(n)] for i in range(n)]
        return cls(matrix, jitter=jitter, loss=loss, rng=rng)

    def one_way(self, a: int, b: int) -> float:
        """Seconds for one message from node ``a`` to node ``b``, jitter and loss included."""
        delay = self.rtt[a][b] / 2
        if self.jitter > 0:
            delay += self._rng.expovariate(1.0 / self.jitter)
        if self.loss > 0:
            while self._rng.random() < self.loss:
                delay += RETRANSMIT + self.rtt[a][b]
        return delay
