"""Running a node under pullkv's own HTTP server (httptools on uvloop)."""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from pullkv.http.accesslog import AccessLogFormat
from pullkv.http.server import HttpConfig, Server
from pullkv.limits import DEFAULT_MAX_CONNECTIONS, DEFAULT_SEND_TIMEOUT
from pullkv.node import Node, NodeConfig, NodeError, start_node

SHUTDOWN_TIMEOUT = 30.0


def configure_logging(level: str = "info") -> None:
    """One line per event on stderr: time, level, logger, message."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(
        level=numeric,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    if numeric > logging.DEBUG:
        # httpx logs every request an edge makes upstream at info: the upstream's access log
        # already has them, and here they would drown everything else.
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context for a PEM certificate chain and its key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise NodeError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from None
    return context


async def serve_node(
    config: NodeConfig,
    host: str,
    port: int,
    announce: Callable[[Node, str], None],
    *,
    tls: tuple[Path, Path] | None = None,
    http: HttpConfig | None = None,
) -> None:
    """Start a node and serve it until SIGINT/SIGTERM; in-flight requests finish first."""
    context = server_ssl_context(*tls) if tls is not None else None
    node = await start_node(config)
    # Everything built so far lives as long as the process. Moving it out of the collector's
    # generations keeps full collections from walking the cache's index (one dict that grows
    # to millions of items) every time they run: 26 ms for 150k cached keys, 2 ms frozen.
    gc.freeze()
    server = Server(node.app, ssl=context, config=http, shutdown_timeout=SHUTDOWN_TIMEOUT)
    scheme = "https" if context is not None else "http"
    url_host = f"[{host}]" if ":" in host else host

    def ready() -> None:
        announce(node, f"{scheme}://{url_host}:{server.port}")
        if node.siblings is not None:
            node.siblings.mark_ready()

    try:
        # The workers of one node (--workers N) each listen on the same port.
        await server.start(host, port, reuse_port=config.worker is not None)
    except OSError as exc:
        raise NodeError(f"cannot listen on {url_host}:{port}: {exc.strerror or exc}") from None
    await server.serve_until_shutdown(ready=ready)


def run(
    config: NodeConfig,
    host: str,
    port: int,
    announce: Callable[[Node, str], None],
    *,
    tls: tuple[Path, Path] | None = None,
    send_timeout: float = DEFAULT_SEND_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    access_log: AccessLogFormat = "text",
) -> None:
    """Blocking entry point: pick the event loop and serve."""
    http = HttpConfig(
        send_timeout=send_timeout, max_connections=max_connections, access_log=access_log
    )
    main = serve_node(config, host, port, announce, tls=tls, http=http)
    if _loop_name() == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
