"""Unit tests for pullkv.validate: every input rule, as pure functions."""

from __future__ import annotations

import json

import pytest

from pullkv import errors
from pullkv.limits import DEFAULT_LIMITS, Limits
from pullkv.validate import (
    decode_key,
    metadata_from_object,
    parse_cache_ttl,
    parse_int,
    parse_list_limit,
    resolve_expiration,
    validate_id,
    validate_key,
    validate_metadata_text,
    validate_prefix,
    validate_title,
    validate_value_size,
)
from tests.unit.helpers import raises_kv as raises

L = DEFAULT_LIMITS
NOW = 1000.0


# Keys (K1-K6).
def test_empty_key() -> None:
    with raises(400, errors.INVALID_KEY, "^Key names must not be empty$"):
        validate_key("", L)


@pytest.mark.parametrize("key", [".", ".."])
def test_dot_keys(key: str) -> None:
    with raises(400, errors.INVALID_KEY) as info:
        validate_key(key, L)
    assert info.value.message == f'Illegal key name "{key}". Please use a different name.'


@pytest.mark.parametrize("key", ["...", "./", "a.", ".a", "/.", " ."])
def test_dot_lookalikes_are_fine(key: str) -> None:
    assert validate_key(key, L) == key


def test_key_of_513_ascii_bytes() -> None:
    with raises(414, errors.KEY_TOO_LONG) as info:
        validate_key("a" * 513, L)
    assert info.value.message == "UTF-8 encoded length of 513 exceeds key length limit of 512."


def test_key_of_512_bytes_is_fine() -> None:
    assert validate_key("a" * 512, L) == "a" * 512


def test_key_limit_counts_utf8_bytes_not_characters() -> None:
    key = "€" * 171
    assert len(key) == 171 and len(key.encode()) == 513
    with raises(414, errors.KEY_TOO_LONG, "length of 513 "):
        validate_key(key, L)
    assert validate_key("€" * 170 + "aa", L)  # 512 bytes


@pytest.mark.parametrize("key", ["a/b", "sp ace", "q?", "h#", "p%", "c:d", "ключ", "😀", "\x00"])
def test_unusual_keys_are_accepted(key: str) -> None:
    assert validate_key(key, L) == key


def test_prefix_limits() -> None:
    assert validate_prefix("", L) == ""
    assert validate_prefix("a" * 512, L) == "a" * 512
    with raises(414, errors.KEY_TOO_LONG, "length of 513 "):
        validate_prefix("a" * 513, L)
    # A prefix may be "." or "..": it is not a key.
    assert validate_prefix(".", L) == "."


# Percent-decoding of keys from a raw URL path.
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("a%2Fb", "a/b"),
        ("%E2%82%AC", "€"),
        ("%F0%9F%98%80", "😀"),
        ("a+b", "a+b"),  # not form encoding: + stays +
        ("%20", " "),
        ("%2e", "."),
        ("", ""),
    ],
)
def test_decode_key(raw: str, expected: str) -> None:
    assert decode_key(raw) == expected


def test_decode_key_decodes_exactly_once() -> None:
    assert decode_key("%2541") == "%41"
    assert decode_key("%252F") == "%2F"


def test_decode_key_leaves_malformed_escapes_alone() -> None:
    assert decode_key("100%") == "100%"
    assert decode_key("%zz") == "%zz"


@pytest.mark.parametrize("raw", ["%FF", "%C3", "%C3%28", "a%80b", "%ED%A0%80"])
def test_decode_key_rejects_invalid_utf8(raw: str) -> None:
    with raises(400, errors.INVALID_KEY, "^Could not URL-decode key name$"):
        decode_key(raw)


# Ids.
def test_validate_id() -> None:
    good = "0123456789abcdef0123456789abcdef"
    assert validate_id("namespace", good) == good


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "0123456789abcdef0123456789abcdeg",
        "0123456789abcdef0123456789abcde\n",
    ],
)
def test_validate_id_rejects(raw: str) -> None:
    with raises(404, errors.INVALID_ID) as info:
        validate_id("namespace", raw)
    assert "namespace" in info.value.message


