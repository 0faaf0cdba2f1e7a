"""Unit tests for the edge's outage policy at exact times: the circuit breaker
(pullkv.edge.breaker) and how long token records are trusted (pullkv.edge.cache.token_use)."""

from __future__ import annotations

import pytest

from pullkv.edge.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from pullkv.edge.cache import CachePolicy, TokenUse, token_use

POLICY = BreakerPolicy(first_probe=0.5, backoff=2.0, max_probe_interval=5.0, jitter=0.2)


def test_probe_delay_doubles_and_is_capped() -> None:
    delays = [POLICY.probe_delay(n, 0.0) for n in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert POLICY.probe_delay(10_000, 0.0) == 5.0  # a long outage does not overflow


def test_jitter_only_shortens_a_wait_and_by_at_most_its_fraction() -> None:
    assert POLICY.probe_delay(1, 0.0) == 1.0
    assert POLICY.probe_delay(1, 0.5) == pytest.approx(0.9)
    assert POLICY.probe_delay(1, 0.999999) == pytest.approx(0.8, abs=1e-5)
    assert BreakerPolicy(jitter=0.0).probe_delay(0, 0.9) == 0.5


def test_first_failure_opens_and_schedules_the_first_probe() -> None:
    breaker = CircuitBreaker(POLICY)
    assert breaker.closed and breaker.retry_in(100.0) == 0.0 and breaker.open_for(100.0) == 0.0
    assert breaker.call_failed(100.0, 0.0)
    assert breaker.state is BreakerState.OPEN and breaker.trips == 1
    assert breaker.retry_in(100.2) == pytest.approx(0.3)
    assert breaker.open_for(103.0) == pytest.approx(3.0)
    # Calls that were already out fail too: they neither reopen nor push the probe back.
    assert not breaker.call_failed(100.4, 0.0)
    assert breaker.next_probe_at == pytest.approx(100.5) and breaker.trips == 1


def test_failed_probes_back_off_and_success_closes() -> None:
    breaker = CircuitBreaker(POLICY)
    breaker.call_failed(0.0, 0.0)
    now = breaker.next_probe_at
    for expected in (1.0, 2.0, 4.0, 5.0, 5.0):
        breaker.probe_started()
        assert breaker.probing
        breaker.probe_failed(now, 0.0)
        assert not breaker.probing and not breaker.closed
        assert breaker.next_probe_at - now == pytest.approx(expected)
        now = breaker.next_probe_at
    assert breaker.retry_in(now + 1) == 0.0  # overdue, not negative
    breaker.probe_started()
    breaker.probe_succeeded()
    assert breaker.closed and not breaker.probing and breaker.failed_probes == 0
    # The next outage starts the backoff from the beginning.
    assert breaker.call_failed(now + 10, 0.0)
    assert breaker.retry_in(now + 10) == pytest.approx(0.5) and breaker.trips == 2


# Token records.
TOKENS = CachePolicy(token_refresh=20.0, token_max_age=45.0, auth_max_stale=600.0)


@pytest.mark.parametrize(
    ("age", "down", "use"),
    [
        (0.0, False, TokenUse.FRESH),
        (19.9, True, TokenUse.FRESH),
        (20.0, False, TokenUse.REFRESH),
        (44.9, True, TokenUse.REFRESH),
        (45.0, False, TokenUse.CHECK),
        (10_000.0, False, TokenUse.CHECK),
        (45.0, True, TokenUse.STALE),
        (599.9, True, TokenUse.STALE),
        (600.0, True, TokenUse.REFUSE),
    ],
)
def test_token_use_by_age_and_upstream(age: float, down: bool, use: TokenUse) -> None:
    assert token_use(1000.0, 1000.0 + age, TOKENS, upstream_down=down) is use


def test_auth_max_stale_below_max_age_refuses_as_soon_as_a_check_is_due() -> None:
    strict = CachePolicy(token_refresh=20.0, token_max_age=45.0, auth_max_stale=0.0)
    assert token_use(0.0, 44.0, strict, upstream_down=True) is TokenUse.REFRESH
    assert token_use(0.0, 45.0, strict, upstream_down=True) is TokenUse.REFUSE
    assert token_use(0.0, 45.0, strict, upstream_down=False) is TokenUse.CHECK
