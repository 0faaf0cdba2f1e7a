"""The root ``pullkv`` group: the connection options, and every command group attached."""

from __future__ import annotations

import ssl
from typing import Any

import click
import httpx

from pullkv.cli.client_commands import bulk, info, key, namespace
from pullkv.cli.client_commands import token as token_group  # ``token`` is main's option
from pullkv.cli.context import Context
from pullkv.cli.keyring import keyring
from pullkv.cli.options import DEFAULT_URL
from pullkv.cli.servers import cluster, edge, origin, serve
from pullkv.cli.simulate import simulate
from pullkv.cli.store import store
from pullkv.cli.tls import tls


def connection_failure(exc: httpx.TransportError, url: str) -> str:
    """One line saying why ``url`` could not be talked to at all."""
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time: is the server running and reachable?"
    cause: BaseException | None = exc
    while cause is not None:  # httpx wraps the ssl error; its text says what failed
        if isinstance(cause, ssl.SSLError):
            return f"TLS error talking to {url}: {cause}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: is the server running? ({exc})"
    return f"cannot talk to {url}: {exc}"


class _Group(click.Group):
    """The root group: an expected failure is one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except httpx.TransportError as exc:
            context = ctx.find_object(Context)
            url = context.url if context is not None else "the server"
            raise click.ClickException(connection_failure(exc, url)) from None


@click.group(cls=_Group)
@click.option(
    "--url",
    envvar="PULLKV_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Server URL (PULLKV_URL).",
)
@click.option(
    "--token",
    envvar="PULLKV_TOKEN",
    default=None,
    help="API token (PULLKV_TOKEN); defaults to $PULLKV_DATA/admin-token if present.",
)
@click.option(
    "--account-id",
    envvar="PULLKV_ACCOUNT_ID",
    default=None,
    help="Account id (PULLKV_ACCOUNT_ID); found from the token if omitted.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.version_option(package_name="pullkv")
@click.pass_context
def main(
    ctx: click.Context, url: str, token: str | None, account_id: str | None, as_json: bool
) -> None:
    """pullkv: a global, read-optimised key-value store that speaks Workers KV."""
    ctx.obj = Context(url, token, account_id, as_json)


for _command in (
    namespace,
    key,
    bulk,
    info,
    token_group,
    keyring,
    serve,
    origin,
    edge,
    cluster,
    store,
    tls,
    simulate,
):
    main.add_command(_command)
