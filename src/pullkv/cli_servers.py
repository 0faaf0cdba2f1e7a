"""The server commands: ``serve``, ``origin``, ``edge`` and ``cluster up``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from pullkv import errors
from pullkv.edge.cache import CachePolicy
from pullkv.limits import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SEND_TIMEOUT,
    Limits,
)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DATA = "./pullkv-data"
_SIZE = re.compile(r"(?i)\s*([0-9]+(?:\.[0-9]+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*")
_UNITS = {
    None: 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """Bytes from ``1048576``, ``64MiB``, ``512k`` or ``1GB``."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a size such as 64MiB")
    unit = match.group(2).lower() if match.group(2) else None
    return int(float(match.group(1)) * _UNITS[unit])


def _apply(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


listen_options = _apply(
    [
        click.option(
            "--host", default="127.0.0.1", show_default=True, help="Address to listen on."
        ),
        click.option(
            "--port", default=8787, show_default=True, type=int, help="Port to listen on."
        ),
        click.option(
            "--tls-cert",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Serve HTTPS with this certificate chain (PEM).",
        ),
        click.option(
            "--tls-key",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="The private key of --tls-cert (PEM).",
        ),
        click.option(
            "--log-level",
            default="info",
            show_default=True,
            type=click.Choice(["debug", "info", "warning", "error"]),
        ),
        click.option(
            "--send-timeout",
            type=click.FloatRange(min=0.1),
            default=DEFAULT_SEND_TIMEOUT,
            show_default=True,
            help="Seconds a client may leave a response unread (taking no bytes of it) "
            "before its connection is dropped.",
        ),
        click.option(
            "--max-connections",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_CONNECTIONS,
            show_default=True,
            help="Open connections per process; more are answered 503 and closed.",
        ),
    ]
)


def check_store_url(_ctx: click.Context, _param: click.Parameter, url: str | None) -> str | None:
    """A click callback: refuse a store URL no engine knows."""
    from pullkv.store import is_store_url

    if url is not None and not is_store_url(url):
        raise click.BadParameter("expected sqlite:///path/to/file or postgresql://user@host/db")
    return url


store_option = click.option(
    "--store",
    "store_url",
    envvar="PULLKV_STORE",
    default=None,
    callback=check_store_url,
    help="Store URL (PULLKV_STORE): sqlite:///path/to/file or postgresql://user@host/db. "
    "Default: the SQLite file in --data, which holds master.key and admin-token either way.",
)

origin_options = _apply(
    [
        click.option(
            "--data",
            "data_dir",
            envvar="PULLKV_DATA",
            default=DEFAULT_DATA,
            show_default=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="Data folder (PULLKV_DATA).",
        ),
        store_option,
        click.option(
            "--account-id",
            "account_id",
            default=None,
            help="Fix the default account's id (32 lowercase hex) on first start.",
        ),
        click.option(
            "--min-expiration-ttl",
            type=click.IntRange(min=1),
            default=None,
            help="Lower the 60 s expiration floor (for tests only).",
        ),
        click.option(
            "--writes-per-key-per-second",
            type=click.FloatRange(min=0),
            default=None,
            help="Same-key write rate (default 1; 0 disables the limit).",
        ),
        click.option(
            "--no-group-commit", is_flag=True, help="Commit each write on its own (for benchmarks)."
        ),
    ]
)

cache_options = _apply(
    [
        click.option(
            "--cache-size",
            default="256MiB",
            show_default=True,
            help="Bytes the cache may hold (e.g. 64MiB).",
        ),
        click.option(
            "--default-cache-ttl",
            type=click.IntRange(min=1),
            default=None,
            help="cacheTtl of reads that give none (default 60 s).",
        ),
        click.option(
            "--min-cache-ttl",
            type=click.IntRange(min=1),
            default=None,
            help="Lowest cacheTtl a read may ask for (default 30 s; lower for tests).",
        ),
        click.option(
            "--refresh-interval",
            type=click.FloatRange(min=0.01),
            default=None,
            help="Age after which a read revalidates its entry in the background (default 60 s).",
        ),
        click.option(
            "--max-stale",
            type=click.FloatRange(min=0),
            default=None,
            help="How long past its TTL an entry may be served while the upstream "
            "fails (default 3600 s).",
        ),
        click.option(
            "--auth-max-stale",
            type=click.FloatRange(min=0),
            default=None,
            help="How long after the upstream last confirmed a token it is still accepted "
            "while the upstream cannot be reached (default 600 s; see docs/security.md).",
        ),
        # Token record ages (default 20 s and 45 s), shortened by tests of outages.
        click.option("--token-refresh", type=click.FloatRange(min=0), default=None, hidden=True),
        click.option("--token-max-age", type=click.FloatRange(min=0), default=None, hidden=True),
    ]
)


def _limits(**given: Any) -> Limits:
    changes = {name: value for name, value in given.items() if value is not None}
    return DEFAULT_LIMITS.with_changes(**changes)


# The CachePolicy fields the server commands take as options of the same name.
_POLICY_OPTIONS = (
    "refresh_interval",
    "max_stale",
    "auth_max_stale",
    "token_refresh",
    "token_max_age",
)


def _policy(limits: Limits, options: dict[str, Any]) -> CachePolicy:
    policy = CachePolicy(default_ttl=limits.default_cache_ttl, list_ttl=limits.default_cache_ttl)
    given = {name: options[name] for name in _POLICY_OPTIONS if options.get(name) is not None}
    return replace(policy, **given)


def _check_account(account_id: str | None) -> None:
    from pullkv.validate import validate_id

    if account_id is None:
        return
    try:
        validate_id("account", account_id)
    except errors.KVError:
        raise click.BadParameter(
            "must be 32 lowercase hex characters", param_hint="--account-id"
        ) from None


def _tls(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    return None if cert is None or key is None else (cert, key)


def _launch(config: Any, options: dict[str, Any]) -> None:
    from pullkv.node import Node, NodeError
    from pullkv.runner import configure_logging, run

    configure_logging(options["log_level"])
    tls = _tls(options["tls_cert"], options["tls_key"])

    def announce(node: Node, url: str) -> None:
        click.echo(f"pullkv {node.role} serving at {url}", err=True)
        click.echo(f"  REST API:     {url}/client/v4", err=True)
        if node.account_id is not None:
            click.echo(f"  account id:   {node.account_id}", err=True)
        if node.admin_token_source is not None:
            click.echo(f"  admin token:  {node.admin_token_source}", err=True)
        if node.upstream is not None:
            click.echo(f"  upstream:     {node.upstream}", err=True)
        click.echo(f"  master key:   {node.master_key_source}", err=True)
        click.echo(f"  data folder:  {config.data_dir}", err=True)
        if config.role != "edge":
            from pullkv.node import store_url_for
            from pullkv.store import describe_url

            click.echo(f"  store:        {describe_url(store_url_for(config))}", err=True)

    try:
        run(
            config,
            options["host"],
            options["port"],
            announce,
            tls=tls,
            send_timeout=options["send_timeout"],
            max_connections=options["max_connections"],
        )
    except NodeError as exc:
        raise click.ClickException(str(exc)) from None


def _origin_config(role: str, options: dict[str, Any]) -> Any:
    """The NodeConfig of ``serve`` or ``origin`` from their options."""
    from pullkv.node import NodeConfig

    _check_account(options["account_id"])
    limits = _limits(
        min_expiration_ttl=options["min_expiration_ttl"],
        writes_per_key_per_second=options["writes_per_key_per_second"],
        default_cache_ttl=options.get("default_cache_ttl"),
        min_cache_ttl=options.get("min_cache_ttl"),
    )
    config = NodeConfig(
        data_dir=options["data_dir"],
        role="serve" if role == "serve" else "origin",
        store_url=options["store_url"],
        account_id=options["account_id"],
        limits=limits,
        group_commit=not options["no_group_commit"],
    )
    if role == "serve":
        config.cache_size = parse_size(options["cache_size"])
        config.policy = _policy(limits, options)
    return config


@click.command()
@listen_options
@origin_options
@cache_options
def serve(**options: Any) -> None:
    """Run an origin and an edge in one process (on the embedded store unless --store)."""
    _launch(_origin_config("serve", options), options)


@click.command()
@listen_options
@origin_options
def origin(**options: Any) -> None:
    """Run an origin: the authoritative service on the store, which edges pull from."""
    _launch(_origin_config("origin", options), options)


@click.command()
@click.option(
    "--upstream",
    required=True,
    help="URL of the origin or edge to pull from (token in PULLKV_UPSTREAM_TOKEN).",
)
@listen_options
@click.option(
    "--location",
    default="edge",
    show_default=True,
    help="This edge's location name (shown in Cache-Status).",
)
@click.option(
    "--data",
    "data_dir",
    envvar="PULLKV_DATA",
    default=DEFAULT_DATA,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding master.key, unless PULLKV_MASTER_KEY is set. "
    "An edge writes nothing to disk.",
)
@cache_options
@click.option(
    "--min-expiration-ttl",
    type=click.IntRange(min=1),
    default=None,
    help="The expiration floor to check before forwarding (match the origin's).",
)
@click.option(
    "--upstream-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify an HTTPS upstream against this CA certificate (PEM).",
)
@click.option(
    "--upstream-timeout",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the upstream before serving stale.",
)
@click.option(
    "--upstream-latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    hidden=True,
    help="Delay added to every upstream exchange (simulated distance).",
)
def edge(**options: Any) -> None:
    """Run an edge: a cache in front of an origin or of another edge."""
    from pullkv.node import EdgeSettings, NodeConfig

    limits = _limits(
        min_expiration_ttl=options["min_expiration_ttl"],
        default_cache_ttl=options["default_cache_ttl"],
        min_cache_ttl=options["min_cache_ttl"],
        writes_per_key_per_second=0,  # the origin enforces the same-key rate
    )
    settings = EdgeSettings(
        upstream=options["upstream"],
        upstream_ca=options["upstream_ca"],
        latency=options["upstream_latency_ms"] / 1000,
        timeout=options["upstream_timeout"],
        location=options["location"],
    )
    config = NodeConfig(
        data_dir=options["data_dir"],
        role="edge",
        limits=limits,
        cache_size=parse_size(options["cache_size"]),
        policy=_policy(limits, options),
        edge=settings,
    )
    _launch(config, options)


@click.group()
def cluster() -> None:
    """Several locations on one machine, for trying pullkv out."""


@cluster.command("up")
@click.option(
    "--edges",
    type=click.IntRange(min=1, max=12),
    default=3,
    show_default=True,
    help="How many edge locations.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=80.0,
    show_default=True,
    help="Delay added to every edge-origin exchange.",
)
@click.option(
    "--data",
    "data_dir",
    default="./pullkv-cluster",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the origin.",
)
@click.option(
    "--base-port",
    type=int,
    default=8787,
    show_default=True,
    help="The origin's port; edges take the next ones.",
)
@click.option(
    "--default-cache-ttl",
    type=click.IntRange(min=1),
    default=None,
    help="cacheTtl of reads that give none (default 60 s).",
)
@click.option(
    "--min-cache-ttl",
    type=click.IntRange(min=1),
    default=None,
    help="Lowest cacheTtl a read may ask for (default 30 s).",
)
@click.option(
    "--refresh-interval",
    type=click.FloatRange(min=0.01),
    default=None,
    help="Background revalidation age (default 60 s).",
)
def cluster_up(
    edges: int,
    latency_ms: float,
    data_dir: Path,
    base_port: int,
    default_cache_ttl: int | None,
    min_cache_ttl: int | None,
    refresh_interval: float | None,
) -> None:
    """Start one origin and N edges on loopback; Ctrl-C stops them all."""
    from pullkv.cluster import ClusterSpec, run_cluster

    spec = ClusterSpec(
        data_dir=data_dir,
        edges=edges,
        latency_ms=latency_ms,
        base_port=base_port,
        default_cache_ttl=default_cache_ttl,
        min_cache_ttl=min_cache_ttl,
        refresh_interval=refresh_interval,
    )
    run_cluster(spec, click.echo)
