"""The store conformance suite, run against every engine, then SQLite-only tests.

The first part talks to a store only through the Store protocol (pullkv.store.base), so a new
engine joins by adding its name to ENGINES and a branch to the ``backend`` fixture. The last
part, marked clearly, tests the SQLite engine's own machinery (group commit).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pullkv import errors
from pullkv.store.base import Store
from pullkv.store.postgres import PostgresStore
from pullkv.store.sqlite import MAX_GROUP, SQLiteStore, prefix_upper_bound
from pullkv.types import ChangeRecord, NamespaceRecord, SealedWrite, WriteCondition
from tests.pg import fresh_schema
from tests.unit.helpers import raises_kv, token

ENGINES = ["sqlite", "postgresql"]

ACCOUNT = "0" * 32
OTHER_ACCOUNT = "1" * 32


@dataclass
class Backend:
    """One engine's backing storage; ``open`` connects a new store instance to it."""

    engine: str
    open: Callable[[], Awaitable[Store]]


@pytest.fixture(params=ENGINES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite3"

        async def open_sqlite() -> Store:
            return SQLiteStore(path)

        yield Backend("sqlite", open_sqlite)
    elif request.param == "postgresql":
        with fresh_schema() as url:

            async def open_postgres() -> Store:
                return PostgresStore(url)

            yield Backend("postgresql", open_postgres)
    else:
        raise AssertionError(f"unknown engine {request.param}")


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    yield opened
    await opened.close()


def new_id() -> str:
    return uuid.uuid4().hex


def w(
    key: str, value: bytes = b"v", metadata: bytes | None = None, expiration: int | None = None
) -> SealedWrite:
    return SealedWrite(key, value, metadata, expiration)


async def make_ns(store: Store, account: str = ACCOUNT, title: str | None = None) -> str:
    namespace = NamespaceRecord(new_id(), account, title or f"ns-{new_id()}")
    await store.create_namespace(namespace, 1000)
    return namespace.id


async def names(store: Store, ns: str, prefix: str = "", after: str | None = None) -> list[str]:
    return [k.key for k in await store.list_keys(ns, prefix, after, 1000, 0)]


# Settings.
async def test_settings(store: Store) -> None:
    assert await store.get_setting("missing") is None
    await store.set_setting("a", "1")
    assert await store.get_setting("a") == "1"
    await store.set_setting("a", "2")
    assert await store.get_setting("a") == "2"
    assert await store.setdefault_setting("a", "3") == "2"
    assert await store.get_setting("a") == "2"
    assert await store.setdefault_setting("b", "x") == "x"
    assert await store.get_setting("b") == "x"


# Namespaces.
async def test_namespace_lifecycle(store: Store) -> None:
    namespace = NamespaceRecord(new_id(), ACCOUNT, "first")
    assert await store.create_namespace(namespace, 10) == namespace
    assert await store.get_namespace(namespace.id) == namespace
    renamed = await store.rename_namespace(namespace.id, "second")
    assert renamed == NamespaceRecord(namespace.id, ACCOUNT, "second")
    assert await store.get_namespace(namespace.id) == renamed
    assert await store.delete_namespace(namespace.id)
    assert await store.get_namespace(namespace.id) is None
    assert not await store.delete_namespace(namespace.id)


async def test_get_unknown_namespace(store: Store) -> None:
    assert await store.get_namespace(new_id()) is None


async def test_titles_unique_per_account(store: Store) -> None:
    await store.create_namespace(NamespaceRecord(new_id(), ACCOUNT, "title"), 10)
    with raises_kv(400, errors.DUPLICATE_TITLE, "title"):
        await store.create_namespace(NamespaceRecord(new_id(), ACCOUNT, "title"), 10)
    other = NamespaceRecord(new_id(), OTHER_ACCOUNT, "title")
    assert await store.create_namespace(other, 10) == other
    # Titles are case-sensitive.
    await store.create_namespace(NamespaceRecord(new_id(), ACCOUNT, "Title"), 10)
    listed, total = await store.list_namespaces(ACCOUNT, "title", False, 0, 10)
    assert total == 2 and [n.title for n in listed] == ["Title", "title"]


async def test_duplicate_id_is_refused(store: Store) -> None:
    namespace = NamespaceRecord(new_id(), ACCOUNT, "one")
    await store.create_namespace(namespace, 10)
    with pytest.raises(errors.KVError):
        await store.create_namespace(NamespaceRecord(namespace.id, ACCOUNT, "two"), 10)
    assert await store.get_namespace(namespace.id) == namespace


async def test_rename_conflicts(store: Store) -> None:
    a = await make_ns(store, title="a")
    b = await make_ns(store, title="b")
    with raises_kv(400, errors.DUPLICATE_TITLE):
        await store.rename_namespace(b, "a")
    assert (await store.get_namespace(b)) == NamespaceRecord(b, ACCOUNT, "b")
    assert (await store.rename_namespace(a, "a")).title == "a"  # to its own title
    await store.rename_namespace(a, "c")
    await make_ns(store, title="a")  # the old title is free again
    # A title taken in another account does not conflict.
    await make_ns(store, OTHER_ACCOUNT, title="z")
    assert (await store.rename_namespace(a, "z")).title == "z"


async def test_rename_missing(store: Store) -> None:
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await store.rename_namespace(new_id(), "x")


async def test_delete_frees_the_title(store: Store) -> None:
    ns = await make_ns(store, title="t")
    await store.delete_namespace(ns)
    await make_ns(store, title="t")


async def test_max_namespaces_per_account(store: Store) -> None:
    ids = []
    for i in range(3):
        ids.append(new_id())
        await store.create_namespace(NamespaceRecord(ids[-1], ACCOUNT, f"t{i}"), 3)
    with raises_kv(400, errors.TOO_MANY_NAMESPACES, "at most 3"):
        await store.create_namespace(NamespaceRecord(new_id(), ACCOUNT, "t3"), 3)
    await store.create_namespace(NamespaceRecord(new_id(), OTHER_ACCOUNT, "t3"), 3)
    await store.delete_namespace(ids[0])
    await store.create_namespace(NamespaceRecord(new_id(), ACCOUNT, "t3"), 3)
    _, total = await store.list_namespaces(ACCOUNT, "id", False, 0, 100)
    assert total == 3


async def test_list_namespaces(store: Store) -> None:
    titles = ["delta", "alpha", "Echo", "charlie", "bravo"]
    made = {}
    for title in titles:
        made[title] = await make_ns(store, title=title)
    await make_ns(store, OTHER_ACCOUNT, title="other")

    page, total = await store.list_namespaces(ACCOUNT, "title", False, 0, 100)
    assert total == 5
    assert [n.title for n in page] == ["Echo", "alpha", "bravo", "charlie", "delta"]
    assert all(n.account_id == ACCOUNT for n in page)
    page, _ = await store.list_namespaces(ACCOUNT, "title", True, 0, 100)
    assert [n.title for n in page] == ["delta", "charlie", "bravo", "alpha", "Echo"]

    by_id = sorted(made.values())
    page, _ = await store.list_namespaces(ACCOUNT, "id", False, 0, 100)
    assert [n.id for n in page] == by_id
    page, _ = await store.list_namespaces(ACCOUNT, "id", True, 0, 100)
    assert [n.id for n in page] == by_id[::-1]

    pages = []
    for offset in range(0, 6, 2):
        page, total = await store.list_namespaces(ACCOUNT, "title", False, offset, 2)
        assert total == 5
        pages.append([n.title for n in page])
    assert pages == [["Echo", "alpha"], ["bravo", "charlie"], ["delta"]]
    page, total = await store.list_namespaces(ACCOUNT, "title", False, 10, 2)
    assert page == [] and total == 5

    only = [made["bravo"], made["delta"], new_id()]
    page, total = await store.list_namespaces(ACCOUNT, "title", False, 0, 100, only)
    assert total == 2 and [n.title for n in page] == ["bravo", "delta"]
    page, total = await store.list_namespaces(ACCOUNT, "title", False, 0, 100, [])
    assert page == [] and total == 0

    page, total = await store.list_namespaces(new_id(), "title", False, 0, 100)
    assert page == [] and total == 0


async def test_delete_namespace_removes_its_keys(store: Store) -> None:
    ns = await make_ns(store)
    keep = await make_ns(store)
    await store.put(ns, [w("a"), w("b")])
    await store.put(keep, [w("a")])
    assert await store.delete_namespace(ns)
    assert await store.get(ns, "a", 0) is None
    assert await store.get_many(ns, ["a", "b"], 0) == {}
    assert await store.list_keys(ns, "", None, 10, 0) == []
    assert [n for n, _ in await store.scan_entries(None, 100)] == [keep]
    assert await store.get(keep, "a", 0) is not None


# Keys.
async def test_put_get(store: Store) -> None:
    ns = await make_ns(store)
    (version,) = await store.put(ns, [w("k", b"\x00\x01\xff", b"meta", 5000)])
    entry = await store.get(ns, "k", 0)
    assert entry is not None
    assert entry.key == "k"
    assert entry.value == b"\x00\x01\xff"
    assert entry.metadata == b"meta"
    assert entry.expiration == 5000
    assert entry.version == version


async def test_get_missing(store: Store) -> None:
    ns = await make_ns(store)
    assert await store.get(ns, "nope", 0) is None
    assert await store.get(new_id(), "nope", 0) is None


async def test_empty_value_is_a_value(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("empty", b"")])
    entry = await store.get(ns, "empty", 0)
    assert entry is not None and entry.value == b"" and entry.metadata is None


