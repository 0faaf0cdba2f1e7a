"""The HTTP connection in process: a fake transport, a fake clock, ``check_timeouts(now)``.

Each test drives one ``HttpConnection`` the way the event loop would (``connection_made``,
``data_received``, ``pause_writing``...) over a transport that records what is written, and
moves the server's clock by hand, so timeouts are exact and nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest

from pullkv import errors
from pullkv.http.asgi import Receive, Request, Response, Scope, Send, error_response
from pullkv.http.connection import LINGER_SECONDS, HttpConfig, HttpConnection, ServerState
from pullkv.http.framing import build_response

UPLOAD_LIMIT = 16
DATE_LINE = b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
CONFIG = HttpConfig(
    header_timeout=5.0,
    keep_alive_timeout=30.0,
    body_timeout=10.0,
    send_timeout=10.0,
    max_pipeline=4,
)


class FakeTransport(asyncio.Transport):
    """A transport that records writes; ``unsent`` is what the peer has not taken yet."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()
        self.unsent = 0
        self.reading = True
        self.eof_written = False
        self.closed = False
        self.aborted = False
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        self.data += data
        self.writes += 1

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview[Any]]) -> None:
        for data in list_of_data:
            self.data += data

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8787)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def abort(self) -> None:
        self.aborted = True


