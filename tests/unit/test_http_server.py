"""pullkv's HTTP/1.1 server over real sockets: framing, pipelining, flow control, limits,
the reason-phrase extension, the fast path, lifespan and graceful shutdown.

Each server runs on its own uvloop in a thread, bound to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs

import httpx
import pytest
import uvloop

from pullkv.http.asgi import ASGIApp, Message, Receive, Scope, Send
from pullkv.http.framing import sanitise_reason, status_line
from pullkv.http.server import HttpConfig, Server, build_response

T = TypeVar("T")
Query = dict[str, str]  # the first value of each query parameter

MIB = 1024 * 1024
FAST_BODY = b"fast!"
BIG_BODY = bytes(range(256)) * (16 * 1024)  # 4 MiB


class SampleApp:
    """A small ASGI app recording what the server did to it."""

    def __init__(self) -> None:
        self.fast_calls = 0
        self.asgi_calls: list[str] = []
        self.lifespan: list[str] = []
        self.entered = threading.Event()
        self.disconnected = threading.Event()
        self.chunk_sizes: list[int] = []
        self.fast_response_bytes = build_response(
            200, FAST_BODY, [(b"content-type", b"text/plain")]
        )
        self.fast_big_calls = 0
        self.fast_big_bytes = build_response(200, BIG_BODY, [])

    def fast_response(
        self, method: bytes, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        if raw_path == b"/fast":
            self.fast_calls += 1
            return self.fast_response_bytes
        if raw_path == b"/fast-big":
            self.fast_big_calls += 1
            return self.fast_big_bytes
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.lifespan.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.lifespan.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        self.asgi_calls.append(path)
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        handler = getattr(self, "route_" + path.strip("/").replace("-", "_"), None)
        if handler is None:
            await respond(send, 404, b"no route\n")
        else:
            await handler(scope, receive, send, query)

    async def route_hello(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        await respond(send, 200, b"hello", [(b"content-type", b"text/plain")])

    async def route_fast(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        await respond(send, 200, FAST_BODY, [(b"x-via", b"asgi")])

    async def route_echo(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        body = await read_body(receive)
        headers = [(b"x-method", scope["method"].encode()), (b"x-scheme", scope["scheme"].encode())]
        await respond(send, 200, body, headers)

    async def route_client(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        await respond(send, 200, str(scope["client"][1]).encode())

    async def route_count(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        digest = hashlib.sha256()
        total = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            self.chunk_sizes.append(len(chunk))
            digest.update(chunk)
            total += len(chunk)
            if "slow" in q:
                await asyncio.sleep(0.001)  # a slow consumer: the server must pause reading
            if not message.get("more_body", False):
                break
        await respond(send, 200, f"{total} {digest.hexdigest()}".encode())

    async def route_big(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        size = int(q.get("mib", "30"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * MIB
        for _ in range(size):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def route_stream(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def route_slow(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        self.entered.set()
        await asyncio.sleep(float(q.get("seconds", "0.3")))
        await respond(send, 200, b"slow")

    async def route_reason(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        reason = q.get("text", "Namespace \u2018caf\u00e9\u2019 not found\r\nInjected: yes")
        await send({"type": "http.response.start", "status": 404, "reason": reason, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def route_wait_disconnect(
        self, scope: Scope, receive: Receive, send: Send, q: Query
    ) -> None:
        self.entered.set()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return

    async def route_boom(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        raise RuntimeError("boom")

    async def route_big_once(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        # The whole body in one message, as pullkv's Response sends it.
        await respond(send, 200, BIG_BODY)

    async def route_header(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        values = [value for name, value in scope["headers"] if name == b"x-meta"]
        await respond(send, 200, b"|".join(values))

    async def route_short(self, scope: Scope, receive: Receive, send: Send, q: Query) -> None:
        await respond(send, 200, b"abc", [(b"content-length", b"10")])


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    start: Message = {"type": "http.response.start", "status": status, "headers": headers or []}
    await send(start)
    await send({"type": "http.response.body", "body": body})


class ServerThread:
    """A Server on its own uvloop in a daemon thread."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: HttpConfig | None = None,
        tls: ssl.SSLContext | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.server = Server(app, ssl=tls, config=config, shutdown_timeout=shutdown_timeout)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.run(
                "127.0.0.1", 0, ready=self.ready.set, install_signal_handlers=False
            )

        try:
            uvloop.run(main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(10), "server did not start"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request_shutdown(self) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.request_shutdown)

    def stop(self, timeout: float = 15.0) -> None:
        self.request_shutdown()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not shut down"
        assert self.error is None, self.error


