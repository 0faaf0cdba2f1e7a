"""The change feed (issue 11, section 1) on real processes on loopback.

Edges keep the default cacheTtl (60 s) and refresh interval (60 s), so a change seen within
a few seconds was brought by the feed, not by a TTL. Each edge adds 20 ms to every upstream
exchange. ``BOUND`` is far under the TTL yet generous for a noisy machine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from pullkv.auth import generate_token, make_record
from pullkv.errors import PRECONDITION_FAILED
from pullkv.store.sqlite import SQLiteStore
from tests.pg import fresh_schema
from tests.support import ACCOUNT_ID, EdgeProcess, ServerProcess

EDGE_ARGS = ["--upstream-latency-ms", "20", "--upstream-timeout", "5"]
BOUND = 5.0  # seconds from a write to its visibility elsewhere: far under the 60 s TTL
OTHER_ACCOUNT = "fedcba9876543210fedcba9876543210"
AUTH_ERROR = 10000
BAD_REQUEST = 10001

Node = ServerProcess | EdgeProcess


async def _add_other_account_edge_token(store_path: Path) -> str:
    # No API makes a token of another account (that is the point); the store can.
    store = SQLiteStore(store_path)
    try:
        token_id, token = generate_token()
        record = make_record(token, token_id, OTHER_ACCOUNT, "other edge", now=0, edge=True)
        await store.add_token(record)
    finally:
        await store.close()
    return token


@pytest.fixture(scope="module")
def origin_and_other(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str]]:
    """An origin, and an edge token of another account registered in its store."""
    data = Path(tmp_path_factory.mktemp("feed")) / "origin"
    proc = ServerProcess(data, role="origin").start()
    proc.stop()
    other = asyncio.run(_add_other_account_edge_token(data / "pullkv.sqlite3"))
    proc.start()
    try:
        yield proc, other
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def origin(origin_and_other: tuple[ServerProcess, str]) -> ServerProcess:
    return origin_and_other[0]


class Cluster:
    """Starts edges for one test and stops them all (by pid) afterwards."""

    def __init__(self, origin: ServerProcess, log_dir: Path) -> None:
        self.origin = origin
        self.log_dir = log_dir
        self.started: list[EdgeProcess] = []

    def edge(self, upstream: str | None = None, *extra: str) -> EdgeProcess:
        """A started edge below ``upstream`` (the origin by default)."""
        edge = EdgeProcess(
            self.log_dir / f"edge{len(self.started)}",
            upstream or self.origin.url,
            self.origin.admin_token,
            self.origin.master_key,
            args=[*EDGE_ARGS, *extra],
        )
        self.started.append(edge)
        edge.start()
        return edge

    def stop(self) -> None:
        for edge in reversed(self.started):
            if edge.process is not None and edge.process.poll() is None:
                edge.process.send_signal(signal.SIGCONT)  # in case a test left it frozen
            edge.stop()


@pytest.fixture
def cluster(origin: ServerProcess, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(origin, tmp_path)
    try:
        yield made
    finally:
        made.stop()


def new_namespace(node: Node, token: str, account_id: str = ACCOUNT_ID) -> str:
    response = httpx.post(
        f"{node.api}/accounts/{account_id}/storage/kv/namespaces",
        json={"title": f"feed-{uuid.uuid4().hex[:10]}"},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["id"])


@pytest.fixture
def ns(origin: ServerProcess) -> str:
    return new_namespace(origin, origin.admin_token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def value_url(node: Node, ns: str, key: str) -> str:
    return f"{node.namespaces_url}/{ns}/values/{key}"


def get(origin: ServerProcess, node: Node, ns: str, key: str) -> httpx.Response:
    return httpx.get(value_url(node, ns, key), headers=origin.headers(), timeout=15)


def read(origin: ServerProcess, node: Node, ns: str, key: str) -> tuple[int, bytes]:
    """(status, value): (404, b"") for a key not found."""
    response = get(origin, node, ns, key)
    assert response.status_code in (200, 404), response.text
    return response.status_code, response.content if response.status_code == 200 else b""


def put(origin: ServerProcess, node: Node, ns: str, key: str, value: bytes) -> str:
    """Write through ``node``; the new ETag."""
    response = httpx.put(
        value_url(node, ns, key), content=value, headers=origin.headers(), timeout=15
    )
    assert response.status_code == 200, response.text
    return response.headers["etag"]


def delete(origin: ServerProcess, node: Node, ns: str, key: str) -> None:
    response = httpx.delete(value_url(node, ns, key), headers=origin.headers(), timeout=15)
    assert response.status_code == 200, response.text


def listed(origin: ServerProcess, node: Node, ns: str) -> list[str]:
    response = httpx.get(f"{node.namespaces_url}/{ns}/keys", headers=origin.headers(), timeout=15)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["result"]]


def is_hit(response: httpx.Response) -> bool:
    """Answered from the edge's cache (``Cache-Status: <location>; hit; ...``)."""
    parts = [part.strip() for part in response.headers.get("cache-status", "").split(";")]
    return parts[1:2] == ["hit"]


