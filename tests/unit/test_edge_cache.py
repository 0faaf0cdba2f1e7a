"""Unit tests for pullkv.edge.cache: the edge's cache policy and its bytes-bounded LRU.

Everything here is a pure function of the times it is given, so every transition is checked
at explicit ages, boundaries included.
"""

from __future__ import annotations

import gc
import random
from collections import OrderedDict

import pytest

from pullkv import errors
from pullkv.edge.cache import (
    ENTRY_OVERHEAD,
    ByteLRU,
    CachePolicy,
    Freshness,
    ListSlot,
    ValueSlot,
    any_expired,
    freeze_slot,
    freshness,
    list_fresh,
    list_stale_usable,
    list_ttl,
    live,
    namespace_stale,
    remaining,
    stale_usable,
    thaw_slot,
    unknown_token_remembered,
    upstream_failed,
)
from pullkv.types import ListedKey, SealedEntry

T0 = 1000.0
POLICY = CachePolicy(refresh_interval=60.0, max_stale=3600.0)


def entry(
    expiration: int | None = None, value: bytes = b"v", meta: bytes | None = None
) -> SealedEntry:
    return SealedEntry("k", value, meta, expiration, 7)


# freshness().
@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, Freshness.FRESH),
        (59.999, Freshness.FRESH),
        (60.0, Freshness.REVALIDATE),  # the refresh interval itself starts the window
        (100.0, Freshness.REVALIDATE),
        (119.999, Freshness.REVALIDATE),
        (120.0, Freshness.EXPIRED),  # age == ttl is expired
        (120.001, Freshness.EXPIRED),
        (10_000.0, Freshness.EXPIRED),
    ],
)
def test_freshness_transitions(age: float, expected: Freshness) -> None:
    assert freshness(T0, T0 + age, 120, POLICY) is expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, Freshness.FRESH),
        (29.999, Freshness.FRESH),
        (30.0, Freshness.EXPIRED),
        (59.0, Freshness.EXPIRED),
        (60.0, Freshness.EXPIRED),
        (61.0, Freshness.EXPIRED),
    ],
)
def test_refresh_interval_larger_than_ttl_never_revalidates(
    age: float, expected: Freshness
) -> None:
    # FRESH below min(refresh interval, ttl): with ttl 30 < 60, there is no refresh window.
    assert freshness(T0, T0 + age, 30, POLICY) is expected


def test_refresh_interval_equal_to_ttl_goes_straight_from_fresh_to_expired() -> None:
    assert freshness(T0, T0 + 59.9, 60, POLICY) is Freshness.FRESH
    assert freshness(T0, T0 + 60.0, 60, POLICY) is Freshness.EXPIRED


def test_freshness_short_refresh_interval() -> None:
    policy = CachePolicy(refresh_interval=5.0)
    assert freshness(T0, T0 + 4.999, 60, policy) is Freshness.FRESH
    assert freshness(T0, T0 + 5.0, 60, policy) is Freshness.REVALIDATE
    assert freshness(T0, T0 + 59.999, 60, policy) is Freshness.REVALIDATE
    assert freshness(T0, T0 + 60.0, 60, policy) is Freshness.EXPIRED


def test_freshness_clock_before_validation_is_fresh() -> None:
    # A monotonic clock never goes back, but a negative age must not read as expired.
    assert freshness(T0, T0 - 1.0, 60, POLICY) is Freshness.FRESH


# stale_usable().
def test_stale_usable_boundary() -> None:
    ttl = 60
    bound = ttl + POLICY.max_stale
    assert stale_usable(T0, T0 + ttl, ttl, POLICY)
    assert stale_usable(T0, T0 + bound - 0.001, ttl, POLICY)
    assert not stale_usable(T0, T0 + bound, ttl, POLICY)
    assert not stale_usable(T0, T0 + bound + 1, ttl, POLICY)


def test_stale_usable_with_no_stale_allowance() -> None:
    policy = CachePolicy(max_stale=0.0)
    assert stale_usable(T0, T0 + 59.9, 60, policy)
    assert not stale_usable(T0, T0 + 60.0, 60, policy)


# remaining().
@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, 60),
        (0.5, 59),  # whole seconds left, rounded down
        (10.0, 50),
        (59.5, 0),
        (60.0, 0),
        (60.5, -1),  # negative values round away from zero: never "0 left" once expired
        (61.0, -1),
        (61.2, -2),
        (62.5, -3),
        (160.0, -100),
    ],
)
def test_remaining(age: float, expected: int) -> None:
    assert remaining(T0, T0 + age, 60) == expected


# live().
def test_live() -> None:
    assert live(None, 5000.0) is None
    forever = entry(None)
    assert live(forever, 5000.0) is forever
    later = entry(5001)
    assert live(later, 5000.0) is later
    assert live(later, 5000.999) is later
    assert live(later, 5001.0) is None  # expiration <= now: gone
    assert live(later, 6000.0) is None


