"""``pullkv tls``: certificates for TLS between origins, edges and clients, in one command."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from pullkv.tlsinit import (
    DEFAULT_SERVERS,
    LOCAL_NAMES,
    SERVER_VALIDITY_DAYS,
    TlsInitError,
    TlsResult,
    init_tls,
    parse_server,
)


@click.group()
def tls() -> None:
    """Make a private CA and server certificates for origins and edges."""


@tls.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="NAME=ADDR[,ADDR...]",
    help="A server and the DNS names and IP addresses clients reach it by, e.g. "
    "origin=10.0.0.1,origin.internal (repeatable). Default: "
    f"{' and '.join(DEFAULT_SERVERS)}, both on {', '.join(LOCAL_NAMES)}.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=SERVER_VALIDITY_DAYS,
    show_default=True,
    help="How long the server certificates are valid.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the named servers' existing keys and certificates (renewal). "
    "The CA is never replaced.",
)
def tls_init(folder: Path, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Make a CA in FOLDER (or reuse the one there) and a key and certificate per server.

    Run it again with new --host names to add servers: they are signed by the same CA.
    """
    try:
        specs = [parse_server(h) for h in hosts] or [
            (n, list(LOCAL_NAMES)) for n in DEFAULT_SERVERS
        ]
        servers = dict(specs)
        if len(servers) != len(specs):
            raise TlsInitError("a server is named twice")
        result = init_tls(
            folder, servers, now=datetime.datetime.now(datetime.UTC), days=days, force=force
        )
    except TlsInitError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(describe(result))


def describe(result: TlsResult) -> str:
    """What was made and where each file goes, for the operator."""
    verb = "Made a new CA" if result.ca_created else "Reused the CA"
    lines = [
        f"{verb}: {result.ca_cert} (give it to every edge, --upstream-ca, and client, "
        f"SSL_CERT_FILE)",
        f"  and its key {result.ca_key} (keep it secret; it signs new servers)",
    ]
    for server in result.servers:
        lines.append(
            f"{server.name}: --tls-cert {server.cert} --tls-key {server.key}  "
            f"(for {', '.join(server.names)}; valid until {server.not_after:%Y-%m-%d})"
        )
    return "\n".join(lines)
