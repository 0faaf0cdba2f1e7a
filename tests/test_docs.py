"""The docs are tested: docs/cli.md is the CLI's own --help, and the README's commands exist.

Regenerate the CLI reference with ``PULLKV_WRITE_DOCS=1 pytest tests/test_docs.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
from click.testing import CliRunner

from pullkv.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
HEADER = """# pullkv command reference

Every command's `--help`, generated from the code and checked by `tests/test_docs.py`.
Client commands talk to a server given by `--url` / `PULLKV_URL` with `--token` / `PULLKV_TOKEN`;
`keyring` commands work on a data folder, since the master key never leaves the machine.
"""


def _commands(group: click.Group, path: list[str]) -> list[list[str]]:
    found = [path]
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            found += _commands(command, [*path, name])
        else:
            found.append([*path, name])
    return found


def render_cli_reference() -> str:
    """docs/cli.md as the current code would write it."""
    runner = CliRunner()
    sections = [HEADER]
    for path in _commands(main, []):
        result = runner.invoke(main, [*path, "--help"], prog_name="pullkv", terminal_width=100)
        assert result.exit_code == 0, result.output
        title = " ".join(["pullkv", *path])
        sections.append(f"## `{title}`\n\n```text\n{result.output.rstrip()}\n```\n")
    return "\n".join(sections)


def test_cli_reference_matches_help() -> None:
    expected = render_cli_reference()
    if os.environ.get("PULLKV_WRITE_DOCS"):
        CLI_DOC.write_text(expected)
    assert CLI_DOC.read_text() == expected, "run PULLKV_WRITE_DOCS=1 pytest tests/test_docs.py"


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\./dev (\w+)", quick_start, flags=re.M)
    assert commands == ["serve", "test"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("./dev test")
    shell = "\n".join(re.findall(r"```sh\n(.*?)```", readme, flags=re.S))
    for used in re.findall(r"^pullkv ([a-z]+(?: [a-z]+)?)", shell, flags=re.M):
        words = used.split()
        command: click.Command = main
        for word in words:
            assert isinstance(command, click.Group) and word in command.commands, used
            command = command.commands[word]
