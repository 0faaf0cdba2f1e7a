"""What the commands share at run time: where the server is, which token, and how to print."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pullkv.cli.options import DEFAULT_DATA
from pullkv.client import Client


class Context:
    """Connection settings shared by the client commands."""

    def __init__(self, url: str, token: str | None, account_id: str | None, as_json: bool) -> None:
        self.url = url
        self.token = token
        self.account_id = account_id
        self.as_json = as_json

    def client(self) -> Client:
        """A client for the configured server; errors clearly when there is no token."""
        token = self.token or _token_from_data_dir()
        if not token:
            raise click.UsageError(
                "no token: pass --token, set PULLKV_TOKEN, or run beside the server's data folder"
            )
        return Client(self.url, token, account_id=self.account_id)

    def emit(self, value: Any, human: Callable[[Any], str] | None = None) -> None:
        """Print JSON with --json, else the human form."""
        if self.as_json or human is None:
            click.echo(json.dumps(value, indent=2, ensure_ascii=False))
        else:
            click.echo(human(value))


def emit(value: Any, human: str) -> None:
    """Print through the root command's :class:`Context` (honouring --json), or plainly when a
    command runs without one."""
    ctx = click.get_current_context().find_object(Context)
    if ctx is not None:
        ctx.emit(value, lambda _: human)
    else:
        click.echo(human)


def _token_from_data_dir() -> str | None:
    data = Path(os.environ.get("PULLKV_DATA", DEFAULT_DATA))
    path = data / "admin-token"
    if path.is_file():
        return path.read_text().strip()
    return None


pass_context = click.make_pass_decorator(Context)
