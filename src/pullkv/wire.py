"""The messages between tiers: typed requests and answers of the internal API, and their bytes.

Each message is a frozen dataclass with ``to_wire()`` and ``from_wire()``. The edge
(``edge/upstream.py``) encodes requests and decodes answers; the internal API
(``http/internal.py``) decodes requests and encodes answers, so the two sides cannot drift
apart. Decoding checks every field's type and range and refuses anything else with a 400 that
names the field: a made-up message from an edge token never reaches the store (where a huge
integer would overflow SQLite's 64-bit integers) and never becomes a 500.

Most messages are JSON objects (``to_wire()`` gives the object, ``from_wire()`` takes the
parsed one). Those that carry sealed values, which are binary and up to 25 MiB, are framed
instead: raw bytes after a small JSON header that carries everything else and the blobs'
lengths (no base64, no copies beyond one join). Layout: ``PKV1`` | header length (4 bytes,
big-endian) | header JSON | blobs.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from pullkv import errors
from pullkv.backend import Fetched, WriteResult
from pullkv.limits import FEED_LINE_MAX_BYTES, INT64_MAX
from pullkv.store.base import NamespaceOrder, NamespaceStats
from pullkv.types import (
    ChangeRecord,
    ListedKey,
    NamespaceRecord,
    SealedEntry,
    SealedWrite,
    TokenRecord,
    WriteCondition,
)
from pullkv.validate import parse_json

MAGIC = b"PKV1"
CONTENT_TYPE = "application/x-pullkv"


# Reading decoded JSON: every accessor checks the type and range, and names the field.
def _malformed(where: str, problem: str) -> errors.KVError:
    return errors.bad_request(f"malformed internal message: {where} {problem}")


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _malformed(where, "must be a string")
    if not value.isascii():
        # JSON may spell a lone surrogate ("\ud800"), which no store can encode.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _malformed(where, "must be valid Unicode") from None
    return value


def _integer(value: object, where: str, maximum: int = INT64_MAX) -> int:
    # ``type() is int``: JSON true and false decode to bools, which are ints to Python.
    if type(value) is not int or not 0 <= value <= maximum:
        raise _malformed(where, f"must be an integer from 0 to {maximum}")
    return value


class _Fields:
    """One JSON object of a message, read field by field."""

    __slots__ = ("_data", "where")

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise _malformed(where, "must be a JSON object")
        self._data: dict[str, object] = data
        self.where = where

    def raw(self, name: str) -> tuple[object, str]:
        """A field's value, unchecked, and its name for error messages."""
        where = f"{self.where}.{name}"
        if name not in self._data:
            raise _malformed(where, "is missing")
        return self._data[name], where

    def text(self, name: str) -> str:
        return _text(*self.raw(name))

    def optional_text(self, name: str) -> str | None:
        value, where = self.raw(name)
        return None if value is None else _text(value, where)

    def integer(self, name: str) -> int:
        return _integer(*self.raw(name))

    def optional_integer(self, name: str) -> int | None:
        value, where = self.raw(name)
        return None if value is None else _integer(value, where)

    def has(self, name: str) -> bool:
        """Whether an optional field is present."""
        return name in self._data

    def flag(self, name: str) -> bool:
        value, where = self.raw(name)
        if not isinstance(value, bool):
            raise _malformed(where, "must be true or false")
        return value

    def blob(self, name: str) -> bytes:
        value, where = self.raw(name)
        try:
            return base64.b64decode(_text(value, where), validate=True)
        except (binascii.Error, ValueError):
            raise _malformed(where, "must be base64") from None

    def array(self, name: str) -> list[tuple[object, str]]:
        """A JSON array's elements, each with its name for error messages."""
        value, where = self.raw(name)
        if not isinstance(value, list):
            raise _malformed(where, "must be an array")
        return [(item, f"{where}[{i}]") for i, item in enumerate(value)]

    def objects(self, name: str) -> list[_Fields]:
        return [_Fields(item, where) for item, where in self.array(name)]

    def texts(self, name: str) -> tuple[str, ...]:
        return tuple(_text(item, where) for item, where in self.array(name))

    def optional_texts(self, name: str) -> tuple[str, ...] | None:
        return None if self.raw(name)[0] is None else self.texts(name)

    def nested(self, name: str) -> _Fields:
        return _Fields(*self.raw(name))


