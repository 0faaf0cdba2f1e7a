"""The Python client (sync and async) against an in-process node: no sockets, no subprocess.

A ``serve`` node is started on a temporary data folder the way the server process starts it
(``start_node``, then the app's lifespan), and the clients reach its ASGI app through
``httpx.ASGITransport``. The sync client runs in a worker thread, its requests handed to the
app on the test's event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from pullkv import (
    AsyncClient,
    AuthenticationFailed,
    BadRequestError,
    Client,
    NotFoundError,
    ValueWithMetadata,
)
from pullkv.http.app import App
from pullkv.http.lifespan import Lifespan
from pullkv.limits import DEFAULT_LIMITS
from pullkv.node import NodeConfig, start_node

ACCOUNT_ID = "c11e0000000000000000000000000c11"
TOKEN = "client-test-admin-token"
# A fixed master key (32 zero bytes, base64): the data folder is thrown away.
MASTER_KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
URL = "http://kv.test"

T = TypeVar("T")


class SyncASGITransport(httpx.BaseTransport):
    """``httpx.ASGITransport`` for a sync client in another thread than the app's loop."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()  # the body as bytes, which the async transport can stream too

        async def call() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=30)


@dataclass
class Node:
    """The in-process node and the transports that reach it."""

    app: App
    loop: asyncio.AbstractEventLoop

    def client(self, token: str = TOKEN, account_id: str | None = ACCOUNT_ID) -> Client:
        """A sync client; use it only from a worker thread (see ``in_thread``)."""
        transport = SyncASGITransport(self.app, self.loop)
        return Client(URL, token, account_id=account_id, transport=transport)

    def async_client(self, account_id: str | None = ACCOUNT_ID) -> AsyncClient:
        """An async client on the test's loop."""
        transport = httpx.ASGITransport(app=self.app)
        return AsyncClient(URL, TOKEN, account_id=account_id, transport=transport)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(
        data_dir=tmp_path / "data",
        role="serve",
        account_id=ACCOUNT_ID,
        # Scenarios rewrite a key within the second (the rate has tests of its own).
        limits=dataclasses.replace(DEFAULT_LIMITS, writes_per_key_per_second=0),
        environ={"PULLKV_ADMIN_TOKEN": TOKEN, "PULLKV_MASTER_KEY": MASTER_KEY},
    )
    started = await start_node(config)
    lifespan = Lifespan(started.app, {})
    await lifespan.startup()
    try:
        yield Node(started.app, asyncio.get_running_loop())
    finally:
        await lifespan.shutdown()


async def in_thread(scenario: Callable[[], T]) -> T:
    """Run a sync client's scenario in a worker thread while the loop serves the app."""
    return await asyncio.to_thread(scenario)


async def test_binding_shape_sync(node: Node) -> None:
    def scenario() -> None:
        with node.client() as client:
            created = client.create_namespace("sync")
            ns = client.namespace("sync")  # by title
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
            assert ns.metadata("json") == {"kind": "json"}

            assert ns.get(["text", "json", "missing"]) == {
                "text": "héllo",
                "json": '{"a": [1, 2]}',
                "missing": None,
            }
            bulk = ns.get_with_metadata(["json", "missing"], "json")
            assert bulk["json"].metadata == {"kind": "json"} and bulk["missing"] is None

            first = ns.list(limit=2)
            assert [k["name"] for k in first.keys] == ["bin", "json"]
            assert not first.list_complete
            rest = ns.list(cursor=first.cursor)
            assert [k["name"] for k in rest.keys] == ["text"]
            assert rest.list_complete and rest.cursor is None
            assert ns.list(prefix="js").keys[0]["metadata"] == {"kind": "json"}

            assert ns.bulk_put([{"key": "c", "value": "3"}])["successful_key_count"] == 1
            assert ns.bulk_delete(["c", "bin"])["successful_key_count"] == 2
            ns.delete("text")
            ns.delete("never-existed")
            assert ns.get("text") is None

            renamed = client.rename_namespace("sync", "sync-renamed")
            assert renamed["title"] == "sync-renamed"
            assert [n["title"] for n in client.list_namespaces()] == ["sync-renamed"]
            client.delete_namespace("sync-renamed")
            with pytest.raises(NotFoundError) as raised:
                client.namespace("sync-renamed")
            assert raised.value.code == 10013

    await in_thread(scenario)