async def test_keys_are_exact(store: Store) -> None:
    ns = await make_ns(store)
    keys = ["lower", "LOWER", "a/b", "sp ace", "q?#%:", "ключ", "😀", "e\u0301", "é", "k" * 512]
    await store.put(ns, [w(k, k.encode()) for k in keys])
    for key in keys:
        entry = await store.get(ns, key, 0)
        assert entry is not None and entry.value == key.encode() and entry.key == key
    assert sorted(await names(store, ns)) == sorted(keys)


async def test_namespaces_are_isolated(store: Store) -> None:
    a, b = await make_ns(store), await make_ns(store)
    await store.put(a, [w("k", b"in a")])
    await store.put(b, [w("k", b"in b")])
    entry_a, entry_b = await store.get(a, "k", 0), await store.get(b, "k", 0)
    assert entry_a is not None and entry_a.value == b"in a"
    assert entry_b is not None and entry_b.value == b"in b"
    await store.delete(a, ["k"])
    assert await store.get(a, "k", 0) is None
    assert await store.get(b, "k", 0) is not None


async def test_overwrite_replaces_everything(store: Store) -> None:
    ns = await make_ns(store)
    (v1,) = await store.put(ns, [w("k", b"one", b"meta", 5000)])
    (v2,) = await store.put(ns, [w("k", b"two")])
    entry = await store.get(ns, "k", 0)
    assert entry is not None
    assert (entry.value, entry.metadata, entry.expiration) == (b"two", None, None)
    assert entry.version == v2
    assert v2 > v1
    (listed,) = await store.list_keys(ns, "", None, 10, 0)
    assert (listed.expiration, listed.metadata) == (None, None)


async def test_get_many(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("a", b"1", b"m"), w("b", b"2"), w("é", b"3")])
    found = await store.get_many(ns, ["a", "missing", "é", "a"], 0)
    assert set(found) == {"a", "é"}
    assert found["a"].value == b"1" and found["a"].metadata == b"m"
    assert found["é"].value == b"3" and found["é"].key == "é"
    assert await store.get_many(ns, [], 0) == {}
    assert await store.get_many(ns, ["x", "y"], 0) == {}
    many = [f"k{i}" for i in range(100)]
    await store.put(ns, [w(k) for k in many])
    assert set(await store.get_many(ns, many, 0)) == set(many)