def seconds_until(check: Callable[[], bool], timeout: float = 20.0) -> float:
    """How long until ``check()`` holds (polled every 50 ms); fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met in {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def metric(node: Node, token: str, name: str, **labels: str) -> float:
    return node.metric(name, token, **labels)


def messages(edge: EdgeProcess, token: str, kind: str) -> float:
    return edge.metric("pullkv_feed_messages_total", token, kind=kind)


def wait_following(edge: EdgeProcess, token: str) -> None:
    """Until the edge has subscribed and heard a heartbeat (it then misses no change)."""
    seconds_until(lambda: messages(edge, token, "beat") > 0)


def internal_lists(origin: ServerProcess) -> float:
    return origin.metric(
        "pullkv_request_duration_seconds_count", origin.admin_token, route="internal.list"
    )


# 1. Visibility at another location, well under the TTL.


def test_writes_through_one_edge_are_seen_at_another_within_seconds(
    origin: ServerProcess, cluster: Cluster, ns: str
) -> None:
    token = origin.admin_token
    a = cluster.edge(None, "--location", "a")
    b = cluster.edge(None, "--location", "b")
    for edge in (a, b):
        wait_following(edge, token)
    put(origin, origin, ns, "updated", b"v1")
    put(origin, origin, ns, "deleted", b"doomed")
    # b holds a value, another value, a "not found" and the namespace's list, all fresh.
    cached = {"updated": (200, b"v1"), "deleted": (200, b"doomed"), "created": (404, b"")}
    for key, want in cached.items():
        assert read(origin, b, ns, key) == want
        assert is_hit(get(origin, b, ns, key)), key

    taken: dict[str, float] = {}
    put(origin, a, ns, "updated", b"v2")
    taken["update"] = seconds_until(lambda: read(origin, b, ns, "updated") == (200, b"v2"))
    delete(origin, a, ns, "deleted")
    taken["delete"] = seconds_until(lambda: read(origin, b, ns, "deleted")[0] == 404)
    put(origin, a, ns, "created", b"new")
    taken["negatively cached"] = seconds_until(
        lambda: read(origin, b, ns, "created") == (200, b"new")
    )

    # Lists: b caches the namespace's list (a second listing does not go upstream) ...
    assert listed(origin, b, ns) == ["created", "updated"]
    before = internal_lists(origin)
    assert listed(origin, b, ns) == ["created", "updated"]
    assert internal_lists(origin) == before, "the edge did not cache the list"
    # ... and shows a key added and drops a key deleted elsewhere.
    put(origin, a, ns, "added", b"x")
    delete(origin, a, ns, "updated")
    taken["list"] = seconds_until(lambda: listed(origin, b, ns) == ["added", "created"])
    assert max(taken.values()) < BOUND, taken


def test_a_middle_tier_relays_the_feed_to_the_edges_below(
    origin: ServerProcess, cluster: Cluster, ns: str
) -> None:
    token = origin.admin_token
    middle = cluster.edge(None, "--location", "region")
    low = cluster.edge(middle.url, "--location", "low")
    writer = cluster.edge(None, "--location", "writer")
    for edge in (middle, low, writer):
        wait_following(edge, token)
    put(origin, origin, ns, "k", b"v1")
    assert read(origin, low, ns, "k") == (200, b"v1")
    assert is_hit(get(origin, low, ns, "k"))

    put(origin, writer, ns, "k", b"v2")  # through another edge
    through_edge = seconds_until(lambda: read(origin, low, ns, "k") == (200, b"v2"))
    put(origin, origin, ns, "k", b"v3")  # at the origin
    at_origin = seconds_until(lambda: read(origin, low, ns, "k") == (200, b"v3"))
    assert max(through_edge, at_origin) < BOUND, (through_edge, at_origin)

    # The low edge follows the middle tier, not the origin: the middle serves one stream,
    # the origin two (the middle's and the writer's). Streams of edges that other tests
    # stopped end at their next heartbeat, hence the wait.
    seconds_until(lambda: metric(middle, token, "pullkv_feed_streams") == 1, timeout=10)
    seconds_until(lambda: metric(origin, token, "pullkv_feed_streams") == 2, timeout=10)
    assert metric(low, token, "pullkv_feed_streams") == 0


# 2. --invalidation off: Workers KV's behaviour.


def test_an_edge_without_invalidation_serves_its_cached_value_until_the_ttl(
    origin: ServerProcess, cluster: Cluster, ns: str
) -> None:
    token = origin.admin_token
    on = cluster.edge(None, "--location", "on")
    off = cluster.edge(None, "--location", "off", "--invalidation", "off")
    wait_following(on, token)
    put(origin, origin, ns, "k", b"old")
    assert read(origin, on, ns, "k") == (200, b"old")
    assert read(origin, off, ns, "k") == (200, b"old")
    written = time.monotonic()
    put(origin, origin, ns, "k", b"new")
    assert seconds_until(lambda: read(origin, on, ns, "k") == (200, b"new")) < BOUND
    time.sleep(max(0.0, written + 2 - time.monotonic()))
    stale = get(origin, off, ns, "k")
    assert (stale.status_code, stale.content) == (200, b"old")
    assert is_hit(stale)
    assert metric(off, token, "pullkv_feed_subscriptions_total", outcome="opened") == 0
    assert messages(off, token, "beat") == 0


# 3. A lossy feed: gaps are detected and the subscriber resumes from its position.


def test_a_lossy_feed_still_makes_writes_visible_within_seconds(
    origin: ServerProcess, cluster: Cluster, ns: str
) -> None:
    token = origin.admin_token
    lossy = cluster.edge(None, "--location", "lossy", "--feed-loss", "0.3")
    wait_following(lossy, token)
    keys = [f"k{i}" for i in range(8)]
    for key in keys:
        put(origin, origin, ns, key, b"v1")
        assert read(origin, lossy, ns, key) == (200, b"v1")
    taken = []
    for key in keys:
        put(origin, origin, ns, key, b"v2")

        def visible(key: str = key) -> bool:
            return read(origin, lossy, ns, key) == (200, b"v2")

        taken.append(seconds_until(visible))
    assert max(taken) < BOUND, taken
    # Heartbeats come twice a second: a few seconds more make both counters certain.
    seconds_until(lambda: messages(lossy, token, "dropped") > 0, timeout=15)
    seconds_until(lambda: messages(lossy, token, "gap") > 0, timeout=15)


# 4. The feed cut and restored.


@contextmanager
def own_origin(tmp_path: Path, *args: str) -> Iterator[tuple[ServerProcess, Cluster]]:
    """An origin of this test alone (it will be restarted), and its edges."""
    proc = ServerProcess(tmp_path / "origin", role="origin", args=list(args)).start()
    made = Cluster(proc, tmp_path)
    try:
        yield proc, made
    finally:
        made.stop()
        proc.stop()


def test_an_edge_resumes_by_itself_when_its_upstream_restarts(tmp_path: Path) -> None:
    with own_origin(tmp_path) as (origin, cluster):
        token = origin.admin_token
        edge = cluster.edge()
        ns = new_namespace(origin, token)
        wait_following(edge, token)
        put(origin, origin, ns, "k", b"v1")
        assert read(origin, edge, ns, "k") == (200, b"v1")
        put(origin, origin, ns, "k", b"v2")
        assert seconds_until(lambda: read(origin, edge, ns, "k") == (200, b"v2")) < BOUND
        resets = messages(edge, token, "reset")

        origin.stop()
        origin.start()  # same port and data folder
        # Most likely written before the edge has resubscribed (it backs off while the
        # origin is down): it learns of it by resuming from its position.
        put(origin, origin, ns, "k", b"v3")
        # The reconnection backoff (up to 5 s, jittered) plus the restart: generous.
        assert seconds_until(lambda: read(origin, edge, ns, "k") == (200, b"v3")) < 15
        assert messages(edge, token, "reset") == resets, "resumed by a reset, not in place"
        assert metric(edge, token, "pullkv_feed_subscriptions_total", outcome="opened") >= 2
        put(origin, origin, ns, "k", b"v4")
        assert seconds_until(lambda: read(origin, edge, ns, "k") == (200, b"v4")) < BOUND


def test_a_restarted_edge_subscribes_again(
    origin: ServerProcess, cluster: Cluster, ns: str
) -> None:
    token = origin.admin_token
    edge = cluster.edge()
    wait_following(edge, token)
    put(origin, origin, ns, "k", b"v1")
    assert read(origin, edge, ns, "k") == (200, b"v1")
    edge.stop()
    edge.start()  # a new process on the same port, with an empty cache
    wait_following(edge, token)
    assert read(origin, edge, ns, "k") == (200, b"v1")
    assert is_hit(get(origin, edge, ns, "k"))
    put(origin, origin, ns, "k", b"v2")
    assert seconds_until(lambda: read(origin, edge, ns, "k") == (200, b"v2")) < BOUND


def feed_resets(edge: EdgeProcess, token: str) -> float:
    """Resets applied to the edge's cache (everything held revalidated)."""
    return edge.metric("pullkv_feed_invalidations_total", token, outcome="reset")


