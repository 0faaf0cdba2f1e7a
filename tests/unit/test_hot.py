"""Unit tests for pullkv.http.hot: the hot read path, in process.

Most tests drive ``HotReads`` over ``FakeEdge``, which holds sealed entries with the time
the upstream last vouched for them and applies the edge's pure freshness rule on a fake
clock; the last ones put a real ``EdgeBackend`` (over a LocalBackend on SQLite) under it,
to check that its ``fresh_entry`` agrees with the freshness rule and that hot reads leave
the cache's slots untracked by the garbage collector.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import pytest

from pullkv import sealing
from pullkv.auth import Authenticator, generate_token, make_record
from pullkv.backend import CacheInfo
from pullkv.crypto import Keyring, new_key
from pullkv.edge.backend import EdgeBackend, FreshEntry
from pullkv.edge.cache import CachePolicy, Freshness, freshness, remaining
from pullkv.http import hot
from pullkv.http.framing import build_response
from pullkv.http.hot import HotReads
from pullkv.keyring import KeyringHolder
from pullkv.limits import DEFAULT_LIMITS
from pullkv.metrics import Metrics
from pullkv.origin.local import LocalBackend
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import Entry, NamespaceRecord, SealedEntry, TokenRecord, ValueWrite
from tests.unit.helpers import FakeClock

ACCOUNT = "a" * 32
NS = "b" * 32
OTHER_NS = "c" * 32
POLICY = CachePolicy(refresh_interval=30.0)
EPOCH = 1_700_000_000.0
REST_PATH = f"/client/v4/accounts/{ACCOUNT}/storage/kv/namespaces/{NS}/values/".encode()


class FakeEdge:
    """Sealed entries and when they were vouched for, judged by ``cache.freshness``."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.metrics = Metrics()
        self.entries: dict[tuple[str, str, str], tuple[SealedEntry, float]] = {}

    def fresh_entry(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        ttl: int,
        known: SealedEntry | None = None,
    ) -> FreshEntry | None:
        held = self.entries.get((account_id, namespace_id, key))
        if held is None:
            return None
        entry, validated_at = held
        now = self.clock()
        if freshness(validated_at, now, ttl, POLICY) is not Freshness.FRESH:
            return None
        if entry.expiration is not None and entry.expiration <= EPOCH:
            return None
        same = known if known is not None and known == entry else entry
        return same, int(now - validated_at), remaining(validated_at, now, ttl)


class FakeTokens:
    """A token source holding one record."""

    def __init__(self, record: TokenRecord) -> None:
        self.record = record

    async def get_token(self, token_id: str) -> TokenRecord | None:
        return self.record if token_id == self.record.id else None


class NoKeys:
    """A key source the hot path must never ask (it only reads the keyring held)."""

    async def data_keys(self) -> list[tuple[int, bytes]]:
        raise AssertionError("the hot path loaded a keyring")


@dataclass
class World:
    clock: FakeClock
    edge: FakeEdge
    keyring: Keyring
    holder: KeyringHolder
    hot: HotReads
    authorization: bytes

    def put(
        self,
        key: str,
        value: bytes,
        metadata_json: str | None = None,
        expiration: int | None = None,
        namespace_id: str = NS,
        version: int = 1,
    ) -> SealedEntry:
        """Seal an entry and hold it at the edge, vouched for now."""
        write = ValueWrite(key, value, metadata_json, expiration)
        sealed = sealing.seal_write(self.keyring, namespace_id, write)
        entry = SealedEntry(key, sealed.value, sealed.metadata, expiration, version)
        self.edge.entries[(ACCOUNT, namespace_id, key)] = (entry, self.clock())
        return entry

    def rest(self, key: str, query: bytes = b"cache_ttl=60") -> bytes | None:
        headers = [(b"host", b"edge"), (b"authorization", self.authorization)]
        return self.hot.respond(b"GET", REST_PATH + key.encode(), query, headers)

    def binding(self, key: str, namespace_id: str = NS) -> bytes | None:
        headers = [
            (b"authorization", self.authorization),
            (b"x-pullkv-namespace", namespace_id.encode()),
        ]
        return self.hot.respond(b"GET", b"/" + key.encode(), b"urlencoded=true", headers)


async def make_world(namespaces: tuple[str, ...] | None = None) -> World:
    clock = FakeClock(500.0)
    token_id, token = generate_token()
    record = make_record(token, token_id, ACCOUNT, "reader", now=0, namespaces=namespaces)
    authenticator = Authenticator(FakeTokens(record), clock, cache_seconds=1000.0)
    authorization = f"Bearer {token}"
    await authenticator.authenticate(authorization)  # the hot path only peeks
    keyring = Keyring({1: new_key()}, 1)
    holder = KeyringHolder(NoKeys(), new_key(), keyring, clock)
    edge = FakeEdge(clock)
    hot_reads = HotReads(edge, holder, authenticator, DEFAULT_LIMITS, "pullkv-test")
    return World(clock, edge, keyring, holder, hot_reads, authorization.encode())