# Framing.
class _Blobs:
    """The blobs of a framed message, taken in order as its header refers to them."""

    __slots__ = ("_blobs", "_next", "_where")

    def __init__(self, blobs: list[bytes], where: str) -> None:
        self._blobs = blobs
        self._next = 0
        self._where = where

    def take(self, where: str) -> bytes:
        if self._next == len(self._blobs):
            raise _malformed(where, "refers to a blob the message does not hold")
        self._next += 1
        return self._blobs[self._next - 1]

    def finish(self) -> None:
        if self._next != len(self._blobs):
            raise _malformed(self._where, "holds blobs that no field refers to")


def _frame(header: dict[str, Any], blobs: list[bytes]) -> bytes:
    head = json.dumps(
        {"header": header, "blob_lengths": [len(b) for b in blobs]}, separators=(",", ":")
    ).encode("utf-8")
    return b"".join([MAGIC, len(head).to_bytes(4, "big"), head, *blobs])


def _unframe(data: bytes, where: str) -> tuple[_Fields, _Blobs]:
    if len(data) < 8 or data[:4] != MAGIC:
        raise _malformed(where, "is not a framed pullkv message")
    size = int.from_bytes(data[4:8], "big")
    if 8 + size > len(data):
        raise _malformed(where, "is truncated")
    frame = _Fields(parse_json(data[8 : 8 + size], f"{where} header"), where)
    offset = 8 + size
    blobs = []
    for item, item_where in frame.array("blob_lengths"):
        length = _integer(item, item_where, len(data) - offset)
        blobs.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise _malformed(where, "has bytes after its last blob")
    return _Fields(frame.raw("header")[0], where), _Blobs(blobs, where)


# Records inside messages.
def namespace_to_wire(namespace: NamespaceRecord) -> dict[str, Any]:
    """A namespace record as JSON."""
    return {
        "id": namespace.id,
        "account_id": namespace.account_id,
        "title": namespace.title,
        "jurisdiction": namespace.jurisdiction,
    }


def namespace_from_wire(data: object, where: str = "namespace") -> NamespaceRecord:
    """A namespace record from JSON; 400 naming the field if malformed."""
    fields = _Fields(data, where)
    return NamespaceRecord(
        fields.text("id"),
        fields.text("account_id"),
        fields.text("title"),
        fields.optional_text("jurisdiction"),
    )


def token_to_wire(token: TokenRecord) -> dict[str, Any]:
    """A token record as JSON (salted hash included: only for edge tokens' eyes)."""
    return {
        "id": token.id,
        "account_id": token.account_id,
        "name": token.name,
        "salt": base64.b64encode(token.salt).decode(),
        "secret_hash": base64.b64encode(token.secret_hash).decode(),
        "namespaces": list(token.namespaces) if token.namespaces is not None else None,
        "read_only": token.read_only,
        "admin": token.admin,
        "edge": token.edge,
        "created_at": token.created_at,
        "revoked_at": token.revoked_at,
    }


def token_from_wire(data: object, where: str = "token") -> TokenRecord:
    """A token record from JSON; 400 naming the field if malformed."""
    fields = _Fields(data, where)
    return TokenRecord(
        id=fields.text("id"),
        account_id=fields.text("account_id"),
        name=fields.text("name"),
        salt=fields.blob("salt"),
        secret_hash=fields.blob("secret_hash"),
        namespaces=fields.optional_texts("namespaces"),
        read_only=fields.flag("read_only"),
        admin=fields.flag("admin"),
        edge=fields.flag("edge"),
        created_at=fields.integer("created_at"),
        revoked_at=fields.optional_integer("revoked_at"),
    )


