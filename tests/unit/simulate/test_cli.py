"""``pullkv simulate``'s options, its errors, and the missing-extra message."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullkv.cli import main


def test_small_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "--topology",
            "star:3:80ms",
            "--requests",
            "3000",
            "--duration",
            "10m",
            "--keys",
            "100",
            "--scenario",
            "feed",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["runs"]) == ["TTL only", "change feed", "feed, 10% loss"]
    assert summary["runs"]["change feed"]["config"]["feed"] is True
    assert "wrote" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--outage", "1h"], "START:DURATION"),
        (["--topology", "ring"], "star:3:80ms"),
        (["--duration", "soon"], "not a duration"),
        (["--origin", "IAD", "--origin", "LHR", "--origin", "NRT"], "at most two origins"),
        (["--origin", "ZZZ", "--locations", "5"], "no airport with IATA code 'ZZZ'"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        main, ["simulate", "--requests", "100", "--no-progress", "--out", str(tmp_path), *args]
    )
    assert result.exit_code == (1 if "no airport" in message else 2)
    assert message in result.output


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_matplotlib(name: str) -> object:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(importlib, "import_module", without_matplotlib)
    result = CliRunner().invoke(main, ["simulate", "--requests", "10"])
    assert result.exit_code == 1
    assert "pip install 'pullkv[simulate]'" in result.output
    assert "'matplotlib'" in result.output