class Raw:
    """A raw client socket with a reader of HTTP/1.1 responses."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def status_line(self) -> bytes:
        return self.file.readline()

    def response(self, head: bool = False) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """(status line, headers, body) of the next response."""
        line = self.file.readline()
        assert line, "connection closed before a response"
        headers: dict[bytes, bytes] = {}
        while True:
            header = self.file.readline()
            if header in (b"\r\n", b""):
                break
            name, _, value = header.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if head:
            body = b""
        elif b"content-length" in headers:
            body = self.file.read(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size = int(self.file.readline().strip(), 16)
                body += self.file.read(size)
                self.file.readline()
                if size == 0:
                    break
        else:
            body = self.file.read()
        return line.rstrip(b"\r\n"), headers, body

    def closed(self) -> bool:
        """Whether the server closed the connection (EOF) within the socket timeout."""
        try:
            return self.file.read(1) == b""
        except (TimeoutError, ConnectionResetError):
            return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def app() -> SampleApp:
    return SampleApp()


@pytest.fixture(scope="module")
def srv(app: SampleApp) -> Iterator[ServerThread]:
    with ServerThread(app) as server:
        yield server


@pytest.fixture
def raw(srv: ServerThread) -> Iterator[Raw]:
    client = Raw(srv.port)
    yield client
    client.close()


def get(host_path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {host_path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


# Wire helpers.


def test_build_response_and_status_lines() -> None:
    response = build_response(200, b"abc", [(b"content-type", b"text/plain")])
    assert response == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nabc"
    )
    assert build_response(204, b"", []) == b"HTTP/1.1 204 No Content\r\n\r\n"
    custom = build_response(404, b"", [(b"content-length", b"0")], reason="Gone fishing")
    assert custom.startswith(b"HTTP/1.1 404 Gone fishing\r\ncontent-length: 0\r\n\r\n")
    with pytest.raises(RuntimeError):
        build_response(200, b"", [(b"x-bad", b"a\r\nb")])
    with pytest.raises(ValueError):
        build_response(200, b"", [(b"date", b"now")])
    assert status_line(599) == b"HTTP/1.1 599 \r\n"


def test_sanitise_reason() -> None:
    assert sanitise_reason("ok\r\nX: y\x00\x7f\tz") == b"ok  X: y  \tz"
    assert sanitise_reason("caf\u00e9 \u2018q\u2019") == b"caf\xe9 ?q?"
    assert len(sanitise_reason("x" * 5000)) == 1024


# Basics.


def test_get_and_put(srv: ServerThread) -> None:
    with httpx.Client(base_url=srv.url) as client:
        response = client.get("/hello")
        assert response.status_code == 200
        assert response.text == "hello"
        assert response.headers["content-length"] == "5"
        date = parsedate_to_datetime(response.headers["date"])
        assert abs((datetime.datetime.now(datetime.UTC) - date).total_seconds()) < 5
        put = client.put("/echo", content=b"some body")
        assert put.status_code == 200
        assert put.content == b"some body"
        assert put.headers["x-method"] == "PUT"
        assert put.headers["x-scheme"] == "http"
        assert client.get("/nowhere").status_code == 404


def test_lifespan_ran_startup(srv: ServerThread, app: SampleApp) -> None:
    assert app.lifespan == ["startup"]


def test_keep_alive_reuses_the_connection(srv: ServerThread) -> None:
    with httpx.Client(base_url=srv.url) as client:
        ports = {client.get("/client").text for _ in range(5)}
    assert len(ports) == 1


def test_connection_close_is_honoured(raw: Raw) -> None:
    raw.send(get("/hello", "Connection: close\r\n"))
    line, headers, body = raw.response()
    assert line == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"
    assert body == b"hello"
    assert raw.closed()


def test_http10_keep_alive_and_close(srv: ServerThread) -> None:
    client = Raw(srv.port)
    try:
        client.send(get("/hello", "Connection: keep-alive\r\n", version="1.0"))
        _, headers, body = client.response()
        assert headers[b"connection"] == b"keep-alive"
        client.send(get("/fast", "Connection: keep-alive\r\n", version="1.0"))
        _, headers, body = client.response()
        assert headers[b"connection"] == b"keep-alive"
        assert body == FAST_BODY
        client.send(get("/hello", version="1.0"))
        _, headers, body = client.response()
        assert body == b"hello"
        assert client.closed()
    finally:
        client.close()


def test_head_has_no_body(raw: Raw, app: SampleApp) -> None:
    raw.send(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    line, headers, _ = raw.response(head=True)
    assert line == b"HTTP/1.1 200 OK"
    assert headers[b"content-length"] == b"5"
    before = app.fast_calls
    raw.send(b"HEAD /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    line, headers, _ = raw.response(head=True)
    assert headers[b"content-length"] == str(len(FAST_BODY)).encode()
    assert b"date" in headers
    assert app.fast_calls == before + 1
    # Had a body been written, it would now be read as the next status line.
    raw.send(get("/hello"))
    line, _, body = raw.response()
    assert (line, body) == (b"HTTP/1.1 200 OK", b"hello")


def test_streamed_response_is_chunked(srv: ServerThread) -> None:
    response = httpx.get(f"{srv.url}/stream")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == "one,two,three"


def test_streamed_response_to_http10_is_close_delimited(raw: Raw) -> None:
    raw.send(get("/stream", "Connection: keep-alive\r\n", version="1.0"))
    _, headers, body = raw.response()
    assert headers[b"connection"] == b"close"
    assert body == b"one,two,three"


def test_app_exception_is_a_500(srv: ServerThread) -> None:
    response = httpx.get(f"{srv.url}/boom")
    assert response.status_code == 500
    assert httpx.get(f"{srv.url}/hello").status_code == 200


def test_short_response_body_closes_the_connection(raw: Raw) -> None:
    raw.send(get("/short"))
    line = raw.status_line()
    assert line == b"HTTP/1.1 200 OK\r\n"
    assert raw.file.read().endswith(b"\r\n\r\nabc")  # then EOF: the client sees it short


def test_ignored_upgrade_keeps_the_connection(raw: Raw) -> None:
    raw.send(get("/hello", "Connection: Upgrade\r\nUpgrade: h2c\r\n") + get("/client"))
    assert raw.response()[2] == b"hello"
    assert raw.response()[0] == b"HTTP/1.1 200 OK"


# Pipelining and the fast path.


def test_fast_path_answers_without_asgi(srv: ServerThread, app: SampleApp) -> None:
    before_fast, before_asgi = app.fast_calls, len(app.asgi_calls)
    with httpx.Client(base_url=srv.url) as client:
        for _ in range(3):
            response = client.get("/fast?x=1")
            assert response.content == FAST_BODY
            assert "x-via" not in response.headers
            assert "date" in response.headers
    assert app.fast_calls == before_fast + 3
    assert len(app.asgi_calls) == before_asgi


def test_pipelined_requests_are_answered_in_order(raw: Raw, app: SampleApp) -> None:
    before = app.fast_calls
    raw.send(
        get("/fast")
        + get("/hello")
        + b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        + get("/fast")
        + get("/client")
    )
    first, second, third, fourth, fifth = (raw.response() for _ in range(5))
    assert first[2] == FAST_BODY and b"x-via" not in first[1]
    assert second[2] == b"hello"
    assert third[2] == b"abc"
    # Requests were pending ahead of it: the second /fast waited its turn, then took the
    # fast path, in order.
    assert fourth[2] == FAST_BODY and b"x-via" not in fourth[1]
    assert fifth[2].isdigit()
    assert app.fast_calls == before + 2


def test_fast_path_waits_behind_a_slow_request(raw: Raw, app: SampleApp) -> None:
    before = app.fast_calls
    raw.send(get("/slow?seconds=0.3") + get("/fast"))
    time.sleep(0.1)
    assert app.fast_calls == before  # not answered ahead of the slow request
    assert raw.response()[2] == b"slow"
    _, headers, body = raw.response()
    assert body == FAST_BODY and b"x-via" not in headers
    assert app.fast_calls == before + 1


def test_deep_pipeline_pauses_and_resumes(raw: Raw) -> None:
    # More requests than the pipeline holds before reading pauses, fast and ASGI mixed.
    raw.send(b"".join(get("/fast") if i % 3 == 0 else get("/hello") for i in range(100)))
    for i in range(100):
        assert raw.response()[2] == (FAST_BODY if i % 3 == 0 else b"hello"), i


def test_pipelined_fast_requests_all_take_the_fast_path(raw: Raw, app: SampleApp) -> None:
    before = app.fast_calls
    raw.send(get("/fast") * 200)
    for _ in range(200):
        assert raw.response()[2] == FAST_BODY
    assert app.fast_calls == before + 200


# Request bodies.


def test_chunked_request_body(raw: Raw, srv: ServerThread) -> None:
    raw.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert raw.response()[2] == b"hello world"

    def parts() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 1000

    response = httpx.post(f"{srv.url}/echo", content=parts())
    assert response.content == b"a" * 1000 + b"b" * 1000


def test_expect_100_continue(raw: Raw) -> None:
    raw.send(b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert raw.status_line() == b"HTTP/1.1 100 Continue\r\n"
    assert raw.status_line() == b"\r\n"
    raw.send(b"hello")
    line, _, body = raw.response()
    assert (line, body) == (b"HTTP/1.1 200 OK", b"hello")


def test_expect_100_not_sent_when_the_app_answers_without_reading(raw: Raw) -> None:
    raw.send(b"PUT /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    line, headers, _ = raw.response()
    assert line == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"  # the body never came: the connection ends
    assert raw.closed()


def test_large_body_streams_with_backpressure(srv: ServerThread, app: SampleApp) -> None:
    size = 30 * MIB
    block = bytes(range(256)) * 4096  # 1 MiB

    def body() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    expected = hashlib.sha256(block * (size // len(block))).hexdigest()
    app.chunk_sizes.clear()
    response = httpx.put(f"{srv.url}/count?slow=1", content=body(), timeout=60)
    assert response.text == f"{size} {expected}"
    # The app saw the body in bounded pieces, not as one buffered blob.
    assert len(app.chunk_sizes) > 30
    assert max(app.chunk_sizes) <= 2 * MIB


def test_large_response_streams(srv: ServerThread) -> None:
    total = 0
    with httpx.stream("GET", f"{srv.url}/big?mib=30", timeout=60) as response:
        for chunk in response.iter_bytes():
            total += len(chunk)
    assert total == 30 * MIB


def test_client_disconnect_mid_body_reaches_the_app(srv: ServerThread, app: SampleApp) -> None:
    app.entered.clear()
    app.disconnected.clear()
    client = Raw(srv.port)
    client.send(b"PUT /wait-disconnect HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
    client.send(b"x" * 100)
    assert app.entered.wait(5)
    client.close()
    assert app.disconnected.wait(5)


# Errors and limits.


def test_malformed_request_is_a_400_and_closes(raw: Raw) -> None:
    raw.send(b"GET / HTTP/1.1\r\nHost t\r\n\r\n")
    line, headers, _ = raw.response()
    assert line == b"HTTP/1.1 400 Bad Request"
    assert headers[b"connection"] == b"close"
    assert raw.closed()


def test_garbage_is_a_400(raw: Raw) -> None:
    raw.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
    assert raw.response()[0] == b"HTTP/1.1 400 Bad Request"


def test_oversized_headers_are_a_431(raw: Raw) -> None:
    raw.send(get("/hello", "X-Big: " + "a" * 70_000 + "\r\n"))
    line, _, _ = raw.response()
    assert line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert raw.closed()


def test_oversized_header_trickled_in_is_a_431(raw: Raw) -> None:
    # One endless header value, sent in pieces: refused before the request ends.
    raw.send(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ")
    for _ in range(10):
        raw.send(b"a" * 16_000)
        time.sleep(0.01)
    line, _, _ = raw.response()
    assert line == b"HTTP/1.1 431 Request Header Fields Too Large"


def test_too_many_headers_are_a_431(raw: Raw) -> None:
    raw.send(get("/hello", "".join(f"X-{i}: v\r\n" for i in range(200))))
    assert raw.response()[0] == b"HTTP/1.1 431 Request Header Fields Too Large"


def test_error_waits_for_pending_responses(raw: Raw) -> None:
    raw.send(get("/slow?seconds=0.2") + b"BROKEN\r\n\r\n")
    assert raw.response()[2] == b"slow"
    assert raw.response()[0] == b"HTTP/1.1 400 Bad Request"


# The reason-phrase extension.


def test_custom_reason_phrase_on_the_status_line(raw: Raw) -> None:
    raw.send(get("/reason"))
    line, headers, body = raw.response()
    assert line == b"HTTP/1.1 404 Namespace ?caf\xe9? not found  Injected: yes"
    assert b"injected" not in headers
    assert body == b"{}"
    raw.send(get("/reason?text=" + "x" * 3000))
    line, _, _ = raw.response()
    assert line == b"HTTP/1.1 404 " + b"x" * 1024


def test_standard_reason_phrase_otherwise(srv: ServerThread) -> None:
    response = httpx.get(f"{srv.url}/nowhere")
    assert response.reason_phrase == "Not Found"
    custom = httpx.get(f"{srv.url}/reason?text=Key%20not%20found")
    assert custom.reason_phrase == "Key not found"


# Timeouts.


def test_idle_keep_alive_connection_is_closed() -> None:
    config = HttpConfig(keep_alive_timeout=0.3, header_timeout=5)
    with ServerThread(SampleApp(), config=config) as server:
        client = Raw(server.port, timeout=5)
        try:
            client.send(get("/hello"))
            assert client.response()[2] == b"hello"
            started = time.monotonic()
            assert client.closed()
            assert time.monotonic() - started < 3
        finally:
            client.close()


def test_silent_connection_gets_the_header_timeout() -> None:
    config = HttpConfig(header_timeout=0.3)
    with ServerThread(SampleApp(), config=config) as server:
        client = Raw(server.port, timeout=5)
        try:
            started = time.monotonic()
            assert client.closed()
            assert time.monotonic() - started < 3
        finally:
            client.close()


def test_slow_headers_time_out_with_408() -> None:
    config = HttpConfig(header_timeout=0.3)
    with ServerThread(SampleApp(), config=config) as server:
        client = Raw(server.port, timeout=5)
        try:
            client.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
            assert client.response()[0] == b"HTTP/1.1 408 Request Timeout"
            assert client.closed()
        finally:
            client.close()


# Lifespan and shutdown.


def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    app = SampleApp()
    server = ServerThread(app)
    with server:
        port = server.port
        results: list[httpx.Response] = []
        client = threading.Thread(
            target=lambda: results.append(httpx.get(f"{server.url}/slow?seconds=1", timeout=10))
        )
        idle = Raw(server.port)
        idle.send(get("/hello"))
        assert idle.response()[2] == b"hello"
        client.start()
        assert app.entered.wait(5)
        started = time.monotonic()
        server.request_shutdown()
        # An idle keep-alive connection is closed at once; the in-flight request finishes.
        assert idle.closed()
        idle.close()
        client.join(10)
        assert results and results[0].status_code == 200 and results[0].text == "slow"
        assert results[0].headers["connection"] == "close"
        server.thread.join(10)
        assert not server.thread.is_alive()
        assert time.monotonic() - started >= 0.5
    assert app.lifespan == ["startup", "shutdown"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_shutdown_timeout_drops_stuck_requests() -> None:
    app = SampleApp()
    server = ServerThread(app, shutdown_timeout=0.3)
    with server:
        client = Raw(server.port)
        client.send(get("/slow?seconds=30"))
        assert app.entered.wait(5)
        started = time.monotonic()
        server.request_shutdown()
        server.thread.join(10)
        assert time.monotonic() - started < 5
        client.close()
    assert app.lifespan == ["startup", "shutdown"]


def test_app_without_lifespan_support() -> None:
    async def plain(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await respond(send, 200, b"plain")

    with ServerThread(plain) as server:
        assert httpx.get(f"{server.url}/").text == "plain"


# TLS.


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = SampleApp()
    with ServerThread(app, tls=context) as server:
        verify = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{server.port}", verify=verify) as client:
            response = client.put("/echo", content=b"secret")
            assert response.content == b"secret"
            assert response.headers["x-scheme"] == "https"
            assert client.get("/fast").content == FAST_BODY
        assert app.fast_calls == 1


# Output flow control, the send timeout and the connection limit.


def _on_loop(server: ServerThread, fn: Callable[[], T]) -> T:
    """Run ``fn()`` on the server's loop and return its result."""
    assert server.loop is not None
    done = threading.Event()
    result: list[T] = []

    def call() -> None:
        result.append(fn())
        done.set()

    server.loop.call_soon_threadsafe(call)
    assert done.wait(5)
    return result[0]


