"""The small core types every layer shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class NamespaceRecord:
    """A KV namespace: an id (32 lowercase hex), its account and a title unique in it."""

    id: str
    account_id: str
    title: str
    jurisdiction: str | None = None  # recorded as given at creation; pullkv has one location

    def to_api(self) -> dict[str, object]:
        """The Cloudflare API shape of a namespace."""
        shape: dict[str, object] = {
            "id": self.id,
            "title": self.title,
            "supports_url_encoding": True,
        }
        if self.jurisdiction is not None:
            shape["jurisdiction"] = self.jurisdiction
        return shape


class SealedEntry(NamedTuple):
    """A key as the store holds it: value and metadata are ciphertext.

    The edge cache does not hold these (a NamedTuple stays tracked by the garbage collector):
    its slots are plain tuples of the same fields, which the collector stops tracking, since
    an edge holds hundreds of thousands of them (see ``edge/cache.py``).
    """

    key: str
    value: bytes
    metadata: bytes | None
    expiration: int | None
    version: int


class ChangeRecord(NamedTuple):
    """One committed change of a key, never its value: the change feed's unit.

    ``seq`` grows by one with every change a store commits (one sequence per store, shared
    by origins on one PostgreSQL database); ``key`` None means the whole namespace was
    deleted.
    """

    seq: int
    account_id: str
    namespace_id: str
    key: str | None
    version: int
    deleted: bool


@dataclass(frozen=True, slots=True)
class WriteCondition:
    """A single-key write's precondition, checked in the write's own transaction: the key is
    live at ``version`` (``If-Match``), or ``absent`` (``If-None-Match: *``; an expired key
    counts as absent)."""

    version: int | None = None
    absent: bool = False

    def __post_init__(self) -> None:
        if (self.version is None) == (not self.absent):
            raise ValueError("a write condition is either a version or absent, not both")

    def holds(self, current: int | None) -> bool:
        """Whether the condition holds for a key whose live version is ``current``."""
        if self.absent:
            return current is None
        return current is not None and current == self.version


def format_etag(version: int) -> str:
    """An entry's ETag: its version in decimal, quoted (a strong validator)."""
    return f'"{version}"'


def parse_etag(raw: str) -> int | None:
    """The version an ETag names, or None if it is not one of ours (``W/`` weak tags and
    anything else never match a version)."""
    text = raw.strip()
    if len(text) < 3 or text[0] != '"' or text[-1] != '"':
        return None
    digits = text[1:-1]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        return None
    return int(digits)


@dataclass(frozen=True, slots=True)
class SealedWrite:
    """One key to write, already encrypted; the store assigns the version."""

    key: str
    value: bytes
    metadata: bytes | None
    expiration: int | None
    condition: WriteCondition | None = None


@dataclass(frozen=True, slots=True)
class ListedKey:
    """A key as list returns it from the store: metadata still sealed."""

    key: str
    expiration: int | None
    metadata: bytes | None


@dataclass(frozen=True, slots=True)
class Entry:
    """A key as clients see it: plaintext value, metadata as JSON text."""

    key: str
    value: bytes
    metadata_json: str | None
    expiration: int | None
    version: int


@dataclass(frozen=True, slots=True)
class ValueWrite:
    """A validated write from a client, before encryption."""

    key: str
    value: bytes
    metadata_json: str | None
    expiration: int | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One row of a key list as clients see it."""

    name: str
    expiration: int | None
    metadata_json: str | None


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of a key list; cursor is None on the last page."""

    keys: list[KeyInfo]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as stored: only a salted hash of the secret is kept."""

    id: str
    account_id: str
    name: str
    salt: bytes
    secret_hash: bytes
    namespaces: tuple[str, ...] | None = None  # None: every namespace of the account
    read_only: bool = False
    admin: bool = False
    edge: bool = False  # may use the internal API between tiers, for every account
    created_at: int = 0
    revoked_at: int | None = None

    def to_api(self) -> dict[str, object]:
        """What token list shows; never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "account_id": self.account_id,
            "namespaces": list(self.namespaces) if self.namespaces is not None else None,
            "read_only": self.read_only,
            "admin": self.admin,
            "edge": self.edge,
            "created_at": self.created_at,
            "status": "revoked" if self.revoked_at is not None else "active",
        }


@dataclass(frozen=True, slots=True)
class BulkResult:
    """The outcome of a bulk write or delete."""

    successful_key_count: int
    unsuccessful_keys: list[str] = field(default_factory=list)

    def to_api(self) -> dict[str, object]:
        """The Cloudflare API shape."""
        return {
            "successful_key_count": self.successful_key_count,
            "unsuccessful_keys": self.unsuccessful_keys,
        }