class SampleApp:
    """A fast path for ``/fast``; ASGI routes that wait, echo, or bound the body."""

    def __init__(self) -> None:
        self.fast_calls = 0
        self.declining = False  # the fast path answers nothing
        self.asgi_paths: list[str] = []
        self.release = asyncio.Event()
        self.fast_bytes = build_response(200, b"fast", [(b"content-type", b"text/plain")])

    def fast_response(
        self, method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        if path != b"/fast" or self.declining:
            return None
        self.fast_calls += 1
        return self.fast_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        self.asgi_paths.append(path)
        request = Request(scope, receive)
        try:
            if path == "/slow":
                await self.release.wait()
                body = b"slow"
            elif path == "/echo":
                body = await request.body(1 << 20, lambda _: errors.request_too_large(1 << 20))
            elif path == "/upload":
                body = await request.body(
                    UPLOAD_LIMIT, lambda _: errors.request_too_large(UPLOAD_LIMIT)
                )
            else:
                raise errors.no_route(path)
        except errors.KVError as error:
            await error_response(error).send(send)
            return
        await Response(200, body, b"text/plain").send(send)


@dataclass
class Reply:
    """One parsed response."""

    status: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""


class _ReplyParser:
    """httptools callbacks collecting complete responses."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.current = Reply(0)
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.current = Reply(0)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.replies.append(self.current)


def replies(data: bytes | bytearray) -> list[Reply]:
    """The complete responses in ``data``, in order."""
    collector = _ReplyParser()
    collector.parser.feed_data(bytes(data))
    return collector.replies


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: kv.test\r\n{extra}\r\n".encode()


def post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: kv.test\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


@dataclass
class Harness:
    """One connection, its transport and the server state, with the clock at ``state.now``."""

    app: SampleApp
    state: ServerState
    conn: HttpConnection
    transport: FakeTransport

    def tick(self, now: float) -> None:
        """Move the server's clock to ``now`` and run the timeout checks, as its timer does."""
        self.state.now = now
        self.conn.check_timeouts(now)

    def feed(self, data: bytes, now: float | None = None) -> None:
        """Data from the client, at ``now`` (default: the clock as it stands)."""
        if now is not None:
            self.state.now = now
        self.conn.data_received(data)

    def replies(self) -> list[Reply]:
        return replies(self.transport.data)


def open_connection(state: ServerState) -> tuple[HttpConnection, FakeTransport]:
    """A connection accepted by the server of ``state``."""
    conn = HttpConnection(state, asyncio.get_running_loop())
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport


@pytest.fixture
async def h() -> Harness:
    app = SampleApp()
    state = ServerState(app, CONFIG, 0.0, DATE_LINE)
    conn, transport = open_connection(state)
    return Harness(app, state, conn, transport)


async def settle() -> None:
    """Let the ASGI tasks run as far as they can."""
    for _ in range(20):
        await asyncio.sleep(0)


# Pipelining and the fast path.


async def test_fast_requests_are_answered_within_the_read(h: Harness) -> None:
    h.feed(get("/fast") * 3)
    answers = h.replies()
    assert [a.status for a in answers] == [200, 200, 200]
    assert all(a.body == b"fast" and a.headers[b"date"] for a in answers)
    assert h.app.fast_calls == 3
    assert h.app.asgi_paths == []
    assert h.conn.tasks() == []


async def test_fast_responses_to_one_read_go_out_in_one_write(h: Harness) -> None:
    h.feed(get("/fast") * 5)
    assert [a.body for a in h.replies()] == [b"fast"] * 5
    assert h.transport.writes == 1


class CountingParser:
    """Delegates to the connection's parser, counting the reads fed to it."""

    def __init__(self, inner: httptools.HttpRequestParser) -> None:
        self.inner = inner
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += 1
        self.inner.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_repeated_request_is_answered_without_parsing_it_again(h: Harness) -> None:
    parser = CountingParser(h.conn._parser)
    h.conn._parser = parser  # type: ignore[assignment]
    h.feed(get("/fast"))
    h.feed(get("/fast"))
    h.feed(get("/fast"))
    assert parser.fed == 1
    h.feed(get("/fast", "x-other: 1\r\n"))  # other bytes: parsed
    h.feed(get("/fast") * 2)  # two requests in one read: parsed
    assert parser.fed == 3
    assert [a.body for a in h.replies()] == [b"fast"] * 6
    assert h.app.fast_calls == 6
    assert h.transport.writes == 5


async def test_a_repeated_request_the_fast_path_declines_takes_the_ordinary_path(
    h: Harness,
) -> None:
    h.feed(get("/fast"))
    h.app.declining = True
    h.feed(get("/fast"))
    await settle()
    assert [a.status for a in h.replies()] == [200, 404]
    assert h.app.asgi_paths == ["/fast"]
    h.app.declining = False
    h.feed(get("/fast"))
    assert [a.status for a in h.replies()] == [200, 404, 200]


async def test_a_repeated_request_waits_while_output_is_backed_up(h: Harness) -> None:
    h.feed(get("/fast"))
    h.conn.pause_writing()
    h.feed(get("/fast"))
    assert len(h.replies()) == 1
    h.conn.resume_writing()
    assert [a.body for a in h.replies()] == [b"fast"] * 2


async def test_pipelined_requests_are_answered_in_order(h: Harness) -> None:
    h.feed(get("/slow") + get("/fast") + post("/echo", b"hi"))
    await settle()
    assert h.transport.data == b""  # the fast request waits behind the slow one
    h.app.release.set()
    await settle()
    assert [a.body for a in h.replies()] == [b"slow", b"fast", b"hi"]
    assert h.app.fast_calls == 1  # queued, and still answered from the fast path
    assert h.app.asgi_paths == ["/slow", "/echo"]


async def test_a_deep_pipeline_pauses_reading_until_answered(h: Harness) -> None:
    h.feed(get("/slow") * (CONFIG.max_pipeline + 1))
    await settle()
    assert not h.transport.reading
    h.app.release.set()
    await settle()
    assert len(h.replies()) == CONFIG.max_pipeline + 1
    assert h.transport.reading


# Flow control.


async def test_requests_wait_while_output_is_backed_up(h: Harness) -> None:
    h.conn.pause_writing()
    h.feed(get("/fast") + get("/fast"))
    assert h.transport.data == b""
    assert not h.transport.reading
    h.conn.resume_writing()
    assert [a.body for a in h.replies()] == [b"fast", b"fast"]
    assert h.app.fast_calls == 2
    assert h.transport.reading


async def test_an_asgi_response_waits_for_drain(h: Harness) -> None:
    h.conn.pause_writing()
    h.feed(post("/echo", b"hi") + get("/fast"))
    await settle()
    assert h.transport.data == b""  # not even started while output is backed up
    h.conn.resume_writing()
    await settle()
    assert [a.body for a in h.replies()] == [b"hi", b"fast"]


# Timeouts, on the fake clock.


async def test_a_head_that_stalls_is_a_408_then_the_connection_lingers(h: Harness) -> None:
    h.feed(b"GET /fast HTTP/1.1\r\nhost: kv.test\r\n", now=1.0)
    h.tick(1.0 + CONFIG.header_timeout - 0.5)
    assert h.transport.data == b""
    h.tick(1.0 + CONFIG.header_timeout + 0.5)
    [answer] = h.replies()
    assert answer.status == 408
    assert answer.headers[b"connection"] == b"close"
    assert h.transport.eof_written and not h.transport.closed
    h.feed(b"x-late: header\r\n\r\n" + get("/fast"))  # discarded while lingering
    assert len(h.replies()) == 1
    h.tick(1.0 + CONFIG.header_timeout + 0.5 + LINGER_SECONDS + 0.5)
    assert h.transport.closed
    assert h.app.fast_calls == 0


async def test_a_connection_that_sends_nothing_gets_the_header_timeout(h: Harness) -> None:
    h.tick(CONFIG.header_timeout - 0.5)
    assert not h.transport.closed
    h.tick(CONFIG.header_timeout + 0.5)
    assert h.transport.closed
    assert h.transport.data == b""


async def test_an_idle_keep_alive_connection_is_closed(h: Harness) -> None:
    h.feed(get("/fast"), now=1.0)
    h.tick(1.0 + CONFIG.header_timeout + 0.5)  # past the header timeout: not fresh any more
    assert not h.transport.closed
    h.tick(1.0 + CONFIG.keep_alive_timeout - 0.5)
    assert not h.transport.closed
    h.tick(1.0 + CONFIG.keep_alive_timeout + 0.5)
    assert h.transport.closed
    assert len(h.replies()) == 1


async def test_a_body_that_stops_arriving_closes_the_connection(h: Harness) -> None:
    h.feed(b"POST /echo HTTP/1.1\r\nhost: kv.test\r\ncontent-length: 10\r\n\r\nabc", now=1.0)
    await settle()
    h.tick(1.0 + CONFIG.body_timeout - 0.5)
    assert not h.transport.closed
    h.feed(b"de", now=5.0)  # arriving again: the wait starts over
    h.tick(1.0 + CONFIG.body_timeout + 0.5)
    assert not h.transport.closed
    h.tick(5.0 + CONFIG.body_timeout + 0.5)
    assert h.transport.closed
    h.conn.connection_lost(None)
    await settle()
    assert h.conn.tasks() == []


async def test_a_slow_app_is_not_timed_out(h: Harness) -> None:
    h.feed(get("/slow"), now=1.0)
    await settle()
    h.tick(1.0 + CONFIG.keep_alive_timeout + CONFIG.header_timeout + 1)
    assert not h.transport.closed
    h.app.release.set()
    await settle()
    assert [a.body for a in h.replies()] == [b"slow"]


async def test_a_peer_that_stops_reading_is_dropped_after_the_send_timeout(h: Harness) -> None:
    h.feed(get("/fast") * 2, now=1.0)
    h.transport.unsent = len(h.transport.data)  # the peer took none of it
    h.tick(1.0)
    h.tick(1.0 + CONFIG.send_timeout - 0.5)
    assert not h.transport.aborted
    h.transport.unsent -= 10  # the peer takes a little: the wait starts over
    h.tick(9.0)
    h.tick(9.0 + CONFIG.send_timeout - 0.5)
    assert not h.transport.aborted
    h.tick(9.0 + CONFIG.send_timeout + 0.5)
    assert h.transport.aborted
    assert h.conn.closed


async def test_output_the_peer_takes_is_never_timed_out(h: Harness) -> None:
    h.feed(get("/fast"), now=1.0)
    h.tick(1.0 + CONFIG.send_timeout + 0.5)  # nothing unsent
    assert not h.transport.aborted and not h.transport.closed


# Bodies over the limit.


@pytest.mark.parametrize(
    "request_start",
    [
        b"POST /upload HTTP/1.1\r\nhost: kv.test\r\ncontent-length: 1000\r\n\r\n" + b"x" * 100,
        b"POST /upload HTTP/1.1\r\nhost: kv.test\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"20\r\n"
        + b"x" * 32
        + b"\r\n",
    ],
    ids=["declared", "chunked"],
)
async def test_an_oversize_body_is_a_413_and_the_rest_is_not_read(
    h: Harness, request_start: bytes
) -> None:
    h.feed(request_start, now=1.0)
    await settle()
    [answer] = h.replies()
    assert answer.status == 413
    assert answer.headers[b"connection"] == b"close"
    assert h.transport.eof_written and not h.transport.closed
    h.feed(b"x" * 500 + get("/fast"))  # the rest of the body and more: discarded
    assert len(h.replies()) == 1
    assert h.app.fast_calls == 0
    h.tick(1.0 + LINGER_SECONDS + 0.5)
    assert h.transport.closed


# Connection limits and shutdown.


async def test_connections_past_the_limit_are_refused_with_a_503() -> None:
    app = SampleApp()
    state = ServerState(app, HttpConfig(max_connections=1), 0.0, DATE_LINE)
    first, first_transport = open_connection(state)
    second, second_transport = open_connection(state)
    [answer] = replies(second_transport.data)
    assert answer.status == 503
    assert answer.headers[b"connection"] == b"close"
    assert second_transport.eof_written
    assert state.accepted == 1
    second.data_received(get("/fast"))  # read and discarded
    assert len(replies(second_transport.data)) == 1
    second.connection_lost(None)
    assert state.accepted == 1
    first.data_received(get("/fast"))
    assert [a.body for a in replies(first_transport.data)] == [b"fast"]
    first.connection_lost(None)
    assert state.accepted == 0
    assert state.connections == set()


async def test_graceful_shutdown_answers_what_was_received_then_closes(h: Harness) -> None:
    h.feed(get("/slow"))
    await settle()
    h.conn.begin_shutdown()
    h.feed(get("/fast"))  # after the shutdown began: not read
    assert not h.transport.closed
    h.app.release.set()
    await settle()
    [answer] = h.replies()
    assert answer.body == b"slow"
    assert answer.headers[b"connection"] == b"close"
    assert h.transport.closed
    assert h.app.fast_calls == 0


async def test_an_idle_connection_closes_at_once_on_shutdown(h: Harness) -> None:
    h.feed(get("/fast"))
    h.conn.begin_shutdown()
    assert h.transport.closed
