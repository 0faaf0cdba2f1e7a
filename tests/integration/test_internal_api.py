"""The internal API between tiers against a real ``pullkv serve``: well-formed messages of
``pullkv.wire`` work, and malformed ones (a huge integer, a missing field, a wrong type, an
oversized body) get a 400 or 413 naming the problem, never a 500.

The bootstrap admin token is also an edge token, so it may use the internal API.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pullkv import wire
from pullkv.limits import DEFAULT_LIMITS
from pullkv.types import SealedWrite
from tests.support import ServerProcess

HUGE = 1 << 63  # one past SQLite's and PostgreSQL's largest integer


@pytest.fixture
def internal(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the internal API with the admin (and edge) token."""
    with httpx.Client(
        base_url=f"{server.url}/pullkv/v1/", headers=server.headers(), timeout=30
    ) as client:
        yield client


def _refused(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["errors"][0]["message"]
    assert words in message, message


def test_well_formed_messages_work(
    internal: httpx.Client, http: httpx.Client, server: ServerProcess, namespace_id: str
) -> None:
    assert http.put(f"{namespace_id}/values/k", content=b"v").status_code == 200
    fetch = wire.FetchRequest(server.account_id, namespace_id, (("k", None), ("no", None)), 60)
    response = internal.post("fetch", json=fetch.to_wire())
    assert response.status_code == 200, response.text
    answers = wire.FetchResponse.from_wire(response.content).answers
    entry = answers["k"].entry
    assert entry is not None and entry.version > 0 and entry.value != b"v"  # sealed
    assert answers["no"].entry is None
    held = wire.FetchRequest(server.account_id, namespace_id, (("k", entry.version),), None)
    again = wire.FetchResponse.from_wire(internal.post("fetch", json=held.to_wire()).content)
    assert again.answers["k"].not_modified
    listed = internal.post(
        "list", json=wire.ListRequest(server.account_id, namespace_id, "", None, 10).to_wire()
    )
    assert [row.key for row in wire.ListResponse.from_wire(listed.content).keys] == ["k"]
    page = internal.post(
        "namespaces/list",
        json=wire.NamespaceListRequest(server.account_id, "id", False, 0, 1000, None).to_wire(),
    )
    assert namespace_id in {n.id for n in wire.NamespacePage.from_wire(page.json()).namespaces}


MALFORMED_JSON: list[tuple[str, dict[str, Any], str]] = [
    # (operation, fields changed in a valid message, words the error must hold)
    ("fetch", {"keys": [{"key": "k", "held_version": HUGE}]}, "keys[0].held_version"),
    ("fetch", {"keys": [{"key": "k", "held_version": 10**40}]}, "keys[0].held_version"),
    ("fetch", {"keys": [{"key": "k", "held_version": -1}]}, "keys[0].held_version"),
    ("fetch", {"cache_ttl": HUGE}, "FetchRequest.cache_ttl must be an integer"),
    ("fetch", {"cache_ttl": "60"}, "FetchRequest.cache_ttl must be an integer"),
    ("fetch", {"keys": [["k", None]]}, "FetchRequest.keys[0] must be a JSON object"),
    ("list", {"limit": HUGE}, "ListRequest.limit must be an integer"),
    ("list", {"prefix": None}, "ListRequest.prefix must be a string"),
    ("namespaces/list", {"offset": HUGE}, "NamespaceListRequest.offset must be an integer"),
    ("namespaces/list", {"descending": "no"}, "NamespaceListRequest.descending must be"),
    ("delete", {"keys": "k"}, "DeleteRequest.keys must be an array"),
    ("namespace", {"operation": None}, "NamespaceRequest.operation must be a string"),
]


def _valid(operation: str, account_id: str, namespace_id: str) -> dict[str, Any]:
    messages: dict[str, dict[str, Any]] = {
        "fetch": wire.FetchRequest(account_id, namespace_id, (("k", None),), None).to_wire(),
        "list": wire.ListRequest(account_id, namespace_id, "", None, 10).to_wire(),
        "namespaces/list": wire.NamespaceListRequest(
            account_id, "id", False, 0, 10, None
        ).to_wire(),
        "delete": wire.DeleteRequest(account_id, namespace_id, ("k",)).to_wire(),
        "namespace": wire.NamespaceRequest(account_id, namespace_id, "get namespace").to_wire(),
    }
    return messages[operation]


@pytest.mark.parametrize(
    ("operation", "changes", "words"), MALFORMED_JSON, ids=[w for _, _, w in MALFORMED_JSON]
)
def test_malformed_messages_are_400_naming_the_field(
    internal: httpx.Client,
    server: ServerProcess,
    namespace_id: str,
    operation: str,
    changes: dict[str, Any],
    words: str,
) -> None:
    body = {**_valid(operation, server.account_id, namespace_id), **changes}
    _refused(internal.post(operation, json=body), 400, words)


def test_missing_fields_are_400(
    internal: httpx.Client, server: ServerProcess, namespace_id: str
) -> None:
    body = _valid("fetch", server.account_id, namespace_id)
    del body["namespace_id"]
    _refused(internal.post("fetch", json=body), 400, "FetchRequest.namespace_id is missing")
    _refused(internal.post("tokens/list", json=[]), 400, "TokenListRequest must be a JSON object")


def test_malformed_token_records_are_400(internal: httpx.Client, server: ServerProcess) -> None:
    token = {
        "id": "abc",
        "account_id": server.account_id,
        "name": "t",
        "salt": "c2FsdA==",
        "secret_hash": "aGFzaA==",
        "namespaces": None,
        "read_only": True,
        "admin": False,
        "edge": False,
        "created_at": HUGE,
        "revoked_at": None,
    }
    response = internal.post("tokens/add", json={"token": token})
    _refused(response, 400, "TokenAddRequest.token.created_at must be an integer")
    response = internal.post("tokens/add", json={"token": {**token, "created_at": 0, "salt": 5}})
    _refused(response, 400, "TokenAddRequest.token.salt must be a string")


def test_malformed_frames_are_400(
    internal: httpx.Client, server: ServerProcess, namespace_id: str
) -> None:
    framed = {"content-type": wire.CONTENT_TYPE}
    write = SealedWrite("k", b"sealed", None, HUGE)
    body = wire.WriteRequest(server.account_id, namespace_id, (write,)).to_wire()
    response = internal.post("write", content=body, headers=framed)
    _refused(response, 400, "WriteRequest.writes[0].expiration must be an integer")
    response = internal.post("write", content=b"PKV1" + b"\xff" * 8, headers=framed)
    _refused(response, 400, "WriteRequest is truncated")
    head = json.dumps(
        {"header": {"account_id": server.account_id, "writes": []}, "blob_lengths": [HUGE]}
    ).encode()
    response = internal.post(
        "write", content=b"PKV1" + len(head).to_bytes(4, "big") + head, headers=framed
    )
    _refused(response, 400, "WriteRequest.blob_lengths[0] must be an integer")


def test_bodies_past_their_cap_are_413(internal: httpx.Client) -> None:
    cap = DEFAULT_LIMITS.internal_json_max_bytes
    response = internal.post("fetch", content=b" " * (cap + 1))
    assert response.status_code == 413, response.text
    assert str(cap) in response.json()["errors"][0]["message"]