# Requests (edge → upstream), in the order of the internal API's routes.
@dataclass(frozen=True, slots=True)
class FetchRequest:
    """``fetch``: conditional reads, each key with the version the asker holds (or None);
    ``revalidate`` (a strong read) makes every cache on the way check with the origin."""

    account_id: str
    namespace_id: str
    keys: tuple[tuple[str, int | None], ...]
    cache_ttl: int | None
    revalidate: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON (``revalidate`` only when set)."""
        message: dict[str, Any] = {
            "account_id": self.account_id,
            "namespace_id": self.namespace_id,
            "keys": [{"key": key, "held_version": held} for key, held in self.keys],
            "cache_ttl": self.cache_ttl,
        }
        if self.revalidate:
            message["revalidate"] = True
        return message

    @classmethod
    def from_wire(cls, data: object) -> FetchRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "FetchRequest")
        return cls(
            fields.text("account_id"),
            fields.text("namespace_id"),
            tuple(
                (k.text("key"), k.optional_integer("held_version")) for k in fields.objects("keys")
            ),
            fields.optional_integer("cache_ttl"),
            fields.has("revalidate") and fields.flag("revalidate"),
        )


@dataclass(frozen=True, slots=True)
class ListRequest:
    """``list``: a page of key names after ``after`` (exclusive), sealed metadata included."""

    account_id: str
    namespace_id: str
    prefix: str
    after: str | None
    limit: int

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {
            "account_id": self.account_id,
            "namespace_id": self.namespace_id,
            "prefix": self.prefix,
            "after": self.after,
            "limit": self.limit,
        }

    @classmethod
    def from_wire(cls, data: object) -> ListRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "ListRequest")
        return cls(
            fields.text("account_id"),
            fields.text("namespace_id"),
            fields.text("prefix"),
            fields.optional_text("after"),
            fields.integer("limit"),
        )


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """``write``: sealed writes to one namespace (framed)."""

    account_id: str
    namespace_id: str
    writes: tuple[SealedWrite, ...]

    def to_wire(self) -> bytes:
        """The framed message."""
        items = []
        blobs = []
        for write in self.writes:
            has_metadata = write.metadata is not None
            item: dict[str, Any] = {
                "key": write.key,
                "expiration": write.expiration,
                "has_metadata": has_metadata,
            }
            if write.condition is not None:
                item["condition"] = condition_to_wire(write.condition)
            items.append(item)
            blobs.append(write.value)
            if write.metadata is not None:
                blobs.append(write.metadata)
        header = {"account_id": self.account_id, "namespace_id": self.namespace_id}
        return _frame({**header, "writes": items}, blobs)

    @classmethod
    def from_wire(cls, data: bytes) -> WriteRequest:
        """The message from its frame; 400 naming the field if malformed."""
        fields, blobs = _unframe(data, "WriteRequest")
        writes = []
        for item in fields.objects("writes"):
            value = blobs.take(f"{item.where}.key")
            metadata = (
                blobs.take(f"{item.where}.has_metadata") if item.flag("has_metadata") else None
            )
            writes.append(
                SealedWrite(
                    item.text("key"),
                    value,
                    metadata,
                    item.optional_integer("expiration"),
                    _optional_condition(item),
                )
            )
        if len(writes) > 1 and any(w.condition is not None for w in writes):
            raise _malformed(f"{fields.where}.writes", "may hold one write when conditional")
        blobs.finish()
        return cls(fields.text("account_id"), fields.text("namespace_id"), tuple(writes))


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """``delete``: keys to delete from one namespace."""

    account_id: str
    namespace_id: str
    keys: tuple[str, ...]
    condition: WriteCondition | None = None  # with exactly one key

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        message: dict[str, Any] = {
            "account_id": self.account_id,
            "namespace_id": self.namespace_id,
            "keys": list(self.keys),
        }
        if self.condition is not None:
            message["condition"] = condition_to_wire(self.condition)
        return message

    @classmethod
    def from_wire(cls, data: object) -> DeleteRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "DeleteRequest")
        keys = fields.texts("keys")
        condition = _optional_condition(fields)
        if condition is not None and len(keys) != 1:
            raise _malformed("DeleteRequest.keys", "must hold one key when conditional")
        return cls(fields.text("account_id"), fields.text("namespace_id"), keys, condition)


def condition_to_wire(condition: WriteCondition) -> dict[str, Any]:
    """A write condition as JSON: ``{"version": N}`` or ``{"absent": true}``."""
    if condition.absent:
        return {"absent": True}
    return {"version": condition.version}


def _optional_condition(fields: _Fields) -> WriteCondition | None:
    """The ``condition`` field of a write or delete if present (older senders omit it)."""
    if not fields.has("condition"):
        return None
    nested = fields.nested("condition")
    absent = nested.has("absent") and nested.flag("absent")
    version = nested.optional_integer("version") if nested.has("version") else None
    if absent == (version is not None):
        raise _malformed(nested.where, "must have exactly one of version and absent: true")
    return WriteCondition(version, absent)


@dataclass(frozen=True, slots=True)
class NamespaceRequest:
    """``namespace``: one namespace of the account; ``operation`` words the 404 if absent."""

    account_id: str
    namespace_id: str
    operation: str

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {
            "account_id": self.account_id,
            "namespace_id": self.namespace_id,
            "operation": self.operation,
        }

    @classmethod
    def from_wire(cls, data: object) -> NamespaceRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespaceRequest")
        return cls(fields.text("account_id"), fields.text("namespace_id"), fields.text("operation"))


@dataclass(frozen=True, slots=True)
class NamespaceListRequest:
    """``namespaces/list``: a page of the account's namespaces (``only``: among these ids)."""

    account_id: str
    order: NamespaceOrder
    descending: bool
    offset: int
    limit: int
    only: tuple[str, ...] | None

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {
            "account_id": self.account_id,
            "order": self.order,
            "descending": self.descending,
            "offset": self.offset,
            "limit": self.limit,
            "only": list(self.only) if self.only is not None else None,
        }

    @classmethod
    def from_wire(cls, data: object) -> NamespaceListRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespaceListRequest")
        order = fields.text("order")
        if order != "id" and order != "title":
            raise _malformed(f"{fields.where}.order", 'must be "id" or "title"')
        return cls(
            fields.text("account_id"),
            "id" if order == "id" else "title",
            fields.flag("descending"),
            fields.integer("offset"),
            fields.integer("limit"),
            fields.optional_texts("only"),
        )