async def test_delete(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("a"), w("b"), w("c")])
    await store.delete(ns, ["a"])
    assert await store.get(ns, "a", 0) is None
    await store.delete(ns, ["b", "never-existed", "c"])
    assert await names(store, ns) == []
    await store.delete(ns, ["never-existed"])  # idempotent
    await store.delete(ns, [])


async def test_versions_strictly_increase(store: Store) -> None:
    ns = await make_ns(store)
    seen: list[int] = []
    for i in range(5):
        seen += await store.put(ns, [w("k", str(i).encode())])
        seen.append(await store.delete(ns, ["k"]))
        seen += await store.put(ns, [w("a"), w("b"), w("c")])
        seen.append(await store.delete(ns, ["missing"]))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    other = await make_ns(store)
    (later,) = await store.put(other, [w("k")])
    assert later > seen[-1]


async def test_versions_of_one_put_are_distinct_and_match_entries(store: Store) -> None:
    ns = await make_ns(store)
    versions = await store.put(ns, [w("a"), w("b"), w("c")])
    assert versions == sorted(versions) and len(set(versions)) == 3
    for key, version in zip("abc", versions, strict=True):
        entry = await store.get(ns, key, 0)
        assert entry is not None and entry.version == version


async def test_put_into_deleted_namespace(store: Store) -> None:
    ns = await make_ns(store)
    await store.delete_namespace(ns)
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await store.put(ns, [w("a"), w("b")])
    assert await store.get(ns, "a", 0) is None
    assert await store.scan_entries(None, 100) == []


async def test_writes_to_unknown_namespace(store: Store) -> None:
    ns = new_id()
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await store.put(ns, [w("a")])
    with raises_kv(404, errors.NAMESPACE_NOT_FOUND):
        await store.delete(ns, ["a"])
    assert await store.scan_entries(None, 100) == []


# Listing.
async def test_list_in_utf8_byte_order(store: Store) -> None:
    ns = await make_ns(store)
    # Code-point (UTF-8 byte) order; UTF-16 would put U+1F600 before U+E000 and U+FFFF.
    ordered = ["!", ", ", "B", "Z", "a", "b", "~", "é", "\ue000", "\uffff", "\U0001f600"]
    await store.put(ns, [w(k) for k in reversed(ordered)])
    assert await names(store, ns) == ordered


async def test_list_orders_prefixes_first(store: Store) -> None:
    ns = await make_ns(store)
    keys = ["key1", "key", "key10", "key2", "ke", "key/1", "key 1"]
    await store.put(ns, [w(k) for k in keys])
    assert await names(store, ns) == sorted(keys, key=lambda k: k.encode())
    assert await names(store, ns) == ["ke", "key", "key 1", "key/1", "key1", "key10", "key2"]


async def test_list_prefix(store: Store) -> None:
    ns = await make_ns(store)
    keys = ["section1key1", "section1key2", "section2key1", "KEY1", "key1", "sect"]
    await store.put(ns, [w(k) for k in keys])
    assert await names(store, ns, "section1") == ["section1key1", "section1key2"]
    assert await names(store, ns, "KEY") == ["KEY1"]
    assert await names(store, ns, "none") == []
    assert await names(store, ns, "section1key1") == ["section1key1"]
    assert await names(store, ns, "") == sorted(keys)


async def test_list_prefix_is_literal(store: Store) -> None:
    ns = await make_ns(store)
    keys = ["key\\_%1", "key\\a", "key\\_%2", "key\\bbb", "key\\_%3", "keyX_%1", "key\\_X1"]
    await store.put(ns, [w(k) for k in keys])
    assert await names(store, ns, "key\\_%") == ["key\\_%1", "key\\_%2", "key\\_%3"]
    assert await names(store, ns, "key\\") == sorted(k for k in keys if k.startswith("key\\"))
    await store.put(ns, [w("100%"), w("100x"), w("1000"), w("a_b"), w("axb"), w("a%b")])
    assert await names(store, ns, "100%") == ["100%"]
    assert await names(store, ns, "a_") == ["a_b"]
    assert await names(store, ns, "a%") == ["a%b"]
    assert await names(store, ns, "*") == []
    await store.put(ns, [w("[ab]"), w("a"), w("^x")])
    assert await names(store, ns, "[") == ["[ab]"]
    assert await names(store, ns, "^") == ["^x"]


@pytest.mark.parametrize("top", ["\x7f", "ÿ", "\u07ff", "\uffff", "\U0010ffff"])
async def test_list_prefix_ending_in_high_characters(store: Store, top: str) -> None:
    ns = await make_ns(store)
    inside = [top, top + "a", top + top, top + "\U0010ffff", top + "z"]
    outside = [chr(ord(top) - 1), chr(ord(top) - 1) + "z", "a"]
    if ord(top) < 0x10FFFF:
        outside += [chr(ord(top) + 1), chr(ord(top) + 1) + "a"]
    await store.put(ns, [w(k) for k in set(inside + outside)])
    expected = sorted(set(inside), key=lambda k: k.encode())
    assert await names(store, ns, top) == expected
    double = top + top
    assert await names(store, ns, double) == sorted(
        {k for k in inside if k.startswith(double)}, key=lambda k: k.encode()
    )


async def test_list_after_is_strict(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w(k) for k in ["a", "b", "c", "é"]])
    assert await names(store, ns, after="a") == ["b", "c", "é"]
    assert await names(store, ns, after="b") == ["c", "é"]
    assert await names(store, ns, after="bb") == ["c", "é"]  # need not exist
    assert await names(store, ns, after="") == ["a", "b", "c", "é"]
    assert await names(store, ns, after="é") == []
    assert await names(store, ns, after="z") == ["é"]  # byte order, not locale order
    assert await names(store, ns, after="\U0001f600") == []


async def test_list_after_with_prefix(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w(k) for k in ["a1", "p1", "p2", "p3", "q1"]])
    assert await names(store, ns, "p", after="p1") == ["p2", "p3"]
    assert await names(store, ns, "p", after="a") == ["p1", "p2", "p3"]
    assert await names(store, ns, "p", after="p3") == []
    assert await names(store, ns, "p", after="q") == []


