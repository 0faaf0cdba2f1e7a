"""Input validation as pure functions: each returns the clean value or raises KVError.

The rules are Workers KV's (see limits.py); time is always an argument.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from pullkv import errors
from pullkv.limits import Limits

_ID = re.compile(r"[0-9a-f]{32}")
_INT = re.compile(r"-?[0-9]+")
# SDKs type numbers as floats, so "120.0" arrives for 120: integral decimals are accepted,
# fractions are not.
_INTEGRAL = re.compile(r"(-?[0-9]+)(?:\.0*)?")


def validate_key(key: str, limits: Limits) -> str:
    """Check a key name: 1..512 UTF-8 bytes and not "." or ".."."""
    if key == "":
        raise errors.empty_key()
    if key in (".", ".."):
        raise errors.illegal_key(key)
    length = len(key.encode("utf-8"))
    if length > limits.max_key_bytes:
        raise errors.key_too_long(length, limits.max_key_bytes)
    return key


def validate_prefix(prefix: str, limits: Limits) -> str:
    """A list prefix is bounded like a key; empty means no filter."""
    length = len(prefix.encode("utf-8"))
    if length > limits.max_key_bytes:
        raise errors.key_too_long(length, limits.max_key_bytes)
    return prefix


def decode_key(raw: str) -> str:
    """Percent-decode a key taken from a raw URL path, exactly once, as strict UTF-8."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.undecodable_key() from None


def validate_id(kind: str, raw: str) -> str:
    """Account and namespace ids are 32 lowercase hex characters, as Cloudflare's are."""
    if not _ID.fullmatch(raw):
        raise errors.invalid_identifier(kind, raw)
    return raw


def _decimal(raw: str) -> int | None:
    """``raw`` as a decimal integer, or None if it is not one or is absurdly long.

    The length bound keeps ``int()`` from failing (Python refuses over 4,300 digits).
    """
    match = _INTEGRAL.fullmatch(raw.strip())
    if match is None or len(match.group(1)) > 20:
        return None
    return int(match.group(1))


def parse_int(name: str, raw: str) -> int:
    """Parse a decimal integer query parameter; anything else is a 400 naming the parameter."""
    value = _decimal(raw)
    if value is None:
        raise errors.bad_request(f"Invalid {name} of {raw!r}: expected an integer")
    return value


def resolve_expiration(
    expiration: int | None, expiration_ttl: int | None, now: float, limits: Limits
) -> int | None:
    """The absolute expiry (epoch seconds) of a write, or None; ``expiration_ttl`` wins."""
    floor = limits.min_expiration_ttl
    if expiration_ttl is not None:
        if expiration_ttl <= 0:
            raise errors.invalid_expiration_ttl(expiration_ttl)
        if expiration_ttl < floor:
            raise errors.invalid_expiration_ttl(expiration_ttl, floor)
        absolute = int(now) + expiration_ttl
    elif expiration is not None:
        if expiration <= int(now):
            raise errors.invalid_expiration(expiration)
        if expiration < int(now) + floor:
            raise errors.invalid_expiration(expiration, floor)
        absolute = expiration
    else:
        return None
    if absolute > limits.max_epoch_seconds:
        raise errors.expiration_out_of_range(absolute, limits.max_epoch_seconds)
    return absolute


def validate_value_size(length: int, limits: Limits) -> None:
    """Values are at most 25 MiB."""
    if length > limits.max_value_bytes:
        raise errors.value_too_large(length, limits.max_value_bytes)


def validate_metadata_text(text: str, limits: Limits) -> str:
    """Metadata given as JSON text: must parse, and be at most 1,024 bytes as sent."""
    length = len(text.encode("utf-8"))
    if length > limits.max_metadata_bytes:
        raise errors.metadata_too_large(length, limits.max_metadata_bytes)
    try:
        json.loads(text)
    except ValueError as exc:
        raise errors.invalid_metadata(f"not valid JSON ({exc})") from None
    return text


def metadata_from_object(value: Any, limits: Limits) -> str:
    """Metadata given as a JSON value: serialise compactly and check its size."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    length = len(text.encode("utf-8"))
    if length > limits.max_metadata_bytes:
        raise errors.metadata_too_large(length, limits.max_metadata_bytes)
    return text


def parse_cache_ttl(raw: str | int | None, limits: Limits) -> int:
    """A read's cache TTL in seconds: an integer of at least the floor (default 60)."""
    if raw is None or raw == "":
        return limits.default_cache_ttl
    if isinstance(raw, int) and not isinstance(raw, bool):
        value: int | None = raw
    elif isinstance(raw, str):
        value = _decimal(raw)
    else:
        value = None
    if value is None:
        raise errors.invalid_cache_ttl(raw, limits.min_cache_ttl)
    if value < limits.min_cache_ttl:
        raise errors.invalid_cache_ttl(value, limits.min_cache_ttl)
    return value


def parse_list_limit(raw: str | None, limits: Limits) -> int:
    """A key list's page size: 1..1000, default 1000."""
    if raw is None or raw == "":
        return limits.list_default_limit
    value = _decimal(raw)
    if value is None:
        raise errors.invalid_list_limit(raw, limits.list_max_limit)
    if value <= 0 or value > limits.list_max_limit:
        raise errors.invalid_list_limit(value, limits.list_max_limit)
    return value


def validate_title(title: Any, limits: Limits) -> str:
    """A namespace title: a non-empty string of at most 512 characters."""
    if not isinstance(title, str):
        raise errors.invalid_title("title must be a string")
    if not title.strip():
        raise errors.invalid_title("title must not be empty")
    if len(title) > limits.max_title_chars:
        raise errors.invalid_title(
            f"title is {len(title)} characters; the maximum is {limits.max_title_chars}"
        )
    return title


JURISDICTIONS = ("eu", "us", "fedramp")


def validate_jurisdiction(raw: Any) -> str | None:
    """A namespace's jurisdiction, as Cloudflare accepts it: eu, us, fedramp or none."""
    if raw is None:
        return None
    if raw not in JURISDICTIONS:
        raise errors.bad_request(
            f"Invalid jurisdiction {raw!r}: expected one of {', '.join(JURISDICTIONS)}"
        )
    return str(raw)
