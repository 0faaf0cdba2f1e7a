"""The store interface: what an origin needs from durable storage, and nothing more.

Values and metadata reach the store already encrypted; key names and expirations do not.
Every method is a coroutine so engines with network round trips (PostgreSQL) fit the same
shape. ``now`` arguments are epoch seconds: expired keys are invisible to every read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from pullkv.types import (
    ChangeRecord,
    ListedKey,
    NamespaceRecord,
    SealedEntry,
    SealedWrite,
    TokenRecord,
    WriteCondition,
)

NamespaceOrder = Literal["id", "title"]


@dataclass(frozen=True, slots=True)
class NamespaceStats:
    """What a namespace holds now: live keys, the stored (sealed) bytes of their values, and
    how many of them have an expiration. The store never sees plaintext, so ``value_bytes``
    counts ciphertext (each value's plaintext length plus the sealing overhead)."""

    keys: int
    value_bytes: int
    expiring: int


class Store(Protocol):
    """Durable, versioned storage of namespaces, keys, tokens and wrapped data keys."""

    async def close(self) -> None:
        """Finish pending writes and release resources."""

    # Settings: small named values such as the default account id.
    async def get_setting(self, name: str) -> str | None:
        """A setting's value, or None."""

    async def setdefault_setting(self, name: str, value: str) -> str:
        """Store ``value`` unless the setting exists; return the value in force."""

    async def set_setting(self, name: str, value: str) -> None:
        """Store a setting, replacing any value."""

    async def list_settings(self) -> dict[str, str]:
        """Every setting, without the engine's own bookkeeping."""

    # Namespaces.
    async def create_namespace(
        self, namespace: NamespaceRecord, max_per_account: int
    ) -> NamespaceRecord:
        """Create; KVError for a duplicate title or too many namespaces."""

    async def get_namespace(self, namespace_id: str) -> NamespaceRecord | None:
        """The namespace with this id, in any account."""

    async def list_namespaces(
        self,
        account_id: str,
        order: NamespaceOrder,
        descending: bool,
        offset: int,
        limit: int,
        only: Sequence[str] | None = None,
    ) -> tuple[list[NamespaceRecord], int]:
        """A page of an account's namespaces and the account's total (restricted to ``only``)."""

    async def rename_namespace(self, namespace_id: str, title: str) -> NamespaceRecord:
        """Change a title; KVError if it is taken or the namespace is gone."""

    async def delete_namespace(self, namespace_id: str) -> bool:
        """Delete a namespace and every key in it; False if it did not exist."""

    # Keys.
    async def get(self, namespace_id: str, key: str, now: int) -> SealedEntry | None:
        """One live entry, or None."""

    async def get_many(
        self, namespace_id: str, keys: Sequence[str], now: int
    ) -> dict[str, SealedEntry]:
        """The live entries among ``keys``; missing ones are absent from the result."""

    async def put(self, namespace_id: str, writes: Sequence[SealedWrite]) -> list[int]:
        """Write all or none, durably; return each write's version. A write with a
        ``condition`` is checked in the same transaction: if it fails nothing is written and
        ``errors.PreconditionFailed`` is raised."""

    async def delete(
        self, namespace_id: str, keys: Sequence[str], condition: WriteCondition | None = None
    ) -> int:
        """Delete keys (missing ones are fine), durably; return the version of the delete. A
        ``condition`` (one key) is checked in the same transaction, as for ``put``."""

    async def list_keys(
        self, namespace_id: str, prefix: str, after: str | None, limit: int, now: int
    ) -> list[ListedKey]:
        """Live keys with ``prefix``, strictly after ``after``, in UTF-8 byte order."""

    async def namespace_stats(self, namespace_id: str, now: int) -> NamespaceStats:
        """Counts over a namespace's live keys, computed where the data is."""

    async def purge_expired(self, now: int, batch: int) -> int:
        """Remove up to ``batch`` expired entries; return how many went."""

    async def scan_entries(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, SealedEntry]]:
        """Every entry of every namespace in (namespace, key) order, a page at a time."""

    async def reseal(
        self, namespace_id: str, key: str, version: int, value: bytes, metadata: bytes | None
    ) -> bool:
        """Replace an entry's ciphertext if it is still at ``version``; the version is kept."""

    # The change feed: every committed put, delete and namespace deletion adds a record in
    # the same transaction as the data, numbered by a sequence that grows by one per record.
    async def changes_after(self, seq: int, limit: int) -> list[ChangeRecord]:
        """Up to ``limit`` change records with a sequence number above ``seq``, in order."""

    async def change_bounds(self) -> tuple[int, int]:
        """(floor, high): every record in (floor, high] is retained; ``high`` is the last
        sequence number committed (0 for a new store)."""

    async def prune_changes(self, keep: int) -> int:
        """Drop change records older than the newest ``keep``; return how many went."""

    # Tokens.
    async def add_token(self, token: TokenRecord) -> None:
        """Store a token record (replacing one with the same id)."""

    async def get_token(self, token_id: str) -> TokenRecord | None:
        """A token record by id."""

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """An account's tokens, revoked ones included."""

    async def revoke_token(self, account_id: str, token_id: str, now: int) -> bool:
        """Mark a token revoked; False if the account has no such active token."""

    # Wrapped data keys of the keyring.
    async def data_keys(self) -> list[tuple[int, bytes]]:
        """Every (key id, wrapped key), oldest first."""

    async def add_data_key(self, key_id: int, wrapped: bytes) -> bool:
        """Add a wrapped data key; False if the id is taken."""

    # Moving a whole store to another (pullkv store copy): pages in a fixed order, and
    # writes that keep what they are given, versions included.
    async def scan_namespaces(self, after: str | None, limit: int) -> list[NamespaceRecord]:
        """Every namespace of every account in id order, a page at a time."""

    async def scan_tokens(self, after: str | None, limit: int) -> list[TokenRecord]:
        """Every token of every account in id order, a page at a time."""

    async def count_entries(self) -> int:
        """How many entries are stored, expired ones included."""

    async def last_version(self) -> int:
        """The highest version handed out and committed so far (0 for a new store)."""

    async def import_namespaces(self, namespaces: Sequence[NamespaceRecord]) -> None:
        """Store namespaces as given, replacing by id; no per-account limit applies."""

    async def import_entries(
        self, entries: Sequence[tuple[str, SealedEntry]], min_version: int = 0
    ) -> None:
        """Store (namespace, entry) pairs as given, versions included, all or none, replacing
        by namespace and key; later writes get versions above these and ``min_version``."""


@dataclass(frozen=True, slots=True)
class RatedWrite:
    """What a write under the same-key write rate did: the version of each key written, and
    the keys refused because they were written too recently."""

    versions: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


@runtime_checkable
class RatedStore(Protocol):
    """What a Store that several origins may share (PostgreSQL) adds: it enforces the
    same-key write rate itself, in the write's own transaction and on one clock, because an
    origin's memory sees only its own writes. Of the keys given (each once), those written
    less than ``min_interval`` seconds ago by any origin are left out and reported; a write
    that fails uses up no key's interval."""

    async def put_rated(
        self, namespace_id: str, writes: Sequence[SealedWrite], min_interval: float
    ) -> RatedWrite:
        """Write the keys not written within ``min_interval``, all or none, durably."""

    async def delete_rated(
        self, namespace_id: str, keys: Sequence[str], min_interval: float
    ) -> RatedWrite:
        """Delete the keys not written within ``min_interval``, durably."""
