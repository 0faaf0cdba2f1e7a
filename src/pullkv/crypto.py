"""Encryption at rest: a keyring of AES-256-GCM data keys under one master key.

Data keys live in the store, each wrapped (encrypted) by the master key, so every process that
shares a store and holds the master key reads the same keyring. The master key itself never
enters the store: it comes from ``PULLKV_MASTER_KEY`` or a key file. Each ciphertext starts
with the id of the data key that sealed it, so keys can be rotated and old data stays readable.
What a ciphertext is bound to (its associated data) is the caller's: ``pullkv.sealing`` binds
each part of an entry to its namespace, key name and part.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pullkv.durable import write_file

MASTER_KEY_ENV = "PULLKV_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
KEY_BYTES = 32
NONCE_BYTES = 12
_FORMAT = 1
_HEADER = 1 + 4 + NONCE_BYTES
_WRAP_AAD = b"pullkv:data-key:v1:"


class CryptoError(Exception):
    """Ciphertext that does not authenticate, or a key that is missing or malformed."""


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return AESGCM.generate_key(bit_length=256)


def wrap_key(master_key: bytes, key_id: int, key: bytes) -> bytes:
    """Encrypt a data key under the master key for storage."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(master_key).encrypt(nonce, key, _WRAP_AAD + str(key_id).encode())


def unwrap_key(master_key: bytes, key_id: int, wrapped: bytes) -> bytes:
    """Decrypt a stored data key; CryptoError if the master key is not the one that wrapped it."""
    if len(wrapped) < NONCE_BYTES + 16:
        raise CryptoError(f"data key {key_id} is malformed: {len(wrapped)} bytes")
    try:
        return AESGCM(master_key).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _WRAP_AAD + str(key_id).encode()
        )
    except InvalidTag:
        raise CryptoError(
            f"data key {key_id} does not open with this master key "
            "(is PULLKV_MASTER_KEY or the key file the one this store was created with?)"
        ) from None


def key_id_of(blob: bytes) -> int:
    """The id of the data key that sealed a ciphertext."""
    if len(blob) < _HEADER + 16 or blob[0] != _FORMAT:
        raise CryptoError("not a pullkv ciphertext")
    return int.from_bytes(blob[1:5], "big")


class Keyring:
    """Data keys by id; seals with the current key, opens with whichever key sealed."""

    def __init__(self, keys: Mapping[int, bytes], current_id: int) -> None:
        if current_id not in keys:
            raise CryptoError(f"current key {current_id} is not in the keyring")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current_id = current_id

    @property
    def key_ids(self) -> list[int]:
        """The ids of every key held, oldest first."""
        return sorted(self._ciphers)

    def has(self, key_id: int) -> bool:
        """Whether a key with this id is held."""
        return key_id in self._ciphers

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt with the current key."""
        nonce = os.urandom(NONCE_BYTES)
        header = bytes([_FORMAT]) + self.current_id.to_bytes(4, "big") + nonce
        return header + self._ciphers[self.current_id].encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt and authenticate; CryptoError for tampered, moved or unknown-key data."""
        key_id = key_id_of(blob)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CryptoError(f"ciphertext was sealed with data key {key_id}, which is not held")
        try:
            return cipher.decrypt(blob[5:_HEADER], blob[_HEADER:], aad)
        except InvalidTag:
            raise CryptoError("ciphertext failed authentication (tampered or moved)") from None


def decode_master_key(text: str) -> bytes:
    """Parse a base64 master key; it must be exactly 32 bytes."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("master key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise CryptoError(f"master key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def load_master_key(
    data_dir: Path, environ: Mapping[str, str], *, create: bool
) -> tuple[bytes, str]:
    """The master key and where it came from: the environment, else ``<data>/master.key``.

    With ``create`` (only for a store that holds no data key yet, so nothing can have been
    sealed under a lost key) a missing or empty key file is made durably (mode 0600); the
    returned description says so. Without it, a missing or empty file is a clear error.
    """
    if environ.get(MASTER_KEY_ENV):
        return decode_master_key(environ[MASTER_KEY_ENV]), f"${MASTER_KEY_ENV}"
    path = data_dir / MASTER_KEY_FILE
    text = path.read_text() if path.exists() else None
    if text is not None and text.strip():
        return decode_master_key(text), str(path)
    if not create:
        problem = "is missing" if text is None else "is empty (lost in a crash?)"
        raise CryptoError(
            f"the master key {path} {problem}: restore master.key from where you keep its "
            f"copy, or set {MASTER_KEY_ENV}; a new key could not read what is stored"
        )
    key = new_key()
    write_secret_file(path, base64.b64encode(key).decode() + "\n", replace=text is not None)
    return key, f"{path} (created)"


def write_secret_file(path: Path, text: str, *, replace: bool = False) -> None:
    """Durably write a file readable only by its owner (0600).

    An existing file is an error unless ``replace`` is given.
    """
    write_file(path, text.encode(), mode=0o600, exclusive=not replace)