@dataclass(frozen=True, slots=True)
class NamespaceCreateRequest:
    """``namespaces/create``: a namespace whose id and title the asker chose and checked."""

    namespace: NamespaceRecord

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"namespace": namespace_to_wire(self.namespace)}

    @classmethod
    def from_wire(cls, data: object) -> NamespaceCreateRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespaceCreateRequest")
        return cls(namespace_from_wire(*fields.raw("namespace")))


@dataclass(frozen=True, slots=True)
class NamespaceRenameRequest:
    """``namespaces/rename``: a new title for a namespace."""

    account_id: str
    namespace_id: str
    title: str

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {
            "account_id": self.account_id,
            "namespace_id": self.namespace_id,
            "title": self.title,
        }

    @classmethod
    def from_wire(cls, data: object) -> NamespaceRenameRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespaceRenameRequest")
        return cls(fields.text("account_id"), fields.text("namespace_id"), fields.text("title"))


@dataclass(frozen=True, slots=True)
class NamespaceDeleteRequest:
    """``namespaces/delete``: a namespace and all its keys."""

    account_id: str
    namespace_id: str

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"account_id": self.account_id, "namespace_id": self.namespace_id}

    @classmethod
    def from_wire(cls, data: object) -> NamespaceDeleteRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespaceDeleteRequest")
        return cls(fields.text("account_id"), fields.text("namespace_id"))


@dataclass(frozen=True, slots=True)
class NamespaceStatsRequest:
    """``namespaces/stats``: counts over one namespace's live keys."""

    account_id: str
    namespace_id: str

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"account_id": self.account_id, "namespace_id": self.namespace_id}

    @classmethod
    def from_wire(cls, data: object) -> NamespaceStatsRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespaceStatsRequest")
        return cls(fields.text("account_id"), fields.text("namespace_id"))


