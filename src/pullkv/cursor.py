"""Opaque list cursors.

A cursor names the last key returned, so a page continues strictly after it whatever was
written in between (keys inserted before it are not revisited). A format byte lets the server
reject cursors it did not issue instead of silently listing from somewhere arbitrary.
"""

from __future__ import annotations

import base64
import binascii

from pullkv import errors

_FORMAT = b"\x01"


def encode_cursor(last_key: str) -> str:
    """Encode the last key of a page as an opaque cursor."""
    raw = _FORMAT + last_key.encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """Return the key a cursor continues after; raise KVError 400 for a foreign cursor."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        if not raw.startswith(_FORMAT):
            raise ValueError("unknown cursor format")
        return raw[1:].decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise errors.invalid_cursor() from None