def _unsent(server: ServerThread) -> int:
    """Bytes every connection of the server holds unsent."""
    state = server.server._state
    assert state is not None

    def unsent() -> int:
        transports = [c._transport for c in state.connections]
        return sum(t.get_write_buffer_size() for t in transports if t is not None)

    return _on_loop(server, unsent)


def _slow_reader(port: int) -> Raw:
    client = Raw.__new__(Raw)
    client.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    client.sock.settimeout(10)
    client.sock.connect(("127.0.0.1", port))
    client.file = client.sock.makefile("rb")
    return client


def test_fast_responses_wait_while_output_backs_up() -> None:
    app = SampleApp()
    with ServerThread(app) as server:
        client = _slow_reader(server.port)
        try:
            client.send(get("/fast-big") * 16 + get("/hello"))
            time.sleep(0.5)
            # The first answer filled the buffer; the others wait unrendered, in order.
            assert app.fast_big_calls < 4
            assert _unsent(server) <= len(BIG_BODY) + 64 * 1024
            for _ in range(16):
                assert client.response()[2] == BIG_BODY
            assert client.response()[2] == b"hello"
            assert app.fast_big_calls == 16  # each one still took the fast path
        finally:
            client.close()


def test_asgi_responses_wait_while_output_backs_up() -> None:
    app = SampleApp()
    with ServerThread(app) as server:
        client = _slow_reader(server.port)
        try:
            client.send(get("/big-once") * 8 + get("/fast"))
            time.sleep(0.5)
            assert app.asgi_calls.count("/big-once") < 3
            assert _unsent(server) <= len(BIG_BODY) + 64 * 1024
            for _ in range(8):
                assert client.response()[2] == BIG_BODY
            assert client.response()[2] == FAST_BODY
        finally:
            client.close()


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout() -> None:
    app = SampleApp()
    with ServerThread(app, config=HttpConfig(send_timeout=0.5)) as server:
        client = _slow_reader(server.port)
        reader = Raw(server.port)  # reads everything it is sent: never dropped
        try:
            client.send(get("/fast-big"))
            reader.send(get("/big?mib=8"))
            assert len(reader.response()[2]) == 8 * MIB
            state = server.server._state
            assert state is not None
            deadline = time.monotonic() + 10
            while _on_loop(server, lambda: len(state.connections)) > 1:
                assert time.monotonic() < deadline, "the stalled connection was not dropped"
                time.sleep(0.1)
            reader.send(get("/hello"))
            assert reader.response()[2] == b"hello"
        finally:
            client.close()
            reader.close()


