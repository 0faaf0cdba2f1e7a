"""Input validation as pure functions: each returns the clean value or raises KVError.

The rules are Workers KV's (see limits.py); time is always an argument.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any
from urllib.parse import unquote_to_bytes

from pullkv import errors
from pullkv.limits import DEFAULT_LIMITS, INT64_MAX, Limits

# Account and namespace ids (the hot path matches them with this pattern too).
ID_PATTERN = "[0-9a-f]{32}"
_ID = re.compile(ID_PATTERN)
_INT = re.compile(r"-?[0-9]+")
# SDKs type numbers as floats, so "120.0" arrives for 120: integral decimals are accepted,
# fractions are not.
_INTEGRAL = re.compile(r"(-?[0-9]+)(?:\.0*)?")


# JSON strings (which may hold brackets), and a table that keeps only brackets, as signed
# steps: "[" and "{" become +1, "]" and "}" become -1 (0xFF read as a signed byte).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OTHER_BYTES = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text, without parsing it.

    Runs at C speed (a regex, a translate and an accumulate) so a 100 MB bulk body costs
    little; for text that is not valid JSON the answer is only an estimate, which is fine
    because such text is refused by the parser anyway.
    """
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _OTHER_BYTES).translate(_STEPS)
    return max(0, max(accumulate(memoryview(brackets).cast("b")), default=0))


def parse_json(
    raw: bytes | str,
    what: str,
    max_depth: int = DEFAULT_LIMITS.max_json_depth,
    fail: Callable[[str], errors.KVError] | None = None,
) -> Any:
    """Parse JSON from a client; anything wrong with it is a 400 naming ``what`` (or
    ``fail(reason)`` when given).

    Nesting deeper than ``max_depth`` is refused before parsing, because Python's parser
    recurses per level and would otherwise fail with a RecursionError (a 500).
    """
    failure = fail or (lambda reason: errors.invalid_json(what, reason))
    data = raw.encode("utf-8", errors="surrogatepass") if isinstance(raw, str) else raw
    # Nesting max_depth deep takes more than max_depth brackets: most bodies skip the scan.
    if data.count(b"[") + data.count(b"{") > max_depth and json_depth(data) > max_depth:
        raise failure(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise failure("not UTF-8") from None
    except ValueError as exc:
        raise failure(f"not valid JSON ({exc})") from None
    except RecursionError:
        # The scan above should make this unreachable; never let it become a 500.
        raise failure(f"nested deeper than {max_depth} levels") from None


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


def validate_feed_position(raw: str | None) -> int | None:
    """The change feed's ``since`` parameter: a sequence number, or none (from now)."""
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > INT64_MAX:
        raise errors.bad_request(
            f"since must be a change feed position from 0 to {INT64_MAX}, not {raw!r}"
        )
    return int(raw)


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


def parse_int(name: str, raw: str, bounds: tuple[int, int] | None = None) -> int:
    """Parse a decimal integer query parameter; anything else, or a value outside the
    inclusive ``bounds`` when given, is a 400 naming the parameter."""
    value = _decimal(raw)
    if value is None:
        raise errors.bad_request(f"Invalid {name} of {raw!r}: expected an integer")
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise errors.integer_out_of_range(name, value, *bounds)
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
        if absolute > limits.max_epoch_seconds:
            raise errors.expiration_out_of_range(absolute, limits.max_epoch_seconds, expiration_ttl)
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
    parse_json(text, "metadata", limits.max_json_depth, errors.invalid_metadata)
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
    if value > limits.max_integer_param:
        raise errors.integer_out_of_range(
            "cache_ttl", value, limits.min_cache_ttl, limits.max_integer_param
        )
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