# Integers.
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12", 12), (" 7 ", 7), ("-3", -3), ("0", 0), ("120.0", 120), ("5.", 5), ("-2.00", -2)],
)
def test_parse_int(raw: str, expected: int) -> None:
    assert parse_int("page", raw) == expected


@pytest.mark.parametrize("raw", ["", "1.5", "abc", "1e3", "0x10", "--1", "1" * 21, "١٢"])
def test_parse_int_rejects(raw: str) -> None:
    with raises(400, errors.BAD_REQUEST, "page"):
        parse_int("page", raw)


# Expiration (E2-E13).
def test_no_expiration() -> None:
    assert resolve_expiration(None, None, NOW, L) is None


def test_expiration_ttl() -> None:
    assert resolve_expiration(None, 60, NOW, L) == 1060
    assert resolve_expiration(None, 1000, NOW, L) == 2000


def test_expiration_ttl_truncates_now() -> None:
    assert resolve_expiration(None, 60, 1000.9, L) == 1060


@pytest.mark.parametrize("ttl", [0, -5])
def test_expiration_ttl_not_positive(ttl: int) -> None:
    with raises(400, errors.INVALID_EXPIRATION) as info:
        resolve_expiration(None, ttl, NOW, L)
    assert info.value.message == (
        f"Invalid expiration_ttl of {ttl}. Please specify integer greater than 0."
    )


@pytest.mark.parametrize("ttl", [1, 30, 59])
def test_expiration_ttl_under_floor(ttl: int) -> None:
    with raises(400, errors.INVALID_EXPIRATION) as info:
        resolve_expiration(None, ttl, NOW, L)
    assert info.value.message == (
        f"Invalid expiration_ttl of {ttl}. Expiration TTL must be at least 60."
    )


def test_expiration_absolute() -> None:
    assert resolve_expiration(1061, None, NOW, L) == 1061
    assert resolve_expiration(1060, None, NOW, L) == 1060  # E10: now+60 is accepted


@pytest.mark.parametrize("expiration", [1000, 999, 0, -1])
def test_expiration_not_in_future(expiration: int) -> None:
    with raises(400, errors.INVALID_EXPIRATION) as info:
        resolve_expiration(expiration, None, NOW, L)
    assert info.value.message == (
        f"Invalid expiration of {expiration}. Please specify integer greater than the current"
        " number of seconds since the UNIX epoch."
    )


@pytest.mark.parametrize("expiration", [1001, 1030, 1059])
def test_expiration_under_floor(expiration: int) -> None:
    with raises(400, errors.INVALID_EXPIRATION) as info:
        resolve_expiration(expiration, None, NOW, L)
    assert info.value.message == (
        f"Invalid expiration of {expiration}. Expiration times must be at least 60 seconds"
        " in the future."
    )


def test_expiration_ttl_wins() -> None:
    assert resolve_expiration(5000, 120, NOW, L) == 1120
    # The absolute value is ignored entirely, even when it alone would be invalid.
    assert resolve_expiration(10, 120, NOW, L) == 1120
    with raises(400, errors.INVALID_EXPIRATION, "expiration_ttl of 30"):
        resolve_expiration(5000, 30, NOW, L)


def test_expiration_max_epoch() -> None:
    top = L.max_epoch_seconds
    assert resolve_expiration(top, None, NOW, L) == top
    assert resolve_expiration(None, top - 1000, NOW, L) == top
    with raises(400, match=str(top + 1)):
        resolve_expiration(top + 1, None, NOW, L)
    with raises(400, match=str(top + 1)):
        resolve_expiration(None, top - 999, NOW, L)


