"""What the simulated clients ask for: synthetic (Zipf keys, Poisson arrivals) or a trace.

Synthetic. Requests arrive as one Poisson process over the whole duration; each goes to a
location drawn by the locations' request shares (``locations.weights``). A request is a write
with probability ``write_fraction`` (a delete for ``delete_fraction`` of those), a list of a
key prefix with probability ``list_fraction``, else a read. Keys are ranked by popularity and
drawn from Zipf(alpha) over ``keys`` keys, alpha about 1 as production cache traces show
(Breslau et al., "Web caching and Zipf-like distributions", 1999; Berger et al.'s CDN traces).
A ``missing_fraction`` of reads ask for keys that were never written (so "not found" answers
are cached too). Each key's value has a fixed size drawn once from a log-normal around
``value_size`` (sigma 1), at most Workers KV's 25 MiB. The top 1 % of keys by rank are "hot".

Trace. A CSV file with a header ``time,location,op,key,size``: seconds from the start, an
IATA code among the simulated locations, ``get``/``put``/``delete``/``list``, any key name,
and the value size in bytes. Every key in the trace exists at the start, with the size the
trace gives it (0 if none). The hot keys are the 1 % most requested.
"""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pullkv.limits import Limits

READ, WRITE, DELETE, LIST = 0, 1, 2, 3
OPS = {"get": READ, "read": READ, "put": WRITE, "write": WRITE, "delete": DELETE, "list": LIST}
HOT_SHARE = 0.01
LIST_PREFIXES = 16  # lists ask for one of this many key prefixes
_CHUNK = 8192

# One request: (time, location index, operation, key index, value size).
Request = tuple[float, int, int, int, int]


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """The synthetic workload's parameters (module docstring)."""

    requests: int = 100_000
    duration: float = 3600.0
    keys: int = 10_000
    zipf: float = 1.0
    write_fraction: float = 0.01
    delete_fraction: float = 0.05
    list_fraction: float = 0.0
    missing_fraction: float = 0.01
    value_size: int = 1024


class Workload:
    """A stream of requests in time order, and what is known about its keys."""

    def __init__(
        self,
        requests: int,
        duration: float,
        keys: int,
        sizes: list[int],
        hot: bytearray,
        stream: Iterator[Request],
    ) -> None:
        self.requests = requests
        self.duration = duration
        self.keys = keys  # key indices 0 .. keys - 1 may exist; others are never written
        self.sizes = sizes
        self.hot = hot
        self._stream = stream

    def __iter__(self) -> Iterator[Request]:
        return self._stream

    def size(self, key: int) -> int:
        """The value size of a key (0 for keys no workload writes)."""
        return self.sizes[key] if key < len(self.sizes) else 0


def zipf_cumulative(n: int, alpha: float) -> list[float]:
    """Cumulative Zipf(alpha) weights over ranks 1..n (for ``random.choices``)."""
    return list(itertools.accumulate(1.0 / (rank**alpha) for rank in range(1, n + 1)))


def synthetic(spec: WorkloadSpec, location_weights: Sequence[float], seed: int) -> Workload:
    """The synthetic workload (module docstring), deterministic for ``seed``."""
    rng = random.Random(f"workload:{seed}")
    size_rng = random.Random(f"sizes:{seed}")
    limit = Limits().max_value_bytes
    sizes = [
        max(1, min(limit, int(spec.value_size * size_rng.lognormvariate(0.0, 1.0))))
        for _ in range(spec.keys)
    ]
    hot = bytearray(2 * spec.keys)
    hot[: max(1, int(spec.keys * HOT_SHARE))] = b"\1" * max(1, int(spec.keys * HOT_SHARE))
    return Workload(
        spec.requests,
        spec.duration,
        spec.keys,
        sizes,
        hot,
        _synthetic_stream(spec, location_weights, rng, sizes),
    )


def _synthetic_stream(
    spec: WorkloadSpec, location_weights: Sequence[float], rng: random.Random, sizes: list[int]
) -> Iterator[Request]:
    key_cw = zipf_cumulative(spec.keys, spec.zipf)
    loc_cw = list(itertools.accumulate(location_weights))
    ranks = range(spec.keys)
    locs = range(len(location_weights))
    rate = spec.requests / spec.duration
    write_p = spec.write_fraction
    delete_p = write_p * spec.delete_fraction
    list_p = write_p + spec.list_fraction
    missing_p = list_p + spec.missing_fraction
    keys = spec.keys
    t = 0.0
    left = spec.requests
    choices, random_, expovariate = rng.choices, rng.random, rng.expovariate
    while left > 0:
        n = min(_CHUNK, left)
        left -= n
        key_draw = choices(ranks, cum_weights=key_cw, k=n)
        loc_draw = choices(locs, cum_weights=loc_cw, k=n)
        for i in range(n):
            t += expovariate(rate)
            u = random_()
            key = key_draw[i]
            if u >= missing_p:
                yield (t, loc_draw[i], READ, key, 0)
            elif u < delete_p:
                yield (t, loc_draw[i], DELETE, key, 0)
            elif u < write_p:
                yield (t, loc_draw[i], WRITE, key, sizes[key])
            elif u < list_p:
                yield (t, loc_draw[i], LIST, key % LIST_PREFIXES, 0)
            else:
                yield (t, loc_draw[i], READ, keys + key, 0)


def from_trace(path: Path, codes: Sequence[str]) -> Workload:
    """A workload read from a trace CSV (module docstring); ValueError names a bad row."""
    index = {code.upper(): i for i, code in enumerate(codes)}
    names: dict[str, int] = {}
    rows: list[Request] = []
    sizes: list[int] = []
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                t = float(row["time"])
                loc = index[row["location"].strip().upper()]
                op = OPS[row["op"].strip().lower()]
                size = int(row.get("size") or 0)
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{line}: bad trace row {row!r} ({exc!r})") from None
            if op == LIST:
                key = hash_prefix(row["key"])
            else:
                key = names.setdefault(row["key"], len(names))
                if key == len(sizes):
                    sizes.append(0)
                if size > 0:
                    sizes[key] = size
            rows.append((t, loc, op, key, size))
    rows.sort(key=lambda r: r[0])
    counts = [0] * len(names)
    for r in rows:
        if r[2] != LIST:
            counts[r[3]] += 1
    hot = bytearray(len(names))
    top = sorted(range(len(names)), key=lambda k: -counts[k])[: max(1, int(len(names) * HOT_SHARE))]
    for k in top:
        hot[k] = 1
    duration = rows[-1][0] if rows else 0.0
    return Workload(len(rows), duration, len(names), sizes, hot, iter(rows))


def hash_prefix(key: str) -> int:
    """The list prefix a trace's list row stands for (stable across runs)."""
    return sum(key.encode()) % LIST_PREFIXES