async def test_list_limit(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w(f"k{i:02}") for i in range(20)])
    assert [k.key for k in await store.list_keys(ns, "", None, 3, 0)] == ["k00", "k01", "k02"]
    assert len(await store.list_keys(ns, "", None, 1, 0)) == 1
    assert len(await store.list_keys(ns, "", None, 100, 0)) == 20
    page = await store.list_keys(ns, "", "k17", 5, 0)
    assert [k.key for k in page] == ["k18", "k19"]


async def test_list_paging_covers_everything_once(store: Store) -> None:
    ns = await make_ns(store)
    keys = sorted({f"{chr(c)}{i}" for c in (0x41, 0x61, 0xE9, 0x4E00) for i in range(30)})
    await store.put(ns, [w(k) for k in keys])
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_keys(ns, "", after, 7, 0)
        if not page:
            break
        seen += [k.key for k in page]
        after = page[-1].key
    assert seen == sorted(keys, key=lambda k: k.encode())


async def test_list_returns_expiration_and_metadata(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("a", b"x", b"meta", 1500), w("b", b"y")])
    a, b = await store.list_keys(ns, "", None, 10, 0)
    assert (a.key, a.expiration, a.metadata) == ("a", 1500, b"meta")
    assert (b.key, b.expiration, b.metadata) == ("b", None, None)


# Expiry.
async def test_expired_entries_are_invisible(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("exp", expiration=1060), w("live", expiration=2000), w("forever")])
    assert (await store.get(ns, "exp", 1059)) is not None
    assert set(await store.get_many(ns, ["exp", "live", "forever"], 1059)) == {
        "exp",
        "live",
        "forever",
    }
    assert await names_at(store, ns, 1059) == ["exp", "forever", "live"]
    for now in (1060, 1061, 1999):
        assert await store.get(ns, "exp", now) is None
        assert set(await store.get_many(ns, ["exp", "live", "forever"], now)) == {
            "live",
            "forever",
        }
        assert await names_at(store, ns, now) == ["forever", "live"]
    assert await names_at(store, ns, 2000) == ["forever"]


async def names_at(store: Store, ns: str, now: int) -> list[str]:
    return [k.key for k in await store.list_keys(ns, "", None, 100, now)]


async def test_expired_entries_do_not_fill_a_page(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w(f"a{i}", expiration=100) for i in range(10)] + [w("b1"), w("b2")])
    page = await store.list_keys(ns, "", None, 2, 100)
    assert [k.key for k in page] == ["b1", "b2"]


async def test_overwrite_revives_an_expired_key(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("k", b"old", expiration=100)])
    assert await store.get(ns, "k", 200) is None
    await store.put(ns, [w("k", b"new")])
    entry = await store.get(ns, "k", 200)
    assert entry is not None and entry.value == b"new" and entry.expiration is None


async def test_purge_expired_in_batches(store: Store) -> None:
    ns = await make_ns(store)
    other = await make_ns(store)
    await store.put(ns, [w(f"old{i:02}", expiration=100 + i) for i in range(15)])
    await store.put(other, [w(f"old{i:02}", expiration=100) for i in range(10)])
    await store.put(ns, [w("later", expiration=500), w("forever")])
    assert await store.purge_expired(99, 10) == 0
    removed = []
    while True:
        count = await store.purge_expired(200, 10)
        assert count <= 10
        if count == 0:
            break
        removed.append(count)
    assert sum(removed) == 25 and len(removed) == 3
    remaining = [(n, e.key) for n, e in await store.scan_entries(None, 100)]
    assert sorted(remaining) == sorted([(ns, "later"), (ns, "forever")])
    assert await store.purge_expired(500, 10) == 1  # expiration <= now
    assert [e.key for _, e in await store.scan_entries(None, 100)] == ["forever"]


async def test_purge_expired_boundary(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("a", expiration=100), w("b", expiration=101)])
    assert await store.purge_expired(100, 100) == 1
    assert [e.key for _, e in await store.scan_entries(None, 100)] == ["b"]


# Scanning and resealing.
async def test_scan_entries_pages(store: Store) -> None:
    first, second = sorted([await make_ns(store), await make_ns(store)])
    keys = ["a", "b", "é", "\U0001f600", "Z"]
    await store.put(second, [w(k, b"2" + k.encode()) for k in keys])
    await store.put(first, [w(k, b"1" + k.encode(), b"m") for k in keys[:3]])
    expected = [(first, k) for k in sorted(keys[:3], key=str.encode)]
    expected += [(second, k) for k in sorted(keys, key=str.encode)]
    for size in (1, 2, 3, 100):
        seen = []
        after: tuple[str, str] | None = None
        while True:
            page = await store.scan_entries(after, size)
            assert len(page) <= size
            if not page:
                break
            seen += page
            after = (page[-1][0], page[-1][1].key)
        assert [(n, e.key) for n, e in seen] == expected
    page = await store.scan_entries(None, 100)
    by_key = {(n, e.key): e for n, e in page}
    entry = by_key[(first, "a")]
    assert entry.value == b"1a" and entry.metadata == b"m"
    assert await store.scan_entries((second, "\U0001f600"), 10) == []


async def test_scan_entries_empty(store: Store) -> None:
    assert await store.scan_entries(None, 10) == []


async def test_reseal_only_if_unchanged(store: Store) -> None:
    ns = await make_ns(store)
    (version,) = await store.put(ns, [w("k", b"old", b"m-old", 5000)])
    assert await store.reseal(ns, "k", version, b"new", b"m-new")
    entry = await store.get(ns, "k", 0)
    assert entry is not None
    assert (entry.value, entry.metadata, entry.expiration, entry.version) == (
        b"new",
        b"m-new",
        5000,
        version,
    )
    (version2,) = await store.put(ns, [w("k", b"newer")])
    assert not await store.reseal(ns, "k", version, b"stale", None)
    entry = await store.get(ns, "k", 0)
    assert entry is not None and entry.value == b"newer" and entry.version == version2
    assert not await store.reseal(ns, "missing", version2, b"x", None)
    assert not await store.reseal(new_id(), "k", version2, b"x", None)
    assert await store.reseal(ns, "k", version2, b"again", None)


