"""The engine: deterministic, within the cache policy's bounds, and driven by that policy.

Each run is small (20 locations, 20,000 requests): well under a second."""

from __future__ import annotations

import dataclasses
import json

import pytest

import pullkv.edge.cache
from pullkv.edge.cache import CachePolicy
from pullkv.simulate import engine
from pullkv.simulate.config import SimConfig, Star
from pullkv.simulate.engine import FAILED, HIT, ORIGIN, STALE, TIER, Result
from pullkv.simulate.report import summarise_run
from pullkv.simulate.scenarios import build, run
from tests.unit.simulate.helpers import small


def _totals(result: Result) -> list[int]:
    return [sum(c[i] for c in result.counts) for i in range(5)]


def _hit_ratio(result: Result) -> float:
    totals = _totals(result)
    return totals[HIT] / sum(totals)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(len(ordered) * 0.99) - 1]


def test_same_seed_same_summary() -> None:
    config = small(tiers=2, feed=True, feed_loss=0.1, outage=(300.0, 300.0))
    first = json.dumps(summarise_run(run(config)), sort_keys=True)
    assert first == json.dumps(summarise_run(run(config)), sort_keys=True)
    other = json.dumps(summarise_run(run(dataclasses.replace(config, seed=2))), sort_keys=True)
    assert first != other


def test_no_read_served_past_ttl_plus_max_stale() -> None:
    policy = CachePolicy(max_stale=120.0)
    result = run(small(outage=(300.0, 600.0), policy=policy))
    totals = _totals(result)
    assert totals[STALE] > 0 and totals[FAILED] > 0  # both sides of the bound were reached
    assert result.max_hit_age < 60
    assert 60 < result.max_stale_age < 60 + 120


@pytest.mark.parametrize("tiers", [0, 3])
def test_visibility_bounded_by_ttl_without_the_feed(tiers: int) -> None:
    # With tiers too: a tier's answer carries its copy's age (Fetched.age), so the edge below
    # counts from when the origin vouched for it, and the TTL bounds the whole chain.
    result = run(small(cache_ttl=60, visibility_samples=40, tiers=tiers))
    assert len(result.visibility) >= 20 * 20
    worst_rtt = max(max(row) for row in build(small()).net.rtt)
    bound = 60 + 2 * worst_rtt + result.config.probe_step
    assert max(result.visibility) <= bound
    assert max(result.visibility) > 30  # entries held at the write were served until expiry


def test_hit_ratio_grows_with_ttl() -> None:
    ratios = [_hit_ratio(run(small(cache_ttl=ttl))) for ttl in (30, 120, 600)]
    assert ratios[0] < ratios[1] < ratios[2]


def test_the_feed_lowers_visibility_p99_and_loss_raises_it_again() -> None:
    ttl_only = run(small(visibility_samples=40))
    feed = run(small(feed=True, visibility_samples=40))
    lossy = run(small(feed=True, feed_loss=0.3, visibility_samples=40))
    assert _p99(feed.visibility) < 5 < 30 < _p99(ttl_only.visibility)
    # A lost change is noticed at the next heartbeat or message (0.5 s at most) and
    # replayed after one round trip per loss: well under a second more at 30 % loss.
    assert _p99(feed.visibility) < _p99(lossy.visibility) <= _p99(feed.visibility) + 2


def test_a_policy_constant_changes_the_output() -> None:
    base = summarise_run(run(small()))
    changed = summarise_run(run(small(policy=CachePolicy(refresh_interval=10.0))))
    assert base["origin"]["requests"] < changed["origin"]["requests"]
    assert base != changed


def test_the_engine_calls_pullkv_edge_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator decides with the edge's own functions: patch one, and it changes."""
    base = _hit_ratio(run(small()))
    original = pullkv.edge.cache.freshness
    calls = []

    def never_fresh(
        validated_at: float, now: float, ttl: float, policy: CachePolicy
    ) -> pullkv.edge.cache.Freshness:
        calls.append(now)
        original(validated_at, now, ttl, policy)
        return pullkv.edge.cache.Freshness.EXPIRED

    monkeypatch.setattr(pullkv.edge.cache, "freshness", never_fresh)
    patched = run(small())
    assert calls
    assert _hit_ratio(patched) == 0.0 < base


def test_tiers_answer_part_of_the_reads() -> None:
    flat = run(small(locations=40))
    tiered = run(small(locations=40, tiers=4))
    assert _totals(flat)[TIER] == 0
    assert _totals(tiered)[TIER] > 0
    assert tiered.origin_requests < flat.origin_requests
    assert len(tiered.tiers) == 4


