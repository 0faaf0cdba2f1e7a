"""Conditional writes on real processes: ETag, If-Match and If-None-Match on a serving origin
and through edges (forwarded to the origin), the 412 envelope, and a compare-and-swap counter
that loses no increment when 100 clients race over three edges."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullkv import AsyncClient, Client, PreconditionFailedError
from pullkv.errors import PRECONDITION_FAILED
from tests.support import ACCOUNT_ID, EdgeProcess, ServerProcess

EDGE_FLAGS = ["--default-cache-ttl", "30", "--min-cache-ttl", "1", "--upstream-timeout", "5"]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = Path(tmp_path_factory.mktemp("origin")) / "data"
    proc = ServerProcess(data, role="origin").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edges(
    origin: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[EdgeProcess]]:
    started: list[EdgeProcess] = []
    try:
        for _ in range(3):
            log_dir = Path(tmp_path_factory.mktemp("edge"))
            edge = EdgeProcess(
                log_dir, origin.url, origin.admin_token, origin.master_key, args=EDGE_FLAGS
            )
            started.append(edge)
            edge.start()
        yield started
    finally:
        for edge in started:
            edge.stop()


@pytest.fixture
def ns(origin: ServerProcess) -> str:
    response = httpx.post(
        origin.namespaces_url,
        json={"title": f"cas-{uuid.uuid4().hex[:10]}"},
        headers=origin.headers(),
    )
    return str(response.json()["result"]["id"])


def value_url(node: ServerProcess | EdgeProcess, ns: str, key: str) -> str:
    return f"{node.namespaces_url}/{ns}/values/{key}"


def check_semantics(origin: ServerProcess, node: ServerProcess | EdgeProcess, ns: str) -> None:
    """The conditional-write contract, asked of ``node`` (the origin or an edge)."""
    url = value_url(node, ns, "k")
    auth = origin.headers()

    created = httpx.put(url, content=b"one", headers={**auth, "If-None-Match": "*"})
    assert created.status_code == 200, created.text
    first = created.headers["etag"]
    assert first.startswith('"') and first.endswith('"') and first[1:-1].isdigit()

    again = httpx.put(url, content=b"two", headers={**auth, "If-None-Match": "*"})
    assert again.status_code == 412
    assert again.headers["etag"] == first
    body = again.json()
    assert body["success"] is False and body["result"] is None
    assert body["errors"][0]["code"] == PRECONDITION_FAILED

    updated = httpx.put(url, content=b"two", headers={**auth, "If-Match": first})
    assert updated.status_code == 200, updated.text
    second = updated.headers["etag"]
    assert int(second[1:-1]) > int(first[1:-1])

    stale = httpx.put(url, content=b"three", headers={**auth, "If-Match": first})
    assert stale.status_code == 412
    assert stale.headers["etag"] == second
    assert stale.json()["errors"][0]["code"] == PRECONDITION_FAILED

    refused_delete = httpx.delete(url, headers={**auth, "If-Match": first})
    assert refused_delete.status_code == 412
    assert refused_delete.headers["etag"] == second

    # Nothing refused changed anything, at the origin and at this node.
    for reader in (origin, node):
        read = httpx.get(value_url(reader, ns, "k"), headers=auth)
        assert (read.status_code, read.content) == (200, b"two")

    deleted = httpx.delete(url, headers={**auth, "If-Match": second})
    assert deleted.status_code == 200, deleted.text
    gone = httpx.put(url, content=b"x", headers={**auth, "If-Match": second})
    assert gone.status_code == 412
    assert "etag" not in gone.headers  # the key does not exist: no current ETag

    unconditional = httpx.put(url, content=b"plain", headers=auth)
    assert unconditional.status_code == 200 and "etag" in unconditional.headers

    for bad in ({"If-Match": "*"}, {"If-Match": 'W/"1"'}, {"If-None-Match": '"1"'}):
        refused = httpx.put(url, content=b"x", headers={**auth, **bad})
        assert refused.status_code == 400, bad


def test_semantics_on_the_origin(origin: ServerProcess, ns: str) -> None:
    check_semantics(origin, origin, ns)


def test_semantics_through_an_edge(
    origin: ServerProcess, edges: list[EdgeProcess], ns: str
) -> None:
    check_semantics(origin, edges[0], ns)


def test_refused_write_evicts_the_edges_stale_copy(
    origin: ServerProcess, edges: list[EdgeProcess], ns: str
) -> None:
    """An edge that cached an older version learns from the 412 that it is stale: the next
    read there fetches the current value instead of serving the old one until its TTL."""
    auth = origin.headers()
    edge, other = edges[0], edges[1]
    first = httpx.put(value_url(edge, ns, "c"), content=b"old", headers=auth).headers["etag"]
    assert httpx.get(value_url(edge, ns, "c"), headers=auth).content == b"old"
    httpx.put(value_url(other, ns, "c"), content=b"new", headers=auth).raise_for_status()
    refused = httpx.put(
        value_url(edge, ns, "c"), content=b"mine", headers={**auth, "If-Match": first}
    )
    assert refused.status_code == 412
    assert httpx.get(value_url(edge, ns, "c"), headers=auth).content == b"new"


def test_sync_client(origin: ServerProcess, edges: list[EdgeProcess], ns: str) -> None:
    with Client(edges[1].url, origin.admin_token, account_id=ACCOUNT_ID) as client:
        space = client.namespace(ns)
        etag = space.put("s", "a", if_absent=True)
        assert etag is not None
        with pytest.raises(PreconditionFailedError) as info:
            space.put("s", "b", if_absent=True)
        assert info.value.status == 412 and info.value.etag == etag
        newer = space.put("s", "b", if_match=etag)
        with pytest.raises(PreconditionFailedError):
            space.delete("s", if_match=etag)
        assert space.update("s", lambda old: old + "c") == "bc"
        read = space.get_with_metadata("s")
        assert read.value == "bc" and read.etag not in (None, etag, newer)
        assert space.update("fresh", lambda old: "1" if old is None else old + "!") == "1"
        space.delete("s", if_match=read.etag)
        assert space.get("s") is None


def test_hundred_concurrent_increments_over_three_edges(
    origin: ServerProcess, edges: list[EdgeProcess], ns: str
) -> None:
    async def race() -> None:
        clients = [AsyncClient(e.url, origin.admin_token, account_id=ACCOUNT_ID) for e in edges]
        try:
            spaces = [await c.namespace(ns) for c in clients]

            def increment(old: str | None) -> str:
                return str(int(old or "0") + 1)

            await asyncio.gather(
                *(spaces[i % 3].update("counter", increment, max_attempts=200) for i in range(100))
            )
        finally:
            for client in clients:
                await client.aclose()

    asyncio.run(race())
    final = httpx.get(value_url(origin, ns, "counter"), headers=origin.headers())
    assert final.content == b"100"


def test_binding_protocol_through_an_edge(
    origin: ServerProcess, edges: list[EdgeProcess], ns: str
) -> None:
    """The workerd binding protocol takes the same conditions and answers with the ETag."""
    headers = {**origin.headers(), "x-pullkv-namespace": ns}
    url = f"{edges[2].url}/b?urlencoded=true"
    created = httpx.put(url, content=b"1", headers={**headers, "If-None-Match": "*"})
    assert created.status_code == 200, created.text
    etag = created.headers["etag"]
    refused = httpx.put(url, content=b"2", headers={**headers, "If-None-Match": "*"})
    assert refused.status_code == 412 and refused.headers["etag"] == etag
    refused_delete = httpx.delete(url, headers={**headers, "If-Match": '"1"'})
    assert refused_delete.status_code == 412
    deleted = httpx.delete(url, headers={**headers, "If-Match": etag})
    assert deleted.status_code == 200
