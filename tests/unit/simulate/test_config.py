"""The CLI's compact forms: durations, outages, the star topology."""

from __future__ import annotations

import pytest

from pullkv.simulate.config import Star, parse_duration, parse_outage, parse_topology


def test_durations() -> None:
    assert parse_duration("90") == 90.0
    assert parse_duration("30s") == 30.0
    assert parse_duration("15m") == 900.0
    assert parse_duration("2.5h") == 9000.0
    assert parse_duration("80ms") == pytest.approx(0.08)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_outage_and_topology() -> None:
    assert parse_outage("1h:2.5h") == (3600.0, 9000.0)
    with pytest.raises(ValueError, match="START:DURATION"):
        parse_outage("1h")
    star = parse_topology("star:3:80ms")
    assert isinstance(star, Star) and star.edges == 3 and star.rtt == pytest.approx(0.08)
    for bad in ("star:0:80ms", "ring:3:80ms", "star:3"):
        with pytest.raises(ValueError, match="topology"):
            parse_topology(bad)
