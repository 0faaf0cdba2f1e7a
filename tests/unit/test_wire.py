"""Unit tests for pullkv.wire: every message round-trips, and every malformed field is a 400
that names it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullkv import errors, wire
from pullkv.backend import Fetched, WriteResult
from pullkv.limits import DEFAULT_LIMITS
from pullkv.types import (
    ListedKey,
    NamespaceRecord,
    SealedEntry,
    SealedWrite,
    TokenRecord,
    WriteCondition,
)
from pullkv.validate import parse_json
from tests.unit.helpers import raises_kv

INT64_MAX = (1 << 63) - 1
ACCOUNT = "0123456789abcdef0123456789abcdef"
NAMESPACE = "fedcba9876543210fedcba9876543210"

# Strategies. Hypothesis's text leaves out lone surrogates, which no message can hold.
texts = st.text(max_size=20)
int64s = st.integers(0, INT64_MAX)
optional_int64s = st.none() | int64s
blobs = st.binary(max_size=64)
optional_blobs = st.none() | blobs

namespaces = st.builds(NamespaceRecord, texts, texts, texts, st.none() | texts)
tokens = st.builds(
    TokenRecord,
    id=texts,
    account_id=texts,
    name=texts,
    salt=blobs,
    secret_hash=blobs,
    namespaces=st.none() | st.lists(texts, max_size=4).map(tuple),
    read_only=st.booleans(),
    admin=st.booleans(),
    edge=st.booleans(),
    created_at=int64s,
    revoked_at=optional_int64s,
)
sealed_writes = st.builds(SealedWrite, texts, blobs, optional_blobs, optional_int64s)
listed_keys = st.builds(ListedKey, texts, optional_int64s, optional_blobs)


@st.composite
def fetch_answers(draw: st.DrawFn) -> dict[str, Fetched]:
    """Answers by key: not modified, not found, or an entry for that same key."""
    answers: dict[str, Fetched] = {}
    for key in draw(st.lists(texts, max_size=6, unique=True)):
        kind = draw(st.sampled_from(["not_modified", "not_found", "found"]))
        if kind == "not_modified":
            answers[key] = Fetched(None, not_modified=True)
        elif kind == "not_found":
            answers[key] = Fetched(None)
        else:
            entry = SealedEntry(
                key, draw(blobs), draw(optional_blobs), draw(optional_int64s), draw(int64s)
            )
            answers[key] = Fetched(entry)
    return answers


JSON_MESSAGES: list[st.SearchStrategy[Any]] = [
    st.builds(
        wire.FetchRequest,
        texts,
        texts,
        st.lists(st.tuples(texts, optional_int64s), max_size=5).map(tuple),
        optional_int64s,
    ),
    st.builds(wire.ListRequest, texts, texts, texts, st.none() | texts, int64s),
    st.builds(wire.DeleteRequest, texts, texts, st.lists(texts, max_size=5).map(tuple)),
    st.builds(wire.NamespaceRequest, texts, texts, texts),
    st.builds(
        wire.NamespaceListRequest,
        texts,
        st.sampled_from(["id", "title"]),
        st.booleans(),
        int64s,
        int64s,
        st.none() | st.lists(texts, max_size=4).map(tuple),
    ),
    st.builds(wire.NamespaceCreateRequest, namespaces),
    st.builds(wire.NamespaceRenameRequest, texts, texts, texts),
    st.builds(wire.NamespaceDeleteRequest, texts, texts),
    st.builds(wire.TokenGetRequest, texts),
    st.builds(wire.TokenAddRequest, tokens),
    st.builds(wire.TokenListRequest, texts),
    st.builds(wire.TokenRevokeRequest, texts, texts),
    st.builds(
        wire.WriteResponse,
        st.builds(
            WriteResult,
            st.dictionaries(texts, int64s, max_size=5),
            st.lists(texts, max_size=3),
        ),
    ),
    st.builds(wire.NamespaceResponse, namespaces),
    st.builds(wire.NamespacePage, st.lists(namespaces, max_size=3).map(tuple), int64s),
    st.builds(wire.TokenResponse, st.none() | tokens),
    st.builds(wire.TokenListResponse, st.lists(tokens, max_size=3).map(tuple)),
    st.builds(wire.RevokeResponse, st.booleans()),
    st.builds(wire.KeyringResponse, st.lists(st.tuples(int64s, blobs), max_size=3).map(tuple)),
]
FRAMED_MESSAGES: list[st.SearchStrategy[Any]] = [
    st.builds(wire.WriteRequest, texts, texts, st.lists(sealed_writes, max_size=5).map(tuple)),
    st.builds(wire.FetchResponse, fetch_answers()),
    st.builds(wire.ListResponse, st.lists(listed_keys, max_size=5).map(tuple)),
]


def _through_json(payload: Any, ensure_ascii: bool = False) -> object:
    """What the other side decodes: the payload sent as JSON (UTF-8, as httpx sends it, or
    escaped to ASCII, which can spell lone surrogates) and parsed back."""
    return parse_json(json.dumps(payload, ensure_ascii=ensure_ascii).encode("utf-8"), "test")


@pytest.mark.parametrize("messages", JSON_MESSAGES, ids=lambda s: repr(s)[:40])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_json_messages_round_trip(messages: st.SearchStrategy[Any], data: st.DataObject) -> None:
    message = data.draw(messages)
    assert type(message).from_wire(_through_json(message.to_wire())) == message


@pytest.mark.parametrize("messages", FRAMED_MESSAGES, ids=lambda s: repr(s)[:40])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_framed_messages_round_trip(messages: st.SearchStrategy[Any], data: st.DataObject) -> None:
    message = data.draw(messages)
    framed = message.to_wire()
    assert isinstance(framed, bytes) and framed.startswith(wire.MAGIC)
    assert type(message).from_wire(framed) == message


def test_sealed_values_travel_raw() -> None:
    value = bytes(range(256)) * 1000
    framed = wire.FetchResponse({"k": Fetched(SealedEntry("k", value, None, None, 7))}).to_wire()
    # The value follows the header as is: no base64, so the message is barely larger.
    assert framed.endswith(value)
    assert len(framed) - len(value) < 200


# Decoding refuses every malformed field with a 400 naming it.
def _fetch() -> dict[str, Any]:
    return wire.FetchRequest(ACCOUNT, NAMESPACE, (("k", 3), ("j", None)), 60).to_wire()


def _token() -> dict[str, Any]:
    record = TokenRecord("id", ACCOUNT, "name", b"salt", b"hash", (NAMESPACE,), created_at=5)
    return wire.TokenAddRequest(record).to_wire()


def _namespaces_list() -> dict[str, Any]:
    return wire.NamespaceListRequest(ACCOUNT, "title", False, 0, 20, None).to_wire()


def _changed(build: Callable[[], dict[str, Any]], path: str, value: object) -> object:
    """``build()`` with the field at ``path`` (dotted, ``[i]`` for array items) set to
    ``value``, or removed when ``value`` is ``MISSING``."""
    message = build()
    parts = path.replace("[", ".").replace("]", "").split(".")
    target: Any = message
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if value is MISSING:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return message


MISSING = object()
REJECTED_JSON = [
    # (message type, valid message, field path, bad value, words the error must hold)
    (wire.FetchRequest, _fetch, "account_id", MISSING, "FetchRequest.account_id is missing"),
    (wire.FetchRequest, _fetch, "account_id", 5, "FetchRequest.account_id must be a string"),
    (wire.FetchRequest, _fetch, "namespace_id", None, "FetchRequest.namespace_id must be"),
    (wire.FetchRequest, _fetch, "namespace_id", "\ud800", "must be valid Unicode"),
    (wire.FetchRequest, _fetch, "keys", {"k": 1}, "FetchRequest.keys must be an array"),
    (wire.FetchRequest, _fetch, "keys[1]", ["j", None], "FetchRequest.keys[1] must be a JSON"),
    (wire.FetchRequest, _fetch, "keys[0].held_version", 1 << 63, "keys[0].held_version"),
    (wire.FetchRequest, _fetch, "keys[0].held_version", 10**30, "keys[0].held_version"),
    (wire.FetchRequest, _fetch, "keys[0].held_version", -1, "keys[0].held_version"),
    (wire.FetchRequest, _fetch, "keys[0].held_version", 1.5, "keys[0].held_version"),
    (wire.FetchRequest, _fetch, "keys[0].key", 7, "FetchRequest.keys[0].key must be a string"),
    (wire.FetchRequest, _fetch, "cache_ttl", True, "FetchRequest.cache_ttl must be an integer"),
    (wire.FetchRequest, _fetch, "cache_ttl", "60", "FetchRequest.cache_ttl must be an integer"),
    (wire.NamespaceListRequest, _namespaces_list, "order", "size", "order must be"),
    (wire.NamespaceListRequest, _namespaces_list, "descending", 0, "descending must be true"),
    (wire.NamespaceListRequest, _namespaces_list, "offset", 1 << 64, "offset must be"),
    (wire.NamespaceListRequest, _namespaces_list, "limit", -5, "limit must be"),
    (wire.NamespaceListRequest, _namespaces_list, "only", "abc", "only must be an array"),
    (wire.TokenAddRequest, _token, "token", [], "TokenAddRequest.token must be a JSON object"),
    (wire.TokenAddRequest, _token, "token.salt", "not base64!", "token.salt must be base64"),
    (wire.TokenAddRequest, _token, "token.salt", 12, "token.salt must be a string"),
    (wire.TokenAddRequest, _token, "token.created_at", -1, "token.created_at must be"),
    (wire.TokenAddRequest, _token, "token.revoked_at", 1 << 70, "token.revoked_at must be"),
    (wire.TokenAddRequest, _token, "token.namespaces[0]", 1, "token.namespaces[0] must be"),
    (wire.TokenAddRequest, _token, "token.admin", "yes", "token.admin must be true or false"),
    (wire.TokenAddRequest, _token, "token.edge", MISSING, "token.edge is missing"),
]


@pytest.mark.parametrize(
    ("kind", "build", "path", "value", "words"),
    REJECTED_JSON,
    ids=[f"{k.__name__}.{p}={v!r}"[:60] for k, _, p, v, _ in REJECTED_JSON],
)
def test_malformed_json_fields_are_400_naming_the_field(
    kind: Any, build: Callable[[], dict[str, Any]], path: str, value: object, words: str
) -> None:
    with raises_kv(400, errors.BAD_REQUEST) as info:
        kind.from_wire(_through_json(_changed(build, path, value), ensure_ascii=True))
    assert words in info.value.message
    assert info.value.message.startswith("malformed internal message: ")


@pytest.mark.parametrize("body", [[], "x", 3, None])
def test_a_message_that_is_not_an_object_is_400(body: object) -> None:
    with raises_kv(400, errors.BAD_REQUEST, match="TokenGetRequest must be a JSON object"):
        wire.TokenGetRequest.from_wire(body)


def test_malformed_answers_name_their_field_too() -> None:
    with raises_kv(400, match=r"WriteResponse.versions\['k'\] must be an integer"):
        wire.WriteResponse.from_wire({"versions": {"k": 1 << 63}, "refused": []})
    with raises_kv(400, match="WriteResponse.refused must be an array"):
        wire.WriteResponse.from_wire({"versions": {}, "refused": "k"})
    with raises_kv(400, match="NamespacePage.namespaces.0..title is missing"):
        wire.NamespacePage.from_wire({"namespaces": [{"id": "x", "account_id": "a"}], "total": 1})
    with raises_kv(400, match=r"KeyringResponse.keys\[0\].key_id must be"):
        wire.KeyringResponse.from_wire({"keys": [{"key_id": -1, "wrapped": ""}]})


def _frame(header: object, blobs: list[bytes], lengths: list[object] | None = None) -> bytes:
    """A framed message built by hand, so malformed ones can be."""
    head = json.dumps({"header": header, "blob_lengths": lengths or [len(b) for b in blobs]})
    raw = head.encode()
    return wire.MAGIC + len(raw).to_bytes(4, "big") + raw + b"".join(blobs)


def _write_header(**item: object) -> dict[str, Any]:
    write = {"key": "k", "expiration": None, "has_metadata": False, **item}
    return {"account_id": ACCOUNT, "namespace_id": NAMESPACE, "writes": [write]}


REJECTED_FRAMES = [
    (b"", "WriteRequest is not a framed pullkv message"),
    (b"PKV2" + bytes(8), "WriteRequest is not a framed pullkv message"),
    (wire.MAGIC + (1000).to_bytes(4, "big") + b"{}", "WriteRequest is truncated"),
    (wire.MAGIC + (3).to_bytes(4, "big") + b"{x}", "WriteRequest header is not valid JSON"),
    (_frame(_write_header(), [b"v"]) + b"extra", "has bytes after its last blob"),
    (_frame(_write_header(), [b"v"], [99]), "blob_lengths[0] must be an integer from 0 to 1"),
    (_frame(_write_header(), [b"v"], [-1]), "blob_lengths[0] must be an integer"),
    (_frame(_write_header(), []), "writes[0].key refers to a blob the message does not hold"),
    (_frame(_write_header(has_metadata=True), [b"v"]), "writes[0].has_metadata refers to a"),
    (_frame(_write_header(), [b"v", b"m"]), "holds blobs that no field refers to"),
    (_frame(_write_header(expiration=1 << 63), [b"v"]), "writes[0].expiration must be"),
    (_frame(_write_header(key=None), [b"v"]), "WriteRequest.writes[0].key must be a string"),
    (_frame(_write_header(has_metadata=1), [b"v"]), "has_metadata must be true or false"),
    (_frame({"writes": []}, []), "WriteRequest.account_id is missing"),
    (_frame([], []), "WriteRequest must be a JSON object"),
]


@pytest.mark.parametrize(("data", "words"), REJECTED_FRAMES, ids=[w for _, w in REJECTED_FRAMES])
def test_malformed_frames_are_400_naming_the_problem(data: bytes, words: str) -> None:
    with raises_kv(400, errors.BAD_REQUEST) as info:
        wire.WriteRequest.from_wire(data)
    assert words in info.value.message


def test_malformed_framed_answers() -> None:
    found = {"key": "k", "status": "found", "version": 1, "expiration": None}
    with raises_kv(400, match="FetchResponse.answers.0..has_metadata is missing"):
        wire.FetchResponse.from_wire(_frame({"answers": [found]}, [b"v"]))
    with raises_kv(400, match="FetchResponse.answers.0..status must be"):
        wire.FetchResponse.from_wire(_frame({"answers": [{"key": "k", "status": "ok"}]}, []))
    with raises_kv(400, match="ListResponse.keys.0..has_metadata refers to a blob"):
        row = {"key": "k", "expiration": None, "has_metadata": True}
        wire.ListResponse.from_wire(_frame({"keys": [row]}, []))


# The internal API's body caps, derived from the client-facing limits.
def test_internal_caps_admit_everything_a_client_may_send() -> None:
    # The caps follow the limits they derive from: scaled down, the check stays quick.
    limits = DEFAULT_LIMITS.with_changes(
        bulk_write_max_items=200, bulk_max_body_bytes=2_000_000, max_value_bytes=500_000
    )
    # The largest bulk write a client may make: as many items as allowed, with the longest
    # keys (escaped to three times their size in the frame's header) and metadata, the values
    # filling the rest of the client's body.
    key = "\u00e9" * (limits.max_key_bytes // 2)
    metadata = b"m" * (limits.max_metadata_bytes + 33)  # sealing adds 33 bytes
    items = limits.bulk_write_max_items
    value_bytes = (limits.bulk_max_body_bytes - items * (len(key) * 2 + 200)) // items
    writes = tuple(
        SealedWrite(f"{key[:-5]}{i:05d}", b"v" * (value_bytes + 33), metadata, 2_000_000_000)
        for i in range(items)
    )
    framed = wire.WriteRequest(ACCOUNT, NAMESPACE, writes).to_wire()
    assert len(framed) <= limits.internal_write_max_bytes
    # One value as large as allowed.
    single = SealedWrite(key, b"v" * (limits.max_value_bytes + 33), metadata, None)
    assert len(wire.WriteRequest(ACCOUNT, NAMESPACE, (single,)).to_wire()) <= (
        limits.internal_write_max_bytes
    )
    # A bulk delete of as many of the longest keys as allowed.
    keys = tuple(f"{i:0{limits.max_key_bytes}d}" for i in range(items))
    delete = json.dumps(wire.DeleteRequest(ACCOUNT, NAMESPACE, keys).to_wire()).encode()
    assert len(delete) <= limits.internal_delete_max_bytes
    # A fetch of a full bulk get's worth of the longest keys, escaped.
    fetch = wire.FetchRequest(ACCOUNT, NAMESPACE, tuple((key, INT64_MAX) for _ in range(100)), 60)
    assert len(json.dumps(fetch.to_wire()).encode()) <= limits.internal_json_max_bytes


def test_internal_caps_stay_near_the_client_limits() -> None:
    limits = DEFAULT_LIMITS
    assert limits.bulk_max_body_bytes < limits.internal_write_max_bytes
    assert limits.internal_write_max_bytes < 1.5 * limits.bulk_max_body_bytes
    assert limits.internal_delete_max_bytes < 1.1 * limits.bulk_max_body_bytes
    assert limits.internal_json_max_bytes < 2 * limits.json_body_max_bytes


# Conditional writes and deletes carry their condition.
@pytest.mark.parametrize(
    "condition", [WriteCondition(version=42), WriteCondition(absent=True), None]
)
def test_conditions_round_trip(condition: WriteCondition | None) -> None:
    write = wire.WriteRequest(ACCOUNT, NAMESPACE, (SealedWrite("k", b"v", None, None, condition),))
    assert wire.WriteRequest.from_wire(write.to_wire()) == write
    delete = wire.DeleteRequest(ACCOUNT, NAMESPACE, ("k",), condition)
    assert wire.DeleteRequest.from_wire(_through_json(delete.to_wire())) == delete


REJECTED_CONDITIONS: list[tuple[object, str]] = [
    ({}, "must have exactly one of version and absent"),
    ({"version": 1, "absent": True}, "must have exactly one of version and absent"),
    ({"absent": False}, "must have exactly one of version and absent"),
    ({"version": -1}, "condition.version must be an integer"),
    ({"version": "1"}, "condition.version must be an integer"),
    ({"absent": "yes"}, "condition.absent must be true or false"),
    ([], "condition must be a JSON object"),
]


@pytest.mark.parametrize(("condition", "words"), REJECTED_CONDITIONS)
def test_malformed_conditions_are_400(condition: object, words: str) -> None:
    with raises_kv(400, errors.BAD_REQUEST, match=words):
        wire.WriteRequest.from_wire(_frame(_write_header(condition=condition), [b"v"]))
    message = {"account_id": ACCOUNT, "namespace_id": NAMESPACE, "keys": ["k"]}
    with raises_kv(400, errors.BAD_REQUEST, match=words):
        wire.DeleteRequest.from_wire({**message, "condition": condition})


def test_a_condition_covers_one_key() -> None:
    header = _write_header(condition={"absent": True})
    header["writes"].append({"key": "k2", "expiration": None, "has_metadata": False})
    with raises_kv(400, match="may hold one write when conditional"):
        wire.WriteRequest.from_wire(_frame(header, [b"v", b"w"]))
    message = {"account_id": ACCOUNT, "namespace_id": NAMESPACE, "keys": ["a", "b"]}
    with raises_kv(400, match="must hold one key when conditional"):
        wire.DeleteRequest.from_wire({**message, "condition": {"version": 1}})


def test_fetch_answers_carry_their_age_to_the_millisecond() -> None:
    entry = SealedEntry("k", b"v", None, None, 7)
    answers = {
        "k": Fetched(entry, age=12.3456),
        "same": Fetched(None, not_modified=True, age=0.5),
        "gone": Fetched(None, age=3.0),
        "new": Fetched(entry),
    }
    back = wire.FetchResponse.from_wire(wire.FetchResponse(answers).to_wire()).answers
    assert back["k"].age == 12.345 and back["same"].age == 0.5 and back["gone"].age == 3.0
    assert back["new"].age == 0.0 and back["k"].entry == entry
