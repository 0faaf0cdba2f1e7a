"""Unit tests for pullkv.cursor: opaque list cursors."""

from __future__ import annotations

import base64

import pytest

from pullkv import errors
from pullkv.cursor import decode_cursor, encode_cursor
from tests.unit.helpers import raises_kv


@pytest.mark.parametrize(
    "key",
    ["key1", "", "p/1", "a b?c#d%e", "€", "ключ", "😀", "\ue000\uffff", "\x00", "k" * 512],
)
def test_round_trip(key: str) -> None:
    cursor = encode_cursor(key)
    assert decode_cursor(cursor) == key


def test_cursor_is_url_safe_and_unpadded() -> None:
    for key in ["a", "ab", "abc", "\xff\xfe\xfd", "~~~>>>???"]:
        cursor = encode_cursor(key)
        assert "=" not in cursor and "+" not in cursor and "/" not in cursor
        assert cursor.isascii()
        assert decode_cursor(cursor) == key


def test_distinct_keys_give_distinct_cursors() -> None:
    assert encode_cursor("a") != encode_cursor("b")


def test_padded_cursor_is_accepted() -> None:
    cursor = encode_cursor("ab")
    assert decode_cursor(cursor + "=" * (-len(cursor) % 4)) == "ab"


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!notbase64",
        base64.b64encode(b"bad").decode(),  # our own key format without the format byte
        base64.b64encode(b"\x02p/1").decode(),  # an unknown format byte
        base64.urlsafe_b64encode(b"\x01\xff\xfe").decode(),  # not UTF-8 after the format byte
        "A",  # impossible length
        "é",  # not ASCII
        "=",
        "",
    ],
)
def test_foreign_cursor_is_400(cursor: str) -> None:
    with raises_kv(400, errors.INVALID_CURSOR):
        decode_cursor(cursor)
