"""The server commands: ``serve``, ``origin``, ``edge`` and the ``cluster`` group."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from pullkv import errors
from pullkv.cli.options import (
    cache_flags,
    cache_options,
    data_option,
    feed_options,
    feed_retention_option,
    listen_options,
    origin_options,
    parse_size,
    store_option,
)
from pullkv.edge.cache import CachePolicy
from pullkv.feed.policy import FeedPolicy
from pullkv.limits import DEFAULT_LIMITS, Limits

CLUSTER_DATA = "./pullkv-cluster"


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
    policy = CachePolicy(list_ttl=limits.default_cache_ttl)
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


def _worker_argv(ctx: click.Context, port: int) -> list[str]:
    """The command line a worker gets: the options given on this one (those from the
    environment reach it through its environment), on the port the supervisor checked."""
    from click.core import ParameterSource

    argv = [str(ctx.info_name)]
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, click.Option) or name in (None, "port"):
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if param.is_flag:
            if value:
                argv.append(param.opts[0])
            elif param.secondary_opts:
                argv.append(param.secondary_opts[0])
        else:
            argv += [param.opts[0], str(value)]
    return [*argv, "--port", str(port)]


def _supervise(config: Any, options: dict[str, Any]) -> None:
    """Run ``options["workers"]`` workers of this node under a supervisor (pullkv.workers)."""
    import asyncio

    from pullkv.node import NodeError, prepare_workers
    from pullkv.runner import configure_logging
    from pullkv.workers import check_port_free, supervise, worker_command

    configure_logging(options["log_level"])
    _tls(options["tls_cert"], options["tls_key"])
    if config.role != "edge" and config.limits.writes_per_key_per_second:
        from pullkv.store import is_postgres_url

        if not is_postgres_url(config.store_url or ""):
            # On SQLite the rate is kept in the origin's memory, which workers do not share.
            raise click.UsageError(
                "--same-key-write-rate with --workers needs a PostgreSQL --store, which "
                "enforces it in the database for every process"
            )
    host = options["host"]
    try:
        port = check_port_free(host, options["port"])
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{options['port']}: {exc.strerror or exc}"
        ) from None
    try:
        lock = asyncio.run(prepare_workers(config))
    except NodeError as exc:
        raise click.ClickException(str(exc)) from None
    argv = _worker_argv(click.get_current_context(), port)
    try:
        status = supervise(
            options["workers"],
            lambda index, runtime: worker_command(argv, index, runtime),
            pass_fds=() if lock is None else (lock.fileno(),),
        )
    finally:
        if lock is not None:
            lock.release()
    raise SystemExit(status)


def _launch(config: Any, options: dict[str, Any]) -> None:
    from pullkv.node import Node, NodeError
    from pullkv.runner import configure_logging, run
    from pullkv.siblings import WorkerPlace

    index = options["worker_index"]
    if index is None and options["workers"] > 1:
        _supervise(config, options)
        return
    if index is not None:
        if options["worker_runtime"] is None:
            raise click.UsageError("--worker-index goes with --worker-runtime")
        config.worker = WorkerPlace(index, options["workers"], options["worker_runtime"])
    configure_logging(options["log_level"])
    tls = _tls(options["tls_cert"], options["tls_key"])

    def announce(node: Node, url: str) -> None:
        if index:  # the first worker speaks for the node
            return
        if node.siblings is not None:
            click.echo(f"pullkv {node.role}: {node.siblings.count} workers", err=True)
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
            access_log=options["access_log"],
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
    config.feed = FeedPolicy(retention=options["feed_retention"])
    if role == "serve":
        config.cache_size = parse_size(options["cache_size"])
        config.policy = _policy(limits, options)
    return config


@click.command()
@listen_options
@origin_options
@feed_retention_option
@cache_options
def serve(**options: Any) -> None:
    """Run an origin and an edge in one process (on the embedded store unless --store)."""
    _launch(_origin_config("serve", options), options)


@click.command()
@listen_options
@origin_options
@feed_retention_option
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
@data_option(
    "Folder holding master.key, unless PULLKV_MASTER_KEY is set. An edge writes nothing to disk."
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
    show_default=True,
    help="Milliseconds added to every request to the upstream, to simulate distance when "
    "trying pullkv on one machine (pullkv cluster up --latency-ms sets it). Leave 0 in "
    "production.",
)
@feed_options
@feed_retention_option
def edge(**options: Any) -> None:
    """Run an edge: a cache in front of an origin or of another edge."""
    from pullkv.node import EdgeSettings, NodeConfig

    limits = _limits(
        min_expiration_ttl=options["min_expiration_ttl"],
        default_cache_ttl=options["default_cache_ttl"],
        min_cache_ttl=options["min_cache_ttl"],
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
        feed=FeedPolicy(retention=options["feed_retention"]),
        invalidation=options["invalidation"] != "off",
        feed_loss=options["feed_loss"] or 0.0,
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
@data_option(
    "The cluster folder: the origin's data in origin/, logs in logs/.",
    default=CLUSTER_DATA,
    envvar=None,
)
@click.option(
    "--base-port",
    type=int,
    default=8787,
    show_default=True,
    help="The origin's port; edges take the next ones.",
)
@store_option(
    "The origin's store URL: sqlite:///path/to/file or postgresql://user@host/db "
    "(default: the SQLite file in the cluster folder).",
    envvar=None,
)
@cache_options
@feed_options
def cluster_up(
    edges: int,
    latency_ms: float,
    data_dir: Path,
    base_port: int,
    store_url: str | None,
    **cache: Any,
) -> None:
    """Start one origin and N edges on loopback; Ctrl-C stops them all.

    A location that dies is reported and the others keep running; `pullkv cluster stop` and
    `pullkv cluster start` take one down and bring it back.
    """
    from pullkv.cluster import ClusterError, ClusterSpec, run_cluster

    spec = ClusterSpec(
        data_dir=data_dir,
        edges=edges,
        latency_ms=latency_ms,
        base_port=base_port,
        edge_args=tuple(cache_flags(cache)),
        store_url=store_url,
    )
    try:
        run_cluster(spec, click.echo)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None


_cluster_folder = data_option(
    "The cluster folder `pullkv cluster up` was given.", default=CLUSTER_DATA, envvar=None
)


def _control(data_dir: Path, command: str, location: str | None = None) -> dict[str, Any]:
    """Ask the running ``cluster up``; a refusal or no cluster is one line and status 1."""
    from pullkv.cluster import ClusterError, control_timeout, request

    try:
        answer = request(
            data_dir, {"command": command, "location": location}, timeout=control_timeout()
        )
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    if not answer.get("ok"):
        raise click.ClickException(str(answer.get("message")))
    return answer


@cluster.command("status")
@_cluster_folder
def cluster_status(data_dir: Path) -> None:
    """List each location of a running cluster: role, pid, URL and state."""
    from pullkv.cli.context import emit
    from pullkv.cluster import status_table

    answer = _control(data_dir, "status")
    emit(answer, status_table(answer))


@cluster.command("stop")
@click.argument("location")
@_cluster_folder
def cluster_stop(location: str, data_dir: Path) -> None:
    """Stop one LOCATION of a running cluster (e.g. origin); the others keep running."""
    click.echo(_control(data_dir, "stop", location)["message"])


@cluster.command("start")
@click.argument("location")
@_cluster_folder
def cluster_start(location: str, data_dir: Path) -> None:
    """Start a stopped or dead LOCATION of a running cluster again."""
    click.echo(_control(data_dir, "start", location)["message"])
