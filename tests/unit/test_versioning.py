"""Unit tests for pullkv.versioning: versions that only grow."""

from __future__ import annotations

from pullkv.versioning import next_version


def test_follows_the_wall_clock_in_microseconds() -> None:
    assert next_version(0, 1.5) == 1_500_000
    assert next_version(1_000_000, 2.0) == 2_000_000


def test_never_goes_backwards_when_the_clock_does() -> None:
    assert next_version(5_000_000, 1.0) == 5_000_001


def test_same_instant_still_grows() -> None:
    first = next_version(0, 1.0)
    second = next_version(first, 1.0)
    third = next_version(second, 1.0)
    assert first < second < third


def test_strictly_increasing_under_a_jumpy_clock() -> None:
    times = [10.0, 10.0, 9.0, 10.000001, 11.0, 5.0, 5.0, 11.0000005, 12.0]
    last = 0
    for now in times:
        version = next_version(last, now)
        assert version > last
        assert version >= int(now * 1_000_000)
        last = version


def test_takes_the_larger_of_clock_and_seen_version() -> None:
    # Another process has written a version ahead of this clock.
    assert next_version(10_000_000_000, 100.0) == 10_000_000_001
