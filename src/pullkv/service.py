"""The KV service: Workers KV semantics over a backend.

It validates (limits), encrypts and decrypts, and turns refused writes into 429s. Where the
data lives (a local store, or a cache in front of an upstream) is the backend's business; the
same service answers at origins and edges. It knows nothing of HTTP; the clock is injected.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pullkv import errors
from pullkv.backend import Backend, CacheInfo
from pullkv.crypto import CryptoError
from pullkv.cursor import decode_cursor, encode_cursor
from pullkv.keyring import KeyringHolder
from pullkv.limits import Limits
from pullkv.sealing import open_entry, open_metadata, seal_write
from pullkv.store.base import NamespaceOrder, NamespaceStats
from pullkv.types import (
    BulkResult,
    Entry,
    KeyInfo,
    KeyPage,
    NamespaceRecord,
    SealedEntry,
    SealedWrite,
    ValueWrite,
    WriteCondition,
)
from pullkv.validate import (
    parse_json,
    validate_jurisdiction,
    validate_key,
    validate_prefix,
    validate_title,
)

BulkType = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class Read:
    """A decrypted read with how a cache answered it (None straight from a store)."""

    entry: Entry | None
    cache: CacheInfo | None


class KVService:
    """Every KV operation (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        keyring: KeyringHolder,
        limits: Limits,
        clock: Callable[[], float],
    ) -> None:
        self.backend = backend
        self.keyring = keyring
        self.limits = limits
        self.clock = clock

    # Namespaces.
    async def namespace(
        self, account_id: str, namespace_id: str, operation: str
    ) -> NamespaceRecord:
        """The namespace if it exists in this account; 404 otherwise."""
        return await self.backend.namespace(account_id, namespace_id, operation)

    async def list_namespaces(
        self,
        account_id: str,
        *,
        page: int,
        per_page: int,
        order: NamespaceOrder,
        descending: bool,
        only: Sequence[str] | None = None,
    ) -> tuple[list[NamespaceRecord], int]:
        """A page of the account's namespaces and their total; a page past the end is empty."""
        return await self.backend.list_namespaces(
            account_id, order, descending, (page - 1) * per_page, per_page, only
        )

    async def create_namespace(
        self, account_id: str, title: Any, jurisdiction: Any = None
    ) -> NamespaceRecord:
        """Create a namespace with a new 32-hex id; 400 (10014) if the title is taken."""
        clean = validate_title(title, self.limits)
        namespace = NamespaceRecord(
            uuid.uuid4().hex, account_id, clean, validate_jurisdiction(jurisdiction)
        )
        return await self.backend.create_namespace(namespace)

    async def rename_namespace(
        self, account_id: str, namespace_id: str, title: Any
    ) -> NamespaceRecord:
        """Give a namespace a new title."""
        clean = validate_title(title, self.limits)
        return await self.backend.rename_namespace(account_id, namespace_id, clean)

    async def delete_namespace(self, account_id: str, namespace_id: str) -> None:
        """Delete a namespace and all its keys."""
        await self.backend.delete_namespace(account_id, namespace_id)

    async def namespace_stats(self, account_id: str, namespace_id: str) -> NamespaceStats:
        """Counts over the namespace's live keys, from the authoritative store."""
        return await self.backend.namespace_stats(account_id, namespace_id)

    # Reads.
    async def read(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        cache_ttl: int | None = None,
        operation: str = "get",
        *,
        strong: bool = False,
    ) -> Read:
        """A live key, decrypted (or None), with cache details; ``strong`` asks for the
        origin's current version rather than a cached one."""
        validate_key(key, self.limits)
        try:
            lookup = await self.backend.read(
                account_id, namespace_id, key, cache_ttl, revalidate=strong
            )
        except errors.KVError as exc:
            # Backends read through a batched fetch, whose 404 says "bulk get": a client asked
            # for one key, and is told so.
            if exc.code == errors.NAMESPACE_NOT_FOUND:
                raise errors.namespace_not_found(operation) from None
            raise
        entry = None if lookup.entry is None else await self.open(namespace_id, lookup.entry)
        return Read(entry, lookup.cache)

    async def get(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        cache_ttl: int | None = None,
        operation: str = "get",
    ) -> Entry | None:
        """A live key, decrypted, or None; ``operation`` words a 404 for the namespace."""
        return (await self.read(account_id, namespace_id, key, cache_ttl, operation)).entry

    async def get_many(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[str],
        cache_ttl: int | None = None,
    ) -> dict[str, Entry | None]:
        """Several keys at once (1..100), decrypted; missing keys map to None."""
        if not keys:
            raise errors.bulk_get_too_few()
        if len(keys) > self.limits.bulk_get_max_keys:
            raise errors.bulk_get_too_many(self.limits.bulk_get_max_keys)
        for key in keys:
            validate_key(key, self.limits)
        unique = list(dict.fromkeys(keys))
        found = await self.backend.read_many(account_id, namespace_id, unique, cache_ttl)
        result: dict[str, Entry | None] = {}
        for key in unique:
            sealed = found[key].entry
            result[key] = None if sealed is None else await self.open(namespace_id, sealed)
        return result

    async def list_keys(
        self,
        account_id: str,
        namespace_id: str,
        *,
        prefix: str,
        limit: int,
        cursor: str | None,
    ) -> KeyPage:
        """A page of live keys in UTF-8 byte order; the cursor is None on the last page."""
        validate_prefix(prefix, self.limits)
        after = decode_cursor(cursor) if cursor else None
        # One extra row tells whether this is the last page, so a complete list never
        # ends with an empty page.
        rows = await self.backend.list_keys(account_id, namespace_id, prefix, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        keys = []
        for row in rows:
            metadata = None
            if row.metadata is not None:
                metadata = await self._open_metadata(namespace_id, row.key, row.metadata)
            keys.append(KeyInfo(row.key, row.expiration, metadata))
        return KeyPage(keys, encode_cursor(rows[-1].key) if more and rows else None)

    # Writes.
    async def put(
        self,
        account_id: str,
        namespace_id: str,
        write: ValueWrite,
        condition: WriteCondition | None = None,
    ) -> int:
        """Write one key durably and return its version; 429 if it was written too recently,
        412 (``errors.PreconditionFailed``) if ``condition`` does not hold."""
        validate_key(write.key, self.limits)
        sealed = await self.seal(namespace_id, write)
        if condition is not None:
            sealed = replace(sealed, condition=condition)
        result = await self.backend.write(account_id, namespace_id, [sealed])
        if result.refused:
            raise errors.rate_limited(write.key)
        return result.versions[write.key]

    async def delete(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        condition: WriteCondition | None = None,
    ) -> int:
        """Delete one key (missing is fine); 429 past the same-key write rate, 412 if
        ``condition`` does not hold."""
        validate_key(key, self.limits)
        result = await self.backend.delete(account_id, namespace_id, [key], condition)
        if result.refused:
            raise errors.rate_limited(key)
        return result.versions[key]

    async def bulk_put(
        self, account_id: str, namespace_id: str, writes: Sequence[ValueWrite]
    ) -> BulkResult:
        """Write up to 10,000 keys in one durable commit.

        Keys over the same-key write rate are left out and reported as unsuccessful, so the
        caller can retry just those.
        """
        if len(writes) > self.limits.bulk_write_max_items:
            raise errors.bulk_too_many(len(writes), self.limits.bulk_write_max_items)
        for write in writes:
            validate_key(write.key, self.limits)
        sealed = [await self.seal(namespace_id, w) for w in writes]
        result = await self.backend.write(account_id, namespace_id, sealed)
        written = sum(1 for w in writes if w.key in result.versions)
        return BulkResult(written, result.refused)

    async def bulk_delete(
        self, account_id: str, namespace_id: str, keys: Sequence[str]
    ) -> BulkResult:
        """Delete up to 10,000 keys in one durable commit (rate-limited keys are reported)."""
        if len(keys) > self.limits.bulk_write_max_items:
            raise errors.bulk_too_many(len(keys), self.limits.bulk_write_max_items)
        for key in keys:
            validate_key(key, self.limits)
        result = await self.backend.delete(account_id, namespace_id, keys)
        return BulkResult(sum(1 for k in keys if k in result.versions), result.refused)

    # Sealing.
    async def seal(self, namespace_id: str, write: ValueWrite) -> SealedWrite:
        """Encrypt a write's value and metadata, bound to its namespace and key."""
        return seal_write(await self.keyring.current(), namespace_id, write)

    async def open(self, namespace_id: str, sealed: SealedEntry) -> Entry:
        """Decrypt a stored entry; 500 with a clear message if it fails to authenticate."""
        try:
            keyring = await self.keyring.for_blobs(sealed.value, sealed.metadata)
            return open_entry(keyring, namespace_id, sealed)
        except CryptoError as exc:  # sealing.PartError: says which part of which key
            raise errors.decryption_failed(str(exc)) from None

    async def _open_metadata(self, namespace_id: str, key: str, blob: bytes) -> str:
        try:
            keyring = await self.keyring.for_blobs(blob)
            return open_metadata(keyring, namespace_id, key, blob)
        except CryptoError as exc:
            raise errors.decryption_failed(str(exc)) from None


def render_bulk_get(
    entries: dict[str, Entry | None], kind: BulkType, with_metadata: bool, limits: Limits
) -> dict[str, Any]:
    """The ``values`` object of a bulk get: text or parsed JSON, optionally with metadata.

    Missing keys are null (also with metadata). The values together may not exceed 25 MiB.
    """
    total = sum(len(e.value) for e in entries.values() if e is not None)
    if total > limits.bulk_get_max_response_bytes:
        raise errors.bulk_get_too_large(limits.bulk_get_max_response_bytes)
    values: dict[str, Any] = {}
    for key, entry in entries.items():
        if entry is None:
            values[key] = None
            continue
        text = entry.value.decode("utf-8", errors="replace")
        value: Any = text
        if kind == "json":
            # Bounded parsing: a value nested past the depth limit would overflow the stack.
            value = parse_json(
                text, "value", limits.max_json_depth, lambda _: errors.bulk_get_not_json()
            )
        if with_metadata:
            item: dict[str, Any] = {
                "value": value,
                "metadata": json.loads(entry.metadata_json) if entry.metadata_json else None,
            }
            if entry.expiration is not None:
                item["expiration"] = entry.expiration
            values[key] = item
        else:
            values[key] = value
    return values
