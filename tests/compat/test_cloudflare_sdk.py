"""The unmodified ``cloudflare`` Python SDK (5.9.0) against a real ``pullkv serve``.

Every KV method of the SDK is driven through its own API (no hand-built requests), and each
test checks what came back and what went over the wire. An httpx event hook records every
request the SDK makes, so the tests can tell a single request from a retried one.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import cloudflare
import httpx
import pytest
from cloudflare import AsyncCloudflare, Cloudflare
from cloudflare.types.kv.namespace_bulk_update_params import Body

from tests.support import ServerProcess

MIB = 1024 * 1024

# Keys whose names need percent-encoding, or are not ASCII, or both.
SPECIAL_KEYS = ["a/b", "my key/with:odd%chars", "ключ", "emoji😀", "q?x#y"]


class Wire:
    """Every request the SDK sent, recorded by an httpx event hook."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def clear(self) -> None:
        self.requests.clear()

    def only(self) -> httpx.Request:
        """The one request sent since the last clear (fails on zero, or on retries)."""
        assert len(self.requests) == 1, [f"{r.method} {r.url}" for r in self.requests]
        return self.requests[0]


@pytest.fixture
def wire() -> Wire:
    return Wire()


def make_client(server: ServerProcess, wire: Wire, token: str) -> Cloudflare:
    """An SDK client at the test server, with the default retry policy left on."""
    http_client = httpx.Client(event_hooks={"request": [wire]}, timeout=30)
    return Cloudflare(api_token=token, base_url=server.api, http_client=http_client)


@pytest.fixture
def cf(server: ServerProcess, wire: Wire) -> Iterator[Cloudflare]:
    client = make_client(server, wire, server.admin_token)
    yield client
    client.close()


@pytest.fixture
def ns(cf: Cloudflare, server: ServerProcess, wire: Wire) -> Iterator[str]:
    """A fresh namespace created through the SDK, deleted afterwards."""
    created = cf.kv.namespaces.create(
        account_id=server.account_id, title=f"sdk-{uuid.uuid4().hex[:12]}"
    )
    assert created is not None
    wire.clear()
    yield created.id
    with contextlib.suppress(cloudflare.NotFoundError):
        cf.kv.namespaces.delete(created.id, account_id=server.account_id)


def error_code(exc: cloudflare.APIStatusError) -> int:
    """The first Cloudflare error code in a failure envelope (checked for shape)."""
    body = exc.body
    assert isinstance(body, dict), body
    assert body["success"] is False
    assert body["result"] is None
    assert body["errors"], body
    return int(body["errors"][0]["code"])


def plain(model: Any) -> Any:
    """An SDK model as the JSON it was built from."""
    return model.to_dict() if hasattr(model, "to_dict") else model


def utf8_sorted(names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: name.encode("utf-8"))


# Namespaces.


def test_namespace_create_get_update_delete(
    cf: Cloudflare, server: ServerProcess, wire: Wire
) -> None:
    account = server.account_id
    title = f"sdk-life-{uuid.uuid4().hex[:12]}"

    created = cf.kv.namespaces.create(account_id=account, title=title)
    request = wire.only()
    assert request.method == "POST"
    assert json.loads(request.content) == {"title": title}
    assert created is not None
    assert created.title == title
    assert len(created.id) == 32 and all(c in "0123456789abcdef" for c in created.id)

    got = cf.kv.namespaces.get(created.id, account_id=account)
    assert got is not None and (got.id, got.title) == (created.id, title)

    renamed = cf.kv.namespaces.update(created.id, account_id=account, title=title + "-renamed")
    assert (renamed.id, renamed.title) == (created.id, title + "-renamed")
    got = cf.kv.namespaces.get(created.id, account_id=account)
    assert got is not None and got.title == title + "-renamed"

    wire.clear()
    cf.kv.namespaces.delete(created.id, account_id=account)
    assert wire.only().method == "DELETE"

    with pytest.raises(cloudflare.NotFoundError) as info:
        cf.kv.namespaces.get(created.id, account_id=account)
    assert error_code(info.value) == 10013
    with pytest.raises(cloudflare.NotFoundError) as info:
        cf.kv.namespaces.delete(created.id, account_id=account)
    assert error_code(info.value) == 10013
    titles = [n.title for n in cf.kv.namespaces.list(account_id=account, per_page=100)]
    assert title + "-renamed" not in titles