def test_connections_past_the_limit_are_refused_with_a_503() -> None:
    with ServerThread(SampleApp(), config=HttpConfig(max_connections=2)) as server:
        held = [Raw(server.port), Raw(server.port)]
        try:
            time.sleep(0.2)
            extra = Raw(server.port)
            try:
                line, headers, body = extra.response()  # sent without waiting for a request
                assert line == b"HTTP/1.1 503 Service Unavailable"
                assert headers[b"connection"] == b"close"
                assert headers[b"content-type"] == b"application/json"
                error = json.loads(body)["errors"][0]
                assert error["code"] == 10500 and "(--max-connections)" in error["message"]
                assert extra.closed()
            finally:
                extra.close()
            held[0].send(get("/hello"))
            assert held[0].response()[2] == b"hello"
            held.pop().close()
            deadline = time.monotonic() + 5
            while True:
                fresh = Raw(server.port)
                fresh.send(get("/hello"))
                line = fresh.response()[0]
                fresh.close()
                if line == b"HTTP/1.1 200 OK":
                    break
                assert time.monotonic() < deadline, "the freed place was not given out"
                time.sleep(0.1)
        finally:
            for client in held:
                client.close()


def test_an_answer_before_the_body_ends_the_connection(raw: Raw) -> None:
    # The app answers without reading an endless body: the server does not read it forever.
    raw.send(b"PUT /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"v" * 0x10000 + b"\r\n"
    started = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - started < 15:
            raw.sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.monotonic() - started < 15, "the server kept reading the body"
    line, headers, _ = raw.response()
    assert line == b"HTTP/1.1 200 OK"
    assert headers[b"connection"] == b"close"


def test_server_errors_are_cloudflare_envelopes(raw: Raw) -> None:
    raw.send(b"GET / HTTP/1.1\r\nHost t\r\n\r\n")
    _, headers, body = raw.response()
    assert headers[b"content-type"] == b"application/json"
    envelope = json.loads(body)
    assert envelope["success"] is False
    assert envelope["errors"][0]["message"].startswith("Bad Request")


# Header bytes: DEL (JSON.stringify leaves it unescaped) and obs-text.


def test_del_and_obs_text_in_header_values_reach_the_app(raw: Raw) -> None:
    values = [b"a\x7fb", b"\x7f", b"caf\xc3\xa9 \x7f\xe2\x98\x83", b"\xff latin-1", b"\x7f\x7f\tx"]
    for value in values:
        raw.send(b"GET /header HTTP/1.1\r\nHost: t\r\nX-Meta: " + value + b"\r\n\r\n")
        assert raw.response()[2] == value.strip(), value


def test_del_in_a_head_pipelined_behind_a_body(raw: Raw) -> None:
    body = b"x\x7fy" * 1000  # DEL in bodies is data, fed in one piece
    raw.send(
        b"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
        + b"GET /header HTTP/1.1\r\nHost: t\r\nX-Meta: 1\x7f\r\n\r\n"
        + b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"3\r\n\x7f\x7f\x7f\r\n0\r\n\r\n"
    )
    assert raw.response()[2] == body
    assert raw.response()[2] == b"1\x7f"
    assert raw.response()[2] == b"\x7f\x7f\x7f"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /header HTTP/1.1\r\nHost: t\r\nX-Meta: a\x00\x7f\r\n\r\n",
        b"GET /header HTTP/1.1\r\nHost: t\r\nX-Meta: a\x7f\rb\r\n\r\n",
        b"GET /header HTTP/1.1\r\nHost: t\r\nX-Meta: \x7f\nX-Other: b\r\n\r\n",
        b"GET /head\x7fer HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /header HTTP/1.1\r\nHost: t\r\nX-Me\x7fta: a\r\n\r\n",
        # A real 0xFF beside a DEL cannot be told from the DEL's stand-in: refused.
        b"GET /header HTTP/1.1\r\nHost: t\r\nX-Meta: \xff\x7f\r\n\r\n",
    ],
)
def test_del_does_not_open_other_bytes(raw: Raw, head: bytes) -> None:
    raw.send(head)
    assert raw.response()[0] == b"HTTP/1.1 400 Bad Request"
    assert raw.closed()
