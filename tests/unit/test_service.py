"""Unit tests for pullkv.service: Workers KV semantics over a real SQLite store.

Time is a fake clock that only moves when a test advances it. Case ids (G3, L10, B5, ...)
refer to /work/shared/reference/behaviour-cases.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pullkv import errors
from pullkv.crypto import key_id_of, new_key
from pullkv.keyring import KeyringHolder, ensure_keyring, rotate
from pullkv.limits import DEFAULT_LIMITS, MIB, Limits
from pullkv.origin.local import LocalBackend
from pullkv.sealing import part_aad
from pullkv.service import KVService, render_bulk_get
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import Entry, SealedWrite, ValueWrite
from pullkv.validate import resolve_expiration
from tests.unit.helpers import FakeClock, raises_kv

ACCOUNT = "0" * 32
OTHER_ACCOUNT = "1" * 32
NOW = 1000.0

UNLIMITED = DEFAULT_LIMITS.with_changes(writes_per_key_per_second=0)


@dataclass
class World:
    service: KVService
    store: SQLiteStore
    clock: FakeClock
    master: bytes
    ns: str

    async def put(
        self,
        key: str,
        value: bytes | str = b"value",
        metadata: object = None,
        *,
        expiration: int | None = None,
        ttl: int | None = None,
        ns: str | None = None,
    ) -> int:
        raw = value.encode() if isinstance(value, str) else value
        meta = None if metadata is None else json.dumps(metadata)
        absolute = resolve_expiration(expiration, ttl, self.clock(), self.service.limits)
        return await self.service.put(ACCOUNT, ns or self.ns, ValueWrite(key, raw, meta, absolute))

    async def value(self, key: str) -> bytes | None:
        entry = await self.service.get(ACCOUNT, self.ns, key)
        return None if entry is None else entry.value

    async def names(self, prefix: str = "", limit: int = 1000) -> list[str]:
        page = await self.service.list_keys(
            ACCOUNT, self.ns, prefix=prefix, limit=limit, cursor=None
        )
        return [k.name for k in page.keys]


async def make_world(tmp_path: Path, limits: Limits) -> World:
    store = SQLiteStore(tmp_path / "store.sqlite3")
    clock = FakeClock(NOW)
    master = new_key()
    holder = KeyringHolder(store, master, await ensure_keyring(store, master), clock)
    service = KVService(LocalBackend(store, limits, clock), holder, limits, clock)
    namespace = await service.create_namespace(ACCOUNT, "test")
    return World(service, store, clock, master, namespace.id)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    made = await make_world(tmp_path, UNLIMITED)
    yield made
    await made.store.close()


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[World]:
    """A world with Workers KV's default same-key write rate: 1 per second."""
    made = await make_world(tmp_path, DEFAULT_LIMITS.with_changes(writes_per_key_per_second=1))
    yield made
    await made.store.close()


def vw(key: str, value: bytes = b"v", metadata_json: str | None = None) -> ValueWrite:
    return ValueWrite(key, value, metadata_json, None)


# Namespaces.
async def test_create_namespace(world: World) -> None:
    namespace = await world.service.create_namespace(ACCOUNT, "another")
    assert len(namespace.id) == 32 and int(namespace.id, 16) >= 0
    assert namespace.account_id == ACCOUNT and namespace.title == "another"
    assert await world.service.namespace(ACCOUNT, namespace.id, "get") == namespace
    with raises_kv(400, errors.DUPLICATE_TITLE):
        await world.service.create_namespace(ACCOUNT, "another")
    with raises_kv(400, errors.INVALID_TITLE):
        await world.service.create_namespace(ACCOUNT, "")
    await world.service.create_namespace(OTHER_ACCOUNT, "another")


async def test_namespace_of_another_account_is_not_found(world: World) -> None:
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.service.namespace(OTHER_ACCOUNT, world.ns, "get")
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND, "get: 'namespace not found'"):
        await world.service.get(OTHER_ACCOUNT, world.ns, "k")
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.service.put(OTHER_ACCOUNT, world.ns, vw("k"))
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.service.delete_namespace(OTHER_ACCOUNT, world.ns)
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.service.get(ACCOUNT, "f" * 32, "k")


