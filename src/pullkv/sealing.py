"""Sealing: how an entry's value and metadata are encrypted at rest, in one place.

Each part (the value, the metadata) is sealed on its own with the keyring's current key, and
bound by associated data to its namespace, its key name and which part it is, so a ciphertext
copied to another key, namespace or part fails to open instead of reading as that one. Every
reader and writer of sealed entries (the KV service, the hot read path, re-encryption) goes
through these functions, so that convention exists only here.
"""

from __future__ import annotations

from typing import Literal

from pullkv.crypto import CryptoError, Keyring, key_id_of
from pullkv.types import Entry, SealedEntry, SealedWrite, ValueWrite

Part = Literal["value", "metadata"]


class PartError(CryptoError):
    """A part of an entry that did not open; the message names the part and the key."""

    def __init__(self, part: Part, key: str, cause: CryptoError) -> None:
        super().__init__(f"{part} of key {key!r}: {cause}")
        self.part = part


def part_aad(namespace_id: str, key: str, part: Part) -> bytes:
    """The associated data binding a ciphertext to its namespace, key and part."""
    return b"\x00".join((b"pullkv:v1", namespace_id.encode(), part.encode(), key.encode("utf-8")))


def open_part(keyring: Keyring, namespace_id: str, key: str, part: Part, blob: bytes) -> bytes:
    """One part of an entry, decrypted; PartError if it does not authenticate."""
    try:
        return keyring.open(blob, part_aad(namespace_id, key, part))
    except CryptoError as exc:
        raise PartError(part, key, exc) from None


def open_metadata(keyring: Keyring, namespace_id: str, key: str, blob: bytes) -> str:
    """An entry's metadata JSON, decrypted (UnicodeDecodeError if it is not UTF-8)."""
    return open_part(keyring, namespace_id, key, "metadata", blob).decode("utf-8")


def open_entry(keyring: Keyring, namespace_id: str, sealed: SealedEntry) -> Entry:
    """A stored entry, decrypted; PartError names the part that did not open."""
    value = open_part(keyring, namespace_id, sealed.key, "value", sealed.value)
    metadata = None
    if sealed.metadata is not None:
        metadata = open_metadata(keyring, namespace_id, sealed.key, sealed.metadata)
    return Entry(sealed.key, value, metadata, sealed.expiration, sealed.version)


def seal_part(keyring: Keyring, namespace_id: str, key: str, part: Part, plain: bytes) -> bytes:
    """One part of an entry, encrypted with the current key and bound to where it goes."""
    return keyring.seal(plain, part_aad(namespace_id, key, part))


def seal_write(keyring: Keyring, namespace_id: str, write: ValueWrite) -> SealedWrite:
    """A write's value and metadata, sealed."""
    value = seal_part(keyring, namespace_id, write.key, "value", write.value)
    metadata = None
    if write.metadata_json is not None:
        raw = write.metadata_json.encode("utf-8")
        metadata = seal_part(keyring, namespace_id, write.key, "metadata", raw)
    return SealedWrite(write.key, value, metadata, write.expiration)


def sealed_with_current(keyring: Keyring, sealed: SealedEntry) -> bool:
    """Whether every part of an entry is sealed with the keyring's current key."""
    parts = (sealed.value,) if sealed.metadata is None else (sealed.value, sealed.metadata)
    return all(key_id_of(blob) == keyring.current_id for blob in parts)


def reseal(keyring: Keyring, namespace_id: str, sealed: SealedEntry) -> tuple[bytes, bytes | None]:
    """An entry's value and metadata opened and sealed again with the current key."""
    key = sealed.key
    value = open_part(keyring, namespace_id, key, "value", sealed.value)
    resealed = seal_part(keyring, namespace_id, key, "value", value)
    if sealed.metadata is None:
        return resealed, None
    metadata = open_part(keyring, namespace_id, key, "metadata", sealed.metadata)
    return resealed, seal_part(keyring, namespace_id, key, "metadata", metadata)