def test_namespace_list_single_page(cf: Cloudflare, server: ServerProcess, wire: Wire) -> None:
    account = server.account_id
    run = uuid.uuid4().hex[:8]
    for i in range(7):
        cf.kv.namespaces.create(account_id=account, title=f"sdk-page-{run}-{i}")

    wire.clear()
    page = cf.kv.namespaces.list(
        account_id=account, page=1, per_page=5, order="title", direction="desc"
    )
    request = wire.only()
    assert dict(request.url.params) == {
        "page": "1",
        "per_page": "5",
        "order": "title",
        "direction": "desc",
    }
    titles = [n.title for n in page.result]
    assert len(titles) == 5
    assert titles == sorted(titles, reverse=True)
    assert page.result_info is not None
    assert page.result_info.page == 1
    assert page.result_info.per_page == 5
    # The SDK's model declares only page and per_page; the other fields arrive as extras.
    extra = page.result_info.model_extra or {}
    assert extra["count"] == 5
    total = extra["total_count"]
    assert isinstance(total, int) and total >= 7

    # The last page holds the remainder; the one after it is empty.
    last = math.ceil(total / 5)
    tail = cf.kv.namespaces.list(account_id=account, page=last, per_page=5, order="title")
    assert 1 <= len(tail.result) <= 5
    past = cf.kv.namespaces.list(account_id=account, page=last + 1, per_page=5)
    assert past.result == []

    by_id = cf.kv.namespaces.list(account_id=account, per_page=100, order="id", direction="asc")
    ids = [n.id for n in by_id.result]
    assert ids == sorted(ids)


def test_namespace_list_auto_pagination_terminates(
    cf: Cloudflare, server: ServerProcess, wire: Wire
) -> None:
    account = server.account_id
    run = uuid.uuid4().hex[:8]
    mine = {f"sdk-iter-{run}-{i:02d}" for i in range(12)}
    for title in mine:
        cf.kv.namespaces.create(account_id=account, title=title)

    wire.clear()
    seen = []
    for namespace in cf.kv.namespaces.list(
        account_id=account, per_page=5, order="title", direction="asc"
    ):
        seen.append(namespace)
        assert len(seen) <= 1000, "namespace pagination does not terminate"
    titles = [n.title for n in seen]
    assert mine <= set(titles)
    assert titles == sorted(titles)
    assert len({n.id for n in seen}) == len(seen), "a namespace was listed twice"

    # The SDK asks for page 1 (no page param), 2, 3, ... and stops at the first empty page.
    assert len(wire.requests) == math.ceil(len(seen) / 5) + 1
    assert "page" not in wire.requests[0].url.params
    pages = [r.url.params.get("page") for r in wire.requests[1:]]
    assert pages == [str(n) for n in range(2, len(wire.requests) + 1)]
    assert all(r.url.params["per_page"] == "5" for r in wire.requests)


def test_duplicate_title_is_400_10014_without_retries(
    cf: Cloudflare, server: ServerProcess, wire: Wire
) -> None:
    title = f"sdk-dup-{uuid.uuid4().hex[:12]}"
    cf.kv.namespaces.create(account_id=server.account_id, title=title)
    wire.clear()
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.kv.namespaces.with_raw_response.create(account_id=server.account_id, title=title)
    assert info.value.status_code == 400
    assert error_code(info.value) == 10014
    assert info.value.response.headers["x-should-retry"] == "false"
    assert wire.only().method == "POST"
    titles = [n.title for n in cf.kv.namespaces.list(account_id=server.account_id, per_page=100)]
    assert titles.count(title) == 1

    # Renaming another namespace to a taken title is refused the same way.
    other = cf.kv.namespaces.create(account_id=server.account_id, title=title + "-other")
    assert other is not None
    wire.clear()
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.kv.namespaces.update(other.id, account_id=server.account_id, title=title)
    assert error_code(info.value) == 10014
    assert len(wire.requests) == 1
    got = cf.kv.namespaces.get(other.id, account_id=server.account_id)
    assert got is not None and got.title == title + "-other"


# Bulk operations.