@dataclass(frozen=True, slots=True)
class NamespaceStatsResponse:
    """Answer to ``namespaces/stats``."""

    stats: NamespaceStats

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {
            "keys": self.stats.keys,
            "value_bytes": self.stats.value_bytes,
            "expiring": self.stats.expiring,
        }

    @classmethod
    def from_wire(cls, data: object) -> NamespaceStatsResponse:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespaceStatsResponse")
        return cls(
            NamespaceStats(
                fields.integer("keys"), fields.integer("value_bytes"), fields.integer("expiring")
            )
        )


@dataclass(frozen=True, slots=True)
class TokenGetRequest:
    """``tokens/get``: a token record by id."""

    token_id: str

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"token_id": self.token_id}

    @classmethod
    def from_wire(cls, data: object) -> TokenGetRequest:
        """The message from JSON; 400 naming the field if malformed."""
        return cls(_Fields(data, "TokenGetRequest").text("token_id"))


@dataclass(frozen=True, slots=True)
class TokenAddRequest:
    """``tokens/add``: a new token record, its rights checked by the asker."""

    token: TokenRecord

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"token": token_to_wire(self.token)}

    @classmethod
    def from_wire(cls, data: object) -> TokenAddRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "TokenAddRequest")
        return cls(token_from_wire(*fields.raw("token")))


@dataclass(frozen=True, slots=True)
class TokenListRequest:
    """``tokens/list``: the account's token records."""

    account_id: str

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"account_id": self.account_id}

    @classmethod
    def from_wire(cls, data: object) -> TokenListRequest:
        """The message from JSON; 400 naming the field if malformed."""
        return cls(_Fields(data, "TokenListRequest").text("account_id"))


@dataclass(frozen=True, slots=True)
class TokenRevokeRequest:
    """``tokens/revoke``: revoke one of the account's tokens."""

    account_id: str
    token_id: str

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"account_id": self.account_id, "token_id": self.token_id}

    @classmethod
    def from_wire(cls, data: object) -> TokenRevokeRequest:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "TokenRevokeRequest")
        return cls(fields.text("account_id"), fields.text("token_id"))


# Answers (upstream → edge). What carries nothing is an empty JSON object: the answers to
# ``namespaces/delete`` and ``tokens/add``, and the request of ``keyring``.
@dataclass(frozen=True, slots=True)
class FetchResponse:
    """Answers to a ``fetch``, by key: the entry, not found, or not modified (framed)."""

    answers: dict[str, Fetched]

    def to_wire(self) -> bytes:
        """The framed message."""
        items: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        for key, answer in self.answers.items():
            entry = answer.entry
            item: dict[str, Any]
            if answer.not_modified:
                item = {"key": key, "status": "not_modified"}
            elif entry is None:
                item = {"key": key, "status": "not_found"}
            else:
                item = {
                    "key": key,
                    "status": "found",
                    "version": entry.version,
                    "expiration": entry.expiration,
                    "has_metadata": entry.metadata is not None,
                }
                blobs.append(entry.value)
                if entry.metadata is not None:
                    blobs.append(entry.metadata)
            if answer.age > 0:
                item["age_ms"] = int(answer.age * 1000)
            items.append(item)
        return _frame({"answers": items}, blobs)

    @classmethod
    def from_wire(cls, data: bytes) -> FetchResponse:
        """The message from its frame; 400 naming the field if malformed."""
        fields, blobs = _unframe(data, "FetchResponse")
        answers: dict[str, Fetched] = {}
        for item in fields.objects("answers"):
            key = item.text("key")
            status = item.text("status")
            age = item.integer("age_ms") / 1000 if item.has("age_ms") else 0.0
            if status == "not_modified":
                answers[key] = Fetched(None, not_modified=True, age=age)
            elif status == "not_found":
                answers[key] = Fetched(None, age=age)
            elif status == "found":
                value = blobs.take(f"{item.where}.key")
                has_metadata = item.flag("has_metadata")
                metadata = blobs.take(f"{item.where}.has_metadata") if has_metadata else None
                expiration = item.optional_integer("expiration")
                entry = SealedEntry(key, value, metadata, expiration, item.integer("version"))
                answers[key] = Fetched(entry, age=age)
            else:
                problem = 'must be "found", "not_found" or "not_modified"'
                raise _malformed(f"{item.where}.status", problem)
        blobs.finish()
        return cls(answers)


