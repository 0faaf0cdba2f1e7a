"""Key ranges in UTF-8 byte order, shared by the engines that store keys as bytes."""

from __future__ import annotations

from typing import Any


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def live_keys_query(
    namespace_id: str, prefix: str, after: str | None, limit: int, now: int, mark: str
) -> tuple[str, list[Any]]:
    """SQL and parameters for a page of live keys with ``prefix``, strictly after ``after``,
    in UTF-8 byte order; ``mark`` is the engine's parameter placeholder (``?`` or ``%s``)."""
    low = prefix.encode("utf-8")
    sql = (
        f"SELECT key, expiration, metadata FROM entries WHERE namespace_id = {mark} "
        f"AND key >= {mark} AND (expiration IS NULL OR expiration > {mark})"
    )
    params: list[Any] = [namespace_id, low, now]
    high = prefix_upper_bound(low)
    if high is not None:
        sql += f" AND key < {mark}"
        params.append(high)
    if after is not None:
        sql += f" AND key > {mark}"
        params.append(after.encode("utf-8"))
    sql += f" ORDER BY key LIMIT {mark}"
    params.append(limit)
    return sql, params