async def test_rename_and_delete_namespace(world: World) -> None:
    renamed = await world.service.rename_namespace(ACCOUNT, world.ns, "renamed")
    assert renamed.title == "renamed"
    assert (await world.service.namespace(ACCOUNT, world.ns, "get")).title == "renamed"
    await world.put("k")
    await world.service.delete_namespace(ACCOUNT, world.ns)
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.service.get(ACCOUNT, world.ns, "k")
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.put("k")


async def test_list_namespaces_pages(world: World) -> None:
    for title in ["b", "c", "a"]:
        await world.service.create_namespace(ACCOUNT, title)
    page, total = await world.service.list_namespaces(
        ACCOUNT, page=1, per_page=2, order="title", descending=False
    )
    assert total == 4 and [n.title for n in page] == ["a", "b"]
    page, _ = await world.service.list_namespaces(
        ACCOUNT, page=2, per_page=2, order="title", descending=False
    )
    assert [n.title for n in page] == ["c", "test"]
    page, _ = await world.service.list_namespaces(
        ACCOUNT, page=3, per_page=2, order="title", descending=False
    )
    assert page == []


# Keys: get, put, delete (1.1, 1.2, 1.4, 1.6).
@pytest.mark.parametrize(
    ("key", "status"), [("", 400), (".", 400), ("..", 400), ("a" * 513, 414), ("€" * 171, 414)]
)
async def test_key_validation_on_get_and_delete(world: World, key: str, status: int) -> None:
    with raises_kv(status):
        await world.service.get(ACCOUNT, world.ns, key)
    with raises_kv(status):
        await world.service.delete(ACCOUNT, world.ns, key)
    with raises_kv(status):
        await world.service.get_many(ACCOUNT, world.ns, ["p/0", key])


async def test_put_get_round_trip(world: World) -> None:
    version = await world.put("key", bytes(range(256)), {"testing": True})
    entry = await world.service.get(ACCOUNT, world.ns, "key")
    assert entry == Entry("key", bytes(range(256)), '{"testing": true}', None, version)


async def test_get_missing(world: World) -> None:
    assert await world.service.get(ACCOUNT, world.ns, "missing") is None


async def test_keys_are_case_sensitive(world: World) -> None:
    await world.put("key", "lower")
    await world.put("KEY", "upper")
    assert await world.value("key") == b"lower"
    assert await world.value("KEY") == b"upper"


@pytest.mark.parametrize("key", ["a/b", "sp ace", "q?", "h#", "p%", "c:d", "ключ", "😀", "a" * 512])
async def test_unusual_keys_round_trip(world: World, key: str) -> None:
    await world.put(key, key)
    assert await world.value(key) == key.encode()
    assert await world.names() == [key]


async def test_empty_value(world: World) -> None:
    await world.put("empty", b"")
    assert await world.value("empty") == b""


async def test_metadata_keeps_its_type(world: World) -> None:
    for key, metadata in [("n", 123), ("s", "example"), ("o", {"a": [1, None]})]:
        await world.put(key, metadata=metadata)
        entry = await world.service.get(ACCOUNT, world.ns, key)
        assert entry is not None and entry.metadata_json is not None
        assert json.loads(entry.metadata_json) == metadata


async def test_overwrite_replaces_value_metadata_and_expiration(world: World) -> None:
    await world.put("k", "value1", {"testing": True}, ttl=3600)
    entry = await world.service.get(ACCOUNT, world.ns, "k")
    assert entry is not None and entry.expiration == 1000 + 3600
    await world.put("k", "value2", {"new": 1}, expiration=1500)
    entry = await world.service.get(ACCOUNT, world.ns, "k")
    assert entry is not None
    assert (entry.value, entry.metadata_json, entry.expiration) == (b"value2", '{"new": 1}', 1500)
    await world.put("k", "value3")  # P3: neither metadata nor expiration
    entry = await world.service.get(ACCOUNT, world.ns, "k")
    assert entry is not None
    assert (entry.value, entry.metadata_json, entry.expiration) == (b"value3", None, None)
    page = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=10, cursor=None)
    assert [(k.name, k.expiration, k.metadata_json) for k in page.keys] == [("k", None, None)]


async def test_expiration_ttl_wins(world: World) -> None:
    await world.put("k", expiration=5000, ttl=120)
    entry = await world.service.get(ACCOUNT, world.ns, "k")
    assert entry is not None and entry.expiration == 1120


