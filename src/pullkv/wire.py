"""The byte format of messages between tiers: a JSON header followed by raw blobs.

Sealed values are binary and up to 25 MiB, so they travel as raw bytes after a small JSON
header that carries everything else and the blobs' lengths (no base64, no copies beyond one
join). Layout: ``PKV1`` | header length (4 bytes, big-endian) | header JSON | blobs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from pullkv.backend import Fetched
from pullkv.errors import KVError
from pullkv.types import ListedKey, NamespaceRecord, SealedEntry, SealedWrite, TokenRecord
from pullkv.validate import parse_json

MAGIC = b"PKV1"
CONTENT_TYPE = "application/x-pullkv"


class WireError(ValueError):
    """A message that is not in this format."""


def pack(header: Any, blobs: list[bytes]) -> bytes:
    """Frame a JSON-serialisable header and blobs into one message."""
    head = json.dumps({"h": header, "l": [len(b) for b in blobs]}, separators=(",", ":"))
    raw = head.encode("utf-8")
    return b"".join([MAGIC, len(raw).to_bytes(4, "big"), raw, *blobs])


def unpack(data: bytes) -> tuple[Any, list[bytes]]:
    """The header and blobs of a message."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WireError("not a pullkv message")
    size = int.from_bytes(data[4:8], "big")
    try:
        frame = parse_json(data[8 : 8 + size], "pullkv message header")
        lengths = [int(n) for n in frame["l"]]
    except (KVError, ValueError, KeyError, TypeError):
        raise WireError("malformed pullkv message header") from None
    offset = 8 + size
    blobs = []
    for length in lengths:
        if length < 0 or offset + length > len(data):
            raise WireError("pullkv message is truncated")
        blobs.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise WireError("pullkv message has trailing bytes")
    return frame["h"], blobs


# Records as they travel between tiers.
def namespace_to_wire(namespace: NamespaceRecord) -> dict[str, Any]:
    """A namespace as JSON."""
    return {
        "id": namespace.id,
        "account_id": namespace.account_id,
        "title": namespace.title,
        "jurisdiction": namespace.jurisdiction,
    }


def namespace_from_wire(data: dict[str, Any]) -> NamespaceRecord:
    """A namespace from JSON."""
    return NamespaceRecord(data["id"], data["account_id"], data["title"], data.get("jurisdiction"))


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


def token_from_wire(data: dict[str, Any]) -> TokenRecord:
    """A token record from JSON."""
    namespaces = data.get("namespaces")
    return TokenRecord(
        id=data["id"],
        account_id=data["account_id"],
        name=data["name"],
        salt=base64.b64decode(data["salt"]),
        secret_hash=base64.b64decode(data["secret_hash"]),
        namespaces=tuple(namespaces) if namespaces is not None else None,
        read_only=bool(data["read_only"]),
        admin=bool(data["admin"]),
        edge=bool(data.get("edge", False)),
        created_at=int(data["created_at"]),
        revoked_at=data.get("revoked_at"),
    )


def pack_fetched(answers: dict[str, Fetched]) -> bytes:
    """Conditional fetch answers: ok (with blobs), not modified, or not found."""
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for key, answer in answers.items():
        if answer.not_modified:
            items.append({"k": key, "s": "nm"})
        elif answer.entry is None:
            items.append({"k": key, "s": "nf"})
        else:
            entry = answer.entry
            items.append(
                {
                    "k": key,
                    "s": "ok",
                    "v": entry.version,
                    "e": entry.expiration,
                    "m": entry.metadata is not None,
                }
            )
            blobs.append(entry.value)
            if entry.metadata is not None:
                blobs.append(entry.metadata)
    return pack({"items": items}, blobs)


def unpack_fetched(data: bytes) -> dict[str, Fetched]:
    """The inverse of :func:`pack_fetched`."""
    header, blobs = unpack(data)
    answers: dict[str, Fetched] = {}
    position = 0
    for item in header["items"]:
        key = item["k"]
        if item["s"] == "nm":
            answers[key] = Fetched(None, not_modified=True)
        elif item["s"] == "nf":
            answers[key] = Fetched(None)
        else:
            value = blobs[position]
            position += 1
            metadata = None
            if item["m"]:
                metadata = blobs[position]
                position += 1
            answers[key] = Fetched(SealedEntry(key, value, metadata, item["e"], int(item["v"])))
    return answers


def pack_writes(header: dict[str, Any], writes: Sequence[SealedWrite]) -> bytes:
    """Sealed writes, with the routing fields in ``header``."""
    blobs: list[bytes] = []
    items = []
    for write in writes:
        items.append({"k": write.key, "e": write.expiration, "m": write.metadata is not None})
        blobs.append(write.value)
        if write.metadata is not None:
            blobs.append(write.metadata)
    return pack({**header, "writes": items}, blobs)


def unpack_writes(data: bytes) -> tuple[dict[str, Any], list[SealedWrite]]:
    """The inverse of :func:`pack_writes`."""
    header, blobs = unpack(data)
    writes = []
    position = 0
    for item in header.pop("writes"):
        value = blobs[position]
        position += 1
        metadata = None
        if item["m"]:
            metadata = blobs[position]
            position += 1
        writes.append(SealedWrite(item["k"], value, metadata, item["e"]))
    return header, writes


def pack_listed(rows: Sequence[ListedKey]) -> bytes:
    """A key list page, sealed metadata as blobs."""
    items = []
    blobs = []
    for row in rows:
        items.append({"k": row.key, "e": row.expiration, "m": row.metadata is not None})
        if row.metadata is not None:
            blobs.append(row.metadata)
    return pack({"items": items}, blobs)


def unpack_listed(data: bytes) -> list[ListedKey]:
    """The inverse of :func:`pack_listed`."""
    header, blobs = unpack(data)
    rows = []
    position = 0
    for item in header["items"]:
        metadata = None
        if item["m"]:
            metadata = blobs[position]
            position += 1
        rows.append(ListedKey(item["k"], item["e"], metadata))
    return rows