# Tokens.


async def test_tokens(store: Store) -> None:
    full = token("t1", created_at=10)
    limited = token("t2", namespaces=("a" * 32, "b" * 32), read_only=True, created_at=20)
    admin = token("t3", admin=True, created_at=30)
    none = token("t4", namespaces=(), created_at=40)
    elsewhere = token("t5", OTHER_ACCOUNT)
    for rec in (limited, admin, full, none, elsewhere):
        await store.add_token(rec)
    for rec in (full, limited, admin, none, elsewhere):
        assert await store.get_token(rec.id) == rec
    assert await store.get_token("missing") is None
    assert [t.id for t in await store.list_tokens(ACCOUNT)] == ["t1", "t2", "t3", "t4"]
    assert await store.list_tokens(OTHER_ACCOUNT) == [elsewhere]
    assert await store.list_tokens(new_id()) == []


async def test_add_token_replaces(store: Store) -> None:
    await store.add_token(token("t1"))
    replaced = token("t1", name="renamed", admin=True)
    await store.add_token(replaced)
    assert await store.get_token("t1") == replaced
    assert len(await store.list_tokens(ACCOUNT)) == 1


async def test_revoke_token(store: Store) -> None:
    await store.add_token(token("t1"))
    assert not await store.revoke_token(OTHER_ACCOUNT, "t1", 500)
    assert not await store.revoke_token(ACCOUNT, "missing", 500)
    assert await store.revoke_token(ACCOUNT, "t1", 500)
    rec = await store.get_token("t1")
    assert rec is not None and rec.revoked_at == 500
    assert not await store.revoke_token(ACCOUNT, "t1", 600)
    rec = await store.get_token("t1")
    assert rec is not None and rec.revoked_at == 500
    assert [t.revoked_at for t in await store.list_tokens(ACCOUNT)] == [500]


# Data keys.
async def test_data_keys(store: Store) -> None:
    assert await store.data_keys() == []
    assert await store.add_data_key(2, b"wrapped-2")
    assert await store.add_data_key(1, b"wrapped-1")
    assert not await store.add_data_key(1, b"other")
    assert await store.data_keys() == [(1, b"wrapped-1"), (2, b"wrapped-2")]


# Bulk and concurrency.
async def test_bulk_put_of_10000(store: Store) -> None:
    ns = await make_ns(store)
    writes = [
        w(f"key-{i:05}", f"value-{i}".encode(), b"m" if i % 2 else None) for i in range(10_000)
    ]
    versions = await store.put(ns, writes)
    assert len(versions) == 10_000 and versions == sorted(versions)
    assert len(set(versions)) == 10_000
    listed = await store.list_keys(ns, "", None, 20_000, 0)
    assert [k.key for k in listed] == [x.key for x in writes]
    entry = await store.get(ns, "key-09999", 0)
    assert entry is not None and entry.value == b"value-9999" and entry.metadata == b"m"


async def test_bulk_put_is_all_or_nothing(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("key-00000", b"before")])
    writes = [w(f"key-{i:05}", b"x") for i in range(10_000)]
    # No value: the engine fails on the last row, after writing the others.
    writes[9_999] = SealedWrite("key-09999", None, None, None)  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - any engine error: the point is what remains
        await store.put(ns, writes)
    assert await names(store, ns) == ["key-00000"]
    entry = await store.get(ns, "key-00000", 0)
    assert entry is not None and entry.value == b"before"


async def test_concurrent_puts_all_land(store: Store) -> None:
    ns = await make_ns(store)
    results = await asyncio.gather(*(store.put(ns, [w(f"k{i:03}")]) for i in range(200)))
    versions = [v for (v,) in results]
    assert len(set(versions)) == 200
    assert len(await names(store, ns)) == 200


async def test_failing_write_among_concurrent_ones(store: Store) -> None:
    ns = await make_ns(store)
    jobs = [store.put(ns, [w(f"k{i:02}")]) for i in range(20)]
    jobs.insert(10, store.put(new_id(), [w("lost")]))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], errors.KVError) and failures[0].status == 404
    assert len(await names(store, ns)) == 20


async def test_data_survives_reopening(backend: Backend) -> None:
    first = await backend.open()
    ns = await make_ns(first, title="kept")
    (version,) = await first.put(ns, [w("k", b"value", b"meta", 5000)])
    await first.add_token(token("t1"))
    await first.add_data_key(1, b"wrapped")
    await first.set_setting("s", "1")
    await first.close()

    second = await backend.open()
    try:
        assert await second.get_namespace(ns) == NamespaceRecord(ns, ACCOUNT, "kept")
        entry = await second.get(ns, "k", 0)
        assert entry is not None
        assert (entry.value, entry.metadata, entry.expiration, entry.version) == (
            b"value",
            b"meta",
            5000,
            version,
        )
        assert await second.get_token("t1") == token("t1")
        assert await second.data_keys() == [(1, b"wrapped")]
        assert await second.get_setting("s") == "1"
        # Versions keep growing after a restart, also after a delete was the last write.
        deleted = await second.delete(ns, ["k"])
        assert deleted > version
    finally:
        await second.close()
    third = await backend.open()
    try:
        (after,) = await third.put(ns, [w("k")])
        assert after > deleted
    finally:
        await third.close()


