"""The hot read path in process: nanoseconds per ``App.fast_response`` on a warmed entry.

No sockets and no load generator: a ``serve`` node is started in this process on a temporary
data folder, one 1 KiB value is written through the edge (which caches it) and the token is
verified once; then ``fast_response`` is timed for a REST GET and a binding GET. This isolates
the code the HTTP server runs for a hot read from everything around it. Times are the
thread's CPU time (``bench/inprocess.py`` runs the rounds).

``--compare REF`` also measures REF's source, in the same run::

    .venv/bin/python bench/bench_hot_inprocess.py --compare HEAD

Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import inprocess

ACCOUNT_ID = "be4c40000000000000000000000000be"
TOKEN = "bench-admin-token"
# A fixed master key (32 zero bytes, base64): the data folder is thrown away.
MASTER_KEY = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


async def _measure(calls: int) -> dict[str, float]:
    """ns per fast_response call, per request kind, in this process's pullkv."""
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
            auth = [(b"host", b"127.0.0.1"), (b"authorization", authorization.encode())]
            rest_path = (
                f"/client/v4/accounts/{ACCOUNT_ID}/storage/kv/namespaces/{namespace.id}/values/hot"
            ).encode()
            requests = {
                "rest": (rest_path, b"", auth),
                "binding": (
                    b"/hot",
                    b"urlencoded=true",
                    [*auth, (b"x-pullkv-namespace", namespace.id.encode())],
                ),
            }
            figures = {}
            for kind, (path, query, headers) in requests.items():
                if app.fast_response(b"GET", path, query, headers) is None:
                    raise SystemExit(f"the {kind} request did not take the hot path")
                started = time.thread_time_ns()
                for _ in range(calls):
                    app.fast_response(b"GET", path, query, headers)
                figures[kind] = (time.thread_time_ns() - started) / calls
                # Verified tokens are remembered for seconds: a round must end within them.
                if app.fast_response(b"GET", path, query, headers) is None:
                    raise SystemExit(f"the {kind} request left the hot path while timed")
            return figures
        finally:
            await app.service.backend.close()


def measure(calls: int) -> dict[str, float]:
    """ns per fast_response call, per request kind (run in a child process)."""
    return asyncio.run(_measure(calls))


if __name__ == "__main__":
    inprocess.main(__file__, __doc__.splitlines()[0], measure, 100_000)
