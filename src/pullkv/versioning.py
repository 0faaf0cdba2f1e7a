"""Write versions: integers that only grow.

A version is a hybrid logical clock reading in microseconds: the wall clock when it moves
forward, otherwise one more than the last version. So versions sort like the writes' commit
order on one store, stay close to real time, and remain comparable between processes that
share a store (each takes the larger of its clock and the highest version it has seen).
"""

from __future__ import annotations


def next_version(last_version: int, now_seconds: float) -> int:
    """The version for the next write after ``last_version`` at wall-clock time ``now_seconds``."""
    return max(last_version + 1, int(now_seconds * 1_000_000))