@dataclass(frozen=True, slots=True)
class ListResponse:
    """A page of key names, sealed metadata as blobs (framed)."""

    keys: tuple[ListedKey, ...]

    def to_wire(self) -> bytes:
        """The framed message."""
        items = []
        blobs = []
        for row in self.keys:
            has_metadata = row.metadata is not None
            items.append(
                {"key": row.key, "expiration": row.expiration, "has_metadata": has_metadata}
            )
            if row.metadata is not None:
                blobs.append(row.metadata)
        return _frame({"keys": items}, blobs)

    @classmethod
    def from_wire(cls, data: bytes) -> ListResponse:
        """The message from its frame; 400 naming the field if malformed."""
        fields, blobs = _unframe(data, "ListResponse")
        rows = []
        for item in fields.objects("keys"):
            metadata = (
                blobs.take(f"{item.where}.has_metadata") if item.flag("has_metadata") else None
            )
            rows.append(ListedKey(item.text("key"), item.optional_integer("expiration"), metadata))
        blobs.finish()
        return cls(tuple(rows))


@dataclass(frozen=True, slots=True)
class WriteResponse:
    """Answer to ``write`` and ``delete``: versions of accepted keys, keys refused by rate."""

    result: WriteResult

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"versions": self.result.versions, "refused": self.result.refused}

    @classmethod
    def from_wire(cls, data: object) -> WriteResponse:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "WriteResponse")
        versions_data, where = fields.raw("versions")
        if not isinstance(versions_data, dict):
            raise _malformed(where, "must be a JSON object")
        versions = {
            _text(key, where): _integer(version, f"{where}[{key!r}]")
            for key, version in versions_data.items()
        }
        return cls(WriteResult(versions, list(fields.texts("refused"))))


@dataclass(frozen=True, slots=True)
class NamespaceResponse:
    """Answer to ``namespace``, ``namespaces/create`` and ``namespaces/rename``."""

    namespace: NamespaceRecord

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"namespace": namespace_to_wire(self.namespace)}

    @classmethod
    def from_wire(cls, data: object) -> NamespaceResponse:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespaceResponse")
        return cls(namespace_from_wire(*fields.raw("namespace")))


@dataclass(frozen=True, slots=True)
class NamespacePage:
    """Answer to ``namespaces/list``: one page and how many namespaces there are in all."""

    namespaces: tuple[NamespaceRecord, ...]
    total: int

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {
            "namespaces": [namespace_to_wire(n) for n in self.namespaces],
            "total": self.total,
        }

    @classmethod
    def from_wire(cls, data: object) -> NamespacePage:
        """The message from JSON; 400 naming the field if malformed."""
        fields = _Fields(data, "NamespacePage")
        items = fields.array("namespaces")
        return cls(tuple(namespace_from_wire(*item) for item in items), fields.integer("total"))


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """Answer to ``tokens/get``: the record, or None when the upstream does not know it."""

    token: TokenRecord | None

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"token": None if self.token is None else token_to_wire(self.token)}

    @classmethod
    def from_wire(cls, data: object) -> TokenResponse:
        """The message from JSON; 400 naming the field if malformed."""
        value, where = _Fields(data, "TokenResponse").raw("token")
        return cls(None if value is None else token_from_wire(value, where))


@dataclass(frozen=True, slots=True)
class TokenListResponse:
    """Answer to ``tokens/list``."""

    tokens: tuple[TokenRecord, ...]

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"tokens": [token_to_wire(t) for t in self.tokens]}

    @classmethod
    def from_wire(cls, data: object) -> TokenListResponse:
        """The message from JSON; 400 naming the field if malformed."""
        items = _Fields(data, "TokenListResponse").array("tokens")
        return cls(tuple(token_from_wire(*item) for item in items))