async def test_g3_ttl_boundary(world: World) -> None:
    await world.put("k", "value", ttl=60)
    world.clock.advance(59.999)
    assert await world.value("k") == b"value"
    assert await world.names() == ["k"]
    world.clock.advance(0.001)  # exactly +60 s: expiration <= now
    assert await world.value("k") is None
    assert await world.names() == []
    assert await world.service.get_many(ACCOUNT, world.ns, ["k"]) == {"k": None}
    assert (await world.service.backend.read(ACCOUNT, world.ns, "k", None)).entry is None


async def test_delete(world: World) -> None:
    v1 = await world.put("k")
    v2 = await world.service.delete(ACCOUNT, world.ns, "k")
    assert v2 > v1
    assert await world.value("k") is None
    await world.service.delete(ACCOUNT, world.ns, "never-existed")  # D2


async def test_values_are_encrypted_and_bound(world: World) -> None:
    await world.put("k", b"plain secret", {"meta": "secret too"})
    sealed = await world.store.get(world.ns, "k", 0)
    assert sealed is not None and sealed.metadata is not None
    assert b"plain secret" not in sealed.value and b"secret too" not in sealed.metadata
    # Ciphertext copied to another key does not read as that key.
    await world.store.put(world.ns, [SealedWrite("copy", sealed.value, None, None)])
    with raises_kv(500, errors.INTERNAL, "value of key 'copy'"):
        await world.service.get(ACCOUNT, world.ns, "copy")


async def test_backend_reads_are_sealed(world: World) -> None:
    plaintext = b"a plaintext long enough never to appear in ciphertext by chance"
    version = await world.put("k", plaintext)
    sealed = (await world.service.backend.read(ACCOUNT, world.ns, "k", None)).entry
    assert sealed is not None and sealed.version == version and plaintext not in sealed.value
    assert (await world.service.open(world.ns, sealed)).value == plaintext


async def test_reads_old_data_after_rotation(world: World) -> None:
    await world.put("old", b"before", {"m": 1})
    await rotate(world.store, world.master)
    world.clock.advance(30)  # the holder refreshes (in the background) and seals with key 2
    await world.service.keyring.current()
    await world.service.keyring.refreshed()
    await world.put("new", b"after")
    for key in ("old", "new"):
        sealed = await world.store.get(world.ns, key, 0)
        assert sealed is not None
        assert key_id_of(sealed.value) == (1 if key == "old" else 2)
    assert await world.value("old") == b"before"
    assert await world.value("new") == b"after"


async def test_reads_data_sealed_by_another_process_after_its_rotation(world: World) -> None:
    await rotate(world.store, world.master)
    theirs = await ensure_keyring(world.store, world.master)
    aad = part_aad(world.ns, "k", "value")
    await world.store.put(world.ns, [SealedWrite("k", theirs.seal(b"theirs", aad), None, None)])
    assert await world.value("k") == b"theirs"  # no clock advance needed


# Listing (1.7).
async def test_list_sorted_and_prefixed(world: World) -> None:
    for key in ["key3", "key1", "key2", "KEY1", "section1key1", "section1key2", "section2key1"]:
        await world.put(key)
    assert await world.names() == [
        "KEY1",
        "key1",
        "key2",
        "key3",
        "section1key1",
        "section1key2",
        "section2key1",
    ]
    assert await world.names("section1") == ["section1key1", "section1key2"]
    assert await world.names("KEY") == ["KEY1"]
    assert await world.names("none") == []


async def test_list_byte_order(world: World) -> None:
    keys = ["é", "~", "b", "a", "Z", "B", "\U0001f600", "\uffff", "\ue000", "!", ", "]
    for key in keys:
        await world.put(key)
    assert await world.names() == sorted(keys, key=lambda k: k.encode())
    assert await world.names() == [
        "!",
        ", ",
        "B",
        "Z",
        "a",
        "b",
        "~",
        "é",
        "\ue000",
        "\uffff",
        "\U0001f600",
    ]


async def test_list_literal_prefix(world: World) -> None:
    for key in ["key\\_%1", "key\\a", "key\\_%2", "key\\bbb", "key\\_%3"]:
        await world.put(key)
    assert await world.names("key\\_%") == ["key\\_%1", "key\\_%2", "key\\_%3"]


