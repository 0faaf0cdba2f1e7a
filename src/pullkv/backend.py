"""What the KV service needs beneath it: the authoritative data, local or through a cache.

An origin's backend is its store (``origin.local.LocalBackend``); an edge's backend is its
cache in front of an upstream (``edge.backend.EdgeBackend``), and the upstream is itself a
backend reached over HTTP (``edge.upstream.UpstreamBackend``). The REST API and the KV service
are the same code over either, so an edge answers exactly as an origin would.

Values and metadata cross this interface sealed (ciphertext); only the KV service, in the
process that answers the client, opens them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pullkv.feed.log import FeedSource
from pullkv.store.base import NamespaceOrder, NamespaceStats
from pullkv.types import (
    ListedKey,
    NamespaceRecord,
    SealedEntry,
    SealedWrite,
    TokenRecord,
    WriteCondition,
)


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """How a cached read was answered, for ``Cache-Status`` (RFC 9211) and ``Age``.

    ``forward`` is why the upstream was asked (``miss`` or ``stale``) or None for a hit;
    ``stale`` marks an entry served past its TTL because the upstream failed.
    """

    hit: bool
    age: int
    ttl: int
    forward: str | None = None
    stale: bool = False
    collapsed: bool = False
    revalidating: bool = False

    def header(self, cache_name: str = "pullkv") -> str:
        """The ``Cache-Status`` field value (RFC 9211), naming the cache ``cache_name``."""
        parts = [cache_name]
        if self.hit:
            parts.append("hit")
        if self.forward is not None:
            parts.append(f"fwd={self.forward}")
            if not self.stale:
                parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        parts.append(f"ttl={self.ttl}")
        if self.stale:
            parts.append('detail="stale-if-error"')
        elif self.revalidating:
            parts.append('detail="revalidating"')
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A read's answer: the live entry or None, and cache details when a cache answered."""

    entry: SealedEntry | None
    cache: CacheInfo | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """A conditional fetch's answer for one key: the entry (None if absent), or
    ``not_modified`` when the key is still at the version the asker holds."""

    entry: SealedEntry | None
    not_modified: bool = False
    # Seconds since the origin last vouched for this answer: 0 from an origin, the age of
    # its copy from a tier's cache. The asker counts its entry's age from then, so a TTL
    # bounds the whole chain of caches, not each one.
    age: float = 0.0


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Versions of the accepted writes (by key) and the keys refused by the write rate."""

    versions: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


class TokenSource(Protocol):
    """Where token records come from."""

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """A token record by id, or None."""


class KeySource(Protocol):
    """Where wrapped data keys come from."""

    async def data_keys(self) -> list[tuple[int, bytes]]:
        """Every (key id, wrapped key), oldest first."""


class Backend(TokenSource, KeySource, Protocol):
    """The authoritative data as the KV service sees it, scoped by account."""

    # The change feed this backend serves to edges below (``/pullkv/v1/changes``), if any.
    @property
    def feed(self) -> FeedSource | None:
        """The feed's source: a store's records, or an edge's relay of its upstream's."""

    async def close(self) -> None:
        """Release resources."""

    # Namespaces.
    async def namespace(
        self, account_id: str, namespace_id: str, operation: str
    ) -> NamespaceRecord:
        """The namespace if it exists in this account; 404 (KVError) otherwise."""

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

    async def create_namespace(self, namespace: NamespaceRecord) -> NamespaceRecord:
        """Create a namespace (id and title already chosen and validated)."""

    async def rename_namespace(
        self, account_id: str, namespace_id: str, title: str
    ) -> NamespaceRecord:
        """Give a namespace a new (validated) title."""

    async def delete_namespace(self, account_id: str, namespace_id: str) -> None:
        """Delete a namespace and its keys."""

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
        """One key; ``cache_ttl`` bounds how long a cache may answer without revalidating,
        and ``revalidate`` makes every cache on the way check with the origin."""

    async def read_many(
        self, account_id: str, namespace_id: str, keys: Sequence[str], cache_ttl: int | None
    ) -> dict[str, Lookup]:
        """Several keys; every requested key is in the result."""

    async def fetch(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[tuple[str, int | None]],
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> dict[str, Fetched]:
        """Conditional reads for caches below: each (key, version held or None);
        ``revalidate`` makes every cache on the way check with the origin."""

    async def list_keys(
        self, account_id: str, namespace_id: str, prefix: str, after: str | None, limit: int
    ) -> list[ListedKey]:
        """Live keys with ``prefix`` strictly after ``after``, in UTF-8 byte order."""

    async def namespace_stats(self, account_id: str, namespace_id: str) -> NamespaceStats:
        """Counts over a namespace's live keys, from the authoritative store (never a cache)."""

    async def write(
        self, account_id: str, namespace_id: str, writes: Sequence[SealedWrite]
    ) -> WriteResult:
        """Write durably; keys over the same-key write rate are refused, not written. A write
        with a ``condition`` (alone in its request) raises ``errors.PreconditionFailed``,
        writing nothing, if the condition does not hold."""

    async def delete(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[str],
        condition: WriteCondition | None = None,
    ) -> WriteResult:
        """Delete durably (missing keys are fine); rate-limited keys are refused. A
        ``condition`` (one key) is checked in the delete's transaction: 412 if it fails."""

    # Token management (authoritative at the origin; edges forward).
    async def add_token(self, token: TokenRecord) -> None:
        """Store a new token record."""

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """An account's token records."""

    async def revoke_token(self, account_id: str, token_id: str) -> bool:
        """Revoke a token; False if the account has no such active token."""


def conditional(
    lookups: dict[str, Lookup], held: Sequence[tuple[str, int | None]]
) -> dict[str, Fetched]:
    """Answer a conditional fetch from plain lookups: unchanged versions are not_modified."""
    answers = {}
    for key, version in held:
        entry = lookups[key].entry
        unchanged = entry is not None and version is not None and entry.version == version
        answers[key] = Fetched(None if unchanged else entry, not_modified=unchanged)
    return answers
