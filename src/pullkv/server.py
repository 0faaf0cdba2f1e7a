"""Running a node under an HTTP server (uvicorn with httptools and uvloop)."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import uvicorn

from pullkv.node import Node, NodeConfig, start_node


def configure_logging(level: str = "info") -> None:
    """One line per event on stderr: time, level, logger, message."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


async def serve_node(
    config: NodeConfig,
    host: str,
    port: int,
    announce: Callable[[Node, str], None],
) -> None:
    """Start a node and serve it until SIGINT/SIGTERM; in-flight requests finish first."""
    node = await start_node(config)
    server = uvicorn.Server(
        uvicorn.Config(
            node.app,
            host=host,
            port=port,
            http="httptools",
            loop="none",
            lifespan="on",
            access_log=False,
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=30,
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:
        url_host = f"[{host}]" if ":" in host else host
        announce(node, f"http://{url_host}:{port}")
    await serving


def run(config: NodeConfig, host: str, port: int, announce: Callable[[Node, str], None]) -> None:
    """Blocking entry point: pick the event loop and serve."""
    if _loop_name() == "uvloop":
        import uvloop

        uvloop.run(serve_node(config, host, port, announce))
    else:
        asyncio.run(serve_node(config, host, port, announce))
