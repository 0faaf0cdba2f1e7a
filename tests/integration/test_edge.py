"""Origins and edges as real processes on loopback: the read and write paths of DESIGN.md.

Edges run with short cache TTLs (2 s default, refresh after 1 s) so staleness windows are
observed in seconds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ACCOUNT_ID, EdgeProcess, ServerProcess

EDGE_FLAGS = [
    "--default-cache-ttl",
    "2",
    "--min-cache-ttl",
    "1",
    "--refresh-interval",
    "1",
    "--max-stale",
    "30",
    "--upstream-timeout",
    "1",
    "--min-expiration-ttl",
    "1",
]
FETCHES = ("pullkv_request_duration_seconds_count", {"route": "internal.fetch"})


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = Path(tmp_path_factory.mktemp("origin")) / "data"
    proc = ServerProcess(data, role="origin", args=["--min-expiration-ttl", "1"]).start()
    yield proc
    proc.stop()


class Edges:
    """Starts edges for one test and stops them all afterwards."""

    def __init__(self, origin: ServerProcess, log_dir: Path) -> None:
        self.origin = origin
        self.log_dir = log_dir
        self.started: list[EdgeProcess] = []

    def start(self, upstream: str | None = None, *extra: str) -> EdgeProcess:
        edge = EdgeProcess(
            self.log_dir,
            upstream or self.origin.url,
            self.origin.admin_token,
            self.origin.master_key,
            args=[*EDGE_FLAGS, *extra],
        )
        self.started.append(edge)
        edge.start()
        return edge


@pytest.fixture
def edges(origin: ServerProcess, tmp_path: Path) -> Iterator[Edges]:
    made = Edges(origin, tmp_path)
    yield made
    for edge in made.started:
        edge.stop()


@pytest.fixture
def ns(origin: ServerProcess) -> str:
    response = httpx.post(
        origin.namespaces_url,
        json={"title": f"edge-{uuid.uuid4().hex[:10]}"},
        headers=origin.headers(),
    )
    return str(response.json()["result"]["id"])


def url(node: ServerProcess | EdgeProcess, ns: str, key: str) -> str:
    return f"{node.namespaces_url}/{ns}/values/{key}"


def get(
    origin: ServerProcess, node: ServerProcess | EdgeProcess, ns: str, key: str, **params: str
) -> httpx.Response:
    return httpx.get(url(node, ns, key), headers=origin.headers(), params=params or None)


def put(
    origin: ServerProcess, node: ServerProcess | EdgeProcess, ns: str, key: str, value: bytes
) -> httpx.Response:
    return httpx.put(url(node, ns, key), headers=origin.headers(), content=value)


def fetches(origin: ServerProcess) -> float:
    name, labels = FETCHES
    return origin.metric(name, origin.admin_token, **labels)


def wait_until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_hot_read_needs_no_upstream(origin: ServerProcess, edges: Edges, ns: str) -> None:
    # A refresh interval longer than the test: on a loaded machine 20 reads can take over a
    # second, and a read in the refresh window rightly revalidates.
    edge = edges.start(None, "--refresh-interval", "60")
    assert put(origin, origin, ns, "hot", b"value").status_code == 200
    first = get(origin, edge, ns, "hot", cache_ttl="60")
    assert first.content == b"value"
    assert "fwd=miss" in first.headers["cache-status"]
    before = fetches(origin)
    for _ in range(20):
        response = get(origin, edge, ns, "hot", cache_ttl="60")
        assert response.content == b"value"
        assert response.headers["cache-status"].startswith("pullkv-edge; hit")
        assert int(response.headers["age"]) >= 0
    assert fetches(origin) == before


def test_negative_caching_update_and_delete(origin: ServerProcess, edges: Edges, ns: str) -> None:
    # Without the change feed: the TTLs alone bring other locations' writes (the feed's own
    # tests are in test_feed.py).
    a = edges.start(None, "--location", "a", "--invalidation", "off")
    b = edges.start(None, "--location", "b", "--invalidation", "off")
    missing = get(origin, b, ns, "k")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == 10009
    assert put(origin, a, ns, "k", b"v1").status_code == 200
    assert get(origin, a, ns, "k").content == b"v1"  # the writer's location sees it at once
    cached_miss = get(origin, b, ns, "k")
    assert cached_miss.status_code == 404 and "hit" in cached_miss.headers["cache-status"]
    wait_until(lambda: get(origin, b, ns, "k").content == b"v1", timeout=6)

    assert put(origin, a, ns, "k", b"v2").status_code == 200
    assert get(origin, b, ns, "k").content == b"v1"  # still the cached value
    wait_until(lambda: get(origin, b, ns, "k").content == b"v2", timeout=6)

    assert httpx.delete(url(a, ns, "k"), headers=origin.headers()).status_code == 200
    assert get(origin, a, ns, "k").status_code == 404  # tombstone at the writer
    assert get(origin, b, ns, "k").content == b"v2"
    wait_until(lambda: get(origin, b, ns, "k").status_code == 404, timeout=6)


def test_read_your_writes_at_the_writing_edge(origin: ServerProcess, edges: Edges, ns: str) -> None:
    edge = edges.start()
    for round_ in range(5):
        value = f"v{round_}".encode()
        assert put(origin, edge, ns, "mine", value).status_code == 200
        response = get(origin, edge, ns, "mine", cache_ttl="60")
        assert response.content == value
        assert "hit" in response.headers["cache-status"]


def test_background_refresh_keeps_hot_keys_fresh(
    origin: ServerProcess, edges: Edges, ns: str
) -> None:
    # 300 ms added to every upstream exchange: a read that waited for it would show. No feed:
    # the background refresh alone brings the change (with it, the change's invalidation does).
    edge = edges.start(None, "--upstream-latency-ms", "300", "--invalidation", "off")
    put(origin, origin, ns, "steady", b"old")
    assert get(origin, edge, ns, "steady", cache_ttl="3600").content == b"old"
    put(origin, origin, ns, "steady", b"new")
    seen_new_at = None
    started = time.monotonic()
    slowest = 0.0
    while time.monotonic() - started < 6:
        t0 = time.monotonic()
        response = get(origin, edge, ns, "steady", cache_ttl="3600")
        slowest = max(slowest, time.monotonic() - t0)
        assert "hit" in response.headers["cache-status"]
        if response.content == b"new":
            seen_new_at = time.monotonic() - started
            break
        time.sleep(0.05)
    assert seen_new_at is not None, "the change never arrived"
    # Within the refresh interval (1 s) plus the revalidation's own round trip and one read.
    assert seen_new_at < 1 + 0.3 * 2 + 1.5
    assert slowest < 0.25, f"a reader waited for the upstream ({slowest:.3f} s)"


def test_single_flight(origin: ServerProcess, edges: Edges, ns: str) -> None:
    # A generous timeout: 200 connections at once on a loaded machine can delay the one
    # upstream fetch past EDGE_FLAGS' 1 s, which would (rightly) answer 503.
    edge = edges.start(None, "--upstream-latency-ms", "200", "--upstream-timeout", "10")
    put(origin, origin, ns, "cold", b"x" * 1024)
    before = fetches(origin)

    async def storm() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(headers=origin.headers(), limits=limits, timeout=30) as c:
            return await asyncio.gather(*(c.get(url(edge, ns, "cold")) for _ in range(200)))

    responses = asyncio.run(storm())
    assert all(r.status_code == 200 and r.content == b"x" * 1024 for r in responses)
    assert fetches(origin) == before + 1
    assert any("collapsed" in r.headers["cache-status"] for r in responses)


def test_stale_if_error_and_recovery(tmp_path: Path) -> None:
    origin = ServerProcess(
        tmp_path / "origin",
        role="origin",
        args=["--min-expiration-ttl", "1"],
    ).start()
    edges = Edges(origin, tmp_path)
    try:
        edge = edges.start()
        namespace = httpx.post(
            origin.namespaces_url, json={"title": "stale"}, headers=origin.headers()
        ).json()["result"]["id"]
        put(origin, edge, namespace, "cached", b"kept")
        assert get(origin, edge, namespace, "cached").content == b"kept"
        origin.kill9()
        time.sleep(2.2)  # past the 2 s cache TTL
        stale = get(origin, edge, namespace, "cached")
        assert stale.status_code == 200 and stale.content == b"kept"
        assert "stale-if-error" in stale.headers["cache-status"]
        cold = get(origin, edge, namespace, "never-read")
        assert cold.status_code == 503
        assert cold.json()["errors"][0]["message"].startswith("Upstream unavailable")
        write = put(origin, edge, namespace, "new", b"lost?")
        assert write.status_code == 503 and write.json()["success"] is False
        assert httpx.get(f"{edge.url}/readyz").status_code == 503

        origin.start()  # same data folder and port
        wait_until(lambda: httpx.get(f"{edge.url}/readyz").status_code == 200)
        assert get(origin, edge, namespace, "new").status_code == 404  # nothing half-applied
        assert put(origin, edge, namespace, "new", b"now").status_code == 200
        fresh = get(origin, edge, namespace, "cached")
        assert fresh.content == b"kept"
        assert "stale-if-error" not in fresh.headers["cache-status"]
    finally:
        for started in edges.started:
            started.stop()
        origin.stop()


def test_tiering_middle_edge_absorbs_cold_reads(
    origin: ServerProcess, edges: Edges, ns: str
) -> None:
    middle = edges.start(None, "--location", "region")
    low1 = edges.start(middle.url, "--location", "low1")
    low2 = edges.start(middle.url, "--location", "low2")
    put(origin, origin, ns, "shared", b"tiered")
    before = fetches(origin)
    assert get(origin, low1, ns, "shared", cache_ttl="60").content == b"tiered"
    assert get(origin, low2, ns, "shared", cache_ttl="60").content == b"tiered"
    assert fetches(origin) == before + 1
    # Writes travel the whole chain and land in every cache on the way.
    assert put(origin, low1, ns, "up", b"through").status_code == 200
    assert get(origin, origin, ns, "up").content == b"through"
    assert get(origin, low1, ns, "up").content == b"through"


def test_cache_bound_holds(origin: ServerProcess, edges: Edges, ns: str) -> None:
    capacity = 4 * 1024 * 1024
    edge = edges.start(None, "--cache-size", str(capacity))
    value = b"v" * (64 * 1024)
    items = [{"key": f"k{i:04d}", "value": value.decode()} for i in range(1024)]  # 64 MiB
    for start in range(0, len(items), 128):
        batch = items[start : start + 128]
        assert (
            httpx.put(
                f"{origin.namespaces_url}/{ns}/bulk",
                json=batch,
                headers=origin.headers(),
                timeout=60,
            ).status_code
            == 200
        )
    assert edge.process is not None
    rss_before = _rss(edge.process.pid)
    with httpx.Client(headers=origin.headers(), timeout=30) as c:
        for item in items:
            assert c.get(url(edge, ns, str(item["key"]))).status_code == 200
            size = edge.metric("pullkv_cache_bytes", origin.admin_token)
            assert size <= capacity * 1.1
    assert edge.metric("pullkv_cache_evictions", origin.admin_token) > 900
    grown = _rss(edge.process.pid) - rss_before
    assert grown < 32 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB for 64 MiB read"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_tokens_from_the_origin_work_at_edges(origin: ServerProcess, edges: Edges, ns: str) -> None:
    edge = edges.start()
    created = httpx.post(
        f"{origin.api}/accounts/{ACCOUNT_ID}/tokens",
        json={"name": "reader", "read_only": True},
        headers=origin.headers(),
    ).json()["result"]
    reader = {"Authorization": f"Bearer {created['value']}"}
    put(origin, origin, ns, "k", b"v")
    assert httpx.get(url(edge, ns, "k"), headers=reader).content == b"v"
    assert httpx.put(url(edge, ns, "k"), headers=reader, content=b"w").status_code == 403
    assert (
        httpx.get(url(edge, ns, "k"), headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    # A plain (non-edge) token cannot use the internal API.
    internal = httpx.post(f"{origin.url}/pullkv/v1/keyring", json={}, headers=reader)
    assert internal.status_code == 403


def test_hot_path_answers_exactly_like_the_ordinary_path(
    origin: ServerProcess, edges: Edges, ns: str
) -> None:
    edge = edges.start()
    files = {"value": (None, b"\x00hot value"), "metadata": (None, b'{"m":"\xc3\xa9"}')}
    httpx.put(
        url(origin, ns, "h%2Fk"),
        files=files,
        params={"expiration_ttl": "600"},
        headers=origin.headers(),
    )
    assert get(origin, edge, ns, "h%2Fk", cache_ttl="60").status_code == 200  # fills the cache
    hot_before = edge.metric("pullkv_hot_responses_total", origin.admin_token)
    fast = get(origin, edge, ns, "h%2Fk", cache_ttl="60")
    assert edge.metric("pullkv_hot_responses_total", origin.admin_token) == hot_before + 1
    # An extra query parameter keeps the request off the hot path, same cache entry.
    slow = get(origin, edge, ns, "h%2Fk", cache_ttl="60", other="1")
    assert edge.metric("pullkv_hot_responses_total", origin.admin_token) == hot_before + 1
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content == b"\x00hot value"

    def comparable(response: httpx.Response) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k not in ("date", "age")}

    assert comparable(fast) == comparable(slow)
    assert fast.headers["cf-kv-metadata"] == '{"m":"\\u00e9"}'
    head = httpx.head(url(edge, ns, "h%2Fk"), headers=origin.headers())
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(b"\x00hot value"))
    # No token, a wrong token or a token of another namespace never get the hot answer.
    assert httpx.get(url(edge, ns, "h%2Fk")).status_code == 401
    assert (
        httpx.get(url(edge, ns, "h%2Fk"), headers={"Authorization": "Bearer x"}).status_code == 401
    )
