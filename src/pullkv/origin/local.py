"""An origin's backend: the store itself, with the same-key write rate (when one is set).

The rate is enforced where every write of a key arrives. An origin's own store file (SQLite)
has one origin, so its memory sees every write and the limit is kept there. A store several
origins share (PostgreSQL, a RatedStore) keeps it in the write's transaction instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pullkv import errors
from pullkv.backend import Fetched, Lookup, WriteResult, conditional
from pullkv.feed.log import StoreFeed
from pullkv.limits import Limits
from pullkv.ratelimit import WriteRateLimiter
from pullkv.store.base import NamespaceOrder, NamespaceStats, RatedStore, Store
from pullkv.types import ListedKey, NamespaceRecord, SealedWrite, TokenRecord, WriteCondition

_NAMESPACE_CACHE_SECONDS = 5.0


class LocalBackend:
    """The Backend of an origin, over its store."""

    def __init__(self, store: Store, limits: Limits, clock: Callable[[], float]) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
        self.rate = WriteRateLimiter(limits.writes_per_key_per_second)
        # Set when the store enforces the rate itself; the memory limiter then stays unused.
        self._rated: RatedStore | None = None
        if self.rate.enabled and isinstance(store, RatedStore):
            self._rated = store
        self._namespaces: dict[str, tuple[NamespaceRecord, float]] = {}
        # The store's change feed, served to edges (set by pullkv.node when it serves one).
        self.feed: StoreFeed | None = None

    def _committed(self) -> None:
        """A write committed: the feed reads it at once rather than at its next poll."""
        if self.feed is not None:
            self.feed.wake()

    async def close(self) -> None:
        """Close the store."""
        await self.store.close()

    # Namespaces.
    async def namespace(
        self, account_id: str, namespace_id: str, operation: str
    ) -> NamespaceRecord:
        """The namespace if it exists in this account (cached for a few seconds)."""
        now = self.clock()
        cached = self._namespaces.get(namespace_id)
        if cached is not None and cached[1] > now:
            namespace = cached[0]
        else:
            found = await self.store.get_namespace(namespace_id)
            if found is None:
                self._namespaces.pop(namespace_id, None)
                raise errors.namespace_not_found(operation)
            namespace = found
            self._namespaces[namespace_id] = (namespace, now + _NAMESPACE_CACHE_SECONDS)
        if namespace.account_id != account_id:
            raise errors.namespace_not_found(operation)
        return namespace

    async def list_namespaces(
        self,
        account_id: str,
        order: NamespaceOrder,
        descending: bool,
        offset: int,
        limit: int,
        only: Sequence[str] | None,
    ) -> tuple[list[NamespaceRecord], int]:
        """A page of an account's namespaces and the total."""
        return await self.store.list_namespaces(account_id, order, descending, offset, limit, only)

    async def create_namespace(self, namespace: NamespaceRecord) -> NamespaceRecord:
        """Create a namespace; 400 for a taken title or too many namespaces."""
        return await self.store.create_namespace(namespace, self.limits.max_namespaces_per_account)

    async def rename_namespace(
        self, account_id: str, namespace_id: str, title: str
    ) -> NamespaceRecord:
        """Rename a namespace of this account."""
        await self.namespace(account_id, namespace_id, "rename namespace")
        renamed = await self.store.rename_namespace(namespace_id, title)
        self._namespaces.pop(namespace_id, None)
        return renamed

    async def delete_namespace(self, account_id: str, namespace_id: str) -> None:
        """Delete a namespace of this account and its keys."""
        await self.namespace(account_id, namespace_id, "delete namespace")
        self._namespaces.pop(namespace_id, None)
        if not await self.store.delete_namespace(namespace_id):
            raise errors.namespace_not_found("delete namespace")
        self._committed()

    # Keys.
    async def read(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> Lookup:
        """One live key straight from the store (always current: ``revalidate`` changes
        nothing here)."""
        await self.namespace(account_id, namespace_id, "get")
        return Lookup(await self.store.get(namespace_id, key, int(self.clock())))

    async def read_many(
        self, account_id: str, namespace_id: str, keys: Sequence[str], cache_ttl: int | None
    ) -> dict[str, Lookup]:
        """Several live keys straight from the store."""
        await self.namespace(account_id, namespace_id, "bulk get")
        found = await self.store.get_many(namespace_id, keys, int(self.clock()))
        return {key: Lookup(found.get(key)) for key in keys}

    async def fetch(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[tuple[str, int | None]],
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> dict[str, Fetched]:
        """Conditional reads: a key still at the version held is answered not_modified
        (the store is current: ``revalidate`` changes nothing here)."""
        lookups = await self.read_many(account_id, namespace_id, [k for k, _ in keys], cache_ttl)
        return conditional(lookups, keys)

    async def list_keys(
        self, account_id: str, namespace_id: str, prefix: str, after: str | None, limit: int
    ) -> list[ListedKey]:
        """Live keys in UTF-8 byte order."""
        await self.namespace(account_id, namespace_id, "list keys")
        return await self.store.list_keys(namespace_id, prefix, after, limit, int(self.clock()))

    async def namespace_stats(self, account_id: str, namespace_id: str) -> NamespaceStats:
        """Counts over the namespace's live keys, from the store."""
        await self.namespace(account_id, namespace_id, "namespace stats")
        return await self.store.namespace_stats(namespace_id, int(self.clock()))

    async def write(
        self, account_id: str, namespace_id: str, writes: Sequence[SealedWrite]
    ) -> WriteResult:
        """Write in one durable commit; keys written again within the rate are refused.

        A key named twice in one request is written once, with its last value.
        """
        await self.namespace(account_id, namespace_id, "put")
        latest = {write.key: write for write in writes}
        # A conditional write keeps the rate in this origin's memory: the store's rated write
        # has no condition check (conditional writes are for contended keys, not for bursts).
        conditional = any(w.condition is not None for w in writes)
        if self._rated is not None and not conditional:
            rated = await self._rated.put_rated(
                namespace_id, list(latest.values()), self.rate.interval
            )
            self._committed()
            return WriteResult(rated.versions, rated.refused)
        now = self.clock()
        accepted = [w for w in latest.values() if self.rate.acquire(namespace_id, w.key, now)]
        accepted_keys = {w.key for w in accepted}
        refused = [key for key in latest if key not in accepted_keys]
        try:
            versions = await self.store.put(namespace_id, accepted) if accepted else []
        except BaseException:
            for write in accepted:
                self.rate.forget(namespace_id, write.key)
            raise
        self._committed()
        return WriteResult({w.key: v for w, v in zip(accepted, versions, strict=True)}, refused)

    async def delete(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[str],
        condition: WriteCondition | None = None,
    ) -> WriteResult:
        """Delete in one durable commit; keys written again within the rate are refused. With
        a ``condition`` (one key), 412 and nothing deleted unless it holds."""
        await self.namespace(account_id, namespace_id, "delete")
        unique = list(dict.fromkeys(keys))
        if self._rated is not None and condition is None:
            rated = await self._rated.delete_rated(namespace_id, unique, self.rate.interval)
            self._committed()
            return WriteResult(rated.versions, rated.refused)
        now = self.clock()
        accepted = [k for k in unique if self.rate.acquire(namespace_id, k, now)]
        accepted_set = set(accepted)
        try:
            version = await self.store.delete(namespace_id, accepted, condition) if accepted else 0
        except BaseException:
            for key in accepted:
                self.rate.forget(namespace_id, key)
            raise
        self._committed()
        refused = [k for k in unique if k not in accepted_set]
        return WriteResult({k: version for k in accepted}, refused)

    # Tokens and keys.
    async def get_token(self, token_id: str) -> TokenRecord | None:
        """A token record by id."""
        return await self.store.get_token(token_id)

    async def add_token(self, token: TokenRecord) -> None:
        """Store a new token record."""
        await self.store.add_token(token)

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """An account's token records."""
        return await self.store.list_tokens(account_id)

    async def revoke_token(self, account_id: str, token_id: str) -> bool:
        """Revoke a token now."""
        return await self.store.revoke_token(account_id, token_id, int(self.clock()))

    async def data_keys(self) -> list[tuple[int, bytes]]:
        """The store's wrapped data keys."""
        return await self.store.data_keys()
