"""One HTTP/1.1 connection: parsing, pipelining, flow control, the fast path and ASGI cycles.

Requests on a connection are answered strictly in order. Each parsed request that is not
answered by the app's fast path becomes a ``Cycle`` in the connection's pipeline; only the
cycle at the head runs its ASGI task, so responses never interleave.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import httptools

from pullkv.http.asgi import ASGIApp, Message
from pullkv.http.framing import allows_body, build_response, scan_headers, status_line

log = logging.getLogger("pullkv.http.server")

FastResponder = Callable[[bytes, bytes, bytes, list[tuple[bytes, bytes]]], bytes | None]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
# Advertised so apps can tell that a "reason" key in http.response.start is honoured.
EXTENSIONS: dict[str, dict[str, Any]] = {"pullkv.reason_phrase": {}}

_SMALL_WRITE = 16 * 1024
# After an error response, how long to keep discarding what the client still sends (see
# HttpConnection._finish_with_error).
LINGER_SECONDS = 2.0
_DISCONNECT: Message = {"type": "http.disconnect"}


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Limits and timeouts of the HTTP server."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 128
    # Unread request body kept per connection before reading pauses.
    body_buffer: int = 256 * 1024
    # Parsed requests waiting behind the one being answered before reading pauses.
    max_pipeline: int = 16
    keep_alive_timeout: float = 75.0
    header_timeout: float = 20.0
    # A request body that stops arriving for this long drops the connection.
    body_timeout: float = 60.0


class ServerState:
    """What every connection of one server shares; the server keeps it current."""

    __slots__ = ("app", "config", "connections", "date_line", "fast", "lifespan_state", "now")

    def __init__(self, app: ASGIApp, config: HttpConfig, now: float, date_line: bytes) -> None:
        self.app = app
        self.config = config
        fast = getattr(app, "fast_response", None)
        self.fast: FastResponder | None = fast if callable(fast) else None
        self.connections: set[HttpConnection] = set()
        self.lifespan_state: dict[str, Any] = {}
        # A coarse clock (loop time), refreshed by the server's timer, for idle bookkeeping.
        self.now = now
        self.date_line = date_line


class _StopParsing(Exception):
    """Raised from a parser callback to leave the rest of the received data unparsed."""


def _split_target(url: bytes) -> tuple[bytes, bytes]:
    """The raw path and query of a request target (origin-, absolute- or asterisk-form)."""
    if url[:1] == b"/" or url == b"*":
        path, _, query = url.partition(b"?")
        return path, query
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return url, b""
    return parsed.path or b"/", parsed.query or b""


def _decode_path(raw: bytes) -> str:
    if b"%" in raw or not raw.isascii():
        return unquote_to_bytes(raw).decode("utf-8", "replace")
    return raw.decode("ascii")


class Cycle:
    """One request and its response: the ASGI ``receive``/``send`` pair."""

    __slots__ = (
        "body_complete",
        "body_done",
        "bodyless",
        "buffered",
        "chunked",
        "chunks",
        "complete",
        "conn",
        "disconnected",
        "expect_100",
        "head_sent",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "out_headers",
        "reason",
        "remaining",
        "started",
        "status",
        "task",
        "url",
        "waiter",
    )

    def __init__(
        self,
        conn: HttpConnection,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        http_version: str,
        keep_alive: bool,
    ) -> None:
        self.conn = conn
        self.method = method
        self.url = url
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.expect_100 = False
        # Request body: chunks not yet handed to the app.
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.body_complete = False
        self.body_done = False  # the app has been given more_body=False
        self.disconnected = False
        self.waiter: asyncio.Future[None] | None = None
        # Response.
        self.started = False
        self.head_sent = False
        self.complete = False
        self.status = 200
        self.out_headers: Any = ()
        self.reason: str | None = None
        self.bodyless = False
        self.chunked = False
        self.remaining = -1  # declared content-length still to send; -1 when undeclared
        self.task: asyncio.Task[None] | None = None

    def scope(self) -> dict[str, Any]:
        """The ASGI http scope of this request."""
        conn = self.conn
        raw_path, query = _split_target(self.url)
        return {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": self.http_version,
            "server": conn.server_address,
            "client": conn.client_address,
            "scheme": conn.scheme,
            "method": self.method.decode("ascii"),
            "root_path": "",
            "path": _decode_path(raw_path),
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
            "state": conn.state.lifespan_state.copy(),
            "extensions": EXTENSIONS,
        }

    # Request body, fed by the connection.

    def feed(self, body: bytes) -> None:
        if self.complete:
            return  # the response is out: the rest of the body is read and dropped
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake()

    def finish_body(self) -> None:
        self.body_complete = True
        self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ASGI.

    async def receive(self) -> Message:
        """The next body chunk, or http.disconnect once the client is gone or answered."""
        conn = self.conn
        if self.expect_100:
            # The client waits for this before sending the body; only send it when the app
            # actually wants the body.
            self.expect_100 = False
            if not self.started and not self.body_complete and not self.disconnected:
                conn.write(CONTINUE)
        while True:
            if self.chunks:
                chunks = self.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                more = not self.body_complete
                self.body_done = not more
                if more:
                    conn.update_reading()
                return {"type": "http.request", "body": body, "more_body": more}
            if self.disconnected or (self.body_done and self.complete):
                return _DISCONNECT
            if self.body_complete and not self.body_done:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if not self.body_complete:
                conn.update_reading()
            waiter = self.waiter = conn.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    async def send(self, message: Message) -> None:
        """Accept http.response.start / http.response.body (with an optional "reason")."""
        kind = message["type"]
        if kind == "http.response.body":
            self.send_body(message.get("body", b""), message.get("more_body", False))
            if self.conn.write_paused and not self.complete:
                await self.conn.drain()
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = message["status"]
            self.out_headers = message.get("headers", ())
            reason = message.get("reason")
            self.reason = reason if isinstance(reason, str) else None
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def send_body(self, body: bytes, more: bool) -> None:
        """Write a body chunk, with the head before the first one."""
        if not self.started:
            raise RuntimeError("http.response.body sent before http.response.start")
        if self.complete:
            raise RuntimeError("http.response.body sent after the response completed")
        conn = self.conn
        if conn.closed or self.disconnected:
            if not more:
                self.complete = True
            return
        # The head waits for the first body chunk so that a small response, and the
        # content-length of a one-chunk body, go out in a single write.
        head = b"" if self.head_sent else self._render_head(body, more)
        parts = self._frame(head, body, more)
        self.head_sent = True
        if len(parts) == 1:
            conn.write(parts[0])
        elif len(body) <= _SMALL_WRITE:
            conn.write(b"".join(parts))
        else:
            conn.writelines(parts)  # a large body is not copied just to prepend its framing
        if not more:
            self.complete = True
            conn.response_done(self)

    def _frame(self, head: bytes, body: bytes, more: bool) -> list[bytes]:
        """The pieces to write for this body chunk (after ``head``, which may be empty)."""
        if self.bodyless:
            return [head] if head else []
        if self.chunked:
            parts = [head] if head else []
            if body:
                parts += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more:
                parts.append(b"0\r\n\r\n")
            return parts
        if self.remaining >= 0:
            self.remaining -= len(body)
            if self.remaining < 0:
                raise RuntimeError("response body longer than its content-length")
            if not more and self.remaining > 0:
                # The client would wait for bytes that never come: end the connection.
                self.keep_alive = False
        if not head:
            return [body] if body else []
        return [head, body] if body else [head]

    def _render_head(self, body: bytes, more: bool) -> bytes:
        conn = self.conn
        status = self.status
        info = scan_headers(self.out_headers)
        line = status_line(status, self.reason)
        self.bodyless = self.method == b"HEAD" or not allows_body(status)
        keep_alive = self.keep_alive and not info.close
        if keep_alive and conn.closing and conn.last_in_pipeline(self):
            keep_alive = False
        if keep_alive and not self.body_complete and self.expect_100:
            keep_alive = False  # the client may still be holding back the body
        extra = b""
        length = info.content_length
        if self.bodyless:
            # HEAD keeps the content-length the app declared (or the one of the body it
            # sent); 204/304/1xx carry no framing of their own.
            if length is None and not more and body and allows_body(status):
                extra = b"content-length: %d\r\n" % len(body)
        elif info.chunked:
            self.chunked = True
            extra = b"transfer-encoding: chunked\r\n"
        elif length is None:
            if not more:
                length = len(body)
                extra = b"content-length: %d\r\n" % length
            elif self.http_version == "1.1":
                self.chunked = True
                extra = b"transfer-encoding: chunked\r\n"
            else:
                keep_alive = False  # an HTTP/1.0 client reads the body until the close
        if length is not None and not self.bodyless and not self.chunked:
            self.remaining = length
        if not keep_alive:
            extra += b"connection: close\r\n"
        elif self.http_version == "1.0":
            extra += b"connection: keep-alive\r\n"
        if not info.has_date:
            extra += conn.state.date_line
        self.keep_alive = keep_alive
        return line + info.block + extra + b"\r\n"

    def fail(self) -> None:
        """The app raised or returned early: a 500 if nothing was written, else hang up."""
        if self.complete or self.conn.closed or self.disconnected:
            return
        if self.head_sent:
            self.keep_alive = False
            self.complete = True
            self.conn.response_done(self)
            return
        self.started = True
        self.status = 500
        self.reason = None
        self.out_headers = [(b"content-type", b"text/plain; charset=utf-8")]
        self.remaining = -1
        self.chunked = False
        self.send_body(b"Internal Server Error", False)


class HttpConnection(asyncio.Protocol):
    """An asyncio protocol serving HTTP/1.1 to one client."""

    __slots__ = (
        "_began",
        "_begin_mark",
        "_cycle",
        "_drain_waiters",
        "_eof",
        "_error",
        "_fresh",
        "_header_bytes",
        "_header_raw",
        "_headers",
        "_idle_mark",
        "_in_headers",
        "_keep_alive",
        "_linger_until",
        "_lingering",
        "_max_header_bytes",
        "_method",
        "_need_cycle",
        "_parser",
        "_pipeline",
        "_reading",
        "_stopped",
        "_transport",
        "_url",
        "client_address",
        "closed",
        "closing",
        "loop",
        "scheme",
        "server_address",
        "state",
        "write_paused",
    )

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self.client_address: tuple[str, int] | None = None
        self.server_address: tuple[str, int] | None = None
        self.scheme = "http"
        self.closed = False  # closing was asked for, or the connection is gone
        self.closing = False  # graceful shutdown: finish what was received, then close
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading = True
        self._stopped = False  # the parser stopped: nothing more is read
        self._eof = False
        self._fresh = True  # no request has begun yet
        self._error: bytes | None = None  # a rejection waiting for earlier responses
        self._lingering = False
        self._linger_until = 0.0
        # The request being parsed.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._header_raw = 0
        self._max_header_bytes = state.config.max_header_bytes
        self._in_headers = False
        self._began = False
        self._method = b""
        self._keep_alive = True
        self._need_cycle = False
        self._cycle: Cycle | None = None  # the request whose body is being parsed
        self._pipeline: deque[Cycle] = deque()
        self._idle_mark = state.now
        self._begin_mark = state.now

    # Transport events.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its interface.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client_address = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.server_address = (str(local[0]), int(local[1]))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self.state.connections.add(self)
        self._idle_mark = self._begin_mark = self.state.now

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        for cycle in self._pipeline:
            cycle.disconnect()
        if self._cycle is not None:
            self._cycle.disconnect()
        self._wake_drainers()

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._cycle is not None or not self._pipeline or self.scheme == "https":
            # Nothing is owed, or a body will never be complete: close (the app, if any,
            # sees http.disconnect). TLS cannot stay half-open anyway.
            return None
        return True  # half-closed: keep writing the responses still owed

    def pause_writing(self) -> None:
        self.write_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drainers()
        self.update_reading()

    def data_received(self, data: bytes) -> None:
        if self._stopped or self.closed:
            return
        self._idle_mark = self.state.now
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The upgrade is ignored (the request was answered as plain HTTP); what follows
            # is the client's next request.
            rest = data[exc.args[0] :]
            if rest:
                self.data_received(rest)
            return
        except httptools.HttpParserError as exc:
            if not self._stopped:
                log.debug("malformed request from %s: %s", self.client_address, exc)
                self._reject(400, "Bad Request: malformed HTTP request")
            return
        if self._in_headers and not self._began:
            # The parser keeps a header value it has not finished; bound what it holds.
            self._header_raw += len(data)
            if self._header_raw > self._max_header_bytes:
                self._reject(431, "Request Header Fields Too Large")
                return
        self._began = False
        if self._need_cycle and self._cycle is None:
            self._start_cycle(complete=False)
        if self._pipeline or not self._reading or self.write_paused:
            self.update_reading()

    # Parser callbacks.

    def on_message_begin(self) -> None:
        if self.closing or self._eof:
            self._stop()
            raise _StopParsing
        self._in_headers = True
        self._began = True
        self._fresh = False
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._header_raw = 0
        self._begin_mark = self.state.now

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._max_header_bytes:
            self._reject(414, "URI Too Long")
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        # The hottest callback (several per request): the count is checked once, at the end
        # of the head; the byte limit alone bounds memory meanwhile.
        self._headers.append((name.lower(), value))
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_header_bytes:
            self._reject(431, "Request Header Fields Too Large")
            raise _StopParsing

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if len(self._headers) > self.state.config.max_headers:
            self._reject(431, "Request Header Fields Too Large")
            raise _StopParsing
        parser = self._parser
        self._method = method = parser.get_method()
        self._keep_alive = parser.should_keep_alive()
        if parser.should_upgrade() and (method == b"CONNECT" or self._declares_body()):
            # The parser would hand a body or tunnel over as upgraded bytes; not supported.
            self._reject(400, "Bad Request: protocol upgrades are not supported")
            raise _StopParsing
        self._need_cycle = True

    def on_body(self, body: bytes) -> None:
        cycle = self._cycle
        if cycle is None:
            cycle = self._start_cycle(complete=False)
        cycle.feed(body)

    def on_message_complete(self) -> None:
        self._need_cycle = False
        cycle = self._cycle
        if cycle is None:
            fast = self.state.fast
            method = self._method
            if (
                fast is not None
                and not self._pipeline
                and (method == b"GET" or method == b"HEAD")
                and self._url[:1] == b"/"
                and self._fast_path(fast, method)
            ):
                return
            cycle = self._start_cycle(complete=True)
        self._cycle = None
        cycle.finish_body()
        if cycle.complete and self.closing and not self._pipeline:
            # Answered before its body was in, and the server is shutting down.
            self._stop()
            self.close()
            raise _StopParsing

    # Requests.

    def _fast_path(self, fast: FastResponder, method: bytes) -> bool:
        """Answer from the app's pre-rendered responses; False to go through ASGI."""
        path, _, query = self._url.partition(b"?")
        try:
            response = fast(method, path, query, self._headers)
        except Exception:
            log.exception("fast_response raised; answering through ASGI")
            return False
        if response is None:
            return False
        # The date goes right after the status line; a HEAD answer stops after the head.
        split = response.find(b"\r\n") + 2
        end = response.find(b"\r\n\r\n") + 4 if method == b"HEAD" else len(response)
        keep_alive = self._keep_alive
        extra = self.state.date_line
        if not keep_alive:
            extra += b"connection: close\r\n"
        elif self._parser.get_http_version() == "1.0":
            extra += b"connection: keep-alive\r\n"
        self.write(b"".join((response[:split], extra, response[split:end])))
        if not keep_alive:
            self._stop()
            self.close()
            raise _StopParsing
        return True

    def _start_cycle(self, complete: bool) -> Cycle:
        cycle = Cycle(
            self,
            self._method,
            self._url,
            self._headers,
            self._parser.get_http_version(),
            self._keep_alive,
        )
        if not complete:
            for name, value in self._headers:
                if name == b"expect" and value.lower() == b"100-continue":
                    cycle.expect_100 = True
        self._need_cycle = False
        self._cycle = cycle
        pipeline = self._pipeline
        pipeline.append(cycle)
        if len(pipeline) == 1:
            self._dispatch(cycle)
        return cycle

    def _declares_body(self) -> bool:
        for name, value in self._headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return True
        return False

    def _dispatch(self, cycle: Cycle) -> None:
        cycle.task = self.loop.create_task(self._run(cycle))

    async def _run(self, cycle: Cycle) -> None:
        try:
            await self.state.app(cycle.scope(), cycle.receive, cycle.send)
        except asyncio.CancelledError:
            cycle.fail()
            raise
        except Exception:
            log.exception("ASGI app raised on %s %r", cycle.method.decode("ascii"), cycle.url[:200])
            cycle.fail()
        else:
            if not cycle.complete and not cycle.disconnected and not self.closed:
                log.error(
                    "ASGI app returned without completing the response to %s %r",
                    cycle.method.decode("ascii"),
                    cycle.url[:200],
                )
                cycle.fail()

    def response_done(self, cycle: Cycle) -> None:
        """The response of the head of the pipeline is written: go on to the next request."""
        pipeline = self._pipeline
        if pipeline and pipeline[0] is cycle:
            pipeline.popleft()
        cycle._wake()  # a receive() waiting past the body now returns http.disconnect
        if self.closed:
            return
        if not cycle.keep_alive:
            self.close()
            return
        if pipeline:
            self._dispatch(pipeline[0])
            self.update_reading()
            return
        now = self.state.now
        self._idle_mark = self._begin_mark = now
        if self._error is not None:
            self._finish_with_error()
        elif (self.closing or self._eof) and self._cycle is None:
            self.close()
        else:
            self.update_reading()

    def last_in_pipeline(self, cycle: Cycle) -> bool:
        return bool(self._pipeline) and self._pipeline[-1] is cycle

    def _reject(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed or served, then close."""
        self._stop()
        if self._cycle is not None:
            # Part of a body was handed to an app already: there is no clean answer.
            self.close()
            return
        body = message.encode("latin-1") + b"\n"
        response = build_response(status, body, [(b"content-type", b"text/plain; charset=utf-8")])
        split = response.find(b"\r\n") + 2
        self._error = b"".join(
            (response[:split], self.state.date_line, b"connection: close\r\n", response[split:])
        )
        if not self._pipeline:
            self._finish_with_error()

    def _finish_with_error(self) -> None:
        """Write the pending error response, then close gracefully.

        Closing while the client is still sending (the rest of a huge header, a body) would
        make the kernel reset the connection, which can destroy the response before the
        client reads it. So: half-close, discard input until the client closes or for
        LINGER_SECONDS, then close.
        """
        assert self._error is not None and self._transport is not None
        self.write(self._error)
        if self.closed or not self._transport.can_write_eof():
            self.close()
            return
        self._transport.write_eof()
        self._lingering = True
        self._linger_until = self.state.now + LINGER_SECONDS
        self.update_reading()

    def _stop(self) -> None:
        self._stopped = True
        self.update_reading()

    # Writing, reading and closing.

    def write(self, data: bytes) -> None:
        if not self.closed:
            assert self._transport is not None
            self._transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if not self.closed:
            assert self._transport is not None
            self._transport.writelines(parts)

    async def drain(self) -> None:
        """Wait until the transport wants more data (or the client is gone)."""
        if not self.write_paused or self.closed:
            return
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def update_reading(self) -> None:
        """Pause reading while requests or body bytes pile up or writes back up."""
        if self.closed:
            return
        cycle = self._cycle
        pause = (
            (self._stopped and not self._lingering)
            or self.write_paused
            or len(self._pipeline) > self.state.config.max_pipeline
            or (
                cycle is not None
                and not cycle.complete
                and cycle.buffered > self.state.config.body_buffer
            )
        )
        assert self._transport is not None
        if pause:
            if self._reading:
                self._reading = False
                self._transport.pause_reading()
        elif not self._reading:
            self._reading = True
            self._transport.resume_reading()

    def close(self) -> None:
        """Close after what is written has been sent."""
        if not self.closed:
            self.closed = True
            assert self._transport is not None
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self.closed = True
            self._transport.abort()

    def begin_shutdown(self) -> None:
        """Graceful shutdown: answer what was received, then close (now, if idle)."""
        self.closing = True
        if not self._pipeline:
            self.close()

    def tasks(self) -> list[asyncio.Task[None]]:
        """ASGI tasks still answering requests on this connection."""
        return [c.task for c in self._pipeline if c.task is not None and not c.task.done()]

    def check_timeouts(self, now: float) -> None:
        """Close an idle keep-alive connection or a stalled request (called every tick)."""
        if self.closed:
            return
        if self._lingering:
            if now > self._linger_until:
                self.close()
            return
        config = self.state.config
        cycle = self._cycle
        if self._pipeline:
            # An app is working; only a body it is waiting for can stall.
            if (
                cycle is not None
                and cycle is self._pipeline[0]
                and self._reading
                and now - self._idle_mark > config.body_timeout
            ):
                self.close()
        elif cycle is not None:
            if self._reading and now - self._idle_mark > config.body_timeout:
                self.close()
        elif self._in_headers:
            if now - self._begin_mark > config.header_timeout:
                self._reject(408, "Request Timeout")
        elif self._fresh:
            # A connection that never sends a request gets the header timeout, not the
            # (longer) keep-alive one.
            if now - self._idle_mark > config.header_timeout:
                self.close()
        elif now - self._idle_mark > config.keep_alive_timeout:
            self.close()