async def test_list_metadata_and_expiration(world: World) -> None:
    await world.put("a", metadata={"testing": 1}, expiration=1500)
    await world.put("b")
    page = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=10, cursor=None)
    assert [(k.name, k.expiration, k.metadata_json) for k in page.keys] == [
        ("a", 1500, '{"testing": 1}'),
        ("b", None, None),
    ]
    assert page.cursor is None


async def test_list_empty_namespace(world: World) -> None:
    page = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=1000, cursor=None)
    assert page.keys == [] and page.cursor is None


async def test_l10_paging(world: World) -> None:
    for key in ["key1", "key2", "key3"]:
        await world.put(key)
    first = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=2, cursor=None)
    assert [k.name for k in first.keys] == ["key1", "key2"]
    assert isinstance(first.cursor, str) and first.cursor
    second = await world.service.list_keys(
        ACCOUNT, world.ns, prefix="", limit=2, cursor=first.cursor
    )
    assert [k.name for k in second.keys] == ["key3"]
    assert second.cursor is None


async def test_l11_paging_with_prefix(world: World) -> None:
    for key in ["p/1", "p/2", "p/3", "q/1"]:
        await world.put(key)
    first = await world.service.list_keys(ACCOUNT, world.ns, prefix="p/", limit=2, cursor=None)
    second = await world.service.list_keys(
        ACCOUNT, world.ns, prefix="p/", limit=2, cursor=first.cursor
    )
    assert [k.name for k in first.keys + second.keys] == ["p/1", "p/2", "p/3"]
    assert second.cursor is None


async def test_l12_limit_may_change_between_pages(world: World) -> None:
    for key in ["key1", "key2", "key3"]:
        await world.put(key)
    first = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=1, cursor=None)
    assert [k.name for k in first.keys] == ["key1"] and first.cursor
    second = await world.service.list_keys(
        ACCOUNT, world.ns, prefix="", limit=2, cursor=first.cursor
    )
    assert [k.name for k in second.keys] == ["key2", "key3"] and second.cursor is None


async def test_l13_cursor_continues_after_the_last_key(world: World) -> None:
    for key in ["key1", "key3", "key5"]:
        await world.put(key)
    first = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=2, cursor=None)
    assert [k.name for k in first.keys] == ["key1", "key3"]
    await world.put("key2")
    await world.put("key4")
    second = await world.service.list_keys(
        ACCOUNT, world.ns, prefix="", limit=2, cursor=first.cursor
    )
    assert [k.name for k in second.keys] == ["key4", "key5"]
    assert second.cursor is None


async def test_l13_cursor_survives_deletion_of_its_key(world: World) -> None:
    for key in ["key1", "key2", "key3"]:
        await world.put(key)
    first = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=2, cursor=None)
    await world.service.delete(ACCOUNT, world.ns, "key2")
    second = await world.service.list_keys(
        ACCOUNT, world.ns, prefix="", limit=2, cursor=first.cursor
    )
    assert [k.name for k in second.keys] == ["key3"]


async def test_l14_expired_keys_are_hidden(world: World) -> None:
    await world.put("key1", ttl=60)
    await world.put("key2", ttl=120)
    await world.put("key3", ttl=180)
    world.clock.advance(130)
    page = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=1000, cursor=None)
    assert [k.name for k in page.keys] == ["key3"]
    assert page.cursor is None
    world.clock.advance(50)  # key3 expires at exactly now
    assert await world.names() == []


async def test_l20_exactly_limit_keys_left_is_complete(world: World) -> None:
    for key in ["a", "b", "c", "d"]:
        await world.put(key)
    page = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=4, cursor=None)
    assert len(page.keys) == 4 and page.cursor is None
    first = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=2, cursor=None)
    second = await world.service.list_keys(
        ACCOUNT, world.ns, prefix="", limit=2, cursor=first.cursor
    )
    assert [k.name for k in second.keys] == ["c", "d"] and second.cursor is None


async def test_list_expired_keys_do_not_cause_an_extra_page(world: World) -> None:
    await world.put("a")
    await world.put("b")
    await world.put("c", ttl=60)
    world.clock.advance(60)
    page = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=2, cursor=None)
    assert [k.name for k in page.keys] == ["a", "b"] and page.cursor is None