async def test_two_stores_on_one_backing_storage(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    try:
        ns = await make_ns(a)
        versions = []
        for i in range(10):
            writer, reader = (a, b) if i % 2 == 0 else (b, a)
            (version,) = await writer.put(ns, [w("k", str(i).encode())])
            versions.append(version)
            entry = await reader.get(ns, "k", 0)
            assert entry is not None and entry.value == str(i).encode()
            assert entry.version == version
            versions.append(await writer.delete(ns, ["other"]))
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
    finally:
        await a.close()
        await b.close()


async def test_close_finishes_pending_writes(backend: Backend) -> None:
    first = await backend.open()
    ns = await make_ns(first)
    tasks = [asyncio.ensure_future(first.put(ns, [w(f"k{i:02}")])) for i in range(50)]
    await asyncio.sleep(0)  # let every put be submitted
    await first.close()
    await asyncio.gather(*tasks)
    second = await backend.open()
    try:
        assert len(await names(second, ns)) == 50
    finally:
        await second.close()


# Conditional writes: the check and the write are one transaction.
def cw(key: str, value: bytes, condition: WriteCondition) -> SealedWrite:
    return SealedWrite(key, value, None, None, condition)


async def test_if_match_writes_only_at_that_version(store: Store) -> None:
    ns = await make_ns(store)
    (v1,) = await store.put(ns, [w("k", b"one")])
    (v2,) = await store.put(ns, [cw("k", b"two", WriteCondition(version=v1))])
    assert v2 > v1
    with raises_kv(412, errors.PRECONDITION_FAILED) as info:
        await store.put(ns, [cw("k", b"three", WriteCondition(version=v1))])
    assert isinstance(info.value, errors.PreconditionFailed)
    assert info.value.current_version == v2
    entry = await store.get(ns, "k", 0)
    assert entry is not None and (entry.value, entry.version) == (b"two", v2)


async def test_if_match_on_a_missing_key_fails(store: Store) -> None:
    ns = await make_ns(store)
    with raises_kv(412) as info:
        await store.put(ns, [cw("k", b"x", WriteCondition(version=1))])
    assert isinstance(info.value, errors.PreconditionFailed)
    assert info.value.current_version is None
    assert await store.get(ns, "k", 0) is None


async def test_if_absent_creates_once(store: Store) -> None:
    ns = await make_ns(store)
    (version,) = await store.put(ns, [cw("k", b"first", WriteCondition(absent=True))])
    with raises_kv(412) as info:
        await store.put(ns, [cw("k", b"second", WriteCondition(absent=True))])
    assert isinstance(info.value, errors.PreconditionFailed)
    assert info.value.current_version == version
    entry = await store.get(ns, "k", 0)
    assert entry is not None and entry.value == b"first"


async def test_if_absent_treats_an_expired_key_as_absent(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("k", b"old", expiration=1000)])  # long expired on the store's clock
    await store.put(ns, [cw("k", b"new", WriteCondition(absent=True))])
    entry = await store.get(ns, "k", 0)
    assert entry is not None and (entry.value, entry.expiration) == (b"new", None)
    with raises_kv(412):
        await store.put(ns, [cw("gone", b"x", WriteCondition(version=1))])


async def test_conditional_delete(store: Store) -> None:
    ns = await make_ns(store)
    (version,) = await store.put(ns, [w("k")])
    with raises_kv(412) as info:
        await store.delete(ns, ["k"], WriteCondition(version=version + 1))
    assert isinstance(info.value, errors.PreconditionFailed)
    assert info.value.current_version == version
    assert await store.get(ns, "k", 0) is not None
    await store.delete(ns, ["k"], WriteCondition(version=version))
    assert await store.get(ns, "k", 0) is None


async def test_conditional_write_in_a_missing_namespace(store: Store) -> None:
    with raises_kv(404):
        await store.put(new_id(), [cw("k", b"x", WriteCondition(absent=True))])


async def test_refused_condition_spoils_no_other_write(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("k")])
    refused, plain = await asyncio.gather(
        store.put(ns, [cw("k", b"x", WriteCondition(absent=True))]),
        store.put(ns, [w("other", b"fine")]),
        return_exceptions=True,
    )
    assert isinstance(refused, errors.PreconditionFailed)
    assert isinstance(plain, list)
    entry = await store.get(ns, "other", 0)
    assert entry is not None and entry.value == b"fine"


async def test_concurrent_compare_and_swap_loses_no_increment(backend: Backend) -> None:
    """Two store instances (two origins on one database, or two processes on one file)
    increment one counter with read, then If-Match write; every increment lands once."""
    stores = [await backend.open(), await backend.open()]
    try:
        ns = await make_ns(stores[0])
        await stores[0].put(ns, [w("n", b"0")])

        async def increment(store: Store) -> int:
            for attempts in range(1, 500):
                entry = await store.get(ns, "n", 0)
                assert entry is not None
                new = str(int(entry.value) + 1).encode()
                try:
                    await store.put(ns, [cw("n", new, WriteCondition(version=entry.version))])
                except errors.PreconditionFailed:
                    continue
                return attempts
            raise AssertionError("no increment landed in 500 attempts")

        await asyncio.gather(*(increment(stores[i % 2]) for i in range(40)))
        entry = await stores[1].get(ns, "n", 0)
        assert entry is not None and entry.value == b"40"
    finally:
        for opened in stores:
            await opened.close()


def test_write_condition_is_one_or_the_other() -> None:
    with pytest.raises(ValueError):
        WriteCondition()
    with pytest.raises(ValueError):
        WriteCondition(version=3, absent=True)
    assert WriteCondition(version=3).holds(3) and not WriteCondition(version=3).holds(None)
    assert WriteCondition(absent=True).holds(None) and not WriteCondition(absent=True).holds(1)


# The change feed: a record of every committed change, in the write's own transaction.
async def all_changes(store: Store) -> list[ChangeRecord]:
    return await store.changes_after(0, 100_000)


def assert_contiguous(records: list[ChangeRecord], first: int = 1) -> None:
    assert [r.seq for r in records] == list(range(first, first + len(records)))


