"""One HTTP/1.1 connection: parsing, pipelining, flow control, the fast path and ASGI cycles.

Requests on a connection are answered strictly in order. Each parsed request that is not
answered by the app's fast path becomes a ``Cycle`` in the connection's pipeline; only the
cycle at the head runs its ASGI task, so responses never interleave.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import httptools

from pullkv import errors
from pullkv.http.accesslog import (
    TOKEN_ID_KEY,
    AccessLog,
    AccessLogFormat,
    cache_status_in,
    cache_status_of,
)
from pullkv.http.asgi import ASGIApp, Message
from pullkv.http.framing import HeadInfo, allows_body, build_response, scan_headers, status_line
from pullkv.limits import (
    DATED_RESPONSES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SEND_TIMEOUT,
    REPEAT_REQUEST_BYTES,
)

log = logging.getLogger("pullkv.http.server")

FastResponder = Callable[[bytes, bytes, bytes, list[tuple[bytes, bytes]]], bytes | None]
# For the access log: the id of the token behind the app's last fast response.
FastTokenId = Callable[[], str | None]
ErrorCounter = Callable[[int, int], None]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
# Advertised so apps can tell that a "reason" key in http.response.start is honoured.
EXTENSIONS: dict[str, dict[str, Any]] = {"pullkv.reason_phrase": {}}

_SMALL_WRITE = 16 * 1024
# After an error response, how long to keep discarding what the client still sends (see
# HttpConnection._finish_with_error).
LINGER_SECONDS = 2.0
_DISCONNECT: Message = {"type": "http.disconnect"}
# workerd sends metadata as JSON.stringify output in a header, and JSON.stringify leaves
# U+007F (DEL) unescaped; llhttp refuses DEL in header values (it is not a field-vchar).
# A DEL in a request head is fed to the parser as this obs-text byte and turned back in
# on_header (see HttpConnection._feed_with_del).
_DEL = b"\x7f"
_DEL_STAND_IN = b"\xff"
_JSON_TYPE = [(b"content-type", b"application/json")]


class Phase(enum.IntEnum):
    """Where a connection is in its life, as far as reading requests goes.

    What the connection still owes is its pipeline of cycles, apart from this: with
    pipelining it may read the next head while answering earlier requests. The parser
    callbacks move the phase between FRESH and READING_BODY; they run only below STOPPED,
    and what stops a connection inside a callback raises _StopParsing. From STOPPED on
    nothing more is parsed and the phase only moves forward.
    """

    FRESH = 0  # no request has begun yet: the header timeout applies, not the keep-alive one
    IDLE = 1  # between requests
    READING_HEAD = 2
    READING_BODY = 3  # the head is parsed (the body's Cycle may not exist yet)
    STOPPED = 4  # nothing more is read; what was received is still answered
    # After an error answer, or an answer to a request not read through: half-closed, and
    # input is discarded until the client closes or LINGER_SECONDS pass (_linger_close).
    LINGERING = 5
    CLOSED = 6  # closing was asked for, or the connection is gone


class Framing(enum.Enum):
    """How a response body is delimited; decided when its head is rendered."""

    BODYLESS = "bodyless"  # HEAD, 1xx, 204, 304: no body follows the head
    LENGTH = "content-length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until close"  # a streamed body to an HTTP/1.0 client


# Phase.X costs an enum class lookup (~70 ns on Python 3.11, a module global ~15 ns), and
# phases and framings are compared for every request and response: the code uses these.
_FRESH, _IDLE, _READING_HEAD, _READING_BODY, _STOPPED, _LINGERING, _CLOSED = Phase
_BODYLESS, _LENGTH, _CHUNKED, _UNTIL_CLOSE = Framing


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
    # Unsent output per connection: over the high-water mark, the connection's further
    # requests wait (and reading stops) until the peer has taken it below the low one.
    write_high_water: int = 64 * 1024
    write_low_water: int = 16 * 1024
    # Output pending and not one byte of it taken by the peer for this long: drop it.
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    # Connections past this get an immediate 503 and are closed.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # One line per request on stderr (see accesslog), or none.
    access_log: AccessLogFormat = "off"


class ServerState:
    """What every connection of one server shares; the server keeps it current."""

    __slots__ = (
        "accepted",
        "access_log",
        "app",
        "config",
        "connections",
        "count_error",
        "date_line",
        "dated",
        "fast",
        "fast_token_id",
        "lifespan_state",
        "now",
    )

    def __init__(
        self,
        app: ASGIApp,
        config: HttpConfig,
        now: float,
        date_line: bytes,
        access_log: AccessLog | None = None,
    ) -> None:
        self.app = app
        self.config = config
        fast = getattr(app, "fast_response", None)
        self.fast: FastResponder | None = fast if callable(fast) else None
        token_id = getattr(app, "fast_token_id", None)
        self.fast_token_id: FastTokenId | None = token_id if callable(token_id) else None
        # Requests refused by the server itself (malformed, too large, too many connections)
        # are counted by the app's metrics too, when it has ``count_error(status, code)``.
        count = getattr(app, "count_error", None)
        self.count_error: ErrorCounter | None = count if callable(count) else None
        self.access_log = access_log
        self.connections: set[HttpConnection] = set()
        # Connections counted against max_connections (refused ones linger uncounted).
        self.accepted = 0
        self.lifespan_state: dict[str, Any] = {}
        # A coarse clock (loop time), refreshed by the server's timer, for idle bookkeeping.
        self.now = now
        self.date_line = date_line
        # Fast responses with the date line put in, for keep-alive HTTP/1.1 GETs: response ->
        # (the date line it holds, the bytes to write). Stale once date_line moves on.
        self.dated: dict[bytes, tuple[bytes, bytes]] = {}

    def with_date(self, response: bytes) -> bytes:
        """A small pre-rendered response as written to a keep-alive HTTP/1.1 GET: the date
        line after the status line (made once per response and second)."""
        date_line = self.date_line
        dated = self.dated.get(response)
        if dated is not None and dated[0] is date_line:
            return dated[1]
        split = response.find(b"\r\n") + 2
        data = b"".join((response[:split], date_line, response[split:]))
        if len(self.dated) >= DATED_RESPONSES:
            self.dated.clear()
        self.dated[response] = (date_line, data)
        return data


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
        "asgi_scope",
        "begun",
        "body_complete",
        "body_done",
        "buffered",
        "chunks",
        "complete",
        "conn",
        "disconnected",
        "expect_100",
        "framing",
        "head_sent",
        "headers",
        "hot",
        "http_version",
        "keep_alive",
        "method",
        "out_headers",
        "reason",
        "received",
        "remaining",
        "sent",
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
        # Queued while output was backed up: offer it to the fast path when its turn comes.
        self.hot = False
        # Request body: chunks not yet handed to the app.
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.received = 0
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
        self.framing = _BODYLESS  # set when the head is rendered
        self.remaining = 0  # Framing.LENGTH: bytes of the body still to send
        self.task: asyncio.Task[None] | None = None
        self.sent = 0  # body bytes written, for the access log
        self.begun = 0.0  # perf_counter when the request was in, if the access log is on
        self.asgi_scope: dict[str, Any] | None = None

    def scope(self) -> dict[str, Any]:
        """The ASGI http scope of this request."""
        conn = self.conn
        raw_path, query = _split_target(self.url)
        self.asgi_scope = scope = {
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
        return scope

    # Request body, fed by the connection.

    def feed(self, body: bytes) -> None:
        """Body bytes from the parser."""
        self.received += len(body)
        if self.complete:
            return  # the response is out: the rest of the body is read and dropped
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake()

    def finish_body(self) -> None:
        """The parser saw the end of the body."""
        self.body_complete = True
        self._wake()

    def disconnect(self) -> None:
        """The client is gone."""
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
        if conn._phase is _CLOSED or self.disconnected:
            if not more:
                self.complete = True
            return
        # The head waits for the first body chunk so that a small response, and the
        # content-length of a one-chunk body, go out in a single write.
        head = b"" if self.head_sent else self._render_head(body, more)
        parts = self._frame(head, body, more)
        self.head_sent = True
        if self.framing is not _BODYLESS:
            self.sent += len(body)
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
        framing = self.framing
        if framing is _BODYLESS:
            return [head] if head else []
        if framing is _CHUNKED:
            parts = [head] if head else []
            if body:
                parts += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more:
                parts.append(b"0\r\n\r\n")
            return parts
        if framing is _LENGTH:
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
        """The response head, rendered with the first body chunk (``body``; ``more`` when
        others follow): the body's framing and whether the connection stays open are
        decided here."""
        info = scan_headers(self.out_headers)
        framing, framing_header = self._choose_framing(info, body, more)
        if framing is _LENGTH:
            length = info.content_length
            self.remaining = len(body) if length is None else length
        # An HTTP/1.0 client reads a streamed body until the connection closes.
        keep_alive = self._may_keep_alive(info, more) and framing is not _UNTIL_CLOSE
        self.framing = framing
        self.keep_alive = keep_alive
        if not keep_alive:
            connection = b"connection: close\r\n"
        elif self.http_version == "1.0":
            connection = b"connection: keep-alive\r\n"
        else:
            connection = b""
        date = b"" if info.has_date else self.conn.state.date_line
        line = status_line(self.status, self.reason)
        return b"".join((line, info.block, framing_header, connection, date, b"\r\n"))

    def _choose_framing(self, info: HeadInfo, body: bytes, more: bool) -> tuple[Framing, bytes]:
        """This response's framing, and the header declaring it that the server adds."""
        status = self.status
        length = info.content_length
        if self.method == b"HEAD" or not allows_body(status):
            # HEAD keeps the content-length the app declared (or the one of the body it
            # sent); 204/304/1xx carry no framing of their own.
            if length is None and not more and body and allows_body(status):
                return _BODYLESS, b"content-length: %d\r\n" % len(body)
            return _BODYLESS, b""
        if info.chunked:
            return _CHUNKED, b"transfer-encoding: chunked\r\n"
        if length is not None:
            return _LENGTH, b""
        if not more:
            return _LENGTH, b"content-length: %d\r\n" % len(body)
        if self.http_version == "1.1":
            return _CHUNKED, b"transfer-encoding: chunked\r\n"
        return _UNTIL_CLOSE, b""

    def _may_keep_alive(self, info: HeadInfo, more: bool) -> bool:
        """Whether the connection may stay open after this response, framing aside."""
        if not self.keep_alive or info.close:
            return False  # the client or the app asked for the close
        conn = self.conn
        if conn.closing and conn.last_in_pipeline(self):
            return False  # shutting down, and this is the last answer owed
        # Unless the body is in, the client may still be holding it back (100-continue), or
        # is still sending one that will not be read: the connection ends after this answer
        # rather than reading and discarding an unbounded body.
        return self.body_complete or (more and not self.expect_100)

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
        self.send_body(b"Internal Server Error", False)