def test_single_flight_collapses_concurrent_misses() -> None:
    # One key, a hundred reads per second at one location, 80 ms from the origin: misses
    # that arrive while a fetch is out join it.
    result = run(
        small(
            topology=Star(1, 0.08),
            keys=1,
            requests=2000,
            duration=20.0,
            write_fraction=0.0,
            missing_fraction=0.0,
            cache_ttl=1,
            policy=CachePolicy(refresh_interval=1.0),
        )
    )
    totals = _totals(result)
    assert totals[ORIGIN] > 2 * result.origin_requests


def test_star_topology_latency() -> None:
    result = run(small(topology=Star(3, 0.08), write_fraction=0.0))
    summary = summarise_run(result)
    assert [p["code"] for p in summary["locations"]] == ["E1", "E2", "E3"]
    cold = summary["latency_ms"]["cold"]
    assert cold["p99"] == pytest.approx(80 + 1, rel=0.1)  # one round trip, the origin's read


def test_outage_refill_jitter_spreads_the_recovery() -> None:
    # Three busy edges with a small working set: at recovery every key has expired at once.
    outage = (300.0, 600.0)
    busy = {"topology": Star(3, 0.08), "requests": 60_000, "write_fraction": 0.0, "keys": 200}
    storm = run(small(outage=outage, **busy))
    spread = run(small(outage=outage, refill="jitter", **busy))
    end = int((outage[0] + outage[1]) / storm.series_width)

    def peak(result: Result) -> int:
        return max(result.series["origin_requests"][end : end + 10])

    assert peak(spread) * 2 < peak(storm)
    assert _totals(spread)[STALE] > _totals(storm)[STALE]


def test_origin_errors_outage_and_lists() -> None:
    result = run(small(outage=(300.0, 300.0), outage_kind="errors", list_fraction=0.05))
    totals = _totals(result)
    assert totals[STALE] > 0
    assert result.lists[HIT] > 0 and result.lists[ORIGIN] > 0
    assert result.writes_failed > 0


def test_negative_entries_are_cached() -> None:
    result = run(small(missing_fraction=0.5, keys=10, write_fraction=0.0))
    assert _hit_ratio(result) > 0.5
    assert engine.OUTCOMES[HIT] == "edge"


def _star(**changes: object) -> SimConfig:
    return small(topology=Star(3, 0.08), visibility_samples=10_000, **changes)


def test_a_lost_change_is_caught_up_at_the_next_heartbeat_then_one_round_trip() -> None:
    """As the real feed: noticed by the next message or heartbeat, replayed in one RTT."""
    clean = run(_star(feed=True))
    lossy = run(_star(feed=True, feed_loss=0.2))
    slow_beats = run(_star(feed=True, feed_loss=0.2, feed_heartbeat=2.0))
    one_way, rtt = 0.04, 0.08
    # Without loss: the change's one-way trip, then the reader's fetch (and the origin's ms).
    assert max(clean.visibility_remote) <= one_way + rtt + 0.01
    # With loss: at most a heartbeat later, plus one round trip per time it was lost (four
    # losses in a row on one hop, at 20 %, are rarer than one in 600).
    assert _p99(lossy.visibility_remote) >= _p99(clean.visibility_remote) + rtt
    assert max(lossy.visibility_remote) <= one_way + 0.5 + 4 * rtt + rtt + 0.01
    assert _p99(slow_beats.visibility_remote) > _p99(lossy.visibility_remote) + 0.3


def test_visibility_elsewhere_leaves_out_the_writers_own_location() -> None:
    result = run(_star())
    assert result.visibility_censored == 0
    assert len(result.visibility_remote) * 3 == len(result.visibility) * 2


def test_a_server_time_distribution_is_added_to_every_read() -> None:
    from pullkv.simulate import stats

    base = run(_star(feed=True))
    slow = run(_star(feed=True, server_time=(0.01, 0.02)))
    hist, slow_hist = stats.merge(base.hist), stats.merge(slow.hist)
    assert stats.count(hist) == stats.count(slow_hist)
    p50 = stats.percentile(hist, 50)
    slow_p50 = stats.percentile(slow_hist, 50)
    assert p50 is not None and slow_p50 is not None
    assert 0.01 * 0.9 <= slow_p50 - p50 <= 0.02 * 1.1
    assert min(slow.visibility) >= min(base.visibility) + 0.01 - 0.001


def test_the_run_restores_the_collectors_thresholds() -> None:
    import gc

    before = gc.get_threshold()
    run(small(requests=1000))
    assert gc.get_threshold() == before
