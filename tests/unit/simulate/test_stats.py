"""Histogram percentiles are within half a bin of the exact ones."""

from __future__ import annotations

import random

import pytest

from pullkv.simulate import stats


def test_percentiles_close_to_exact() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(-3, 1) for _ in range(10_000)]
    h = stats.new()
    for v in values:
        h[stats.bin_of(v)] += 1
    ordered = sorted(values)
    for p in (50, 90, 99):
        exact = ordered[int(len(ordered) * p / 100) - 1]
        assert stats.percentile(h, p) == pytest.approx(exact, rel=0.06)
    assert stats.count(h) == 10_000
    xs, ys = stats.cdf(h)
    assert ys[-1] == 1.0 and xs == sorted(xs)
    assert stats.percentile(stats.new(), 50) is None
    assert stats.bin_of(0.0) == 0 and stats.bin_of(1e9) == stats.NBINS - 1
    assert stats.merge([h, h])[stats.bin_of(ordered[0])] >= 2


def test_spread_adds_a_distribution_and_keeps_the_count() -> None:
    h = stats.new()
    h[stats.bin_of(0.1)] = 1000
    h[stats.bin_of(0.001)] = 7
    out = stats.spread(h, [0.0, 0.1])
    assert stats.count(out) == 1007
    assert out[stats.bin_of(stats.bin_value(stats.bin_of(0.1)) + 0.1)] == 500
    top = stats.percentile(out, 99.9)
    assert top is not None and 0.19 <= top <= 0.21
