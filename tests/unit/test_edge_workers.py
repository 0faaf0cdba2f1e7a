"""Read-your-writes across the workers of one node (``--workers N``): two EdgeBackends, as two
workers' caches, over one upstream and one shared table of acknowledged versions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pullkv.edge.backend import EdgeBackend
from pullkv.metrics import Metrics
from pullkv.siblings import WrittenVersions
from pullkv.types import SealedWrite
from tests.unit.test_edge_backend import ACCOUNT, BREAKER, POLICY, World, make_world, until


@dataclass
class Pair:
    world: World  # worker A: world.edge
    other: EdgeBackend  # worker B, over the same upstream
    table: WrittenVersions

    async def write_at_b(self, key: str, value: bytes) -> int:
        result = await self.other.write(
            ACCOUNT, self.world.ns, [SealedWrite(key, value, None, None)]
        )
        return result.versions[key]

    async def value_at_a(self, key: str) -> bytes | None:
        entry = (await self.world.read(key)).entry
        return None if entry is None else entry.value


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    world = await make_world(tmp_path)
    other = EdgeBackend(
        world.up,
        POLICY,
        1 << 22,
        Metrics(),
        default_ttl=world.edge.default_ttl,
        clock=world.clock,
        epoch=world.epoch,
        breaker=BREAKER,
    )
    table = WrittenVersions.create(tmp_path / "versions")
    world.edge.written = other.written = table
    yield Pair(world, other, table)
    await other.close()
    await world.edge.close()
    table.close()


async def test_a_write_at_one_worker_outdates_what_another_caches(pair: Pair) -> None:
    world = pair.world
    await world.put_direct("k", b"v1")
    assert await pair.value_at_a("k") == b"v1"
    assert world.edge.fresh_entry(ACCOUNT, world.ns, "k", 60) is not None
    fetches = world.up.calls["fetch"]
    await pair.write_at_b("k", b"v2")
    # Neither the hot path nor the ordinary read answers with v1 any more.
    assert world.edge.fresh_entry(ACCOUNT, world.ns, "k", 60) is None
    assert await pair.value_at_a("k") == b"v2"
    assert world.up.calls["fetch"] == fetches + 1
    # Caught up: hits again, with no further fetch.
    assert world.edge.fresh_entry(ACCOUNT, world.ns, "k", 60) is not None
    assert await pair.value_at_a("k") == b"v2"
    assert world.up.calls["fetch"] == fetches + 1


async def test_without_the_table_the_other_worker_answers_the_old_value(pair: Pair) -> None:
    """What the table prevents (this test fails if the check is a no-op)."""
    world = pair.world
    await world.put_direct("k", b"v1")
    assert await pair.value_at_a("k") == b"v1"
    world.edge.written = None
    await pair.write_at_b("k", b"v2")
    assert await pair.value_at_a("k") == b"v1"


async def test_a_delete_at_one_worker_is_not_found_at_the_other(pair: Pair) -> None:
    world = pair.world
    await world.put_direct("k", b"v1")
    assert await pair.value_at_a("k") == b"v1"
    await pair.other.delete(ACCOUNT, world.ns, ["k"])
    assert await pair.value_at_a("k") is None
    fetches = world.up.calls["fetch"]
    # "Not found" answers the delete: cached, not fetched again at every read.
    assert await pair.value_at_a("k") is None
    assert world.up.calls["fetch"] == fetches


async def test_a_fetch_that_left_before_the_write_is_not_the_answer(pair: Pair) -> None:
    world = pair.world
    await world.put_direct("k", b"v1")
    gate = world.up.hold("fetch")
    early = asyncio.create_task(world.read("k"))  # its fetch reads v1, then waits
    await until(lambda: world.up.held["fetch"] == 1)
    await pair.write_at_b("k", b"v2")
    late = asyncio.create_task(world.read("k"))  # joins the fetch that holds v1
    await asyncio.sleep(0)
    gate.set()
    first, second = await asyncio.gather(early, late)
    assert first.entry is not None  # it began before the write: either value is right
    assert second.entry is not None and second.entry.value == b"v2"
    assert world.up.revalidated[-1] is True  # asked the origin past the old answer


async def test_a_key_gone_since_the_write_is_asked_for_once(pair: Pair) -> None:
    world = pair.world
    await pair.write_at_b("k", b"v2")
    await world.local.delete(ACCOUNT, world.ns, ["k"])  # behind both workers' backs
    assert await pair.value_at_a("k") is None
    fetches = world.up.calls["fetch"]
    assert await pair.value_at_a("k") is None
    assert world.up.calls["fetch"] == fetches, "absence confirmed past the write is cached"
