"""Unit tests for pullkv.ratelimit: the same-key write rate limit, on a fake clock."""

from __future__ import annotations

from pullkv.limits import DEFAULT_LIMITS
from pullkv.ratelimit import WriteRateLimiter

NS = "ns1"


def test_one_write_per_second() -> None:
    limiter = WriteRateLimiter(1.0)
    assert limiter.enabled
    assert limiter.acquire(NS, "k", 100.0)
    assert not limiter.acquire(NS, "k", 100.0)
    assert not limiter.acquire(NS, "k", 100.999)
    assert limiter.acquire(NS, "k", 101.0)  # exactly one interval later
    assert not limiter.acquire(NS, "k", 101.5)


def test_refused_write_does_not_extend_the_wait() -> None:
    limiter = WriteRateLimiter(1.0)
    assert limiter.acquire(NS, "k", 0.0)
    assert not limiter.acquire(NS, "k", 0.9)
    assert limiter.acquire(NS, "k", 1.0)


def test_keys_and_namespaces_are_independent() -> None:
    limiter = WriteRateLimiter(1.0)
    assert limiter.acquire(NS, "a", 0.0)
    assert limiter.acquire(NS, "b", 0.0)
    assert limiter.acquire("ns2", "a", 0.0)
    assert not limiter.acquire(NS, "a", 0.5)


def test_check_does_not_record() -> None:
    limiter = WriteRateLimiter(1.0)
    assert limiter.check(NS, "k", 0.0)
    assert limiter.check(NS, "k", 0.0)
    limiter.record(NS, "k", 0.0)
    assert not limiter.check(NS, "k", 0.5)
    assert limiter.check(NS, "k", 1.0)


def test_other_rates() -> None:
    limiter = WriteRateLimiter(4.0)
    assert limiter.acquire(NS, "k", 0.0)
    assert not limiter.acquire(NS, "k", 0.2)
    assert limiter.acquire(NS, "k", 0.25)
    slow = WriteRateLimiter(0.5)
    assert slow.acquire(NS, "k", 0.0)
    assert not slow.acquire(NS, "k", 1.9)
    assert slow.acquire(NS, "k", 2.0)


def test_disabled_at_zero() -> None:
    limiter = WriteRateLimiter(0)
    assert not limiter.enabled
    for _ in range(5):
        assert limiter.acquire(NS, "k", 0.0)
    assert limiter.check(NS, "k", 0.0)
    assert len(limiter._last) == 0  # nothing is remembered


def test_off_by_default() -> None:
    # Workers KV's 1 write per second per key is its infrastructure's, not the API's.
    limiter = WriteRateLimiter(DEFAULT_LIMITS.writes_per_key_per_second)
    assert not limiter.enabled
    assert limiter.acquire(NS, "k", 0.0) and limiter.acquire(NS, "k", 0.0)


def test_forget_undoes_a_reservation() -> None:
    limiter = WriteRateLimiter(1.0)
    assert limiter.acquire(NS, "k", 0.0)
    limiter.forget(NS, "k")
    assert limiter.acquire(NS, "k", 0.1)
    limiter.forget(NS, "never-written")  # harmless
    limiter.forget("other", "k")
    assert not limiter.acquire(NS, "k", 0.2)


def test_sweep_keeps_memory_bounded() -> None:
    limiter = WriteRateLimiter(1.0, sweep_at=50)
    now = 0.0
    for i in range(10_000):
        assert limiter.acquire(NS, f"key-{i}", now)
        now += 0.1
        assert len(limiter._last) <= 50
    # Recent writes survive a sweep and are still limited.
    assert not limiter.acquire(NS, "key-9999", now - 0.05)
    assert limiter.acquire(NS, "key-0", now)


def test_sweep_never_forgets_a_live_entry() -> None:
    limiter = WriteRateLimiter(1.0, sweep_at=10)
    for i in range(30):  # all within one interval: all must be kept
        assert limiter.acquire(NS, f"k{i}", 5.0 + i * 0.01)
    for i in range(30):
        assert not limiter.check(NS, f"k{i}", 5.5)


def test_burst_of_live_keys_sweeps_rarely() -> None:
    limiter = WriteRateLimiter(1.0, sweep_at=10)
    sweeps = 0
    original = limiter._sweep

    def counting_sweep(now: float) -> None:
        nonlocal sweeps
        sweeps += 1
        original(now)

    limiter._sweep = counting_sweep  # type: ignore[method-assign]  # counts the sweeps
    for i in range(10_000):  # all live: a sweep frees nothing
        limiter.record(NS, f"k{i}", 7.0)
    assert sweeps <= 12  # doubling, not once per write
    # Once they age out, the next sweep frees them and the threshold comes back down.
    for i in range(20_000):
        limiter.record(NS, f"later{i}", 100.0 + i)
        assert len(limiter._last) <= 20_000
    assert len(limiter._last) <= 10
