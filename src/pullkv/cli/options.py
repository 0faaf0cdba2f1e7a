"""The options and defaults that several commands take, each declared once.

A data folder, a store URL, a listening socket, an origin's settings and an edge's cache
appear on several commands; those commands take these decorators instead of re-declaring
them, so a default or a help text lives in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from pullkv.limits import DEFAULT_MAX_CONNECTIONS, DEFAULT_SEND_TIMEOUT

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:8787"
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


def data_option(
    help: str = "Data folder (PULLKV_DATA).",
    *,
    default: str = DEFAULT_DATA,
    envvar: str | None = "PULLKV_DATA",
) -> Callable[[F], F]:
    """``--data``: the folder holding master.key, admin-token and the embedded store."""
    return click.option(
        "--data",
        "data_dir",
        envvar=envvar,
        default=default,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=help,
    )


def check_store_url(_ctx: click.Context, _param: click.Parameter, url: str | None) -> str | None:
    """A click callback: refuse a store URL no engine knows."""
    from pullkv.store import is_store_url

    if url is not None and not is_store_url(url):
        raise click.BadParameter("expected sqlite:///path/to/file or postgresql://user@host/db")
    return url


def store_option(
    help: str, *, required: bool = False, envvar: str | None = "PULLKV_STORE"
) -> Callable[[F], F]:
    """``--store``: a store URL, checked as it is parsed."""
    return click.option(
        "--store",
        "store_url",
        envvar=envvar,
        required=required,
        default=None,
        callback=check_store_url,
        help=help,
    )


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
        click.option(
            "--access-log",
            type=click.Choice(["off", "text", "json"]),
            default="text",
            show_default=True,
            help="One line per request on stderr: key=value text, JSON, or none.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            metavar="N",
            help="Worker processes accepting on the one port (SO_REUSEPORT), under a "
            "supervisor that restarts any that dies; 1: a single process.",
        ),
        # Set by the supervisor on the workers it starts (pullkv.workers).
        click.option("--worker-index", type=click.IntRange(min=0), default=None, hidden=True),
        click.option(
            "--worker-runtime",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            default=None,
            hidden=True,
        ),
    ]
)


origin_options = _apply(
    [
        data_option(),
        store_option(
            "Store URL (PULLKV_STORE): sqlite:///path/to/file or postgresql://user@host/db. "
            "Default: the SQLite file in --data, which holds master.key and admin-token "
            "either way."
        ),
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
            "--same-key-write-rate",
            "writes_per_key_per_second",
            type=click.FloatRange(min=0),
            default=None,
            metavar="N",
            help="Refuse (429) writes to a key past N per second, across every origin sharing "
            "the store: Workers KV's limit is 1. Default: no limit (0).",
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


# How an edge follows its upstream's change feed (pullkv edge, and the edges of cluster up).
feed_options = _apply(
    [
        click.option(
            "--invalidation",
            type=click.Choice(["on", "off"]),
            default=None,
            help="Follow the upstream's change feed and drop cached entries that newer writes "
            "replaced (default on; off: only TTLs bound staleness, as in Workers KV).",
        ),
        click.option(
            "--feed-loss",
            type=click.FloatRange(min=0, max=1),
            default=None,
            metavar="P",
            help="Drop this fraction of the feed messages received, at random (for tests and "
            "demos of a lossy feed; default 0).",
        ),
    ]
)

feed_retention_option = click.option(
    "--feed-retention",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    metavar="N",
    help="Change records kept for edges catching up (an edge further behind revalidates "
    "everything it holds).",
)


def _declared(options: Callable[[Callable[..., Any]], Callable[..., Any]]) -> dict[str, str]:
    """Parameter name -> option flag for what a decorator declares (read off a throwaway
    command, so the list cannot drift from the declarations above)."""
    probe = click.command()(options(lambda **_: None))
    return {param.name: param.opts[0] for param in probe.params if param.name is not None}


CACHE_OPTIONS = _declared(cache_options)
FEED_OPTIONS = _declared(feed_options)


def cache_flags(options: Mapping[str, Any]) -> list[str]:
    """The cache and feed options a command was given, as flags for an edge it starts."""
    flags: list[str] = []
    for name, flag in {**CACHE_OPTIONS, **FEED_OPTIONS}.items():
        value = options.get(name)
        if value is not None:
            flags += [flag, str(value)]
    return flags