async def test_changes_record_every_kind_of_write(store: Store) -> None:
    assert await store.change_bounds() == (0, 0)
    assert await all_changes(store) == []
    ns = await make_ns(store)
    other = await make_ns(store, OTHER_ACCOUNT)
    (v1,) = await store.put(ns, [w("a")])
    bulk = await store.put(ns, [w("b"), w("é"), w("b", b"again")])  # a key twice: both count
    deleted = await store.delete(ns, ["a", "never-written"])
    (v_other,) = await store.put(other, [w("x")])
    (v_if,) = await store.put(ns, [cw("c", b"x", WriteCondition(absent=True))])
    v_if_delete = await store.delete(ns, ["c"], WriteCondition(version=v_if))
    assert await store.delete_namespace(ns)
    records = await all_changes(store)
    assert_contiguous(records)
    expected = [
        (ACCOUNT, ns, "a", v1, False),
        (ACCOUNT, ns, "b", bulk[0], False),
        (ACCOUNT, ns, "é", bulk[1], False),
        (ACCOUNT, ns, "b", bulk[2], False),
        (ACCOUNT, ns, "a", deleted, True),
        (ACCOUNT, ns, "never-written", deleted, True),
        (OTHER_ACCOUNT, other, "x", v_other, False),
        (ACCOUNT, ns, "c", v_if, False),
        (ACCOUNT, ns, "c", v_if_delete, True),
    ]
    assert [(r.account_id, r.namespace_id, r.key, r.version, r.deleted) for r in records[:-1]] == (
        expected
    )
    gone = records[-1]
    assert (gone.account_id, gone.namespace_id, gone.key, gone.deleted) == (ACCOUNT, ns, None, True)
    assert gone.version > v_if_delete  # a fresh version, after every write before it
    assert await store.change_bounds() == (0, len(records))
    # Writes that change nothing else record nothing: a new namespace, a rename, a setting.
    await store.rename_namespace(other, "renamed")
    await store.set_setting("s", "1")
    assert await store.change_bounds() == (0, len(records))


async def test_failed_writes_leave_no_record_and_no_gap(store: Store) -> None:
    ns = await make_ns(store)
    (v0,) = await store.put(ns, [w("k")])
    with raises_kv(412):
        await store.put(ns, [cw("k", b"x", WriteCondition(absent=True))])
    with raises_kv(412):
        await store.delete(ns, ["k"], WriteCondition(version=v0 + 1))
    with raises_kv(404):
        await store.put(new_id(), [w("lost")])
    with raises_kv(404):
        await store.delete(new_id(), ["lost"])
    with raises_kv(404):
        await store.put(new_id(), [cw("lost", b"x", WriteCondition(absent=True))])
    assert not await store.delete_namespace(new_id())
    bad = SealedWrite("bad", None, None, None)  # type: ignore[arg-type]  # fails in the engine
    with pytest.raises(Exception):  # noqa: B017 - any engine error: the point is what remains
        await store.put(ns, [w("half"), bad])
    assert await all_changes(store) == [ChangeRecord(1, ACCOUNT, ns, "k", v0, False)]
    (v1,) = await store.put(ns, [w("next")])
    assert (await all_changes(store))[1:] == [ChangeRecord(2, ACCOUNT, ns, "next", v1, False)]


async def test_failing_writes_in_a_group_leave_no_gap(store: Store) -> None:
    ns = await make_ns(store)
    await store.put(ns, [w("taken")])
    jobs: list[Awaitable[object]] = [store.put(ns, [w(f"k{i:02}")]) for i in range(20)]
    jobs.insert(3, store.put(new_id(), [w("lost")]))
    bad = SealedWrite("bad", None, None, None)  # type: ignore[arg-type]  # fails in the engine
    jobs.insert(7, store.put(ns, [w("half"), bad]))
    jobs.insert(11, store.put(ns, [cw("taken", b"x", WriteCondition(absent=True))]))
    jobs.insert(15, store.delete(ns, ["k00", "k01"]))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert sum(isinstance(r, BaseException) for r in results) == 3
    records = await all_changes(store)
    assert_contiguous(records)
    # Sequence order is version order: every record's version is at least its predecessor's.
    assert [r.version for r in records] == sorted(r.version for r in records)
    written = sorted(r.key for r in records if not r.deleted and r.key is not None)
    assert written == sorted(["taken", *(f"k{i:02}" for i in range(20))])
    assert sorted(r.key for r in records if r.deleted and r.key is not None) == ["k00", "k01"]