# Lists, namespaces, tokens.
def test_list_ttl_is_capped_by_the_default_cache_ttl() -> None:
    assert list_ttl(CachePolicy(), 60) == 60.0
    assert list_ttl(CachePolicy(list_ttl=10.0), 60) == 10.0
    assert list_ttl(CachePolicy(list_ttl=300.0), 90) == 90.0
    assert list_ttl(CachePolicy(list_ttl=300.0), 30) == 30.0
    assert isinstance(list_ttl(CachePolicy(list_ttl=300.0), 60), float)


def test_list_freshness_and_stale_use() -> None:
    rows = [ListedKey("a", None, None), ListedKey("b", 5000, None)]
    assert list_fresh(T0, T0 + 19.9, 4999.0, rows, 20.0)
    assert not list_fresh(T0, T0 + 20.0, 4999.0, rows, 20.0)
    assert not list_fresh(T0, T0, 5000.0, rows, 20.0)  # a listed key expired: refetch
    assert any_expired(rows, 5000.0) and not any_expired(rows, 4999.0)
    policy = CachePolicy(max_stale=100.0)
    assert list_stale_usable(T0, T0 + 119.9, 4999.0, rows, 20.0, policy)
    assert not list_stale_usable(T0, T0 + 120.0, 4999.0, rows, 20.0, policy)
    assert not list_stale_usable(T0, T0 + 1.0, 5000.0, rows, 20.0, policy)


def test_namespace_lookup_is_refreshed_after_the_default_cache_ttl() -> None:
    assert not namespace_stale(T0, T0 + 59.9, 60)
    assert namespace_stale(T0, T0 + 60.0, 60)


def test_unknown_token_is_remembered_for_token_refresh() -> None:
    policy = CachePolicy(token_refresh=20.0)
    assert unknown_token_remembered(T0, T0 + 19.9, policy)
    assert not unknown_token_remembered(T0, T0 + 20.0, policy)


def test_upstream_failed_means_5xx_only() -> None:
    assert upstream_failed(errors.upstream_unavailable("down"))
    assert not upstream_failed(errors.permission_denied("no"))
    assert not upstream_failed(ValueError("not a KVError"))


# Frozen slots.
def test_frozen_value_slots_are_untracked_by_the_garbage_collector() -> None:
    # Hundreds of thousands of tracked slots would make every full collection scan them.
    slots = [
        ValueSlot(entry(value=b"x", meta=b"m"), 7, T0, 3),
        ValueSlot(entry(expiration=5000), 7, T0),
        ValueSlot(None, 9, T0),
    ]
    frozen = [freeze_slot(slot) for slot in slots]
    gc.collect()
    gc.collect()  # an outer tuple is untracked once its inner one already is
    for slot, stored in zip(slots, frozen, strict=True):
        assert not gc.is_tracked(stored)
        assert thaw_slot(stored) == slot


# Slot sizes.
def test_value_slot_size() -> None:
    assert ValueSlot(None, 0, T0).size(3) == ENTRY_OVERHEAD + 3
    assert ValueSlot(entry(value=b"x" * 100), 7, T0).size(5) == ENTRY_OVERHEAD + 5 + 100
    sized = ValueSlot(entry(value=b"x" * 100, meta=b"m" * 20), 7, T0)
    assert sized.size(5) == ENTRY_OVERHEAD + 5 + 120


def test_list_slot_size() -> None:
    assert ListSlot([], T0).size() == ENTRY_OVERHEAD
    rows = [ListedKey("ab", None, None), ListedKey("é", 5000, b"meta")]
    row_cost = ENTRY_OVERHEAD // 4
    expected = ENTRY_OVERHEAD + (row_cost + 2) + (row_cost + 2 + 4)  # "é" is 2 UTF-8 bytes
    assert ListSlot(rows, T0).size() == expected


# ByteLRU.
def test_lru_get_marks_recent_peek_does_not() -> None:
    lru: ByteLRU[str, int] = ByteLRU(30)
    for i, key in enumerate("abc"):
        assert lru.put(key, i, 10)
    assert lru.snapshot() == ["a", "b", "c"]
    assert lru.peek("a") == 0
    assert lru.snapshot() == ["a", "b", "c"]
    assert lru.get("a") == 0
    assert lru.snapshot() == ["b", "c", "a"]
    assert lru.get("missing") is None and lru.peek("missing") is None
    lru.put("d", 3, 10)  # evicts b, the least recently used
    assert lru.snapshot() == ["c", "a", "d"]
    assert lru.evictions == 1 and lru.bytes == 30


def test_lru_peek_leaves_item_first_in_line_for_eviction() -> None:
    lru: ByteLRU[str, int] = ByteLRU(20)
    lru.put("a", 1, 10)
    lru.put("b", 2, 10)
    lru.peek("a")
    lru.put("c", 3, 10)
    assert lru.peek("a") is None and lru.snapshot() == ["b", "c"]