def error_response(error: errors.KVError, date_line: bytes) -> bytes:
    """A server-level error as a complete response: Cloudflare envelope, then close."""
    body = json.dumps(error.envelope(), separators=(",", ":")).encode("utf-8")
    response = build_response(error.status, body, _JSON_TYPE)
    split = response.find(b"\r\n") + 2
    return b"".join((response[:split], date_line, b"connection: close\r\n", response[split:]))


class HttpConnection(asyncio.Protocol):
    """An asyncio protocol serving HTTP/1.1 to one client."""

    __slots__ = (
        "_advancing",
        "_answered",
        "_batch",
        "_batch_size",
        "_batching",
        "_begin_mark",
        "_counted",
        "_cycle",
        "_drain_waiters",
        "_eof",
        "_error",
        "_error_status",
        "_header_bytes",
        "_header_raw",
        "_headers",
        "_heads",
        "_idle_mark",
        "_keep_alive",
        "_linger_until",
        "_max_header_bytes",
        "_method",
        "_parser",
        "_phase",
        "_pipeline",
        "_reading",
        "_repeat",
        "_repeat_head",
        "_send_mark",
        "_sent",
        "_stand_ins",
        "_transport",
        "_url",
        "_version",
        "_written",
        "client_address",
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
        self._phase = _FRESH
        self._pipeline: deque[Cycle] = deque()  # requests received and not yet answered
        self._error: bytes | None = None  # a rejection waiting for earlier responses
        self._error_status = 0
        self._advancing = False  # _advance is on the stack (it is not reentrant)
        # Besides the phase: graceful shutdown (finish what was received, then close) and
        # the client's end of the connection (half-closed: nothing more will arrive).
        self.closing = False
        self._eof = False
        # Flow control: the transport's buffer is over its high-water mark (see
        # pause_writing), and whether the transport is reading (see update_reading).
        self.write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading = True
        self._counted = False  # holds one of the server's max_connections places
        # Timeouts: the last read (or the last time the pipeline emptied), the start of the
        # current head, and the end of the linger.
        self._idle_mark = state.now
        self._begin_mark = state.now
        self._linger_until = 0.0
        # Send timeout: bytes handed to the transport, and the last time the peer took some.
        self._written = 0
        self._sent = -1
        self._send_mark = state.now
        # The request being parsed.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._header_raw = 0
        self._max_header_bytes = state.config.max_header_bytes
        self._heads = 0  # heads begun in the read being parsed
        self._stand_ins = 0  # DEL bytes of this head fed to the parser as _DEL_STAND_IN
        self._method = b""
        self._keep_alive = True
        self._version = "1.1"
        self._cycle: Cycle | None = None  # READING_BODY: the request whose body is read
        # The request of this read was answered on the fast path (see data_received).
        self._answered = False
        # The last read that held exactly one request, answered on the fast path, and what
        # the parser made of it: (method, url, headers, keep-alive, HTTP version).
        self._repeat = b""
        self._repeat_head: tuple[bytes, bytes, list[tuple[bytes, bytes]], bool, str] | None = None
        # Writes while a read (or a run of queued requests) is answered are joined into one
        # transport write at its end, or once _SMALL_WRITE bytes are waiting.
        self._batching = False
        self._batch: list[bytes] = []
        self._batch_size = 0

    @property
    def closed(self) -> bool:
        """Closing was asked for, or the connection is gone."""
        return self._phase is _CLOSED

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
        state = self.state
        config = state.config
        transport.set_write_buffer_limits(high=config.write_high_water, low=config.write_low_water)
        state.connections.add(self)
        self._idle_mark = self._begin_mark = self._send_mark = state.now
        if state.accepted >= config.max_connections:
            # Refused at once, without waiting for a request: a flood of connections costs
            # one small write each. Lingering (not counted) lets the client read the 503.
            self._reject(errors.too_many_connections(config.max_connections))
            return
        self._counted = True
        state.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        self.state.connections.discard(self)
        if self._counted:
            self._counted = False
            self.state.accepted -= 1
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
        self._advance()

    def data_received(self, data: bytes) -> None:
        before = self._phase
        if before >= _STOPPED:
            return
        self._idle_mark = self.state.now
        # What this read's requests write goes out in one transport write (see write).
        nested = self._batching
        self._batching = True
        try:
            if data != self._repeat or not self._replay(before):
                self._parse(data, before)
            if self._pipeline or not self._reading or self.write_paused:
                self.update_reading()
        finally:
            if not nested:
                self._batching = False
                if self._batch:
                    self._flush()

    def _parse(self, data: bytes, before: Phase) -> None:
        """Feed a read to the parser (whose callbacks answer what it completes); ``before``:
        the phase when the read arrived."""
        self._heads = 0
        self._answered = False
        try:
            if 0x7F in data:  # an int is a plain memchr; b"\x7f" would be ~7x slower
                self._feed_with_del(data)
            else:
                self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The upgrade is ignored (the request was answered as plain HTTP); what follows
            # is the client's next request. (_feed_with_del handles its own.)
            rest = data[exc.args[0] :]
            if rest:
                self.data_received(rest)
            return
        except httptools.HttpParserError as exc:
            if self._phase < _STOPPED:  # else a callback stopped the parser on purpose
                log.debug("malformed request from %s: %s", self.client_address, exc)
                self._reject(errors.malformed_request("malformed HTTP request"))
            return
        phase = self._phase
        if phase is _READING_HEAD:
            if not self._heads:
                # The parser keeps a header value it has not finished; bound what it holds.
                self._header_raw += len(data)
                if self._header_raw > self._max_header_bytes:
                    self._reject(errors.headers_too_large("the request head is too long"))
        elif phase is _READING_BODY:
            if self._cycle is None:
                self._start_cycle(complete=False)
        elif (
            self._answered
            and self._heads == 1
            and phase is _IDLE
            and before <= _IDLE
            and len(data) <= REPEAT_REQUEST_BYTES
        ):
            # Exactly one whole request, answered on the fast path: a client that sends the
            # same bytes again gets them answered without parsing (see _replay).
            self._repeat = data
            self._repeat_head = (
                self._method,
                self._url,
                self._headers,
                self._keep_alive,
                self._version,
            )

    def _replay(self, before: Phase) -> bool:
        """Answer a read equal to the remembered one (``_repeat``) from what the parser made
        of it then, as its callbacks would; False to parse it after all.

        The parser is between messages both times and keeps nothing from one message to the
        next on a kept-alive connection, so the same bytes give the same request. Only a read
        that was exactly one request, answered on the fast path (so: no body, no upgrade, no
        error, the connection kept alive) is remembered, and it is replayed only where the
        parser would have answered it again at once (nothing queued, output not backed up,
        not shutting down, not half-closed).
        """
        head = self._repeat_head
        fast = self.state.fast
        if (
            before > _IDLE
            or head is None
            or fast is None
            or self._pipeline
            or self.write_paused
            or self.closing
            or self._eof
        ):
            return False
        method, self._url, headers, self._keep_alive, self._version = head
        self._method = method
        self._headers = headers
        self._begin_mark = self.state.now
        self._phase = _IDLE
        try:
            if self._fast_path(fast, method):
                return True
            # Declined this time (the entry went stale, say): the ordinary path, as
            # on_message_complete takes it, with a list of its own for the ASGI scope.
            self._headers = list(headers)
            cycle = self._start_cycle(complete=True)
            self._cycle = None
            cycle.finish_body()
        except _StopParsing:
            pass
        return True

    def _feed_with_del(self, data: bytes) -> None:
        """Feed data holding a DEL byte: in a request head it reaches the app as DEL.

        The data is fed up to each DEL; if the parser is then inside a head, the DEL goes
        in as _DEL_STAND_IN (obs-text, which llhttp accepts in values and nowhere else that
        matters: a stand-in in a name or the request line is refused as before). Body bytes
        are fed in one piece where the body's length is known; the rest of a chunked body
        is fed whole, so a DEL in a head pipelined behind it in the same read is refused.
        """
        parser = self._parser
        while data:
            if self._phase >= _STOPPED:
                return
            if self._phase is _READING_BODY:
                left = self._body_left()
                if left <= 0 or left >= len(data):
                    self._feed_piece(data, b"")
                    return
                piece, data = data[:left], data[left:]
                if not self._feed_piece(piece, data):
                    return
                continue
            at = data.find(_DEL)
            if at < 0:
                self._feed_piece(data, b"")
                return
            if at and not self._feed_piece(data[:at], data[at:]):
                return
            if self._phase >= _STOPPED:
                return
            if self._phase is _READING_HEAD:
                self._stand_ins += 1
                parser.feed_data(_DEL_STAND_IN)
            else:
                parser.feed_data(_DEL)
            data = data[at + 1 :]

    def _feed_piece(self, piece: bytes, rest: bytes) -> bool:
        """Feed one piece of a read; False when an upgrade took over the rest."""
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade as exc:
            remainder = piece[exc.args[0] :] + rest
            if remainder:
                self.data_received(remainder)
            return False
        return True

    def _body_left(self) -> int:
        """Bytes of the current body still to come, or -1 when not known (chunked)."""
        cycle = self._cycle
        headers = cycle.headers if cycle is not None else self._headers
        for name, value in headers:
            if name == b"content-length":
                return int(value) - (cycle.received if cycle is not None else 0)
        return -1

    # Parser callbacks.

    def on_message_begin(self) -> None:
        if self.closing or self._eof:
            self._stop()
            raise _StopParsing
        self._phase = _READING_HEAD
        self._heads += 1
        self._method = self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._header_raw = 0
        self._stand_ins = 0
        self._begin_mark = self.state.now

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._max_header_bytes:
            self._reject(errors.uri_too_long(self._max_header_bytes))
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        # The hottest callback (several per request): the count is checked once, at the end
        # of the head; the byte limit alone bounds memory meanwhile.
        self._headers.append((name.lower(), value))
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_header_bytes:
            self._reject(errors.headers_too_large("the request head is too long"))
            raise _StopParsing

    def on_headers_complete(self) -> None:
        if len(self._headers) > self.state.config.max_headers:
            self._reject(errors.headers_too_large("too many header fields"))
            raise _StopParsing
        if self._stand_ins:
            self._restore_dels()
        parser = self._parser
        self._method = method = parser.get_method()
        self._keep_alive = parser.should_keep_alive()
        self._version = parser.get_http_version()
        if parser.should_upgrade() and (method == b"CONNECT" or self._declares_body()):
            # The parser would hand a body or tunnel over as upgraded bytes; not supported.
            self._reject(errors.malformed_request("protocol upgrades are not supported"))
            raise _StopParsing
        self._phase = _READING_BODY

    def _restore_dels(self) -> None:
        """Turn the stand-ins of this head's DEL bytes back into DEL."""
        headers = self._headers = [(n, v.replace(_DEL_STAND_IN, _DEL)) for n, v in self._headers]
        if self._stand_ins != sum(value.count(_DEL) for _, value in headers):
            # A stand-in outside a value (in the request line), or a value that also held a
            # real 0xFF byte (now a DEL too): refused, as a DEL there was before.
            self._reject(errors.malformed_request("invalid character in the request head"))
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        cycle = self._cycle
        if cycle is None:
            cycle = self._start_cycle(complete=False)
        cycle.feed(body)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        cycle = self._cycle
        if cycle is None:
            fast = self.state.fast
            method = self._method
            hot = False
            if (
                fast is not None
                and (method == b"GET" or method == b"HEAD")
                and self._url[:1] == b"/"
            ):
                if self._pipeline or self.write_paused:
                    # Behind other requests, or while output is backed up: queued in order,
                    # and offered to the fast path when its turn comes (see _advance).
                    hot = True
                elif self._fast_path(fast, method):
                    return
            cycle = self._start_cycle(complete=True, hot=hot)
        self._cycle = None
        cycle.finish_body()
        if cycle.complete and self.closing and not self._pipeline:
            # Answered before its body was in, and the server is shutting down.
            self._stop()
            self.close()
            raise _StopParsing

    # Requests.

    def _fast_path(self, fast: FastResponder, method: bytes) -> bool:
        """Answer the request just parsed from the app's pre-rendered responses; False to
        go through ASGI."""
        # The hottest path of all: _ask_fast, and _write_fast's common case, inlined.
        state = self.state
        begun = 0.0 if state.access_log is None else time.perf_counter()
        url = self._url
        path, _, query = url.partition(b"?")
        try:
            response = fast(method, path, query, self._headers)
        except Exception:
            log.exception("fast_response raised; answering through ASGI")
            return False
        if response is None:
            return False
        if begun:
            end = response.find(b"\r\n\r\n") + 4 if method == b"HEAD" else len(response)
            self._log_fast(method, url, response, end, begun)
        keep_alive = self._keep_alive
        if (
            keep_alive
            and method == b"GET"
            and self._version == "1.1"
            and len(response) <= _SMALL_WRITE
            and self._batching
        ):
            data = state.with_date(response)
            self._written += len(data)
            self._batch.append(data)
            self._batch_size += len(data)
            if self._batch_size >= _SMALL_WRITE:
                self._flush()
        elif not self._write_fast(method, response, keep_alive, self._version == "1.0"):
            self._stop()
            self.close()
            raise _StopParsing
        self._answered = True
        return True

    @staticmethod
    def _ask_fast(
        fast: FastResponder, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        path, _, query = url.partition(b"?")
        try:
            return fast(method, path, query, headers)
        except Exception:
            log.exception("fast_response raised; answering through ASGI")
            return None

    def _write_fast(self, method: bytes, response: bytes, keep_alive: bool, http10: bool) -> bool:
        """Write a pre-rendered response; returns whether the connection stays open."""
        if keep_alive and not http10 and method == b"GET" and len(response) <= _SMALL_WRITE:
            self.write(self.state.with_date(response))
            return True
        # The date goes right after the status line; a HEAD answer stops after the head.
        split = response.find(b"\r\n") + 2
        end = response.find(b"\r\n\r\n") + 4 if method == b"HEAD" else len(response)
        extra = self.state.date_line
        if not keep_alive:
            extra += b"connection: close\r\n"
        elif http10:
            extra += b"connection: keep-alive\r\n"
        if end - split > _SMALL_WRITE:
            # A large value is not copied: the transport holds a view of the one rendered
            # response that every reader of this entry shares.
            self.writelines((response[:split] + extra, memoryview(response)[split:end]))
        else:
            self.write(b"".join((response[:split], extra, response[split:end])))
        return keep_alive

    def _log_fast(self, method: bytes, url: bytes, response: bytes, end: int, begun: float) -> None:
        """The access log line of a pre-rendered response (``end``: where what is sent
        of it ends)."""
        state = self.state
        assert state.access_log is not None
        head_end = response.find(b"\r\n\r\n") + 4
        state.access_log.record(
            self.client_address,
            method,
            url,
            int(response[9:12]),
            end - head_end,
            time.perf_counter() - begun,
            cache_status_in(response, head_end),
            None if state.fast_token_id is None else state.fast_token_id(),
        )

    def _log_cycle(self, cycle: Cycle) -> None:
        """The access log line of a response the ASGI app sent."""
        access_log = self.state.access_log
        assert access_log is not None
        scope = cycle.asgi_scope
        token_id = None if scope is None else scope.get(TOKEN_ID_KEY)
        access_log.record(
            self.client_address,
            cycle.method,
            cycle.url,
            cycle.status,
            cycle.sent,
            time.perf_counter() - cycle.begun,
            cache_status_of(cycle.out_headers),
            token_id if isinstance(token_id, str) else None,
        )

    def _start_cycle(self, complete: bool, hot: bool = False) -> Cycle:
        cycle = Cycle(
            self,
            self._method,
            self._url,
            self._headers,
            self._version,
            self._keep_alive,
        )
        cycle.hot = hot
        if self.state.access_log is not None:
            cycle.begun = time.perf_counter()
        if not complete:
            for name, value in self._headers:
                if name == b"expect" and value.lower() == b"100-continue":
                    cycle.expect_100 = True
        self._cycle = cycle
        pipeline = self._pipeline
        pipeline.append(cycle)
        if len(pipeline) == 1:
            self._advance()
        return cycle

    def _declares_body(self) -> bool:
        for name, value in self._headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return True
        return False

    def _advance(self) -> None:
        """Answer the head of the pipeline, unless it is being answered or the client has
        not taken the output so far (then resume_writing calls this again)."""
        if self._advancing or self._phase is _CLOSED:
            return
        self._advancing = True
        # Queued requests answered on the fast path go out in one transport write.
        nested = self._batching
        self._batching = True
        try:
            pipeline = self._pipeline
            fast = self.state.fast
            while pipeline:
                head = pipeline[0]
                if head.task is not None or self.write_paused:
                    self.update_reading()
                    return
                if head.hot and fast is not None and head.body_complete:
                    response = self._ask_fast(fast, head.method, head.url, head.headers)
                    if response is not None:
                        pipeline.popleft()
                        head.complete = True
                        if head.begun:
                            end = len(response)
                            if head.method == b"HEAD":
                                end = response.find(b"\r\n\r\n") + 4
                            self._log_fast(head.method, head.url, response, end, head.begun)
                        http10 = head.http_version == "1.0"
                        if not self._write_fast(head.method, response, head.keep_alive, http10):
                            self._stop()
                            self.close()
                            return
                        continue
                head.task = self.loop.create_task(self._run(head))
                self.update_reading()
                return
        finally:
            self._advancing = False
            if not nested:
                self._batching = False
                if self._batch:
                    self._flush()
        self._idle()

    def _idle(self) -> None:
        """Every request received so far is answered."""
        self._idle_mark = self._begin_mark = self.state.now
        if self._error is not None:
            self._finish_with_error()
        elif (self.closing or self._eof) and self._cycle is None:
            self.close()
        else:
            self.update_reading()

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
        if cycle.begun:
            self._log_cycle(cycle)
        cycle._wake()  # a receive() waiting past the body now returns http.disconnect
        if self._phase is _CLOSED:
            return
        if not cycle.body_complete:
            # Answered before its body arrived (a 413, say): read no more of it.
            self._linger_close()
            return
        if not cycle.keep_alive:
            self.close()
            return
        self._advance()

    def last_in_pipeline(self, cycle: Cycle) -> bool:
        """Whether ``cycle`` is the last request received so far."""
        return bool(self._pipeline) and self._pipeline[-1] is cycle

    def _reject(self, error: errors.KVError) -> None:
        """Answer a request that cannot be parsed or served, then close."""
        self._stop()
        state = self.state
        if state.count_error is not None:
            state.count_error(error.status, error.code)
        if self._cycle is not None:
            # Part of a body was handed to an app already: there is no clean answer.
            self.close()
            return
        self._error = error_response(error, state.date_line)
        self._error_status = error.status
        if not self._pipeline:
            self._finish_with_error()

    def _finish_with_error(self) -> None:
        """Write the pending error response, then close gracefully (see _linger_close)."""
        error, self._error = self._error, None
        assert error is not None
        access_log = self.state.access_log
        if access_log is not None:
            head_end = error.find(b"\r\n\r\n") + 4
            access_log.record(
                self.client_address,
                self._method or b"-",
                self._url or b"-",
                self._error_status,
                len(error) - head_end,
                0.0,
                None,
                None,
            )
        self.write(error)
        self._linger_close()

    def _linger_close(self) -> None:
        """Close once the client has read what was written, without reading on.

        Closing while the client is still sending (the rest of a huge header, a body) would
        make the kernel reset the connection, which can destroy the response before the
        client reads it. So: half-close, discard input until the client closes or for
        LINGER_SECONDS, then close.
        """
        assert self._transport is not None
        if self._phase is _CLOSED or not self._transport.can_write_eof():
            self.close()
            return
        if self._batch:
            self._flush()
        self._transport.write_eof()
        self._phase = _LINGERING
        self._linger_until = self.state.now + LINGER_SECONDS
        self.update_reading()

    def _stop(self) -> None:
        """Read nothing more; what was received is still answered."""
        if self._phase < _STOPPED:
            self._phase = _STOPPED
        self.update_reading()

    # Writing, reading and closing.

    def write(self, data: bytes) -> None:
        """Hand bytes to the transport (nothing once closing).

        While a read is answered (or a run of queued requests), writes are kept and joined:
        pipelined responses take one system call, not one each. They are handed over at the
        end of it, or as soon as _SMALL_WRITE bytes wait, so flow control still sees them
        (pause_writing) within that much.
        """
        if self._phase is not _CLOSED:
            self._written += len(data)
            if self._batching:
                self._batch.append(data)
                self._batch_size += len(data)
                if self._batch_size >= _SMALL_WRITE:
                    self._flush()
            else:
                assert self._transport is not None
                self._transport.write(data)

    def writelines(self, parts: Sequence[bytes | memoryview]) -> None:
        """Hand several buffers to the transport without joining them."""
        if self._phase is not _CLOSED:
            assert self._transport is not None
            if self._batch:
                self._flush()
            self._written += sum(map(len, parts))
            self._transport.writelines(parts)

    def _flush(self) -> None:
        """Hand the kept writes to the transport, joined (dropped once closed)."""
        batch = self._batch
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        batch.clear()
        self._batch_size = 0
        if self._phase is not _CLOSED:
            assert self._transport is not None
            self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport wants more data (or the client is gone)."""
        if not self.write_paused or self._phase is _CLOSED:
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
        phase = self._phase
        if phase is _CLOSED:
            return
        cycle = self._cycle
        # A lingering connection reads on, to discard what the client still sends.
        pause = (
            phase is _STOPPED
            or (self.write_paused and phase is not _LINGERING)
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
        """Close after what is written has been sent (the send timeout bounds the wait)."""
        if self._phase is not _CLOSED:
            if self._batch:
                self._flush()
            self._phase = _CLOSED
            assert self._transport is not None
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now."""
        if self._transport is not None:
            self._phase = _CLOSED
            self._batch.clear()
            self._batch_size = 0
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
        """Drop a peer that stopped reading, and close a connection that waited too long in
        its phase (called every tick with the server's clock)."""
        transport = self._transport
        if transport is None:
            return
        if self._abort_if_send_stalled(transport.get_write_buffer_size(), now):
            return
        phase = self._phase
        config = self.state.config
        if phase is _CLOSED:
            return
        if phase is _LINGERING:
            if now > self._linger_until:
                self.close()
        elif phase is _READING_BODY:
            # A body that stopped arriving. Not while reading is paused (the app is slow to
            # take it, or output is backed up), nor while an earlier request is answered.
            pipeline = self._pipeline
            waited_for = not pipeline or pipeline[0] is self._cycle
            if waited_for and self._reading and now - self._idle_mark > config.body_timeout:
                self.close()
        elif self._pipeline:
            pass  # an app is answering; its time is not bounded here
        elif phase is _READING_HEAD:
            if now - self._begin_mark > config.header_timeout:
                self._reject(errors.request_timeout(config.header_timeout))
        elif phase is _FRESH:
            # A connection that never sends a request gets the header timeout, not the
            # (longer) keep-alive one.
            if now - self._idle_mark > config.header_timeout:
                self.close()
        elif now - self._idle_mark > config.keep_alive_timeout:
            self.close()

    def _abort_if_send_stalled(self, pending: int, now: float) -> bool:
        """Abort when ``pending`` bytes of output have waited, none of them taken by the
        peer, for longer than the send timeout; True if so."""
        if not pending:
            self._sent = -1
            return False
        sent = self._written - pending
        if sent != self._sent:
            self._sent = sent
            self._send_mark = now
            return False
        if now - self._send_mark <= self.state.config.send_timeout:
            return False
        log.info(
            "dropping %s: %d bytes unsent, none taken for %.0f s (--send-timeout)",
            self.client_address,
            pending,
            now - self._send_mark,
        )
        self.abort()
        return True