def test_expiration_lowered_floor() -> None:
    limits = L.with_changes(min_expiration_ttl=1)
    assert resolve_expiration(None, 1, NOW, limits) == 1001
    assert resolve_expiration(1001, None, NOW, limits) == 1001
    with raises(400, errors.INVALID_EXPIRATION, "greater than the current"):
        resolve_expiration(1000, None, NOW, limits)


# Value size (P6).
def test_value_size() -> None:
    validate_value_size(0, L)
    validate_value_size(26_214_400, L)
    with raises(413, errors.VALUE_TOO_LARGE) as info:
        validate_value_size(26_214_401, L)
    assert info.value.message == "Value length of 26214401 exceeds limit of 26214400."


# Metadata (P7, P8).
def _json_string_of_bytes(total: int, char: str = "a") -> str:
    """A JSON string literal whose text is exactly ``total`` UTF-8 bytes."""
    width = len(char.encode())
    body = total - 2
    assert body % width == 0
    return json.dumps(char * (body // width), ensure_ascii=False)


def test_metadata_text_limit_exact() -> None:
    text = _json_string_of_bytes(1024)
    assert validate_metadata_text(text, L) == text
    with raises(413, errors.METADATA_TOO_LARGE) as info:
        validate_metadata_text(_json_string_of_bytes(1025), L)
    assert info.value.message == "Metadata length of 1025 exceeds limit of 1024."


def test_metadata_text_counts_utf8_bytes() -> None:
    text = _json_string_of_bytes(1024, "é")  # 511 characters, 1,024 bytes
    assert len(text) == 513
    assert validate_metadata_text(text, L) == text
    longer = json.dumps("é" * 511 + "a", ensure_ascii=False)
    with raises(413, errors.METADATA_TOO_LARGE, "of 1025 "):
        validate_metadata_text(longer, L)


@pytest.mark.parametrize("text", ["{", "nope", "", "{'a': 1}", "[1,]"])
def test_metadata_text_must_be_json(text: str) -> None:
    with raises(400, errors.BAD_REQUEST, "Invalid metadata"):
        validate_metadata_text(text, L)


@pytest.mark.parametrize("text", ["123", '"example"', "null", "true", "[]", '{"a":{"b":[1]}}'])
def test_metadata_text_any_json(text: str) -> None:
    assert validate_metadata_text(text, L) == text


def test_metadata_text_is_kept_as_sent() -> None:
    text = '{ "a" :  1 }'
    assert validate_metadata_text(text, L) == text


def test_metadata_from_object() -> None:
    assert metadata_from_object({"a": 1, "b": [True, None]}, L) == '{"a":1,"b":[true,null]}'
    assert metadata_from_object(123, L) == "123"
    assert metadata_from_object("example", L) == '"example"'
    assert metadata_from_object({"k": "€"}, L) == '{"k":"€"}'


def test_metadata_from_object_limit_in_utf8_bytes() -> None:
    assert metadata_from_object("a" * 1022, L) == '"' + "a" * 1022 + '"'
    assert len(metadata_from_object("é" * 511, L).encode()) == 1024
    with raises(413, errors.METADATA_TOO_LARGE, "of 1025 "):
        metadata_from_object("a" * 1023, L)
    with raises(413, errors.METADATA_TOO_LARGE, "of 1025 "):
        metadata_from_object("é" * 511 + "a", L)


# cache_ttl (C1-C4).
def test_cache_ttl_default() -> None:
    assert parse_cache_ttl(None, L) == 60
    assert parse_cache_ttl("", L) == 60


@pytest.mark.parametrize(("raw", "expected"), [("30", 30), (" 60 ", 60), (3600, 3600), (30, 30)])
def test_cache_ttl_accepted(raw: str | int, expected: int) -> None:
    assert parse_cache_ttl(raw, L) == expected


@pytest.mark.parametrize(("raw", "shown"), [("10", "10"), (29, "29"), ("0", "0"), ("-5", "-5")])
def test_cache_ttl_under_floor(raw: str | int, shown: str) -> None:
    with raises(400, errors.INVALID_CACHE_TTL) as info:
        parse_cache_ttl(raw, L)
    assert info.value.message == f"Invalid cache_ttl of {shown}. Cache TTL must be at least 30."


@pytest.mark.parametrize("raw", ["not a number", "30.5", "1e2"])
def test_cache_ttl_not_integer(raw: str) -> None:
    with raises(400, errors.INVALID_CACHE_TTL) as info:
        parse_cache_ttl(raw, L)
    assert info.value.message == f"Invalid cache_ttl of {raw}. Cache TTL must be at least 30."


def test_cache_ttl_rejects_bool() -> None:
    with raises(400, errors.INVALID_CACHE_TTL):
        parse_cache_ttl(True, L)


# List limit (L16-L18).
def test_list_limit_default() -> None:
    assert parse_list_limit(None, L) == 1000
    assert parse_list_limit("", L) == 1000


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("1000", 1000), (" 10 ", 10)])
def test_list_limit_accepted(raw: str, expected: int) -> None:
    assert parse_list_limit(raw, L) == expected


