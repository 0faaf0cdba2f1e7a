"""Watching a namespace from an application (``Namespace.watch``, ``AsyncNamespace.watch``)
against real processes: at an origin, through an edge and through a middle tier; scoped by
the token; resuming after a dropped connection without losing or repeating a change."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullkv import AsyncClient, Client, PermissionDenied, WatchEvent, WatchReset
from pullkv.watch import Watch
from tests.support import EdgeProcess, ServerProcess

WAIT = 15.0


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("watch")
    server = ServerProcess(base / "origin", role="origin", args=["--feed-retention", "50"])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiers(
    origin: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[EdgeProcess, EdgeProcess]]:
    """A middle tier on the origin, and a lower edge on the middle tier."""
    base = tmp_path_factory.mktemp("tiers")
    middle = EdgeProcess(base / "m", origin.url, origin.admin_token, origin.master_key).start()
    lower = EdgeProcess(base / "l", middle.url, origin.admin_token, origin.master_key).start()
    yield middle, lower
    lower.stop()
    middle.stop()


def client(node: ServerProcess | EdgeProcess, token: str) -> Client:
    return Client(node.url, token, account_id=node.account_id)


class Collector:
    """Iterates a watch on a thread; events arrive in ``events``."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.events: queue.Queue[WatchEvent | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.watch:
                self.events.put(event)
        except BaseException as exc:  # handed to the test
            self.events.put(exc)

    def take(self, count: int) -> list[WatchEvent]:
        got: list[WatchEvent] = []
        deadline = time.monotonic() + WAIT
        while len(got) < count:
            item = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(item, BaseException):
                raise item
            got.append(item)
        return got

    def quiet(self, seconds: float = 1.0) -> bool:
        try:
            item = self.events.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected event {item!r}")


def wait_until_subscribed(watch: Watch) -> None:
    deadline = time.monotonic() + WAIT
    while watch.position is None:
        assert time.monotonic() < deadline, "the watch never got its first heartbeat"
        time.sleep(0.02)


@pytest.mark.parametrize("where", ["origin", "edge", "middle tier"])
def test_a_watch_sees_every_change_in_order(
    origin: ServerProcess, tiers: tuple[EdgeProcess, EdgeProcess], where: str
) -> None:
    middle, lower = tiers
    nodes: dict[str, ServerProcess | EdgeProcess] = {
        "origin": origin,
        "edge": middle,
        "middle tier": lower,
    }
    node = nodes[where]
    with client(origin, origin.admin_token) as writer, client(node, origin.admin_token) as reader:
        ns_id = writer.create_namespace(f"watch-{where}")["id"]
        watch = reader.namespace(ns_id).watch(prefix="app/")
        collector = Collector(watch)
        wait_until_subscribed(watch)
        ns = writer.namespace(ns_id)
        etags = [ns.put("app/a", "1"), ns.put("other", "x"), ns.put("app/b", "2")]
        ns.delete("app/a")
        events = collector.take(3)
        assert [(e.key, e.deleted) for e in events] == [
            ("app/a", False),
            ("app/b", False),
            ("app/a", True),
        ]
        assert [f'"{e.version}"' for e in events[:2]] == [etags[0], etags[2]]
        assert events[0].version < events[1].version < events[2].version
        assert collector.quiet(0.5)  # "other" is outside the prefix
        watch.close()


def test_a_watch_resumes_after_a_dropped_connection(
    origin: ServerProcess, tiers: tuple[EdgeProcess, EdgeProcess]
) -> None:
    middle, _ = tiers
    with client(origin, origin.admin_token) as writer, client(middle, origin.admin_token) as reader:
        ns_id = writer.create_namespace("watch-resume")["id"]
        ns = writer.namespace(ns_id)
        watch = reader.namespace(ns_id).watch()
        collector = Collector(watch)
        wait_until_subscribed(watch)
        ns.put("k", "0")
        assert collector.take(1)[0].key == "k"
        # Drop the watch's connection under it: the middle tier restarts on its port.
        middle.stop()
        for i in range(1, 4):
            ns.put("k", str(i))  # committed while the watch is cut off
        middle.start()
        ns.put("k", "4")
        events = collector.take(4)
        versions = [e.version for e in events]
        assert versions == sorted(versions) and len(set(versions)) == 4
        assert collector.quiet(0.5)  # nothing repeated
        watch.close()


def test_a_watch_further_behind_than_kept_is_reset(origin: ServerProcess) -> None:
    with client(origin, origin.admin_token) as writer:
        ns_id = writer.create_namespace("watch-reset")["id"]
        ns = writer.namespace(ns_id)
        watch = writer.namespace(ns_id).watch(since=0, feed="another store")
        with pytest.raises(WatchReset) as raised:
            next(watch)
        assert raised.value.position >= 0
        ns.put("after", "1")
        assert next(watch).key == "after"  # the same watch continues from the reset
        watch.close()


def test_a_watch_needs_read_access_to_the_namespace(origin: ServerProcess) -> None:
    with client(origin, origin.admin_token) as admin:
        mine = admin.create_namespace("watch-mine")["id"]
        theirs = admin.create_namespace("watch-theirs")["id"]
        scoped = str(admin.create_token("scoped", namespaces=[mine], read_only=True)["value"])
    with client(origin, scoped) as reader:
        watch = reader.namespace(mine).watch()
        wait_until_subscribed_first = Collector(watch)
        wait_until_subscribed(watch)
        watch.close()
        assert wait_until_subscribed_first.events.empty()
        with pytest.raises(PermissionDenied):
            next(reader.namespace(theirs).watch())
    url = f"{origin.namespaces_url}/{mine}/changes"
    assert httpx.get(url).status_code == 401
    bad = httpx.get(url, params={"since": "-1"}, headers=origin.headers())
    assert bad.status_code == 400 and "since" in bad.json()["errors"][0]["message"]
    missing = httpx.get(f"{origin.namespaces_url}/{'0' * 32}/changes", headers=origin.headers())
    assert missing.status_code == 404


async def test_the_async_watch(origin: ServerProcess, tmp_path: Path) -> None:
    async with AsyncClient(origin.url, origin.admin_token, account_id=origin.account_id) as c:
        created = await c.create_namespace("watch-async")
        ns = await c.namespace(created["id"])
        watch = ns.watch()

        async def writes() -> None:
            while watch.position is None:
                await asyncio.sleep(0.02)
            await ns.put("a", "1")
            await ns.delete("a")

        writer = asyncio.ensure_future(writes())
        first = await asyncio.wait_for(anext(watch), WAIT)
        second = await asyncio.wait_for(anext(watch), WAIT)
        await writer
        assert (first.key, first.deleted, second.key, second.deleted) == ("a", False, "a", True)
        await watch.aclose()


def test_a_revoked_tokens_stream_ends(origin: ServerProcess) -> None:
    with client(origin, origin.admin_token) as admin:
        ns_id = admin.create_namespace("watch-revoked")["id"]
        made = admin.create_token("soon revoked", namespaces=[ns_id], read_only=True)
    token = str(made["value"])
    url = f"{origin.namespaces_url}/{ns_id}/changes"
    started = time.monotonic()
    with httpx.stream(
        "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert '"reset"' in next(lines)
        with client(origin, origin.admin_token) as admin:
            admin.revoke_token(str(made["id"]))
        ended = False
        for _line in lines:  # heartbeats, until the server ends the stream
            assert time.monotonic() - started < 25, "the revoked token's stream went on"
        ended = True
    assert ended
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401