def test_lru_replace_updates_bytes_and_recency() -> None:
    lru: ByteLRU[str, str] = ByteLRU(100)
    lru.put("a", "one", 10)
    lru.put("b", "two", 20)
    assert lru.put("a", "uno", 50)
    assert lru.peek("a") == "uno"
    assert lru.bytes == 70 and len(lru) == 2
    assert lru.snapshot() == ["b", "a"]
    assert lru.evictions == 0
    assert lru.put("a", "small", 1)
    assert lru.bytes == 21


def test_lru_evicts_until_bound_holds() -> None:
    lru: ByteLRU[str, int] = ByteLRU(100)
    for i in range(10):
        lru.put(f"k{i}", i, 10)
    assert lru.bytes == 100 and lru.evictions == 0
    assert lru.put("big", 99, 55)  # must evict six items of 10 bytes
    assert lru.bytes == 95 and lru.bytes <= lru.capacity
    assert lru.evictions == 6
    assert lru.snapshot() == ["k6", "k7", "k8", "k9", "big"]


def test_lru_item_as_big_as_capacity_fits_alone() -> None:
    lru: ByteLRU[str, int] = ByteLRU(100)
    lru.put("a", 1, 40)
    assert lru.put("whole", 2, 100)
    assert lru.snapshot() == ["whole"] and lru.bytes == 100 and lru.evictions == 1


def test_lru_refuses_item_bigger_than_capacity() -> None:
    lru: ByteLRU[str, int] = ByteLRU(100)
    lru.put("a", 1, 40)
    assert not lru.put("huge", 2, 101)
    assert lru.peek("huge") is None
    assert lru.snapshot() == ["a"] and lru.bytes == 40 and lru.evictions == 0


def test_lru_refused_replacement_drops_the_old_value() -> None:
    # The old value is outdated once a new one exists: keeping it would serve a wrong value.
    lru: ByteLRU[str, int] = ByteLRU(100)
    lru.put("a", 1, 40)
    assert not lru.put("a", 2, 101)
    assert lru.peek("a") is None and lru.bytes == 0 and len(lru) == 0


def test_lru_pop() -> None:
    lru: ByteLRU[str, int] = ByteLRU(100)
    lru.put("a", 1, 40)
    lru.put("b", 2, 10)
    assert lru.pop("a") == 1
    assert lru.pop("a") is None
    assert lru.pop("never") is None
    assert lru.bytes == 10 and len(lru) == 1 and lru.evictions == 0


def test_lru_snapshot_is_a_copy_safe_to_pop_during_iteration() -> None:
    lru: ByteLRU[tuple[str, int], int] = ByteLRU(1000)
    for i in range(10):
        lru.put(("ns", i), i, 10)
    for key in lru.snapshot():
        if key[1] % 2 == 0:
            lru.pop(key)
    assert [k[1] for k in lru.snapshot()] == [1, 3, 5, 7, 9]
    assert lru.bytes == 50
    shot = lru.snapshot()
    shot.clear()
    assert len(lru) == 5


def test_lru_zero_capacity_keeps_only_free_items() -> None:
    lru: ByteLRU[str, int] = ByteLRU(0)
    assert not lru.put("a", 1, 1)
    assert lru.put("free", 2, 0)
    assert lru.bytes == 0 and lru.peek("free") == 2


def test_lru_randomized_bound_and_accounting() -> None:
    # 10,000 seeded random operations against a reference model (an OrderedDict kept in
    # recency order): same items, same order, bound and byte count right after every step.
    rng = random.Random(20240611)
    capacity = 5_000
    lru: ByteLRU[int, int] = ByteLRU(capacity)
    model: OrderedDict[int, tuple[int, int]] = OrderedDict()  # key -> (value, size)
    evicted = 0
    for step in range(10_000):
        key = rng.randrange(200)
        op = rng.random()
        if op < 0.5:
            size = rng.choice([rng.randrange(0, 200), rng.randrange(0, 2_000), capacity + 1])
            assert lru.put(key, step, size) == (size <= capacity)
            model.pop(key, None)
            if size <= capacity:
                model[key] = (step, size)
                while sum(s for _, s in model.values()) > capacity:
                    model.popitem(last=False)
                    evicted += 1
        elif op < 0.65:
            assert lru.peek(key) == (model[key][0] if key in model else None)
        elif op < 0.85:
            assert lru.get(key) == (model[key][0] if key in model else None)
            if key in model:
                model.move_to_end(key)
        else:
            assert lru.pop(key) == (model.pop(key)[0] if key in model else None)
        # The bound holds after every operation, and bytes is the sum of live item sizes.
        assert 0 <= lru.bytes <= capacity
        assert lru.bytes == sum(s for _, s in model.values())
        assert lru.snapshot() == list(model)
        assert len(lru) == len(model)
        assert lru.evictions == evicted
    assert evicted > 100
