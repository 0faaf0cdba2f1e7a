"""The HTTP connection in process: nanoseconds per pipelined hot GET over a mock transport.

No sockets: an ``HttpConnection`` is given a fake transport that drops what is written, and
batches of pipelined GETs are fed to ``data_received``. The app answers them from its fast
path with a pre-rendered response, so what is timed is the connection's own work: parsing,
the phase bookkeeping, and writing. Four kinds:

- ``pipelined``: 16 GETs per read, each answered as it is parsed;
- ``single``: one GET per read (a keep-alive client that waits for each answer);
- ``queued``: 16 GETs per read while the transport's buffer is over its high-water mark,
  queued and answered from the fast path when the transport resumes writing;
- ``asgi``: 16 GETs per read that the fast path declines, answered by a minimal ASGI app
  (the ordinary path's overhead in the connection, event loop included).

Times are the process's CPU time, not the wall clock: on a shared machine, time spent
descheduled would otherwise swamp the differences looked for.

``--compare REF`` measures REF's source (``git archive REF src``, into a temporary folder) and
the working tree's, in alternating subprocesses, so both figures come from the same run::

    .venv/bin/python bench/bench_connection_inprocess.py --compare HEAD

Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import inprocess

BATCH = 16
REQUEST = (
    b"GET /hot HTTP/1.1\r\n"
    b"host: 127.0.0.1\r\n"
    b"user-agent: bench\r\n"
    b"authorization: Bearer bench-admin-token\r\n"
    b"\r\n"
)


_ASGI_HEADERS = [(b"content-type", b"text/plain")]
_ASGI_BODY = b"x" * 1024


class _Transport:
    """Just enough of an asyncio transport: writes are counted and dropped."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0
        self.waiter: asyncio.Future[None] | None = None
        self.wanted = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.writes += 1
        if self.waiter is not None and self.writes >= self.wanted:
            self.waiter.set_result(None)
            self.waiter = None

    def writelines(self, parts: Iterable[bytes]) -> None:
        self.written += sum(map(len, parts))

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


class _App:
    """An app whose fast path answers every GET of /hot with a 1 KiB value."""

    def __init__(self) -> None:
        from pullkv.http.framing import build_response

        self.response = build_response(200, b"x" * 1024, [(b"content-type", b"text/plain")])

    def fast_response(
        self, method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        return self.response if path == b"/hot" else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": _ASGI_HEADERS}
        await send(start)
        await send({"type": "http.response.body", "body": _ASGI_BODY})


def _measure(requests: int) -> dict[str, float]:
    """ns per request, per kind, in this process's pullkv."""
    from pullkv.http.connection import HttpConfig, HttpConnection, ServerState

    loop = asyncio.new_event_loop()
    try:
        state = ServerState(_App(), HttpConfig(), 0.0, b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n")
        batch = REQUEST * BATCH
        one_response = len(_App().response) + len(state.date_line)
        figures: dict[str, float] = {}
        for kind in ("pipelined", "single", "queued", "asgi"):
            transport = _Transport()
            conn = HttpConnection(state, loop)
            conn.connection_made(transport)  # type: ignore[arg-type]
            feed = conn.data_received
            if kind == "single":
                reads = requests
                started = time.process_time_ns()
                for _ in range(reads):
                    feed(REQUEST)
            elif kind == "pipelined":
                reads = requests // BATCH
                started = time.process_time_ns()
                for _ in range(reads):
                    feed(batch)
            elif kind == "asgi":
                reads = requests // BATCH // 4  # about ten times slower a request
                asgi_batch = batch.replace(b"/hot", b"/asgi")
                run = loop.run_until_complete
                started = time.process_time_ns()
                for _ in range(reads):
                    transport.wanted = transport.writes + BATCH
                    transport.waiter = waiter = loop.create_future()
                    feed(asgi_batch)
                    run(waiter)
            else:
                reads = requests // BATCH
                pause, resume = conn.pause_writing, conn.resume_writing
                started = time.process_time_ns()
                for _ in range(reads):
                    pause()
                    feed(batch)
                    resume()
            elapsed = time.process_time_ns() - started
            answered = reads * (1 if kind == "single" else BATCH)
            if kind == "asgi":
                if transport.writes != answered:
                    raise SystemExit("asgi: not every request was answered in one write")
            elif transport.written != answered * one_response:
                raise SystemExit(f"{kind}: not every request was answered from the fast path")
            conn.connection_lost(None)
            figures[kind] = elapsed / answered
        return figures
    finally:
        loop.close()


def main() -> None:
    """Measure the working tree (and REF, with --compare) and print ns/request."""
    inprocess.main(__file__, __doc__.splitlines()[0], _measure, 200_000)


if __name__ == "__main__":
    main()