@dataclass(frozen=True, slots=True)
class RevokeResponse:
    """Answer to ``tokens/revoke``: whether a token was revoked."""

    revoked: bool

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {"revoked": self.revoked}

    @classmethod
    def from_wire(cls, data: object) -> RevokeResponse:
        """The message from JSON; 400 naming the field if malformed."""
        return cls(_Fields(data, "RevokeResponse").flag("revoked"))


@dataclass(frozen=True, slots=True)
class KeyringResponse:
    """Answer to ``keyring``: every (key id, wrapped data key), oldest first."""

    keys: tuple[tuple[int, bytes], ...]

    def to_wire(self) -> dict[str, Any]:
        """The message as JSON."""
        return {
            "keys": [
                {"key_id": key_id, "wrapped": base64.b64encode(wrapped).decode()}
                for key_id, wrapped in self.keys
            ]
        }

    @classmethod
    def from_wire(cls, data: object) -> KeyringResponse:
        """The message from JSON; 400 naming the field if malformed."""
        keys = _Fields(data, "KeyringResponse").objects("keys")
        return cls(tuple((key.integer("key_id"), key.blob("wrapped")) for key in keys))


# The change feed (``GET /pullkv/v1/changes``): a stream of JSON lines, one message each.
# Every message says where in the sequence it starts (``from``): the subscriber's position
# must equal it, or a message was lost and the subscriber resumes from its position.
@dataclass(frozen=True, slots=True)
class FeedChange:
    """A change for the subscriber's account: there is none in (``start``, ``record.seq``)
    but this one."""

    start: int
    record: ChangeRecord

    def to_wire(self) -> dict[str, Any]:
        r = self.record
        return {
            "t": "change",
            "from": self.start,
            "seq": r.seq,
            "account": r.account_id,
            "namespace": r.namespace_id,
            "key": r.key,
            "version": r.version,
            "deleted": r.deleted,
        }


@dataclass(frozen=True, slots=True)
class FeedBeat:
    """A heartbeat: nothing more for the subscriber up to ``high``, the feed's high-water
    mark, in the sequence space named ``feed``."""

    start: int
    high: int
    feed: str

    def to_wire(self) -> dict[str, Any]:
        return {"t": "beat", "from": self.start, "to": self.high, "feed": self.feed}


@dataclass(frozen=True, slots=True)
class FeedReset:
    """The position asked for cannot be served (older than what is retained, or of another
    sequence space): the subscriber must revalidate everything it holds, then continue from
    ``high``."""

    high: int
    feed: str

    def to_wire(self) -> dict[str, Any]:
        return {"t": "reset", "to": self.high, "feed": self.feed}


FeedMessage = FeedChange | FeedBeat | FeedReset


def encode_feed(messages: list[FeedMessage]) -> bytes:
    """Messages as JSON lines."""
    return b"".join(
        json.dumps(m.to_wire(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        for m in messages
    )


def decode_feed_line(line: bytes | str) -> FeedMessage:
    """One line of the feed, checked."""
    if len(line) > FEED_LINE_MAX_BYTES:
        raise _malformed("feed message", f"is longer than {FEED_LINE_MAX_BYTES} bytes")
    try:
        # Not parse_json: a line this short cannot nest deep enough to matter, and an edge
        # decodes one per change, so the depth pre-scan would be most of its cost.
        data = json.loads(line)
    except (ValueError, RecursionError):
        raise _malformed("feed message", "is not JSON") from None
    fields = _Fields(data, "feed message")
    kind = fields.text("t")
    if kind == "change":
        record = ChangeRecord(
            fields.integer("seq"),
            fields.text("account"),
            fields.text("namespace"),
            fields.optional_text("key"),
            fields.integer("version"),
            fields.flag("deleted"),
        )
        start = fields.integer("from")
        if start >= record.seq:
            raise _malformed("feed message.from", "must be below seq")
        return FeedChange(start, record)
    if kind == "beat":
        start, high = fields.integer("from"), fields.integer("to")
        if high < start:
            raise _malformed("feed message.to", "must not be below from")
        return FeedBeat(start, high, fields.text("feed"))
    if kind == "reset":
        return FeedReset(fields.integer("to"), fields.text("feed"))
    raise _malformed("feed message.t", "must be change, beat or reset")