async def test_list_walks_unicode_keys_with_cursors(world: World) -> None:
    keys = ["é", "€", "😀", "a", "ключ", "\uffff", "z"]
    for key in keys:
        await world.put(key)
    seen: list[str] = []
    cursor = None
    while True:
        page = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=2, cursor=cursor)
        seen += [k.name for k in page.keys]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == sorted(keys, key=lambda k: k.encode())


@pytest.mark.parametrize("cursor", ["!!!notbase64", "YmFk"])  # base64("bad")
async def test_foreign_cursor_is_400(world: World, cursor: str) -> None:
    await world.put("k")
    with raises_kv(400, errors.INVALID_CURSOR):
        await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=10, cursor=cursor)


async def test_empty_cursor_means_start(world: World) -> None:
    await world.put("k")
    page = await world.service.list_keys(ACCOUNT, world.ns, prefix="", limit=10, cursor="")
    assert [k.name for k in page.keys] == ["k"]


async def test_list_prefix_limits(world: World) -> None:
    await world.put("a" * 512)
    assert await world.names("a" * 512) == ["a" * 512]
    with raises_kv(414, errors.KEY_TOO_LONG, "length of 513 "):
        await world.names("a" * 513)


# Bulk get (1.8): get_many + render_bulk_get.
async def bulk(
    world: World, keys: list[str], kind: str = "text", with_metadata: bool = False
) -> dict[str, object]:
    entries = await world.service.get_many(ACCOUNT, world.ns, keys)
    return render_bulk_get(entries, kind, with_metadata, world.service.limits)  # type: ignore[arg-type]


async def test_b1_present_and_missing(world: World) -> None:
    await world.put("key1", "value1")
    assert await bulk(world, ["key1", "key2"]) == {"key1": "value1", "key2": None}


async def test_b1_all_missing(world: World) -> None:
    assert await bulk(world, ["x", "y"]) == {"x": None, "y": None}


async def test_b2_at_most_100_keys(world: World) -> None:
    keys = [f"k{i}" for i in range(101)]
    with raises_kv(400, errors.BULK_GET_KEYS, "^You can request a maximum of 100 keys$"):
        await world.service.get_many(ACCOUNT, world.ns, keys)
    result = await bulk(world, keys[:100])
    assert len(result) == 100 and set(result.values()) == {None}


async def test_b3_at_least_one_key(world: World) -> None:
    with raises_kv(400, errors.BULK_GET_KEYS, "^You must request a minimum of 1 key$"):
        await world.service.get_many(ACCOUNT, world.ns, [])


def test_b4_bad_type_message() -> None:
    error = errors.bulk_get_bad_type("invalid")
    assert error.status == 400
    assert error.message == '"invalid" is not a valid type. Use "json" or "text"'


async def test_b5_json(world: World) -> None:
    await world.put("json", '{"example": "ex"}')
    await world.put("text", "example")
    assert await bulk(world, ["json"], "json") == {"json": {"example": "ex"}}
    with raises_kv(400, errors.BULK_GET_NOT_JSON) as info:
        await bulk(world, ["json", "text"], "json")
    assert info.value.message == (
        "At least one of the requested keys corresponds to a non-json value"
    )
    assert await bulk(world, ["json", "missing"], "json") == {
        "json": {"example": "ex"},
        "missing": None,
    }


async def test_b6_text_is_not_parsed(world: World) -> None:
    await world.put("json", '{"example": "ex"}')
    assert await bulk(world, ["json"]) == {"json": '{"example": "ex"}'}


async def test_b7_b8_b9_with_metadata(world: World) -> None:
    await world.put("key1", "value1", {"testing": True})
    await world.put("key2", "value2")
    await world.put("num", "x", 123)
    await world.put("str", "y", "example")
    assert await bulk(world, ["key1", "key2", "num", "str", "missing"], with_metadata=True) == {
        "key1": {"value": "value1", "metadata": {"testing": True}},
        "key2": {"value": "value2", "metadata": None},
        "num": {"value": "x", "metadata": 123},
        "str": {"value": "y", "metadata": "example"},
        "missing": None,
    }


async def test_b7_with_metadata_shows_expiration(world: World) -> None:
    await world.put("k", "v", {"m": 1}, expiration=1500)
    assert await bulk(world, ["k"], with_metadata=True) == {
        "k": {"value": "v", "metadata": {"m": 1}, "expiration": 1500}
    }


