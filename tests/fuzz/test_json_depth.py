"""The bounded JSON parser: depth measured without parsing, and never a RecursionError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullkv import errors
from pullkv.limits import DEFAULT_LIMITS
from pullkv.validate import json_depth, parse_int, parse_json, validate_metadata_text

LIMIT = DEFAULT_LIMITS.max_json_depth

# Strings full of brackets, quotes and backslashes, so the scan must skip them correctly.
_text = st.text(alphabet=st.sampled_from('[]{}"\\ab\u00e9\u007f'), max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=25,
)


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (recursion would hit the limit this file is about)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list | dict):
            level += 1
            deepest = max(deepest, level)
            stack.extend(
                (child, level) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


@settings(max_examples=300, derandomize=True, database=None)
@given(_json, st.booleans())
def test_depth_matches_the_parsed_structure(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert json_depth(text.encode()) == _depth(value)
    assert parse_json(text, "body") == value


@pytest.mark.parametrize("depth", [1, 512, 514, LIMIT])
def test_anything_workers_kv_accepts_parses(depth: int) -> None:
    """1,024 bytes of metadata nest 512 deep; a bulk body wraps that in two more levels."""
    text = "[" * depth + "]" * depth
    assert _depth(parse_json(text, "Request body")) == depth


def test_metadata_at_the_size_limit_nests_as_deep_as_it_can() -> None:
    text = "[" * 512 + "]" * 512
    assert len(text) == DEFAULT_LIMITS.max_metadata_bytes
    assert validate_metadata_text(text, DEFAULT_LIMITS) == text


@pytest.mark.parametrize(
    "text",
    [
        "[" * (LIMIT + 1) + "]" * (LIMIT + 1),
        '{"a":' * 5000 + "1" + "}" * 5000,
        "[" * 1_000_000,  # unterminated as well as deep
        '["' + "[" * 5000 + '",' + "[" * 700 + "]" * 700 + "]",  # deep outside the string
    ],
)
def test_too_deep_is_a_400_naming_the_limit(text: str) -> None:
    with pytest.raises(errors.KVError) as info:
        parse_json(text, "Request body")
    assert info.value.status == 400
    assert info.value.message == f"Request body is nested deeper than {LIMIT} levels"


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps(["[" * 5000, {"k": "{" * 5000, "[[[": '\\"[['}])
    assert json_depth(text.encode()) == 2
    assert parse_json(text, "body")[0] == "[" * 5000


def test_deep_metadata_is_invalid_metadata() -> None:
    deep = "[" * 700 + "]" * 700
    limits = DEFAULT_LIMITS.with_changes(max_metadata_bytes=10_000)
    with pytest.raises(errors.KVError, match="Invalid metadata: nested deeper than 600"):
        validate_metadata_text(deep, limits)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("100000000000000000000", "Invalid page of '100000000000000000000': expected an integer"),
        (str(2**63), "Invalid page of 9223372036854775808: must be between 1 and 2147483647"),
        ("0", "Invalid page of 0: must be between 1 and 2147483647"),
        ("-5", "Invalid page of -5: must be between 1 and 2147483647"),
    ],
)
def test_integers_out_of_range_name_the_parameter(raw: str, message: str) -> None:
    with pytest.raises(errors.KVError) as info:
        parse_int("page", raw, (1, DEFAULT_LIMITS.max_integer_param))
    assert (info.value.status, info.value.message) == (400, message)