async def test_changes_after_pages_by_sequence(store: Store) -> None:
    ns = await make_ns(store)
    for i in range(25):
        await store.put(ns, [w(f"k{i:02}")])
    pages, after = [], 0
    while page := await store.changes_after(after, 10):
        pages.append([r.seq for r in page])
        after = page[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert [r.key for r in await store.changes_after(3, 2)] == ["k03", "k04"]
    assert await store.changes_after(25, 10) == []


async def test_prune_keeps_the_newest_and_never_reuses_a_number(backend: Backend) -> None:
    store = await backend.open()
    try:
        assert await store.prune_changes(5) == 0
        assert await store.change_bounds() == (0, 0)
        ns = await make_ns(store)
        for i in range(20):
            await store.put(ns, [w(f"k{i:02}")])
        assert await store.change_bounds() == (0, 20)
        assert await store.prune_changes(100) == 0
        assert await store.prune_changes(5) == 15
        assert await store.change_bounds() == (15, 20)
        assert [r.key for r in await all_changes(store)] == [f"k{i:02}" for i in range(15, 20)]
        assert [r.seq for r in await store.changes_after(3, 2)] == [16, 17]
        assert await store.prune_changes(5) == 0
        assert await store.prune_changes(0) == 5
        assert await store.change_bounds() == (20, 20)
        assert await all_changes(store) == []
        (version,) = await store.put(ns, [w("after")])
        assert await all_changes(store) == [ChangeRecord(21, ACCOUNT, ns, "after", version, False)]
        assert await store.change_bounds() == (20, 21)
        assert await store.prune_changes(0) == 1
    finally:
        await store.close()
    reopened = await backend.open()  # the counter survives, even with no record left
    try:
        assert await reopened.change_bounds() == (21, 21)
        await reopened.put(ns, [w("later")])
        assert [r.seq for r in await all_changes(reopened)] == [22]
    finally:
        await reopened.close()


async def test_prune_among_writes_of_one_group_reuses_no_number(store: Store) -> None:
    ns = await make_ns(store)
    jobs: list[Awaitable[object]] = []
    for i in range(30):
        jobs.append(store.put(ns, [w(f"k{i:02}")]))
        if i % 3 == 1:
            jobs.append(store.prune_changes(i % 2))
    await asyncio.gather(*jobs)
    floor, high = await store.change_bounds()
    assert high == 30
    records = await all_changes(store)
    assert_contiguous(records, floor + 1)
    assert records[-1].seq == 30
    await store.put(ns, [w("next")])
    assert (await store.changes_after(30, 10))[0].seq == 31


# --- SQLite-only: the engine's own machinery. -------------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "only.sqlite3")
    yield opened
    await opened.close()


class HeldWriter:
    """Blocks the SQLite writer thread so that jobs queued meanwhile form one group."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._started = threading.Event()
        self._release = threading.Event()
        self._done: asyncio.Future[None] | None = None

    async def __aenter__(self) -> HeldWriter:
        def block(conn: object, writer: object) -> None:
            self._started.set()
            self._release.wait(10)

        self._done = self._store._writer.submit(block)
        await asyncio.to_thread(self._started.wait, 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        assert self._done is not None
        await self._done


def test_prefix_upper_bound() -> None:
    assert prefix_upper_bound(b"abc") == b"abd"
    assert prefix_upper_bound(b"a\xff") == b"b"
    assert prefix_upper_bound(b"a\xfe\xff\xff") == b"a\xff"
    assert prefix_upper_bound(b"\xff\xff") is None
    assert prefix_upper_bound(b"") is None
    assert prefix_upper_bound("\U0010ffff".encode()) == b"\xf4\x8f\xbf\xc0"


async def test_sqlite_group_commit_batches_concurrent_puts(sqlite_store: SQLiteStore) -> None:
    ns = await make_ns(sqlite_store)
    before = sqlite_store.commits
    await asyncio.gather(*(sqlite_store.put(ns, [w(f"k{i:03}")]) for i in range(200)))
    assert sqlite_store.commits - before < 50
    assert len(await names(sqlite_store, ns)) == 200


async def test_sqlite_group_commit_one_commit_per_group(sqlite_store: SQLiteStore) -> None:
    ns = await make_ns(sqlite_store)
    async with HeldWriter(sqlite_store):
        before = sqlite_store.commits
        puts = [asyncio.ensure_future(sqlite_store.put(ns, [w(f"k{i:03}")])) for i in range(200)]
        await asyncio.sleep(0)
    await asyncio.gather(*puts)
    assert sqlite_store.commits - before == 2  # the held job's group, then all 200 together
    assert len(await names(sqlite_store, ns)) == 200


async def test_sqlite_without_group_commit_one_commit_per_write(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "nogroup.sqlite3", group_commit=False)
    try:
        ns = await make_ns(store)
        before = store.commits
        await asyncio.gather(*(store.put(ns, [w(f"k{i:03}")]) for i in range(200)))
        assert store.commits - before == 200
        assert len(await names(store, ns)) == 200
    finally:
        await store.close()


async def test_sqlite_failing_job_does_not_spoil_its_group(sqlite_store: SQLiteStore) -> None:
    ns = await make_ns(sqlite_store)
    async with HeldWriter(sqlite_store):
        before = sqlite_store.commits
        jobs = [asyncio.ensure_future(sqlite_store.put(ns, [w(f"k{i:02}")])) for i in range(20)]
        jobs.insert(5, asyncio.ensure_future(sqlite_store.put(new_id(), [w("lost")])))
        bad = SealedWrite("bad", None, None, None)  # type: ignore[arg-type]  # fails in the engine
        jobs.insert(15, asyncio.ensure_future(sqlite_store.put(ns, [w("half"), bad])))
        await asyncio.sleep(0)
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert sqlite_store.commits - before == 2
    assert isinstance(results[5], errors.KVError) and results[5].status == 404
    assert isinstance(results[15], Exception)
    assert sum(1 for r in results if isinstance(r, BaseException)) == 2
    assert await names(sqlite_store, ns) == [f"k{i:02}" for i in range(20)]


async def test_sqlite_groups_are_bounded(sqlite_store: SQLiteStore) -> None:
    ns = await make_ns(sqlite_store)
    count = MAX_GROUP + 10
    async with HeldWriter(sqlite_store):
        before = sqlite_store.commits
        puts = [asyncio.ensure_future(sqlite_store.put(ns, [w(f"k{i:05}")])) for i in range(count)]
        await asyncio.sleep(0)
    await asyncio.gather(*puts)
    assert sqlite_store.commits - before == 3
    assert len(await sqlite_store.list_keys(ns, "", None, count + 1, 0)) == count


async def test_sqlite_writes_after_close_are_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "closed.sqlite3")
    await store.close()
    with raises_kv(503, errors.UNAVAILABLE):
        await store.set_setting("a", "b")


async def test_sqlite_versions_increase_across_processes(tmp_path: Path) -> None:
    # Two writers on one file (a server and a CLI, say); one clock runs ahead. Each writer
    # must continue after the highest version committed by either.
    path = tmp_path / "shared.sqlite3"
    ahead = SQLiteStore(path, clock=lambda: 2_000_000_000.0)
    behind = SQLiteStore(path, clock=lambda: 1_000_000_000.0)
    try:
        ns = await make_ns(ahead)
        (first,) = await ahead.put(ns, [w("k")])
        (second,) = await behind.put(ns, [w("k")])
        assert second > first
        deleted = await ahead.delete(ns, ["k"])
        assert deleted > second
        (third,) = await behind.put(ns, [w("k")])
        assert third > deleted
        # A writer that allocates no versions must not set the shared high-water mark back.
        await behind.set_setting("x", "y")
    finally:
        await ahead.close()
        await behind.close()
    reopened = SQLiteStore(path, clock=lambda: 1.0)
    try:
        assert (await reopened.delete(ns, ["k"])) > third
    finally:
        await reopened.close()
