"""The network model: within its documented error on every calibration pair."""

from __future__ import annotations

import random

import pytest

from pullkv.simulate import network
from pullkv.simulate.network import MAX_ERROR, MEAN_ERROR, Network, calibration_errors, model_rtt_ms


def test_model_within_documented_error_on_the_calibration_pairs() -> None:
    rows = calibration_errors()
    assert len(rows) >= 10
    for pair, model, error in rows:
        assert abs(error) <= MAX_ERROR, (pair, model)
    assert sum(abs(e) for _, _, e in rows) / len(rows) <= MEAN_ERROR
    named = {(p.a, p.b): model for p, model, _ in rows}
    assert named[("MXP", "ZRH")] == pytest.approx(11, abs=3)  # Milan–Zurich about 11 ms
    assert named[("DFW", "JFK")] == pytest.approx(37, abs=8)  # Dallas–New York about 37 ms


def test_model_shape() -> None:
    assert model_rtt_ms(0.0) == network.SAME_CITY_MS
    assert model_rtt_ms(1000) < model_rtt_ms(2000)
    # Never faster than light in fibre.
    assert model_rtt_ms(10_000) > 2 * 10_000 / network.FIBRE_KM_PER_MS


def test_one_way_delays_jitter_and_loss() -> None:
    plain = Network.star(3, 0.08)
    assert plain.one_way(0, 3) == pytest.approx(0.04)
    assert plain.rtt[0][0] == 0.0
    jittery = Network.star(3, 0.08, jitter=0.01, rng=random.Random(1))
    delays = [jittery.one_way(0, 3) for _ in range(2000)]
    assert min(delays) >= 0.04
    assert sum(delays) / len(delays) == pytest.approx(0.05, rel=0.1)
    lossy = Network.star(3, 0.08, loss=0.5, rng=random.Random(1))
    lost = [lossy.one_way(0, 3) for _ in range(2000)]
    assert max(lost) >= 0.04 + network.RETRANSMIT + 0.08