async def test_b10_falsy_values_keep_their_metadata(world: World) -> None:
    await world.put("empty", "", {"m": 1})
    await world.put("zero", "0", {"m": 2})
    await world.put("false", "false", {"m": 3})
    assert await bulk(world, ["empty"], with_metadata=True) == {
        "empty": {"value": "", "metadata": {"m": 1}}
    }
    assert await bulk(world, ["zero", "false"], "json", with_metadata=True) == {
        "zero": {"value": 0, "metadata": {"m": 2}},
        "false": {"value": False, "metadata": {"m": 3}},
    }
    assert await bulk(world, ["zero", "false"], "json") == {"zero": 0, "false": False}


def _entry(key: str, size: int) -> Entry:
    return Entry(key, b"x" * size, None, None, 1)


def test_b11_total_size_limit() -> None:
    entries: dict[str, Entry | None] = {f"k{i}": _entry(f"k{i}", MIB) for i in range(26)}
    with raises_kv(413, errors.REQUEST_TOO_LARGE) as info:
        render_bulk_get(entries, "text", False, DEFAULT_LIMITS)
    assert info.value.message == "Total size of request exceeds the limit of 25MB"
    del entries["k25"]
    assert len(render_bulk_get(entries, "text", False, DEFAULT_LIMITS)) == 25  # exactly 25 MiB


async def test_b11_total_size_limit_small_build(tmp_path: Path) -> None:
    limits = UNLIMITED.with_changes(bulk_get_max_response_bytes=1024)
    small = await make_world(tmp_path, limits)
    try:
        await small.put("a", b"x" * 512)
        await small.put("b", b"x" * 512)
        await small.put("c", b"x")
        assert len(await bulk(small, ["a", "b"])) == 2
        with raises_kv(413, errors.REQUEST_TOO_LARGE) as info:
            await bulk(small, ["a", "b", "c"])
        assert info.value.message == "Total size of request exceeds the limit of 0.0009765625MB"
    finally:
        await small.store.close()


async def test_b12_duplicate_keys(world: World) -> None:
    await world.put("p/0", "zero")
    entries = await world.service.get_many(ACCOUNT, world.ns, ["p/0", "p/0"])
    assert list(entries) == ["p/0"]
    assert render_bulk_get(entries, "text", False, world.service.limits) == {"p/0": "zero"}


async def test_b13_expired_key_is_null(world: World) -> None:
    await world.put("short", "gone", ttl=60)
    await world.put("long", "kept", ttl=600)
    world.clock.advance(60)
    assert await bulk(world, ["short", "long"]) == {"short": None, "long": "kept"}


async def test_k10_empty_key_in_bulk_get(world: World) -> None:
    with raises_kv(400, errors.INVALID_KEY, "^Key names must not be empty$"):
        await world.service.get_many(ACCOUNT, world.ns, ["p/0", ""])


async def test_bulk_get_non_utf8_text_is_replaced(world: World) -> None:
    await world.put("bin", b"\xff\xfeok")
    assert await bulk(world, ["bin"]) == {"bin": "\ufffd\ufffdok"}


# Rate limiting.
async def test_second_write_within_a_second_is_429(limited: World) -> None:
    await limited.put("k", "one")
    with raises_kv(429, errors.RATE_LIMITED, "'k'"):
        await limited.put("k", "two")
    limited.clock.advance(0.999)
    with raises_kv(429):
        await limited.put("k", "three")
    assert await limited.value("k") == b"one"
    limited.clock.advance(0.001)
    await limited.put("k", "four")
    assert await limited.value("k") == b"four"


async def test_rate_limit_is_per_key_and_namespace(limited: World) -> None:
    other = (await limited.service.create_namespace(ACCOUNT, "other")).id
    await limited.put("a")
    await limited.put("b")
    await limited.put("a", ns=other)
    with raises_kv(429):
        await limited.put("a")


async def test_delete_counts_as_a_write(limited: World) -> None:
    await limited.put("k")
    with raises_kv(429):
        await limited.service.delete(ACCOUNT, limited.ns, "k")
    limited.clock.advance(1)
    await limited.service.delete(ACCOUNT, limited.ns, "k")
    with raises_kv(429):
        await limited.put("k")