async def test_typed_errors(node: Node) -> None:
    def scenario() -> None:
        with node.client() as client:
            ns = client.namespace(client.create_namespace("errors")["id"])
            with pytest.raises(BadRequestError) as too_long:
                ns.put("k" * 513, "v")
            assert too_long.value.status == 414
            assert "exceeds key length limit" in too_long.value.message
            with pytest.raises(BadRequestError) as bad_ttl:
                ns.get("k", cache_ttl=5)
            assert "Cache TTL must be at least 30" in bad_ttl.value.message
            with pytest.raises(BadRequestError, match="Metadata length"):
                ns.put("k", "v", metadata={"x": "y" * 2000})
            with pytest.raises(ValueError):
                ns.put("..", "v")  # refused by the client before any request

    await in_thread(scenario)


async def test_wrong_token(node: Node) -> None:
    def scenario() -> None:
        with node.client("nope") as bad, pytest.raises(AuthenticationFailed) as raised:
            bad.list_namespaces()
        assert raised.value.code == 10000

    await in_thread(scenario)


async def test_account_is_discovered_from_the_token(node: Node) -> None:
    def scenario() -> str:
        with node.client(account_id=None) as discovering:
            return discovering.account_id

    assert await in_thread(scenario) == ACCOUNT_ID
    async with node.async_client(account_id=None) as client:
        assert (await client.account()).account_id == ACCOUNT_ID


async def test_tokens(node: Node) -> None:
    def scenario() -> None:
        with node.client() as client:
            namespace_id = client.create_namespace("scoped")["id"]
            created = client.create_token("reader", namespaces=[namespace_id], read_only=True)
            assert created["value"] and created["id"] in {t["id"] for t in client.list_tokens()}
            with node.client(created["value"]) as reader:
                ns = reader.namespace(namespace_id)
                assert ns.get("absent") is None
            client.revoke_token(created["id"])
            with node.client(created["value"]) as revoked, pytest.raises(AuthenticationFailed):
                revoked.namespace(namespace_id).get("absent")

    await in_thread(scenario)


async def test_binding_shape_async(node: Node) -> None:
    async with node.async_client() as client:
        await client.create_namespace("async")
        ns = await client.namespace("async")
        await ns.put("a", "1", metadata={"n": 1})
        await ns.put("b", b"\x01\x02")
        assert await ns.get("a", "json") == 1
        stream = await ns.get("b", "stream")
        assert stream is not None
        assert b"".join([chunk async for chunk in stream]) == b"\x01\x02"
        assert await ns.get("missing", "stream") is None
        assert (await ns.get_with_metadata("a")).metadata == {"n": 1}
        assert await ns.metadata("a") == {"n": 1}
        assert await ns.get(["a", "zz"]) == {"a": "1", "zz": None}
        page = await ns.list()
        assert [k["name"] for k in page.keys] == ["a", "b"] and page.list_complete
        assert (await ns.bulk_put([{"key": "c", "value": "3"}]))["successful_key_count"] == 1
        assert (await ns.bulk_delete(["a", "c"]))["successful_key_count"] == 2
        await ns.delete("b")
        assert (await ns.list()).keys == []
        renamed = await client.rename_namespace("async", "async-renamed")
        assert renamed["title"] == "async-renamed"
        await client.delete_namespace("async-renamed")
        with pytest.raises(NotFoundError):
            await client.namespace("async-renamed")
        with pytest.raises(BadRequestError):
            await ns.get("k", cache_ttl=5)