def test_list_limit_too_big() -> None:
    with raises(400, errors.INVALID_LIST_LIMIT) as info:
        parse_list_limit("1001", L)
    assert info.value.message == (
        "Invalid key_count_limit of 1001. Please specify an integer less than 1000."
    )


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "1.5"])
def test_list_limit_too_small_or_not_integer(raw: str) -> None:
    with raises(400, errors.INVALID_LIST_LIMIT) as info:
        parse_list_limit(raw, L)
    assert info.value.message == (
        f"Invalid key_count_limit of {raw}. Please specify an integer greater than 0."
    )


# Titles.
def test_title_accepted() -> None:
    assert validate_title("my namespace", L) == "my namespace"
    assert validate_title("x" * 512, L) == "x" * 512
    assert validate_title("é" * 512, L) == "é" * 512  # characters, not bytes


@pytest.mark.parametrize("title", [None, 1, ["a"], {"t": "a"}, b"bytes"])
def test_title_not_a_string(title: object) -> None:
    with raises(400, errors.INVALID_TITLE, "must be a string"):
        validate_title(title, L)


@pytest.mark.parametrize("title", ["", " ", "\t\n"])
def test_title_empty(title: str) -> None:
    with raises(400, errors.INVALID_TITLE, "must not be empty"):
        validate_title(title, L)


def test_title_too_long() -> None:
    with raises(400, errors.INVALID_TITLE, "513 characters"):
        validate_title("x" * 513, L)


def test_limits_with_changes() -> None:
    changed = L.with_changes(max_key_bytes=4)
    assert isinstance(changed, Limits)
    assert changed.max_key_bytes == 4 and L.max_key_bytes == 512
    with raises(414, errors.KEY_TOO_LONG, "length of 5 exceeds key length limit of 4"):
        validate_key("abcde", changed)


# Absurdly long numbers are a 400, never an int() failure (Python refuses over 4,300 digits).
@pytest.mark.parametrize("digits", ["9" * 21, "9" * 5000, "-" + "9" * 5000])
def test_huge_numbers_are_400(digits: str) -> None:
    with raises(400, errors.BAD_REQUEST):
        parse_int("page", digits)
    with raises(400, errors.INVALID_CACHE_TTL):
        parse_cache_ttl(digits, L)
    with raises(400, errors.INVALID_LIST_LIMIT):
        parse_list_limit(digits, L)


def test_twenty_digit_numbers_still_parse() -> None:
    assert parse_int("page", "9" * 20) == int("9" * 20)
    with raises(400, errors.BAD_REQUEST, "cache_ttl of 9+: must be between 30 and"):
        parse_cache_ttl("9" * 20, L)  # past the 32-bit bound (issue 8 §6)
    with raises(400, errors.INVALID_LIST_LIMIT, "less than 1000"):
        parse_list_limit("9" * 20, L)