async def test_failed_write_does_not_use_up_the_rate(limited: World) -> None:
    await limited.store.delete_namespace(limited.ns)  # gone from the store, still cached
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await limited.put("k")
    backend = limited.service.backend
    assert isinstance(backend, LocalBackend)
    assert backend.rate.check(limited.ns, "k", limited.clock())


async def test_bulk_put_reports_rate_limited_keys(limited: World) -> None:
    await limited.put("a", "old")
    result = await limited.service.bulk_put(
        ACCOUNT, limited.ns, [vw("a", b"new"), vw("b", b"new"), vw("c", b"new")]
    )
    assert result.successful_key_count == 2
    assert result.unsuccessful_keys == ["a"]
    assert await limited.value("a") == b"old"
    assert await limited.value("b") == b"new"
    limited.clock.advance(1)
    retry = await limited.service.bulk_put(ACCOUNT, limited.ns, [vw("a", b"new")])
    assert (retry.successful_key_count, retry.unsuccessful_keys) == (1, [])
    assert await limited.value("a") == b"new"


async def test_bulk_put_all_rate_limited(limited: World) -> None:
    await limited.put("a")
    result = await limited.service.bulk_put(ACCOUNT, limited.ns, [vw("a", b"x")])
    assert (result.successful_key_count, result.unsuccessful_keys) == (0, ["a"])


async def test_bulk_delete_reports_rate_limited_keys(limited: World) -> None:
    await limited.put("a")
    result = await limited.service.bulk_delete(ACCOUNT, limited.ns, ["a", "b", "b"])
    assert result.unsuccessful_keys == ["a"]
    assert result.successful_key_count == 2
    assert await limited.value("a") == b"value"


async def test_bulk_put_duplicate_keys_same_request(limited: World) -> None:
    result = await limited.service.bulk_put(
        ACCOUNT, limited.ns, [vw("a", b"first"), vw("b", b"b"), vw("a", b"last")]
    )
    # A key named twice is written once, with its last value, and is not rate-limited by itself.
    assert result.unsuccessful_keys == []
    assert result.successful_key_count == 3
    assert await limited.value("a") == b"last"
    assert await limited.names() == ["a", "b"]


# Bulk writes without a rate limit.
async def test_bulk_put(world: World) -> None:
    writes = [
        ValueWrite(f"k{i:04}", f"v{i}".encode(), '{"i":1}' if i % 2 else None, None)
        for i in range(1000)
    ]
    result = await world.service.bulk_put(ACCOUNT, world.ns, writes)
    assert (result.successful_key_count, result.unsuccessful_keys) == (1000, [])
    entries = await world.service.get_many(ACCOUNT, world.ns, ["k0001", "k0998"])
    assert entries["k0001"] is not None and entries["k0001"].metadata_json == '{"i":1}'
    assert entries["k0998"] is not None and entries["k0998"].value == b"v998"
    assert len(await world.names()) == 1000


async def test_bulk_put_too_many(world: World) -> None:
    writes = [vw(f"k{i}") for i in range(10_001)]
    with raises_kv(400, errors.BULK_TOO_MANY, "10001 items"):
        await world.service.bulk_put(ACCOUNT, world.ns, writes)
    assert await world.names() == []


async def test_bulk_put_empty(world: World) -> None:
    result = await world.service.bulk_put(ACCOUNT, world.ns, [])
    assert (result.successful_key_count, result.unsuccessful_keys) == (0, [])


async def test_bulk_put_into_missing_namespace(world: World) -> None:
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await world.service.bulk_put(ACCOUNT, "f" * 32, [vw("a")])


async def test_bulk_delete(world: World) -> None:
    for key in ["a", "b", "c"]:
        await world.put(key)
    result = await world.service.bulk_delete(ACCOUNT, world.ns, ["a", "c", "missing"])
    assert (result.successful_key_count, result.unsuccessful_keys) == (3, [])
    assert await world.names() == ["b"]
    with raises_kv(400, errors.INVALID_KEY):
        await world.service.bulk_delete(ACCOUNT, world.ns, ["b", ""])
    assert await world.names() == ["b"]
    with raises_kv(400, errors.BULK_TOO_MANY):
        await world.service.bulk_delete(ACCOUNT, world.ns, ["b"] * 10_001)
