"""The Python client (sync and async) against a real server."""

from __future__ import annotations

import time
import uuid

import pytest

from pullkv import (
    AsyncClient,
    AuthenticationFailed,
    BadRequestError,
    Client,
    NotFoundError,
    ValueWithMetadata,
)
from tests.support import ServerProcess


def test_binding_shape_sync(client: Client) -> None:
    title = f"client-{uuid.uuid4().hex[:8]}"
    created = client.create_namespace(title)
    ns = client.namespace(title)  # by title
    assert ns.id == created["id"] and client.namespace(created["id"]).id == ns.id

    ns.put("text", "héllo")
    ns.put("json", '{"a": [1, 2]}', metadata={"kind": "json"}, expiration_ttl=300)
    ns.put("bin", b"\x00\xff\x10")
    assert ns.get("text") == "héllo"
    assert ns.get("json", "json") == {"a": [1, 2]}
    assert ns.get("bin", "bytes") == b"\x00\xff\x10"
    assert b"".join(ns.get("bin", "stream")) == b"\x00\xff\x10"
    assert ns.get("missing") is None and ns.get("missing", "stream") is None
    assert ns.get("text", cache_ttl=30) == "héllo"

    with_meta = ns.get_with_metadata("json", "json")
    assert with_meta.value == {"a": [1, 2]} and with_meta.metadata == {"kind": "json"}
    assert with_meta.expiration is not None and with_meta.expiration > time.time()
    assert ns.get_with_metadata("text").metadata is None
    assert ns.get_with_metadata("missing") == ValueWithMetadata(None, None)

    assert ns.get(["text", "json", "missing"]) == {
        "text": "héllo",
        "json": '{"a": [1, 2]}',
        "missing": None,
    }
    bulk = ns.get_with_metadata(["json", "missing"], "json")
    assert bulk["json"].metadata == {"kind": "json"} and bulk["missing"] is None

    first = ns.list(limit=2)
    assert [k["name"] for k in first.keys] == ["bin", "json"] and not first.list_complete
    rest = ns.list(cursor=first.cursor)
    assert [k["name"] for k in rest.keys] == ["text"] and rest.list_complete and rest.cursor is None
    assert ns.list(prefix="js").keys[0]["metadata"] == {"kind": "json"}

    ns.delete("text")
    ns.delete("never-existed")
    assert ns.get("text") is None
    client.delete_namespace(title)
    with pytest.raises(NotFoundError) as raised:
        client.namespace(title)
    assert raised.value.code == 10013


def test_typed_errors(client: Client, namespace_id: str) -> None:
    ns = client.namespace(namespace_id)
    with pytest.raises(BadRequestError) as too_long:
        ns.put("k" * 513, "v")
    assert too_long.value.status == 414 and "exceeds key length limit" in too_long.value.message
    with pytest.raises(BadRequestError) as bad_ttl:
        ns.get("k", cache_ttl=5)
    assert bad_ttl.value.code >= 10000 and "Cache TTL must be at least 30" in bad_ttl.value.message
    with pytest.raises(BadRequestError, match="Metadata length"):
        ns.put("k", "v", metadata={"x": "y" * 2000})
    with pytest.raises(ValueError):
        ns.put("..", "v")


def test_wrong_token(server: ServerProcess) -> None:
    with (
        Client(server.url, "nope", account_id=server.account_id) as bad,
        pytest.raises(AuthenticationFailed) as raised,
    ):
        bad.list_namespaces()
    assert raised.value.code == 10000


def test_account_is_discovered_from_the_token(server: ServerProcess) -> None:
    with Client(server.url, server.admin_token) as discovering:
        assert discovering.account_id == server.account_id


async def test_binding_shape_async(server: ServerProcess) -> None:
    async with AsyncClient(server.url, server.admin_token) as client:
        title = f"async-{uuid.uuid4().hex[:8]}"
        await client.create_namespace(title)
        ns = await client.namespace(title)
        await ns.put("a", "1", metadata={"n": 1})
        await ns.put("b", b"\x01\x02")
        assert await ns.get("a", "json") == 1
        stream = await ns.get("b", "stream")
        assert stream is not None
        assert b"".join([chunk async for chunk in stream]) == b"\x01\x02"
        assert (await ns.get_with_metadata("a")).metadata == {"n": 1}
        assert await ns.get(["a", "zz"]) == {"a": "1", "zz": None}
        page = await ns.list()
        assert [k["name"] for k in page.keys] == ["a", "b"] and page.list_complete
        assert (await ns.bulk_put([{"key": "c", "value": "3"}]))["successful_key_count"] == 1
        assert (await ns.bulk_delete(["a", "c"]))["successful_key_count"] == 2
        await ns.delete("b")
        assert (await ns.list()).keys == []
        await client.delete_namespace(title)
        with pytest.raises(NotFoundError):
            await client.namespace(title)