async def _compact(store_path: Path, keep: int) -> int:
    store = SQLiteStore(store_path)
    try:
        return await store.prune_changes(keep)
    finally:
        await store.close()


def test_an_edge_behind_the_retained_records_is_reset_and_revalidates(tmp_path: Path) -> None:
    retention = 5
    with own_origin(tmp_path, "--feed-retention", str(retention)) as (origin, cluster):
        token = origin.admin_token
        edge = cluster.edge()
        ns = new_namespace(origin, token)
        wait_following(edge, token)
        put(origin, origin, ns, "changed", b"before")
        put(origin, origin, ns, "same", b"kept")
        for key in ("changed", "same"):
            read(origin, edge, ns, key)
        assert listed(origin, edge, ns) == ["changed", "same"]
        assert is_hit(get(origin, edge, ns, "changed"))
        resets = feed_resets(edge, token)
        reset_messages = messages(edge, token, "reset")

        assert edge.process is not None
        edge.process.send_signal(signal.SIGSTOP)
        try:
            # The edge's stream ends while it cannot read: when it thaws it resumes from
            # the position it had, which by then is older than anything retained.
            origin.stop()
            origin.start()
            put(origin, origin, ns, "changed", b"after")
            for number in range(2 * retention):
                put(origin, origin, ns, f"filler{number}", b"x")
            origin.stop()
            # The origin prunes its store to --feed-retention every 30 s; this is the same
            # pruning (the store's own) without the wait.
            assert asyncio.run(_compact(origin.data_dir / "pullkv.sqlite3", retention)) > 0
            origin.start()
        finally:
            edge.process.send_signal(signal.SIGCONT)

        seconds_until(lambda: feed_resets(edge, token) > resets)
        assert messages(edge, token, "reset") > reset_messages
        # Everything held was revalidated: the changed value is new, the list too.
        assert read(origin, edge, ns, "changed") == (200, b"after")
        assert read(origin, edge, ns, "same") == (200, b"kept")
        fillers = [f"filler{number}" for number in range(2 * retention)]
        assert listed(origin, edge, ns) == sorted(["changed", *fillers, "same"])
        # And it follows the feed again from the reset's position.
        put(origin, origin, ns, "same", b"new")
        assert seconds_until(lambda: read(origin, edge, ns, "same") == (200, b"new")) < BOUND


