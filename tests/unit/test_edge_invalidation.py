"""The edge cache under the change feed (``EdgeBackend.invalidate``/``invalidate_all``): a
change newer than the entry held makes it stale, a late or duplicated one changes nothing, a
fetch out when a change arrives is not allowed to answer with what the change replaced, and
cached lists of the namespace go. Same world as test_edge_backend: a real LocalBackend on
SQLite behind a counting upstream, fake clocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pullkv import errors
from pullkv.edge.backend import EdgeBackend
from pullkv.edge.cache import INVALIDATED, ValueSlot
from pullkv.metrics import Metrics
from pullkv.types import ChangeRecord
from tests.unit.test_edge_backend import ACCOUNT, POLICY, World, make_world, settle, until


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    made = await make_world(tmp_path)
    yield made
    await made.edge.close()


def change(world: World, key: str | None, version: int, deleted: bool = False) -> ChangeRecord:
    return ChangeRecord(1, ACCOUNT, world.ns, key, version, deleted)


async def last_change(world: World) -> ChangeRecord:
    """The newest change the store recorded (what the feed would carry)."""
    _, high = await world.store.change_bounds()
    (record,) = await world.store.changes_after(high - 1, 1)
    return record


def slot(world: World, key: str) -> ValueSlot:
    held = world.edge.cache.peek(("v", ACCOUNT, world.ns, key))
    assert isinstance(held, ValueSlot)
    return held


async def test_a_newer_change_makes_the_next_read_fetch(world: World) -> None:
    await world.put_direct("k", b"v1")
    assert await world.value("k") == b"v1"
    await world.put_direct("k", b"v2")
    assert await world.value("k") == b"v1"  # fresh: without the feed, the TTL rules
    assert world.edge.invalidate(await last_change(world))
    assert slot(world, "k").validated_at == INVALIDATED
    assert await world.value("k") == b"v2"
    assert world.up.calls["fetch"] == 2
    assert world.sample("pullkv_feed_invalidations_total", outcome="invalidated") == 1


async def test_late_and_duplicated_changes_change_nothing(world: World) -> None:
    v1 = await world.put_direct("k", b"v1")
    v2 = await world.put_direct("k", b"v2")
    assert await world.value("k") == b"v2"
    assert not world.edge.invalidate(change(world, "k", v1))  # older than held
    assert not world.edge.invalidate(change(world, "k", v2))  # the same version again
    assert await world.value("k") == b"v2"
    assert world.up.calls["fetch"] == 1
    assert world.sample("pullkv_feed_invalidations_total", outcome="ignored") == 2


async def test_own_write_echoed_by_the_feed_is_kept(world: World) -> None:
    version = await world.put("k", b"mine")
    assert not world.edge.invalidate(change(world, "k", version))
    assert await world.value("k") == b"mine"
    assert world.up.calls["fetch"] == 0


async def test_a_negatively_cached_key_is_fetched_after_its_creation(world: World) -> None:
    assert await world.value("new") is None
    version = await world.put_direct("new", b"born")
    assert world.edge.invalidate(change(world, "new", version))
    assert await world.value("new") == b"born"


async def test_a_delete_elsewhere_is_seen(world: World) -> None:
    await world.put_direct("k", b"v1")
    assert await world.value("k") == b"v1"
    await world.local.delete(ACCOUNT, world.ns, ["k"])
    record = await last_change(world)
    assert record.deleted and record.key == "k"
    assert world.edge.invalidate(record)
    assert await world.value("k") is None


async def test_an_invalidated_entry_is_not_served_stale(world: World) -> None:
    v1 = await world.put_direct("k", b"v1")
    assert await world.value("k") == b"v1"
    assert world.edge.invalidate(change(world, "k", v1 + 1))
    world.up.down = True  # the upstream fails: the known-replaced entry is not an answer
    with pytest.raises(errors.KVError) as raised:
        await world.read("k")
    assert raised.value.status == 503


async def test_cached_lists_of_the_namespace_go(world: World) -> None:
    await world.put_direct("a", b"1")
    assert await world.names() == ["a"]
    version = await world.put_direct("b", b"2")
    assert await world.names() == ["a"]  # cached
    world.edge.invalidate(change(world, "b", version))
    assert await world.names() == ["a", "b"]


async def test_namespace_deletion_drops_everything_of_it(world: World) -> None:
    await world.put_direct("a", b"1")
    assert await world.value("a") == b"1"
    assert await world.names() == ["a"]
    assert world.edge.invalidate(change(world, None, 10**15, deleted=True))
    assert world.edge.cache.peek(("v", ACCOUNT, world.ns, "a")) is None
    assert world.sample("pullkv_feed_invalidations_total", outcome="namespace") == 1


async def test_a_fetch_out_when_a_change_arrives_asks_again(world: World) -> None:
    await world.put_direct("k", b"old")
    gate = world.up.hold()
    reader = asyncio.ensure_future(world.read("k"))
    await until(lambda: world.up.held["fetch"] == 1)  # "old" is on its way
    newer = await world.put_direct("k", b"new")
    world.edge.invalidate(change(world, "k", newer))
    gate.set()
    world.up.gates.clear()
    lookup = await reader
    # The reader waited one more round trip rather than get what the change replaced.
    assert lookup.entry is not None and lookup.entry.value == b"new"
    assert world.up.calls["fetch"] == 2 and world.up.fetches[1] == [("k", None)]
    assert await world.value("k") == b"new"


async def test_a_fetch_answered_after_a_change_it_already_saw_is_kept(world: World) -> None:
    await world.put_direct("k", b"old")
    gate = world.up.hold()
    reader = asyncio.ensure_future(world.read("k"))
    await until(lambda: world.up.held["fetch"] == 1)
    # The change is one the answer already includes: no second fetch.
    version = (await world.local.read(ACCOUNT, world.ns, "k", None)).entry
    assert version is not None
    world.edge.invalidate(change(world, "k", version.version))
    gate.set()
    lookup = await reader
    assert lookup.entry is not None and lookup.entry.value == b"old"
    assert world.up.calls["fetch"] == 1


async def test_a_fill_never_replaces_a_newer_version(world: World) -> None:
    await world.put_direct("k", b"old")
    gate = world.up.hold()
    reader = asyncio.ensure_future(world.edge.read(ACCOUNT, world.ns, "k", None))
    await until(lambda: world.up.held["fetch"] == 1)
    # A strong read meanwhile brings a newer version into the cache.
    await world.put_direct("k", b"new")
    world.up.gates.clear()
    strong = await world.edge.read(ACCOUNT, world.ns, "k", None, revalidate=True)
    assert strong.entry is not None and strong.entry.value == b"new"
    gate.set()
    late = await reader
    assert late.entry is not None and late.entry.value == b"new"  # never older than given
    await settle(world.edge)
    assert await world.value("k") == b"new"


async def test_a_reset_revalidates_everything_held(world: World) -> None:
    await world.put_direct("a", b"1")
    await world.put_direct("b", b"1")
    assert await world.value("a") == b"1" and await world.value("b") == b"1"
    assert await world.names() == ["a", "b"]
    await world.put_direct("a", b"2")
    world.edge.invalidate_all()
    assert slot(world, "a").validated_at == INVALIDATED
    assert slot(world, "b").validated_at == INVALIDATED
    assert await world.value("a") == b"2"
    assert await world.value("b") == b"1"  # revalidated: "not modified", so no value sent
    assert world.up.answers[-1]["b"].not_modified
    assert world.sample("pullkv_feed_invalidations_total", outcome="reset") == 1


async def test_a_tiers_answer_carries_its_age_so_the_ttl_bounds_the_chain(world: World) -> None:
    """An edge below a tier counts its entry's age from when the origin vouched for it:
    without that, the tier's age and the lower edge's would add up to twice the TTL."""
    lower = EdgeBackend(
        world.edge,
        POLICY,
        1 << 22,
        Metrics(),
        default_ttl=60,
        clock=world.clock,
        epoch=world.epoch,
    )
    try:
        await world.put_direct("k", b"v1")
        assert await world.value("k") == b"v1"  # the tier fetches it now
        world.clock.advance(25)
        first = await lower.read(ACCOUNT, world.ns, "k", 60)
        assert first.entry is not None and first.entry.value == b"v1"
        assert first.cache is not None and first.cache.age == 25 and first.cache.ttl == 35
        await world.put_direct("k", b"v2")
        world.clock.advance(36)  # 61 s after the origin vouched: expired below too
        later = await lower.read(ACCOUNT, world.ns, "k", 60)
        assert later.cache is not None and not later.cache.hit
        assert later.entry is not None and later.entry.value == b"v2"
    finally:
        await lower.close()
