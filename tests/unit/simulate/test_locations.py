"""Locations: every candidate is a real airport, the selection rule, tiers, weights."""

from __future__ import annotations

import pytest

from pullkv.simulate import locations as loc
from pullkv.simulate.deps import airports


def test_every_candidate_is_a_known_airport_listed_once() -> None:
    codes = [c for codes in loc.CANDIDATES.values() for c in codes]
    assert len(codes) == len(set(codes)) == loc.candidate_count() >= 330
    data = airports()
    assert [c for c in codes if c not in data] == []


def test_selection_keeps_the_regional_mix_and_the_origin() -> None:
    chosen = loc.select_codes(300, ["IAD"])
    assert len(chosen) == len(set(chosen)) == 300
    assert "IAD" in chosen
    regions = {loc.region_of(c) for c in chosen}
    assert regions == set(loc.CANDIDATES)
    # An origin outside the stride is swapped in, not added.
    few = loc.select_codes(5, ["SYD"])
    assert len(few) == 5 and "SYD" in few
    with pytest.raises(ValueError, match="between 1 and"):
        loc.select_codes(0)


def test_lookup_and_distance() -> None:
    zrh, mxp = loc.lookup("zrh"), loc.lookup("MXP")
    assert zrh.region == "Europe" and zrh.country == "CH"
    assert 190 < loc.great_circle_km(zrh, mxp) < 220
    with pytest.raises(KeyError, match="no airport"):
        loc.lookup("ZZZ")


def test_weights() -> None:
    places = [loc.lookup(c) for c in loc.select_codes(40)]
    for rule in ("region", "uniform"):
        shares = loc.weights(places, rule)
        assert sum(shares) == pytest.approx(1.0)
    region = loc.weights(places, "region")
    asia = [w for p, w in zip(places, region, strict=True) if p.region == "Asia"]
    oceania = [w for p, w in zip(places, region, strict=True) if p.region == "Oceania"]
    assert sum(asia) > sum(oceania)
    with pytest.raises(ValueError, match="unknown weight rule"):
        loc.weights(places, "population")


def test_tiers_lower_the_weighted_distance_to_the_nearest_upstream() -> None:
    # Five points on a line, the origin at one end: one tier goes to the far cluster.
    xs = [0.0, 1.0, 10.0, 11.0, 12.0, 0.0]  # index 5 is the origin

    def rtt(a: int, b: int) -> float:
        return abs(xs[a] - xs[b])

    tiers = loc.choose_tiers(1, 5, [5], rtt, [0.2] * 5)
    assert tiers == [3]
    assert loc.choose_tiers(2, 5, [5], rtt, [0.2] * 5) == loc.choose_tiers(
        2, 5, [5], rtt, [0.2] * 5
    )
