"""The edge's token records: records fetched from the upstream, by token id.

These are not verified tokens (``auth.Authenticator`` caches those, by the presented header,
for a few seconds, at origins and edges alike, and the hot path reads that cache): they are
the upstream's answers to "what is token X?", cached so that verifying a token at an edge
needs no upstream round trip. A record is refreshed in the background once old, and checked
with the upstream before use once too old, so a revocation at the origin takes effect here
within ``token_max_age`` while the upstream answers; while it does not, a record is trusted up
to ``auth_max_stale`` after the upstream last confirmed it (``cache.token_use``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from pullkv import errors
from pullkv.edge.cache import (
    CachePolicy,
    TokenUse,
    token_use,
    unknown_token_remembered,
    upstream_failed,
)
from pullkv.limits import EDGE_TOKEN_RECORDS, EDGE_UNKNOWN_TOKENS
from pullkv.types import TokenRecord

log = logging.getLogger("pullkv.edge")
V = TypeVar("V")


class TokenRecords:
    """Token records from the upstream (see the module docstring)."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[TokenRecord | None]],
        policy: CachePolicy,
        clock: Callable[[], float],
        *,
        upstream_down: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        upstream_name: str,
    ) -> None:
        self._fetch = fetch  # asks the upstream (through the edge's breaker and metrics)
        self._policy = policy
        self._clock = clock
        self._upstream_down = upstream_down
        self._spawn = spawn
        self._upstream_name = upstream_name
        self._records: dict[str, tuple[TokenRecord, float]] = {}  # id: (record, confirmed at)
        self._unknown: dict[str, float] = {}  # token id: when the upstream denied it
        self._refreshing: set[str] = set()
        self._generation = 0  # bumped by revocations: older answers are not kept

    def __len__(self) -> int:
        return len(self._records)

    @property
    def unknown(self) -> int:
        """How many ids the upstream recently said it does not know."""
        return len(self._unknown)

    async def get(self, token_id: str) -> TokenRecord | None:
        """A token record, from the cache when young enough."""
        cached = self._records.get(token_id)
        now = self._clock()
        denied_at = self._unknown.get(token_id)
        if denied_at is not None and unknown_token_remembered(denied_at, now, self._policy):
            return None
        if cached is not None:
            record, confirmed_at = cached
            use = token_use(confirmed_at, now, self._policy, self._upstream_down())
            if use is TokenUse.FRESH:
                return record
            if use is not TokenUse.CHECK:
                self._refresh_soon(token_id)
                if use is TokenUse.REFUSE:
                    raise self._refused(confirmed_at, now)
                return record
        generation = self._generation
        try:
            found = await self._fetch(token_id)
        except errors.KVError as exc:
            if cached is None or not upstream_failed(exc):
                raise
            later = self._clock()
            if token_use(cached[1], later, self._policy, upstream_down=True) is TokenUse.REFUSE:
                raise self._refused(cached[1], later) from None
            return cached[0]
        self._remember(token_id, found, now, generation)
        return found

    def forget(self, token_id: str) -> None:
        """Drop a token's record (a revocation is on its way up)."""
        self._records.pop(token_id, None)

    def revoked(self, token_id: str) -> None:
        """A revocation went up: drop the record, and keep no answer read before it."""
        self._generation += 1
        self._records.pop(token_id, None)

    def _refresh_soon(self, token_id: str) -> None:
        # Not while the upstream is down (the edge's breaker is open): the call would be
        # refused at once; the first read after the upstream is back starts the refresh.
        if token_id not in self._refreshing and not self._upstream_down():
            self._refreshing.add(token_id)
            self._spawn(self._refresh(token_id))

    async def _refresh(self, token_id: str) -> None:
        generation = self._generation
        try:
            self._remember(token_id, await self._fetch(token_id), self._clock(), generation)
        except errors.KVError:
            pass  # keep the cached record; the next read retries
        finally:
            self._refreshing.discard(token_id)

    def _refused(self, confirmed_at: float, now: float) -> errors.KVError:
        log.warning(
            "refusing a token not confirmed by %s for %.0f s (--auth-max-stale %g)",
            self._upstream_name,
            now - confirmed_at,
            self._policy.auth_max_stale,
        )
        return errors.token_unconfirmed(
            self._upstream_name, now - confirmed_at, self._policy.auth_max_stale
        )

    def _remember(
        self, token_id: str, record: TokenRecord | None, now: float, generation: int
    ) -> None:
        if generation != self._generation:
            return  # asked before a revocation here finished: it may predate it
        if record is None:
            self._records.pop(token_id, None)
            _remember_bounded(self._unknown, token_id, now, EDGE_UNKNOWN_TOKENS)
        else:
            self._unknown.pop(token_id, None)
            _remember_bounded(self._records, token_id, (record, now), EDGE_TOKEN_RECORDS)


def _remember_bounded(cache: dict[str, V], key: str, value: V, bound: int) -> None:
    """Set ``cache[key]``, dropping the oldest entries past ``bound`` (insertion order)."""
    cache.pop(key, None)
    cache[key] = value
    while len(cache) > bound:
        del cache[next(iter(cache))]
