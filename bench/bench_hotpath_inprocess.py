"""A hot read in process, end to end: nanoseconds per request from ``data_received`` to the
transport's ``write``, through a real node's app and the HTTP connection.

No sockets: a ``serve`` node is started in this process on a temporary data folder (as in
``bench_hot_inprocess.py``), one 1 KiB value is written and read once so that the edge holds
it and the token is verified, and an ``HttpConnection`` over a fake transport (which counts
and drops what is written) is fed the request wrk sends in ``bench_edge.py`` (request line,
``Host``, ``Authorization``). Two kinds:

- ``single``: one GET per read (a keep-alive client that waits for each answer, like wrk);
- ``pipelined``: 16 GETs per read.

What is timed is everything pullkv's Python does for a hot read (parsing, the fast path,
rendering, the write call) except the event loop's and the kernel's share. Times are the
thread's CPU time; ``inprocess.py`` runs the rounds and ``--compare REF``::

    .venv/bin/python bench/bench_hotpath_inprocess.py --compare HEAD

``--profile`` instead runs the ``single`` kind once under cProfile and prints the functions
by own time (cProfile's overhead inflates small functions; read it for shares, not ns).

Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import inprocess

ACCOUNT_ID = "be4c40000000000000000000000000be"
TOKEN = "bench-admin-token"
# A fixed master key (32 zero bytes, base64): the data folder is thrown away.
MASTER_KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
BATCH = 16


class _Transport:
    """Just enough of an asyncio transport: writes are counted and dropped."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1

    def writelines(self, parts: Iterable[bytes]) -> None:
        self.written += sum(map(len, parts))
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8787) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def _measure(requests: int, profile: bool = False) -> dict[str, float]:
    """ns per hot GET, per kind, through this process's pullkv."""
    from pullkv.http.connection import HttpConfig, HttpConnection, ServerState
    from pullkv.node import NodeConfig, start_node
    from pullkv.types import ValueWrite

    with tempfile.TemporaryDirectory() as folder:
        config = NodeConfig(
            data_dir=Path(folder) / "data",
            role="serve",
            account_id=ACCOUNT_ID,
            environ={"PULLKV_ADMIN_TOKEN": TOKEN, "PULLKV_MASTER_KEY": MASTER_KEY},
        )
        node = await start_node(config)
        app = node.app
        try:
            namespace = await app.service.create_namespace(ACCOUNT_ID, "bench")
            write = ValueWrite("hot", b"x" * 1024, '{"kind":"bench"}', None)
            await app.service.put(ACCOUNT_ID, namespace.id, write)
            authorization = f"Bearer {TOKEN}"
            await app.authenticator.authenticate(authorization)
            path = (
                f"/client/v4/accounts/{ACCOUNT_ID}/storage/kv/namespaces/{namespace.id}/values/hot"
            )
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8787\r\n"
                f"Authorization: {authorization}\r\n\r\n"
            ).encode()
            state = ServerState(app, HttpConfig(), 0.0, b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n")
            loop = asyncio.get_running_loop()
            figures: dict[str, float] = {}
            for kind in ("single", "pipelined"):
                transport = _Transport()
                conn = HttpConnection(state, loop)
                conn.connection_made(transport)  # type: ignore[arg-type]
                feed = conn.data_received
                feed(request)
                one = transport.written
                if (
                    app.fast_response(
                        b"GET", path.encode(), b"", [(b"authorization", authorization.encode())]
                    )
                    is None
                ):
                    raise SystemExit("the request did not take the hot path")
                hot_before = app.metrics.hot_responses
                transport.written = 0
                if kind == "single":
                    reads, data = requests, request
                else:
                    reads, data = requests // BATCH, request * BATCH
                profiler = cProfile.Profile() if profile and kind == "single" else None
                if profiler is not None:
                    profiler.enable()
                started = time.thread_time_ns()
                for _ in range(reads):
                    feed(data)
                elapsed = time.thread_time_ns() - started
                if profiler is not None:
                    profiler.disable()
                    stats = pstats.Stats(profiler, stream=sys.stderr)
                    stats.sort_stats("tottime").print_stats(25)
                answered = reads * (1 if kind == "single" else BATCH)
                if transport.written != answered * one:
                    raise SystemExit(f"{kind}: not every request was answered")
                if app.metrics.hot_responses - hot_before != answered:
                    raise SystemExit(f"{kind}: not every request took the hot path")
                conn.connection_lost(None)
                figures[kind] = elapsed / answered
                figures[f"{kind}: responses per write"] = (answered + 1) / transport.writes
            return figures
        finally:
            await app.service.backend.close()


def measure(requests: int) -> dict[str, float]:
    """ns per hot GET, per kind (run in a child process)."""
    return asyncio.run(_measure(requests))


if __name__ == "__main__":
    if "--profile" in sys.argv:
        asyncio.run(_measure(100_000, profile=True))
    else:
        inprocess.main(__file__, __doc__.splitlines()[0], measure, 100_000)
