"""The edge's namespace lookups: "does namespace N exist in account A?", cached.

A lookup is cached; once older than the default cache TTL it is still answered at once
while a background lookup refreshes it (``cache.namespace_stale``). Writes are checked at the
origin anyway, so a stale "exists" costs nothing but a later 404 there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pullkv import errors
from pullkv.edge.cache import namespace_stale, upstream_failed
from pullkv.types import NamespaceRecord

Lookup = Callable[[str, str, str], Awaitable[NamespaceRecord]]


class NamespaceLookups:
    """Namespace records from the upstream, by (account, namespace)."""

    def __init__(
        self,
        lookup: Lookup,
        clock: Callable[[], float],
        default_ttl: int,
        *,
        upstream_down: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self._lookup = lookup  # asks the upstream (through the edge's breaker and metrics)
        self._clock = clock
        self._default_ttl = default_ttl
        self._upstream_down = upstream_down
        self._spawn = spawn
        self._found: dict[tuple[str, str], tuple[NamespaceRecord, float]] = {}
        self._refreshing: set[tuple[str, str]] = set()

    async def get(self, account_id: str, namespace_id: str, operation: str) -> NamespaceRecord:
        """The namespace if it exists in this account."""
        group = (account_id, namespace_id)
        cached = self._found.get(group)
        now = self._clock()
        if cached is not None:
            if namespace_stale(cached[1], now, self._default_ttl):
                self._refresh_soon(group, operation)
            return cached[0]
        found = await self._lookup(account_id, namespace_id, operation)
        self._found[group] = (found, now)
        return found

    def forget(self, account_id: str, namespace_id: str) -> None:
        """Drop a lookup (the namespace is being renamed or deleted through this edge)."""
        self._found.pop((account_id, namespace_id), None)

    def _refresh_soon(self, group: tuple[str, str], operation: str) -> None:
        if group not in self._refreshing and not self._upstream_down():
            self._refreshing.add(group)
            self._spawn(self._refresh(group, operation))

    async def _refresh(self, group: tuple[str, str], operation: str) -> None:
        account_id, namespace_id = group
        now = self._clock()
        try:
            found = await self._lookup(account_id, namespace_id, operation)
        except errors.KVError as exc:
            if not upstream_failed(exc):
                self._found.pop(group, None)  # gone: the next lookup asks and says so
        else:
            if group in self._found:  # not renamed or deleted here meanwhile
                self._found[group] = (found, now)
        finally:
            self._refreshing.discard(group)