def test_bulk_update_every_item_shape(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    expires_at = int(time.time()) + 7200
    before = int(time.time())
    result = cf.kv.namespaces.bulk_update(
        ns,
        account_id=account,
        body=[
            {"key": "plain", "value": "hello"},
            {
                "key": "binary",
                "value": base64.b64encode(b"\x00\x01\xfe\xff").decode(),
                "base64": True,
            },
            {"key": "ttl", "value": "t", "expiration_ttl": 300},
            {"key": "abs", "value": "a", "expiration": expires_at},
            {"key": "meta", "value": "m", "metadata": {"m": True, "n": [1, "ü"]}},
        ],
    )
    after = int(time.time())
    request = wire.only()
    assert (request.method, request.url.path.rsplit("/", 1)[-1]) == ("PUT", "bulk")
    assert result is not None
    assert result.successful_key_count == 5
    assert result.unsuccessful_keys == []

    def read(key: str) -> bytes:
        return cf.kv.namespaces.values.get(key, account_id=account, namespace_id=ns).read()

    assert read("plain") == b"hello"
    assert read("binary") == b"\x00\x01\xfe\xff"
    assert read("ttl") == b"t"
    assert read("meta") == b"m"
    got = cf.kv.namespaces.values.get("abs", account_id=account, namespace_id=ns)
    assert got.headers["expiration"] == str(expires_at)

    listed = {k.name: k for k in cf.kv.namespaces.keys.list(ns, account_id=account)}
    assert sorted(listed) == ["abs", "binary", "meta", "plain", "ttl"]
    assert listed["abs"].expiration == expires_at
    ttl_expiration = listed["ttl"].expiration
    assert ttl_expiration is not None and before + 300 <= ttl_expiration <= after + 300
    assert listed["meta"].metadata == {"m": True, "n": [1, "ü"]}
    assert listed["plain"].expiration is None and listed["plain"].metadata is None
    assert cf.kv.namespaces.metadata.get("meta", account_id=account, namespace_id=ns) == {
        "m": True,
        "n": [1, "ü"],
    }


def test_bulk_get_text_json_metadata_and_missing(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    expires_at = int(time.time()) + 3600
    cf.kv.namespaces.bulk_update(
        ns,
        account_id=account,
        body=[
            {"key": "num", "value": "42", "metadata": {"kind": "number"}},
            {"key": "obj", "value": '{"a": [1, 2], "b": null}', "expiration": expires_at},
            {"key": "str", "value": '"quoted"'},
        ],
    )

    wire.clear()
    text = cf.kv.namespaces.bulk_get(ns, account_id=account, keys=["num", "obj", "nope"])
    assert json.loads(wire.only().content) == {"keys": ["num", "obj", "nope"]}
    assert plain(text) == {"values": {"num": "42", "obj": '{"a": [1, 2], "b": null}', "nope": None}}

    as_json = cf.kv.namespaces.bulk_get(
        ns, account_id=account, keys=["num", "obj", "str", "nope"], type="json"
    )
    assert plain(as_json) == {
        "values": {"num": 42, "obj": {"a": [1, 2], "b": None}, "str": "quoted", "nope": None}
    }

    wire.clear()
    with_meta = cf.kv.namespaces.bulk_get(
        ns, account_id=account, keys=["num", "obj", "nope"], with_metadata=True
    )
    assert json.loads(wire.only().content) == {
        "keys": ["num", "obj", "nope"],
        "withMetadata": True,
    }
    assert plain(with_meta) == {
        "values": {
            "num": {"value": "42", "metadata": {"kind": "number"}},
            "obj": {
                "value": '{"a": [1, 2], "b": null}',
                "metadata": None,
                "expiration": expires_at,
            },
            "nope": None,
        }
    }

    both = cf.kv.namespaces.bulk_get(
        ns, account_id=account, keys=["num", "nope"], type="json", with_metadata=True
    )
    assert plain(both) == {
        "values": {"num": {"value": 42, "metadata": {"kind": "number"}}, "nope": None}
    }


def test_bulk_delete(cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire) -> None:
    account = server.account_id
    cf.kv.namespaces.bulk_update(
        ns,
        account_id=account,
        body=[{"key": k, "value": k} for k in ["a", "b", "c", *SPECIAL_KEYS]],
    )
    wire.clear()
    result = cf.kv.namespaces.bulk_delete(
        ns, account_id=account, body=["a", "c", "never-existed", *SPECIAL_KEYS]
    )
    request = wire.only()
    assert request.method == "POST" and request.url.path.endswith("/bulk/delete")
    assert json.loads(request.content) == ["a", "c", "never-existed", *SPECIAL_KEYS]
    assert result is not None
    assert result.successful_key_count == 3 + len(SPECIAL_KEYS)
    assert result.unsuccessful_keys == []
    assert [k.name for k in cf.kv.namespaces.keys.list(ns, account_id=account)] == ["b"]


def test_deprecated_keys_bulk_aliases(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    keys = cf.kv.namespaces.keys
    with pytest.deprecated_call():
        written = keys.bulk_update(
            ns,
            account_id=account,
            body=[{"key": "x", "value": "1", "metadata": {"v": 1}}, {"key": "y", "value": "2"}],
        )
    assert wire.requests[-1].method == "PUT"
    assert wire.requests[-1].url.path.endswith(f"/{ns}/bulk")
    assert written is not None and written.successful_key_count == 2
    assert written.unsuccessful_keys == []

    with pytest.deprecated_call():
        got = keys.bulk_get(ns, account_id=account, keys=["x", "y", "z"], with_metadata=True)
    assert wire.requests[-1].url.path.endswith(f"/{ns}/bulk/get")
    assert plain(got) == {
        "values": {
            "x": {"value": "1", "metadata": {"v": 1}},
            "y": {"value": "2", "metadata": None},
            "z": None,
        }
    }
    with pytest.deprecated_call():
        got = keys.bulk_get(ns, account_id=account, keys=["x", "y"], type="json")
    assert plain(got) == {"values": {"x": 1, "y": 2}}

    with pytest.deprecated_call():
        deleted = keys.bulk_delete(ns, account_id=account, body=["x"])
    assert wire.requests[-1].method == "POST"
    assert wire.requests[-1].url.path.endswith(f"/{ns}/bulk/delete")
    assert deleted is not None and deleted.successful_key_count == 1
    assert [k.name for k in keys.list(ns, account_id=account)] == ["y"]


# Keys.


def test_keys_list_prefix_limit_and_cursor_pages(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    # Code-point order is UTF-8 byte order; UTF-16 order would put the emoji before U+FB01,
    # and a case-insensitive order would mix "K" and "k".
    odd = ["k/Z", "k/a", "k/é", "k/ﬁ", "k/😀"]
    names = [f"k/item-{i:02d}" for i in range(20)] + odd
    expires_at = int(time.time()) + 3600
    body: list[Body] = [{"key": name, "value": name} for name in names]
    body[3]["metadata"] = {"n": 3}
    body[4]["expiration"] = expires_at
    body.append({"key": "other", "value": "outside the prefix"})
    body.append({"key": "K/upper", "value": "outside the prefix too"})
    written = cf.kv.namespaces.bulk_update(ns, account_id=account, body=body)
    assert written is not None and written.successful_key_count == 27
    expected = utf8_sorted(names)
    assert len(expected) == 25

    # Page by page, with the SDK's own page objects.
    wire.clear()
    page = cf.kv.namespaces.keys.list(ns, account_id=account, prefix="k/", limit=10)
    assert dict(wire.only().url.params) == {"prefix": "k/", "limit": "10"}
    pages = [page]
    while page.has_next_page():
        page = page.get_next_page()
        pages.append(page)
        assert len(pages) <= 5, "key pagination does not terminate"
    assert [len(p.result) for p in pages] == [10, 10, 5]
    assert [p.result_info.count for p in pages if p.result_info] == [10, 10, 5]
    cursors = [p.result_info.cursor if p.result_info else None for p in pages]
    assert cursors[0] and cursors[1] and cursors[0] != cursors[1]
    assert not cursors[2]
    assert [k.name for p in pages for k in p.result] == expected
    for request, cursor in zip(wire.requests[1:], cursors, strict=False):
        assert request.url.params["cursor"] == cursor
        assert request.url.params["limit"] == "10"
        assert request.url.params["prefix"] == "k/"

    # Auto-pagination: the same 25 keys, three requests, then it stops.
    wire.clear()
    listed = list(cf.kv.namespaces.keys.list(ns, account_id=account, prefix="k/", limit=10))
    assert len(wire.requests) == 3
    assert [k.name for k in listed] == expected
    by_name = {k.name: k for k in listed}
    assert by_name["k/item-03"].metadata == {"n": 3}
    assert by_name["k/item-04"].expiration == expires_at
    assert by_name["k/item-05"].metadata is None and by_name["k/item-05"].expiration is None

    # An explicit cursor taken from a previous page.
    second = cf.kv.namespaces.keys.list(
        ns, account_id=account, prefix="k/", limit=10, cursor=cursors[0]
    )
    assert [k.name for k in second.result] == expected[10:20]

    # No prefix: every key, case-sensitive byte order ("K/..." before "k/...").
    everything = [k.name for k in cf.kv.namespaces.keys.list(ns, account_id=account)]
    assert everything == utf8_sorted([*names, "other", "K/upper"])
    assert [
        k.name for k in cf.kv.namespaces.keys.list(ns, account_id=account, prefix="k/item-1")
    ] == [f"k/item-1{i}" for i in range(10)]
    assert list(cf.kv.namespaces.keys.list(ns, account_id=account, prefix="nothing-here")) == []


# Values and metadata.


def test_values_update_get_delete_and_metadata(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    values = cf.kv.namespaces.values
    blob = bytes(range(256)) * 4

    values.update("bin", account_id=account, namespace_id=ns, value=blob)
    request = wire.only()
    assert request.method == "PUT"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert "expiration" not in request.url.params and "expiration_ttl" not in request.url.params

    wire.clear()
    got = values.get("bin", account_id=account, namespace_id=ns)
    assert wire.only().headers["accept"] == "application/octet-stream"
    assert got.read() == blob
    assert "expiration" not in got.headers
    streamed = values.get("bin", account_id=account, namespace_id=ns)
    assert b"".join(streamed.iter_bytes()) == blob
    assert cf.kv.namespaces.metadata.get("bin", account_id=account, namespace_id=ns) is None

    meta = {"a": 1, "b": "x", "nested": {"ключ": [True, None, 1.5]}}
    values.update(
        "meta", account_id=account, namespace_id=ns, value=b"with metadata", metadata=meta
    )
    assert values.get("meta", account_id=account, namespace_id=ns).read() == b"with metadata"
    assert cf.kv.namespaces.metadata.get("meta", account_id=account, namespace_id=ns) == meta
    # The SDK sends a list as JSON and a number as text/plain; both are JSON metadata.
    values.update("list", account_id=account, namespace_id=ns, value=b"l", metadata=["x", 1])
    assert cf.kv.namespaces.metadata.get("list", account_id=account, namespace_id=ns) == ["x", 1]
    values.update("scalar", account_id=account, namespace_id=ns, value=b"s", metadata=7)
    assert cf.kv.namespaces.metadata.get("scalar", account_id=account, namespace_id=ns) == 7

    before = int(time.time())
    wire.clear()
    values.update("ttl", account_id=account, namespace_id=ns, value=b"t", expiration_ttl=120)
    assert wire.only().url.params["expiration_ttl"] == "120"
    after = int(time.time())
    expiration = int(values.get("ttl", account_id=account, namespace_id=ns).headers["expiration"])
    assert before + 120 <= expiration <= after + 120

    expires_at = int(time.time()) + 3600
    values.update("abs", account_id=account, namespace_id=ns, value=b"a", expiration=expires_at)
    got = values.get("abs", account_id=account, namespace_id=ns)
    assert got.headers["expiration"] == str(expires_at)
    assert got.read() == b"a"

    # Both given: expiration_ttl wins.
    before = int(time.time())
    values.update(
        "both",
        account_id=account,
        namespace_id=ns,
        value=b"b",
        expiration=expires_at,
        expiration_ttl=600,
    )
    after = int(time.time())
    expiration = int(values.get("both", account_id=account, namespace_id=ns).headers["expiration"])
    assert before + 600 <= expiration <= after + 600

    # An overwrite replaces value, metadata and expiration together.
    values.update("abs", account_id=account, namespace_id=ns, value=b"again", metadata={"v": 2})
    got = values.get("abs", account_id=account, namespace_id=ns)
    assert got.read() == b"again" and "expiration" not in got.headers
    assert cf.kv.namespaces.metadata.get("abs", account_id=account, namespace_id=ns) == {"v": 2}

    listed = {k.name: k for k in cf.kv.namespaces.keys.list(ns, account_id=account)}
    assert listed["meta"].metadata == meta
    assert listed["scalar"].metadata == 7
    assert listed["list"].metadata == ["x", 1]
    assert listed["abs"].expiration is None and listed["abs"].metadata == {"v": 2}
    assert listed["ttl"].expiration is not None

    # A str value is refused inside the SDK itself, before any request.
    wire.clear()
    with pytest.raises(RuntimeError):
        values.update("str", account_id=account, namespace_id=ns, value="not bytes")
    assert wire.requests == []

    values.delete("bin", account_id=account, namespace_id=ns)
    with pytest.raises(cloudflare.NotFoundError) as info:
        values.get("bin", account_id=account, namespace_id=ns)
    assert error_code(info.value) == 10009
    # Deleting a key that does not exist succeeds.
    values.delete("bin", account_id=account, namespace_id=ns)
    assert "bin" not in [k.name for k in cf.kv.namespaces.keys.list(ns, account_id=account)]


def test_special_key_names_round_trip(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    values = cf.kv.namespaces.values
    for index, key in enumerate(SPECIAL_KEYS):
        values.update(
            key,
            account_id=account,
            namespace_id=ns,
            value=f"value of {key}".encode(),
            metadata={"index": index, "key": key},
        )
    # The SDK percent-encodes "/", " ", "%", "?", "#" and non-ASCII, and leaves ":" alone.
    paths = [r.url.raw_path.decode("ascii") for r in wire.requests]
    assert paths[1].endswith("/values/my%20key%2Fwith:odd%25chars")
    assert paths[0].endswith("/values/a%2Fb")
    assert paths[4].endswith("/values/q%3Fx%23y")

    for index, key in enumerate(SPECIAL_KEYS):
        got = values.get(key, account_id=account, namespace_id=ns)
        assert got.read() == f"value of {key}".encode(), key
        assert cf.kv.namespaces.metadata.get(key, account_id=account, namespace_id=ns) == {
            "index": index,
            "key": key,
        }

    listed = list(cf.kv.namespaces.keys.list(ns, account_id=account))
    assert [k.name for k in listed] == utf8_sorted(SPECIAL_KEYS)
    assert {k.name: k.metadata for k in listed} == {
        key: {"index": i, "key": key} for i, key in enumerate(SPECIAL_KEYS)
    }
    assert [
        k.name for k in cf.kv.namespaces.keys.list(ns, account_id=account, prefix="my key/")
    ] == ["my key/with:odd%chars"]
    assert [k.name for k in cf.kv.namespaces.keys.list(ns, account_id=account, prefix="emoji")] == [
        "emoji😀"
    ]

    # "a" and "a%2Fb" are other keys than "a/b": nothing is decoded twice.
    for near_miss in ["a", "a%2Fb", "my key", "q"]:
        with pytest.raises(cloudflare.NotFoundError):
            values.get(near_miss, account_id=account, namespace_id=ns)

    for key in SPECIAL_KEYS:
        values.delete(key, account_id=account, namespace_id=ns)
        with pytest.raises(cloudflare.NotFoundError) as info:
            values.get(key, account_id=account, namespace_id=ns)
        assert error_code(info.value) == 10009
    assert list(cf.kv.namespaces.keys.list(ns, account_id=account)) == []


def test_values_update_file_shapes_empty_value_and_no_metadata(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    values = cf.kv.namespaces.values

    values.update("file", account_id=account, namespace_id=ns, value=io.BytesIO(b"from a file"))
    values.update(
        "tuple", account_id=account, namespace_id=ns, value=("notes.txt", b"tuple", "text/plain")
    )
    values.update("empty", account_id=account, namespace_id=ns, value=b"")
    # metadata=None makes the SDK send an empty metadata part: stored without metadata.
    values.update("none", account_id=account, namespace_id=ns, value=b"n", metadata=None)

    assert values.get("file", account_id=account, namespace_id=ns).read() == b"from a file"
    assert values.get("tuple", account_id=account, namespace_id=ns).read() == b"tuple"
    assert values.get("empty", account_id=account, namespace_id=ns).read() == b""
    assert values.get("none", account_id=account, namespace_id=ns).read() == b"n"
    assert cf.kv.namespaces.metadata.get("none", account_id=account, namespace_id=ns) is None
    listed = {k.name: k for k in cf.kv.namespaces.keys.list(ns, account_id=account)}
    assert sorted(listed) == ["empty", "file", "none", "tuple"]
    assert listed["none"].metadata is None


def test_expired_keys_vanish_everywhere(cf: Cloudflare, server: ServerProcess, ns: str) -> None:
    """The test server's expiration floor is 1 s, so a 2 s TTL works; this waits 1-2 s.

    Timing is bounded from the client's side: the server stamps the write between ``before``
    and ``after``, so the key expires at most at ``int(after) + ttl`` and at the earliest at
    ``int(before) + ttl``. Nothing depends on how fast the requests are.
    """
    account = server.account_id
    values = cf.kv.namespaces.values
    ttl = 2
    values.update("long", account_id=account, namespace_id=ns, value=b"l")
    before = time.time()
    values.update(
        "short", account_id=account, namespace_id=ns, value=b"s", expiration_ttl=ttl, metadata={}
    )
    after = time.time()
    listed = {k.name: k for k in cf.kv.namespaces.keys.list(ns, account_id=account)}
    if time.time() < int(before) + ttl:  # certainly not expired yet when it was listed
        assert sorted(listed) == ["long", "short"]
        assert listed["short"].metadata == {}
        expiration = listed["short"].expiration
        assert expiration is not None and int(before) + ttl <= expiration <= int(after) + ttl
    time.sleep(max(0.0, int(after) + ttl - time.time()) + 0.05)

    with pytest.raises(cloudflare.NotFoundError) as info:
        values.get("short", account_id=account, namespace_id=ns)
    assert error_code(info.value) == 10009
    with pytest.raises(cloudflare.NotFoundError):
        cf.kv.namespaces.metadata.get("short", account_id=account, namespace_id=ns)
    assert [k.name for k in cf.kv.namespaces.keys.list(ns, account_id=account)] == ["long"]
    got = cf.kv.namespaces.bulk_get(ns, account_id=account, keys=["short", "long"])
    assert plain(got) == {"values": {"short": None, "long": "l"}}
    got = cf.kv.namespaces.bulk_get(ns, account_id=account, keys=["short"], with_metadata=True)
    assert plain(got) == {"values": {"short": None}}


async def test_async_client_round_trip(server: ServerProcess, ns: str) -> None:
    account = server.account_id
    async with AsyncCloudflare(api_token=server.admin_token, base_url=server.api) as acf:
        kv = acf.kv.namespaces
        namespace = await kv.get(ns, account_id=account)
        assert namespace is not None and namespace.id == ns
        written = await kv.bulk_update(
            ns, account_id=account, body=[{"key": f"a{i:02d}", "value": str(i)} for i in range(12)]
        )
        assert written is not None and written.successful_key_count == 12
        await kv.values.update(
            "a/b c", account_id=account, namespace_id=ns, value=b"v", metadata={"m": 1}
        )
        got = await kv.values.get("a/b c", account_id=account, namespace_id=ns)
        assert await got.read() == b"v"
        assert await kv.metadata.get("a/b c", account_id=account, namespace_id=ns) == {"m": 1}
        names = [k.name async for k in kv.keys.list(ns, account_id=account, limit=10)]
        assert names == utf8_sorted([f"a{i:02d}" for i in range(12)] + ["a/b c"])
        fetched = await kv.bulk_get(ns, account_id=account, keys=["a00", "zz"])
        assert plain(fetched) == {"values": {"a00": "0", "zz": None}}
        await kv.values.delete("a/b c", account_id=account, namespace_id=ns)
        with pytest.raises(cloudflare.NotFoundError):
            await kv.values.get("a/b c", account_id=account, namespace_id=ns)


# Errors.


def test_missing_key_is_404_10009(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    with pytest.raises(cloudflare.NotFoundError) as info:
        cf.kv.namespaces.values.get("absent", account_id=account, namespace_id=ns)
    assert info.value.status_code == 404
    assert error_code(info.value) == 10009
    assert wire.only().method == "GET"
    with pytest.raises(cloudflare.NotFoundError) as info:
        cf.kv.namespaces.metadata.get("absent", account_id=account, namespace_id=ns)
    assert error_code(info.value) == 10009


def test_unknown_namespace_is_404_10013(cf: Cloudflare, server: ServerProcess, wire: Wire) -> None:
    account = server.account_id
    unknown = uuid.uuid4().hex
    calls: dict[str, Callable[[], object]] = {
        "namespaces.get": lambda: cf.kv.namespaces.get(unknown, account_id=account),
        "namespaces.update": lambda: cf.kv.namespaces.update(
            unknown, account_id=account, title="t"
        ),
        "namespaces.delete": lambda: cf.kv.namespaces.delete(unknown, account_id=account),
        "keys.list": lambda: cf.kv.namespaces.keys.list(unknown, account_id=account),
        "values.get": lambda: cf.kv.namespaces.values.get(
            "k", account_id=account, namespace_id=unknown
        ),
        "values.update": lambda: cf.kv.namespaces.values.update(
            "k", account_id=account, namespace_id=unknown, value=b"v"
        ),
        "values.delete": lambda: cf.kv.namespaces.values.delete(
            "k", account_id=account, namespace_id=unknown
        ),
        "metadata.get": lambda: cf.kv.namespaces.metadata.get(
            "k", account_id=account, namespace_id=unknown
        ),
        "bulk_update": lambda: cf.kv.namespaces.bulk_update(
            unknown, account_id=account, body=[{"key": "k", "value": "v"}]
        ),
        "bulk_get": lambda: cf.kv.namespaces.bulk_get(unknown, account_id=account, keys=["k"]),
        "bulk_delete": lambda: cf.kv.namespaces.bulk_delete(
            unknown, account_id=account, body=["k"]
        ),
    }
    for name, call in calls.items():
        wire.clear()
        with pytest.raises(cloudflare.NotFoundError) as info:
            call()
        assert error_code(info.value) == 10013, name
        assert len(wire.requests) == 1, name


def test_bad_token_is_401(server: ServerProcess, wire: Wire) -> None:
    with make_client(server, wire, "not-a-real-token") as bad:
        with pytest.raises(cloudflare.AuthenticationError) as info:
            bad.kv.namespaces.list(account_id=server.account_id)
        assert info.value.status_code == 401
        assert error_code(info.value) == 10000
        assert wire.only().headers["authorization"] == "Bearer not-a-real-token"

        wire.clear()
        with pytest.raises(cloudflare.AuthenticationError):
            bad.kv.namespaces.create(account_id=server.account_id, title="never-created")
        assert len(wire.requests) == 1


def test_value_over_25_mib_is_413_and_not_written(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    too_big = b"x" * (25 * MIB + 1)
    with pytest.raises(cloudflare.APIStatusError) as info:
        cf.kv.namespaces.values.update("big", account_id=account, namespace_id=ns, value=too_big)
    assert info.value.status_code == 413
    assert error_code(info.value) == 10025
    assert len(wire.requests) == 1

    with pytest.raises(cloudflare.NotFoundError):
        cf.kv.namespaces.values.get("big", account_id=account, namespace_id=ns)
    assert list(cf.kv.namespaces.keys.list(ns, account_id=account)) == []

    # Exactly 25 MiB is allowed.
    exact = b"y" * (25 * MIB)
    cf.kv.namespaces.values.update("big", account_id=account, namespace_id=ns, value=exact)
    assert cf.kv.namespaces.values.get("big", account_id=account, namespace_id=ns).read() == exact


def test_limit_errors_reach_the_sdk_and_write_nothing(
    cf: Cloudflare, server: ServerProcess, ns: str, wire: Wire
) -> None:
    account = server.account_id
    values = cf.kv.namespaces.values

    wire.clear()
    with pytest.raises(cloudflare.APIStatusError) as info:
        values.update("k" * 513, account_id=account, namespace_id=ns, value=b"v")
    assert (info.value.status_code, error_code(info.value)) == (414, 10026)
    assert len(wire.requests) == 1
    values.update("k" * 512, account_id=account, namespace_id=ns, value=b"v")

    with pytest.raises(cloudflare.APIStatusError) as info:
        values.update(
            "meta", account_id=account, namespace_id=ns, value=b"v", metadata={"m": "x" * 1100}
        )
    assert (info.value.status_code, error_code(info.value)) == (413, 10027)

    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.kv.namespaces.bulk_get(ns, account_id=account, keys=[f"k{i}" for i in range(101)])
    assert error_code(info.value) == 10029
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.kv.namespaces.keys.list(ns, account_id=account, limit=1001)
    assert error_code(info.value) == 10034

    assert [k.name for k in cf.kv.namespaces.keys.list(ns, account_id=account)] == ["k" * 512]


def test_jurisdiction_is_kept_and_checked(cf: Cloudflare, server: ServerProcess) -> None:
    title = f"eu-{uuid.uuid4().hex[:8]}"
    created = cf.kv.namespaces.create(account_id=server.account_id, title=title, jurisdiction="eu")
    assert created is not None and created.jurisdiction == "eu"
    fetched = cf.kv.namespaces.get(created.id, account_id=server.account_id)
    assert fetched is not None and fetched.jurisdiction == "eu"
    with pytest.raises(cloudflare.BadRequestError, match="Invalid jurisdiction"):
        cf.kv.namespaces.create(
            account_id=server.account_id,
            title=f"mars-{uuid.uuid4().hex[:8]}",
            jurisdiction="mars",  # type: ignore[arg-type]  # refused: that is the test
        )
    cf.kv.namespaces.delete(created.id, account_id=server.account_id)


def test_integral_float_parameters_are_accepted(
    cf: Cloudflare, server: ServerProcess, ns: str
) -> None:
    """The SDK types numbers as floats; 120.0 must mean 120 (a fraction stays an error)."""
    cf.kv.namespaces.values.update(
        "f", account_id=server.account_id, namespace_id=ns, value=b"v", expiration_ttl=120.0
    )
    page = cf.kv.namespaces.keys.list(ns, account_id=server.account_id, limit=10.0)
    assert [k.name for k in page.result] == ["f"]
    with pytest.raises(cloudflare.BadRequestError, match="expected an integer"):
        cf.kv.namespaces.values.update(
            "f", account_id=server.account_id, namespace_id=ns, value=b"v", expiration_ttl=120.5
        )
