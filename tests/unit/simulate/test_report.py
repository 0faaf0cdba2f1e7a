"""summary.json and report.html: every figure and plot the issue asks for is there."""

from __future__ import annotations

import json
from pathlib import Path

from pullkv.simulate import report
from pullkv.simulate.scenarios import run
from tests.unit.simulate.helpers import small


def test_report_files(tmp_path: Path) -> None:
    runs = [
        ("TTL only", run(small(tiers=2))),
        ("feed, outage", run(small(tiers=2, feed=True, outage=(300.0, 300.0)))),
    ]
    summary = report.write(tmp_path, runs)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    first = summary["runs"]["TTL only"]
    assert set(first["outcomes"]) == {"edge", "tier", "origin", "stale", "failed"}
    assert set(first["latency_ms"]) == {"all", "hot", "cold", "regions"}
    assert first["latency_ms"]["hot"]["p50"] < first["latency_ms"]["cold"]["p50"]
    assert len(first["locations"]) == 20 and len(first["tiers"]) == 2
    outage = summary["runs"]["feed, outage"]["outage"]
    assert outage["served"] == round(outage["fresh"] + outage["stale"], 4)
    page = (tmp_path / "report.html").read_text()
    titles = [
        "Hit ratio per tier and per region",
        "Read latency",
        "Write-to-visible latency",
        "Origin load",
        "Origin outage: fresh, stale and failed reads",
        "Map of locations",
    ]
    for title in titles:
        assert f'<img alt="{title}" src="data:image/png;base64,' in page