# 5. Two origins on one PostgreSQL database: one feed.


@pytest.fixture
def pg_origins(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with fresh_schema("feed") as url:
        a = ServerProcess(tmp_path / "a", role="origin", args=["--store", url]).start()
        try:
            # The second origin needs the first one's master key and admin token.
            (tmp_path / "b").mkdir()
            for name in ("master.key", "admin-token"):
                shutil.copy2(a.data_dir / name, tmp_path / "b" / name)
            b = ServerProcess(tmp_path / "b", role="origin", args=["--store", url]).start()
            try:
                yield a, b
            finally:
                b.stop()
        finally:
            a.stop()


def test_a_write_through_one_origin_reaches_an_edge_of_the_other(
    pg_origins: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    a, b = pg_origins
    token = a.admin_token
    cluster = Cluster(b, tmp_path)
    try:
        edge = cluster.edge()
        ns = new_namespace(a, token)
        wait_following(edge, token)
        put(a, a, ns, "k", b"v1")
        assert read(a, edge, ns, "k") == (200, b"v1")
        assert read(a, edge, ns, "missing")[0] == 404
        put(a, a, ns, "k", b"v2")
        put(a, a, ns, "missing", b"found")
        taken = seconds_until(
            lambda: (
                read(a, edge, ns, "k") == (200, b"v2")
                and read(a, edge, ns, "missing") == (200, b"found")
            )
        )
        assert taken < BOUND
    finally:
        cluster.stop()


def test_conditional_writes_through_two_origins_race_correctly(
    pg_origins: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pg_origins
    ns = new_namespace(a, a.admin_token)
    start = put(a, a, ns, "k", b"start")

    async def race() -> dict[str, int]:
        wins = {"a": 0, "b": 0}
        etag = start
        async with httpx.AsyncClient(headers=a.headers(), timeout=30) as client:
            for round_ in range(20):
                # If-Match with the same ETag through both origins at once.
                answers = await asyncio.gather(
                    *(
                        client.put(
                            value_url(node, ns, "k"),
                            content=f"{name}{round_}".encode(),
                            headers={"If-Match": etag},
                        )
                        for name, node in (("a", a), ("b", b))
                    )
                )
                by_name = dict(zip("ab", answers, strict=True))
                assert sorted(r.status_code for r in answers) == [200, 412], [
                    (r.status_code, r.text) for r in answers
                ]
                winner = next(name for name, r in by_name.items() if r.status_code == 200)
                won, lost = by_name[winner], by_name["b" if winner == "a" else "a"]
                check_refused(lost)
                assert lost.headers["etag"] == won.headers["etag"]
                etag = won.headers["etag"]
                wins[winner] += 1
                for node in (a, b):
                    assert read(a, node, ns, "k") == (200, f"{winner}{round_}".encode())

                # If-None-Match: * on a new key through both origins at once.
                created = await asyncio.gather(
                    *(
                        client.put(
                            value_url(node, ns, f"new{round_}"),
                            content=name.encode(),
                            headers={"If-None-Match": "*"},
                        )
                        for name, node in (("a", a), ("b", b))
                    )
                )
                assert sorted(r.status_code for r in created) == [200, 412]
                made = next(r for r in created if r.status_code == 200)
                refused = next(r for r in created if r.status_code == 412)
                check_refused(refused)
                assert refused.headers["etag"] == made.headers["etag"]
        return wins

    wins = asyncio.run(race())
    assert sum(wins.values()) == 20


def check_refused(response: httpx.Response) -> None:
    """A failed condition: 412 in the Cloudflare envelope, with the current ETag."""
    assert response.status_code == 412
    body = response.json()
    assert body["success"] is False and body["result"] is None
    assert body["errors"][0]["code"] == PRECONDITION_FAILED
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and etag[1:-1].isdigit()


# 6. The internal route.


def create_token(origin: ServerProcess, body: dict[str, Any]) -> str:
    response = httpx.post(
        f"{origin.api}/accounts/{ACCOUNT_ID}/tokens",
        json={"name": "feed test", **body},
        headers=origin.headers(),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["value"])


def changes_url(node: Node) -> str:
    return f"{node.url}/pullkv/v1/changes"


def refusal(node: Node, headers: dict[str, str], params: dict[str, str]) -> httpx.Response:
    """The answer to a request that should be refused; a stream (200) is not read, so a
    wrongly accepted request fails the test rather than hanging it."""
    with httpx.stream(
        "GET", changes_url(node), headers=headers, params=params, timeout=10
    ) as response:
        if response.status_code != 200:
            response.read()
    return response


def test_the_changes_route_needs_an_edge_token_and_a_valid_since(origin: ServerProcess) -> None:
    for body in ({"admin": True}, {"read_only": True}, {}):
        refused = refusal(origin, bearer(create_token(origin, body)), {})
        assert refused.status_code == 403, body
        assert refused.json()["errors"][0]["code"] == AUTH_ERROR
    anonymous = refusal(origin, {}, {})
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["code"] == AUTH_ERROR

    edge = bearer(create_token(origin, {"edge": True}))
    for since in ("-1", "abc", str(2**63), "1.5", "", " 1"):
        bad = refusal(origin, edge, {"since": since})
        assert bad.status_code == 400, since
        body = bad.json()
        assert body["success"] is False and body["result"] is None
        assert body["errors"][0]["code"] == BAD_REQUEST
        assert "since" in body["errors"][0]["message"]


class Feed:
    """One subscription, read line by line (each line a JSON message) as it arrives."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def next(self) -> dict[str, Any]:
        while True:
            line = next(self.lines)
            if line.strip():
                message: dict[str, Any] = json.loads(line)
                return message

    def until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Messages up to and including the first for which ``done`` holds."""
        seen = [self.next()]
        while not done(seen[-1]):
            seen.append(self.next())
        return seen


@contextmanager
def subscribe(node: Node, token: str, **params: str) -> Iterator[Feed]:
    # The read timeout only guards against a stream that stops: beats come every 0.5 s.
    with httpx.stream(
        "GET", changes_url(node), headers=bearer(token), params=params, timeout=10
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        yield Feed(response)


def test_the_stream_starts_with_a_reset_and_beats_at_least_every_second(
    origin: ServerProcess, ns: str
) -> None:
    token = create_token(origin, {"edge": True})
    with subscribe(origin, token) as feed:
        reset = feed.next()
        reset_at = time.monotonic()
        assert reset["t"] == "reset"
        high, feed_id = reset["to"], reset["feed"]
        beats = []
        for _ in range(4):
            beat = feed.next()
            beats.append(time.monotonic())
            assert beat == {"t": "beat", "from": high, "to": high, "feed": feed_id}
        assert beats[0] - reset_at < 1.0
        # The server beats every 0.5 s; three times that for a noisy machine.
        gaps = [later - earlier for earlier, later in itertools.pairwise(beats)]
        assert max(gaps) < 1.5, gaps

        etag = put(origin, origin, ns, "k", b"v")
        change = feed.until(lambda m: m["t"] == "change")[-1]
        assert change == {
            "t": "change",
            "from": high,
            "seq": change["seq"],
            "account": ACCOUNT_ID,
            "namespace": ns,
            "key": "k",
            "version": int(etag.strip('"')),
            "deleted": False,
        }
        assert change["seq"] > high
        delete(origin, origin, ns, "k")
        gone = feed.until(lambda m: m["t"] == "change")[-1]
        assert gone["from"] == change["seq"] and gone["deleted"] is True
        assert gone["version"] > change["version"]
        position = gone["seq"]

    # Resuming from a position: no reset, the changes missed meanwhile, then beats.
    put(origin, origin, ns, "later", b"v")
    with subscribe(origin, token, since=str(position), feed=feed_id) as feed:
        missed = feed.next()
        assert missed["t"] == "change" and missed["from"] == position
        assert missed["key"] == "later"
        assert feed.next()["t"] == "beat"
    # A position it cannot serve: ahead of it, or in another sequence space.
    for since, other_feed in ((position + 1000, feed_id), (position, "another-feed")):
        with subscribe(origin, token, since=str(since), feed=other_feed) as feed:
            first = feed.next()
            assert first["t"] == "reset" and first["feed"] == feed_id, first
            assert first["to"] >= position + 1


def test_a_stream_carries_only_its_own_accounts_changes(
    origin_and_other: tuple[ServerProcess, str], ns: str
) -> None:
    origin, other = origin_and_other
    theirs = new_namespace(origin, other, OTHER_ACCOUNT)
    ours = create_token(origin, {"edge": True})
    with subscribe(origin, ours) as our_feed, subscribe(origin, other) as their_feed:
        assert our_feed.next()["t"] == their_feed.next()["t"] == "reset"
        put(origin, origin, ns, "mine", b"m")
        written = httpx.put(
            f"{origin.api}/accounts/{OTHER_ACCOUNT}/storage/kv/namespaces/{theirs}/values/theirs",
            content=b"t",
            headers=bearer(other),
        )
        assert written.status_code == 200, written.text
        seen_ours = our_feed.until(lambda m: m["t"] == "change" and m["key"] == "mine")
        mine = seen_ours[-1]
        seen_theirs = their_feed.until(lambda m: m["t"] == "change")
        their_change = seen_theirs[-1]
        assert their_change["key"] == "theirs" and their_change["account"] == OTHER_ACCOUNT
        assert their_change["seq"] > mine["seq"]
        # Each stream moves past the other account's change without showing it.
        seen_ours += our_feed.until(lambda m: m.get("to", m.get("seq", 0)) >= their_change["seq"])
        for seen, account in ((seen_ours, ACCOUNT_ID), (seen_theirs, OTHER_ACCOUNT)):
            changes = [m for m in seen if m["t"] == "change"]
            assert changes and all(m["account"] == account for m in changes), seen
