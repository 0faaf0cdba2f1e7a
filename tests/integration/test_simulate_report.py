"""``pullkv simulate`` as a user runs it, and its report opened in headless Chromium.

Chromium is Debian's ``chromium`` package (``scripts/chromium.sh`` installs it); without it
this test skips, and fails under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars"]


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        reason = "chromium is not installed (scripts/chromium.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the report test must run under CI=true, but {reason}")
        pytest.skip(reason)
    return found


def _colours(png: Path) -> int:
    """How many distinct colours a PNG holds (a blank page has one)."""
    from matplotlib import image

    pixels = image.imread(png)
    flat = pixels.reshape(-1, pixels.shape[-1])
    return len({tuple(p) for p in flat[:: max(1, len(flat) // 200_000)]})


def test_simulate_writes_a_report_that_renders(tmp_path: Path) -> None:
    chromium = _chromium()
    out = tmp_path / "sim"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pullkv",
            "simulate",
            "--locations",
            "30",
            "--tiers",
            "3",
            "--requests",
            "20000",
            "--duration",
            "30m",
            "--keys",
            "2000",
            "--outage",
            "10m:5m",
            "--invalidation",
            "on",
            "--feed-loss",
            "0.1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr  # the progress bar
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"]["run"]["outage"]["reads"] > 0

    page = (out / "report.html").as_uri()
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = dom.stdout.count('src="data:image/png;base64,')
    assert images == 6, dom.stdout[:2000]
    assert "<h1>pullkv simulate</h1>" in dom.stdout

    shot = tmp_path / "report.png"
    taken = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, "--window-size=1200,2000", f"--screenshot={shot}", page],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    assert _colours(shot) > 50  # plots in many colours, not a blank or error page