@pytest.fixture
async def world() -> World:
    return await make_world()


def rest_response(value: bytes, static: list[tuple[bytes, bytes]], age: int, ttl: int) -> bytes:
    info = CacheInfo(hit=True, age=age, ttl=ttl)
    headers = [
        (b"content-type", b"application/octet-stream"),
        *static,
        (b"cache-status", info.header("pullkv-test").encode()),
        (b"age", str(age).encode()),
    ]
    return build_response(200, value, headers)


def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each entry the hot path opens (decrypts), by key."""
    opened: list[str] = []

    def counting(keyring: Keyring, namespace_id: str, sealed: SealedEntry) -> Entry:
        opened.append(sealed.key)
        return sealing.open_entry(keyring, namespace_id, sealed)

    monkeypatch.setattr(hot, "open_entry", counting)
    return opened


async def test_rest_hot_read_is_the_exact_response(world: World) -> None:
    world.put("k", b"\x00value", '{"m":"\\u00e9"}', expiration=int(EPOCH) + 600, version=7)
    world.clock.advance(5.25)
    static = [
        (b"etag", b'"7"'),
        (b"expiration", str(int(EPOCH) + 600).encode()),
        (b"cf-kv-metadata", b'{"m":"\\u00e9"}'),
    ]
    assert world.rest("k") == rest_response(b"\x00value", static, age=5, ttl=54)
    assert world.edge.metrics.hot_responses == 1


async def test_binding_hot_read_is_the_exact_response(world: World) -> None:
    world.put("k/1", b"v", '{"a":1}')
    expected = build_response(
        200,
        b"v",
        [
            (b"content-type", b"application/octet-stream"),
            (b"etag", b'"1"'),
            (b"cf-kv-metadata", b'{"a":1}'),
            (b"cf-cache-status", b"HIT"),
        ],
    )
    assert world.binding("k%2F1") == expected


async def test_a_response_is_rendered_once_per_second_and_opened_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = count_opens(monkeypatch)
    world.put("k", b"v")
    first = world.rest("k")
    assert world.rest("k") is first  # the same second: the same bytes, not rendered again
    world.clock.advance(1.0)
    later = world.rest("k")
    assert later is not None and later is not first and b"age: 1\r\n" in later
    assert opened == ["k"]  # the next second re-renders from the opened value
    assert world.edge.metrics.hot_responses == 3


async def test_binding_rendering_outlives_the_second(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = count_opens(monkeypatch)
    world.put("k", b"v")
    first = world.binding("k")
    world.clock.advance(10.0)
    assert world.binding("k") is first  # says neither age nor TTL: nothing to re-render
    assert opened == ["k"]


async def test_a_new_entry_is_opened_again(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = count_opens(monkeypatch)
    world.put("k", b"old")
    assert world.rest("k") is not None
    world.put("k", b"new", version=2)
    response = world.rest("k")
    assert response is not None and response.endswith(b"\r\n\r\nnew")
    assert opened == ["k", "k"]


async def test_rest_and_binding_renderings_are_kept_apart(world: World) -> None:
    world.put("k", b"v", expiration=int(EPOCH) + 600)
    rest = world.rest("k")
    binding = world.binding("k")
    assert rest is not None and b"\r\nexpiration: " in rest and b"cf-cache-status" not in rest
    assert binding is not None and b"\r\ncf-expiration: " in binding
    assert world.rest("k") is rest and world.binding("k") is binding


async def test_anything_but_a_fresh_readable_entry_takes_the_ordinary_path(
    world: World,
) -> None:
    assert world.rest("missing") is None
    world.put("k", b"v")
    world.clock.advance(POLICY.refresh_interval)  # in the refresh window: revalidate first
    assert world.rest("k") is None
    world.put("k", b"v")
    world.holder.held = None  # not loaded yet (an edge just started)
    assert world.rest("k") is None
    world.holder.held = Keyring({2: new_key()}, 2)  # not the key that sealed it
    assert world.rest("k") is None
    assert world.edge.metrics.hot_responses == 0


async def test_tokens_are_peeked_never_fetched(world: World) -> None:
    world.put("k", b"v")
    headers = [(b"authorization", b"Bearer pkv_0123456789abcdef_" + b"x" * 30)]
    assert world.hot.respond(b"GET", REST_PATH + b"k", b"", headers) is None
    assert world.hot.respond(b"GET", REST_PATH + b"k", b"", []) is None
    assert world.rest("k") is not None


async def test_a_token_of_other_namespaces_gets_no_hot_answer() -> None:
    world = await make_world(namespaces=(OTHER_NS,))
    world.put("k", b"v")
    assert world.rest("k") is None
    assert world.binding("k") is None


async def test_renderings_are_bounded_in_number(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hot, "HOT_RENDERED_RESPONSES", 3)
    for number in range(10):
        world.put(f"k{number}", b"v")
        assert world.rest(f"k{number}") is not None
    assert len(world.hot._rendered) == 3


async def test_renderings_are_bounded_in_bytes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hot, "HOT_RENDERED_BYTES", 5_000)
    for number in range(10):
        world.put(f"k{number}", b"x" * 1000)
        assert world.rest(f"k{number}") is not None
    assert 0 < world.hot._rendered_bytes <= 5_000
    assert world.hot._rendered_bytes == sum(r.size() for r in world.hot._rendered.values())
    world.put("big", b"x" * 6_000)  # larger than the whole bound: answered, not kept
    assert world.rest("big") is not None and world.rest("big") is not None
    assert ("rest", ACCOUNT, NS, "big") not in world.hot._rendered


# A real edge under the hot path.
async def test_real_edge_fresh_entry_agrees_with_freshness(tmp_path: Path) -> None:
    clock = FakeClock(500.0)
    epoch = FakeClock(EPOCH)
    store = SQLiteStore(tmp_path / "s.sqlite3")
    local = LocalBackend(store, DEFAULT_LIMITS.with_changes(writes_per_key_per_second=0), epoch)
    await store.create_namespace(NamespaceRecord(NS, ACCOUNT, "t"), 10)
    edge = EdgeBackend(local, POLICY, 1 << 20, Metrics(), default_ttl=60, clock=clock, epoch=epoch)
    keyring = Keyring({1: new_key()}, 1)
    try:
        for number in range(20):
            write = ValueWrite(f"k{number}", b"v" * number, '{"n":1}', int(EPOCH) + 100)
            await edge.write(ACCOUNT, NS, [sealing.seal_write(keyring, NS, write)])
        start = clock()
        for age in (0.0, 0.5, 29.999, 30.0, 45.0, 59.999, 60.0, 61.0):
            clock.now = start + age
            for ttl in (30, 45, 60):
                fresh = edge.fresh_entry(ACCOUNT, NS, "k1", ttl)
                expected = freshness(start, clock(), ttl, POLICY) is Freshness.FRESH
                assert (fresh is not None) is expected, (age, ttl)
                if fresh is not None:
                    entry, entry_age, left = fresh
                    assert entry.key == "k1" and entry.value
                    assert (entry_age, left) == (int(age), remaining(start, clock(), ttl))
                    assert edge.fresh_entry(ACCOUNT, NS, "k1", ttl, entry)[0] is entry  # type: ignore[index]
        clock.now = start
        epoch.now = EPOCH + 100  # the key's own expiration: not served
        assert edge.fresh_entry(ACCOUNT, NS, "k1", 60) is None
        assert edge.fresh_entry(ACCOUNT, NS, "absent", 60) is None
    finally:
        await edge.close()


async def test_hot_reads_leave_cache_slots_untracked_by_the_gc(tmp_path: Path) -> None:
    clock = FakeClock(500.0)
    store = SQLiteStore(tmp_path / "s.sqlite3")
    local = LocalBackend(store, DEFAULT_LIMITS.with_changes(writes_per_key_per_second=0), clock)
    await store.create_namespace(NamespaceRecord(NS, ACCOUNT, "t"), 10)
    edge = EdgeBackend(local, POLICY, 1 << 20, Metrics(), default_ttl=60, clock=clock, epoch=clock)
    world = await make_world()
    world.hot = HotReads(edge, world.holder, world.hot.authenticator, DEFAULT_LIMITS, "pullkv-test")
    try:
        for key in ("a", "b"):
            write = ValueWrite(key, b"value " + key.encode(), '{"k":1}', None)
            await edge.write(ACCOUNT, NS, [sealing.seal_write(world.keyring, NS, write)])
            assert world.rest(key) is not None
            assert world.binding(key) is not None
        assert edge.metrics.hot_responses == 4
        gc.collect()
        gc.collect()  # an outer tuple is untracked once its inner one already is
        for key in ("a", "b"):
            assert not gc.is_tracked(edge.cache.get_stored(("v", ACCOUNT, NS, key)))
    finally:
        await edge.close()


async def test_a_strong_read_is_never_answered_hot(world: World) -> None:
    world.put("k", b"v")
    assert world.rest("k") is not None  # the target is known and the response rendered
    for value in (b"no-cache", b"max-age=0, No-Cache"):
        headers = [(b"authorization", world.authorization), (b"cache-control", value)]
        assert world.hot.respond(b"GET", REST_PATH + b"k", b"cache_ttl=60", headers) is None
    other = [(b"authorization", world.authorization), (b"cache-control", b"max-age=0")]
    assert world.hot.respond(b"GET", REST_PATH + b"k", b"cache_ttl=60", other) is not None
