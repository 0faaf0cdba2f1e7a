"""Workloads: Zipf keys, the operation mix, determinism, traces."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pullkv.simulate.workload import (
    DELETE,
    LIST,
    READ,
    WRITE,
    WorkloadSpec,
    from_trace,
    synthetic,
    zipf_cumulative,
)


def test_synthetic_mix_and_order() -> None:
    spec = WorkloadSpec(
        requests=20_000,
        duration=100.0,
        keys=500,
        write_fraction=0.1,
        list_fraction=0.05,
        missing_fraction=0.05,
    )
    rows = list(synthetic(spec, [0.75, 0.25], seed=3))
    assert len(rows) == 20_000
    times = [r[0] for r in rows]
    assert times == sorted(times) and times[-1] == pytest.approx(100.0, rel=0.05)
    ops = Counter(r[2] for r in rows)
    assert ops[WRITE] + ops[DELETE] == pytest.approx(2000, rel=0.1)
    assert ops[DELETE] == pytest.approx(100, rel=0.35)
    assert ops[LIST] == pytest.approx(1000, rel=0.15)
    reads = [r for r in rows if r[2] == READ]
    missing = [r for r in reads if r[3] >= 500]
    assert len(missing) == pytest.approx(1000, rel=0.15)
    keys = Counter(r[3] for r in reads if r[3] < 500)
    assert keys.most_common(1)[0][0] == 0  # rank 1 is the most popular
    assert keys[0] > 5 * keys[50]
    locs = Counter(r[1] for r in rows)
    assert locs[0] == pytest.approx(15_000, rel=0.05)
    assert rows == list(synthetic(spec, [0.75, 0.25], seed=3))
    assert rows != list(synthetic(spec, [0.75, 0.25], seed=4))


def test_zipf_weights() -> None:
    cw = zipf_cumulative(4, 1.0)
    assert cw == pytest.approx([1.0, 1.5, 1.5 + 1 / 3, 1.5 + 1 / 3 + 0.25])


def test_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "time,location,op,key,size\n"
        "2.0,mxp,get,b,\n"
        "1.0,ZRH,put,a,300\n"
        "3.0,ZRH,list,a,\n"
        "4.0,ZRH,delete,a,\n"
    )
    w = from_trace(trace, ["ZRH", "MXP"])
    rows = list(w)
    assert [r[2] for r in rows] == [WRITE, READ, LIST, DELETE]
    assert rows[0][1] == 0 and rows[1][1] == 1
    assert w.keys == 2 and w.size(1) == 300  # keys are numbered as first seen
    trace.write_text("time,location,op,key,size\n1.0,CDG,get,a,\n")
    with pytest.raises(ValueError, match=r"trace\.csv:2"):
        from_trace(trace, ["ZRH"])
