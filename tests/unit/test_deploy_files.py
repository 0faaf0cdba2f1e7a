"""deploy/systemd and docs/deploy.md name only commands and options that exist."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import click
import pytest

from pullkv.cli import main

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
INSTALLED = "/opt/pullkv/bin/pullkv"
TOP_LEVEL: dict[str, click.Command] = dict(main.commands)


def check_command_line(words: list[str]) -> None:
    """Every subcommand and option in ``pullkv WORDS...`` exists (and options get values)."""
    command: click.Command = main
    children: Mapping[str, click.Command] = TOP_LEVEL
    position = 0
    while position < len(words):
        word = words[position]
        position += 1
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            options = {
                opt: param
                for param in command.params
                if isinstance(param, click.Option)
                for opt in param.opts + param.secondary_opts
            }
            assert name in options, f"pullkv {' '.join(words)}: no option {name}"
            option = options[name]
            if not option.is_flag and "=" not in word and name not in ("--help", "--version"):
                assert position < len(words), f"{name} needs a value"
                position += 1
        elif word in children:
            command = children[word]
            children = command.commands if isinstance(command, click.Group) else {}
        else:
            assert not isinstance(command, click.Group), f"no command {word!r} in {words}"


def _exec_start(unit: Path) -> list[str]:
    text = unit.read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, unit
    return shlex.split(lines[0].removeprefix("ExecStart="))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_runs_an_existing_command(unit: Path) -> None:
    words = _exec_start(unit)
    assert words[0] == INSTALLED
    assert words[1] in ("origin", "edge")
    check_command_line(words[1:])
    text = unit.read_text()
    for setting in (
        "User=pullkv",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/pullkv",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
    ):
        assert f"\n{setting}\n" in text, f"{unit.name}: {setting}"
    # pullkv lets requests in flight finish for up to 30 s after SIGTERM: leave it that long.
    stop = re.search(r"^TimeoutStopSec=(\d+)$", text, flags=re.M)
    assert stop is not None and int(stop.group(1)) > 30
    assert re.search(r"^LimitNOFILE=\d+$", text, flags=re.M)


def test_units_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    pullkv = Path(sys.executable).parent / "pullkv"
    for unit in UNITS:  # verify insists that the command exist
        text = unit.read_text().replace(INSTALLED, str(pullkv))
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / u.name) for u in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_deploy_doc_commands_exist() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", doc, flags=re.S)
    found = 0
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        words = shlex.split(line.strip(), comments=True)
        if words and words[0] in ("pullkv", INSTALLED):
            check_command_line(words[1:])
            found += 1
    assert found >= 15


def test_check_command_line_catches_mistakes() -> None:
    with pytest.raises(AssertionError, match="no option --nope"):
        check_command_line(["edge", "--nope"])
    with pytest.raises(AssertionError, match="no command 'nope'"):
        check_command_line(["token", "nope"])
    check_command_line(["tls", "init", "dir", "--host", "a=1.2.3.4", "--force"])
