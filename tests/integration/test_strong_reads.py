"""Strong reads (``Cache-Control: no-cache``) and ETags, with real origin and edge processes.

A write made at the origin is invisible to a cached read at an edge until the cache TTL runs
out, but a strong read asks the origin (through every tier) and sees it at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import EdgeProcess, ServerProcess

# A long TTL and refresh interval, and no change feed: any answer not from the origin comes
# from the cache (strong reads are for when the feed's second is too long, or it is lost).
EDGE_FLAGS = [
    *("--default-cache-ttl", "600", "--refresh-interval", "600", "--upstream-timeout", "2"),
    *("--invalidation", "off"),
]
NO_CACHE = {"Cache-Control": "no-cache"}
Node = ServerProcess | EdgeProcess


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = Path(tmp_path_factory.mktemp("origin")) / "data"
    proc = ServerProcess(data, role="origin").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edge(origin: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    proc = EdgeProcess(
        Path(tmp_path_factory.mktemp("edge")),
        origin.url,
        origin.admin_token,
        origin.master_key,
        args=EDGE_FLAGS,
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def lower(
    origin: ServerProcess, edge: EdgeProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EdgeProcess]:
    """An edge below ``edge`` (origin -> edge -> lower)."""
    proc = EdgeProcess(
        Path(tmp_path_factory.mktemp("lower")),
        edge.url,
        origin.admin_token,
        origin.master_key,
        args=EDGE_FLAGS,
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def ns(origin: ServerProcess) -> str:
    response = httpx.post(
        origin.namespaces_url,
        json={"title": f"strong-{uuid.uuid4().hex[:10]}"},
        headers=origin.headers(),
    )
    return str(response.json()["result"]["id"])


def url(node: Node, ns: str, key: str) -> str:
    return f"{node.namespaces_url}/{ns}/values/{key}"


def get(
    origin: ServerProcess, node: Node, ns: str, key: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.get(url(node, ns, key), headers={**origin.headers(), **(headers or {})})


def put(origin: ServerProcess, ns: str, key: str, value: bytes) -> int:
    """Write at the origin; the new version, read back there."""
    assert httpx.put(url(origin, ns, key), headers=origin.headers(), content=value).is_success
    return etag_version(get(origin, origin, ns, key))


def etag_version(response: httpx.Response) -> int:
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"'), etag
    return int(etag[1:-1])


def binding_get(
    origin: ServerProcess, node: Node, ns: str, key: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    binding = {**origin.headers(), "X-PullKV-Namespace": ns, **(headers or {})}
    return httpx.get(f"{node.url}/{key}", params={"urlencoded": "true"}, headers=binding)


def hot_count(origin: ServerProcess, node: EdgeProcess) -> float:
    return node.metric("pullkv_hot_responses_total", origin.admin_token)


@pytest.mark.parametrize("tier", ["edge", "lower"])
def test_strong_read_sees_a_write_a_cached_read_does_not(
    origin: ServerProcess, edge: EdgeProcess, lower: EdgeProcess, ns: str, tier: str
) -> None:
    node = edge if tier == "edge" else lower
    first = put(origin, ns, "k", b"v1")
    assert get(origin, node, ns, "k").content == b"v1"  # fills the cache (every tier)
    second = put(origin, ns, "k", b"v2")
    assert second > first
    cached = get(origin, node, ns, "k")
    assert cached.content == b"v1" and etag_version(cached) == first
    assert "fwd=request" not in cached.headers["cache-status"]
    strong = get(origin, node, ns, "k", NO_CACHE)
    assert strong.status_code == 200 and strong.content == b"v2"
    assert etag_version(strong) == second
    assert "fwd=request" in strong.headers["cache-status"]
    # The strong read refreshed the cache: plain reads now see the new version too.
    after = get(origin, node, ns, "k")
    assert after.content == b"v2" and etag_version(after) == second
    # Unchanged since: still one round trip, answered with the same version.
    again = get(origin, node, ns, "k", {"Cache-Control": "max-age=0, No-Cache"})
    assert etag_version(again) == second and "fwd=request" in again.headers["cache-status"]


def test_strong_read_sees_a_delete(origin: ServerProcess, lower: EdgeProcess, ns: str) -> None:
    put(origin, ns, "gone", b"v1")
    assert get(origin, lower, ns, "gone").status_code == 200
    assert httpx.delete(url(origin, ns, "gone"), headers=origin.headers()).is_success
    assert get(origin, lower, ns, "gone").status_code == 200  # cached
    strong = get(origin, lower, ns, "gone", NO_CACHE)
    assert strong.status_code == 404 and "fwd=request" in strong.headers["cache-status"]
    assert "etag" not in strong.headers


def test_the_hot_path_never_answers_a_strong_read(
    origin: ServerProcess, edge: EdgeProcess, ns: str
) -> None:
    version = put(origin, ns, "hot", b"v1")
    get(origin, edge, ns, "hot")  # fills the cache
    before = hot_count(origin, edge)
    hot = get(origin, edge, ns, "hot")
    assert hot_count(origin, edge) == before + 1
    assert etag_version(hot) == version  # the hot path's ETag
    strong = get(origin, edge, ns, "hot", NO_CACHE)
    assert hot_count(origin, edge) == before + 1
    assert etag_version(strong) == version and "fwd=request" in strong.headers["cache-status"]


def test_etag_is_the_version_everywhere(origin: ServerProcess, edge: EdgeProcess, ns: str) -> None:
    version = put(origin, ns, "e", b"value")
    assert etag_version(get(origin, origin, ns, "e")) == version
    ordinary = get(origin, edge, ns, "e")  # a miss: the ordinary path
    assert etag_version(ordinary) == version
    hot = get(origin, edge, ns, "e")
    assert etag_version(hot) == version
    metadata = httpx.get(f"{edge.namespaces_url}/{ns}/metadata/e", headers=origin.headers())
    assert metadata.status_code == 200 and etag_version(metadata) == version
    for node in (origin, edge):
        binding = binding_get(origin, node, ns, "e")
        assert binding.status_code == 200 and etag_version(binding) == version
        assert etag_version(binding_get(origin, node, ns, "e")) == version  # hot at the edge
    # After a write the ETag moves with the version, and a strong binding read sees it.
    newer = put(origin, ns, "e", b"newer")
    assert newer > version
    assert etag_version(binding_get(origin, edge, ns, "e")) == version  # cached
    strong = binding_get(origin, edge, ns, "e", NO_CACHE)
    assert strong.content == b"newer" and etag_version(strong) == newer
    assert etag_version(get(origin, edge, ns, "e")) == newer
