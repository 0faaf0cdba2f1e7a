"""A tiny ASGI layer: requests, responses and bounded body reading.

pullkv speaks raw ASGI rather than through a framework because its routes need the raw
(still percent-encoded) path, and because the hot read path must add almost nothing to the
HTTP server's own cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from pullkv import errors
from pullkv.validate import parse_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPE = b"application/json"
OCTET_TYPE = b"application/octet-stream"


class Request:
    """One HTTP request: method, raw path, query, headers and a body read on demand."""

    __slots__ = ("_query", "headers", "method", "raw_path", "receive", "route", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        raw = scope.get("raw_path")
        self.raw_path: str = raw.decode("latin-1") if raw else scope["path"]
        if "?" in self.raw_path:  # some servers leave the query on raw_path
            self.raw_path = self.raw_path.split("?", 1)[0]
        self.headers: dict[str, str] = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }
        self._query: dict[str, list[str]] | None = None
        self.route = "other"  # a low-cardinality name for metrics, set by the router

    def header(self, name: str) -> str | None:
        """A request header by lower-case name."""
        return self.headers.get(name)

    def query(self, name: str) -> str | None:
        """A query parameter; a parameter given twice is a 400."""
        if self._query is None:
            text = self.scope.get("query_string", b"").decode("latin-1")
            self._query = parse_qs(text, keep_blank_values=True, encoding="utf-8", errors="replace")
        values = self._query.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise errors.bad_request(f"Query parameter {name!r} was given more than once")
        return values[0]

    def content_length(self) -> int | None:
        """The declared body length, if any."""
        raw = self.headers.get("content-length")
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise errors.bad_request(f"Invalid Content-Length {raw!r}")
        return int(raw)

    async def body(self, limit: int, too_large: Callable[[int], errors.KVError]) -> bytes:
        """The whole body, refused with ``too_large(length)`` past ``limit`` bytes.

        A declared length over the limit is refused before reading. A chunked body is counted
        as it arrives and refused as soon as it passes the limit (the error names the length
        received so far): the rest is never read, so an endless body costs nothing more
        (the server answers and closes the connection).
        """
        declared = self.content_length()
        if declared is not None and declared > limit:
            raise too_large(declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise errors.bad_request("client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def json(self, limit: int) -> Any:
        """The body parsed as JSON; 400 naming the problem if it is not."""
        raw = await self.body(limit, lambda _: errors.request_too_large(limit))
        if not raw.strip():
            raise errors.bad_request("Request body is empty; expected JSON")
        return parse_json(raw, "Request body")


@dataclass(slots=True)
class Response:
    """A complete response."""

    status: int
    body: bytes
    content_type: bytes = JSON_TYPE
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reason: str | None = None  # a custom reason phrase (pullkv's server honours it)

    async def send(self, send: Send) -> None:
        """Write the response to the ASGI connection."""
        headers = [
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
            *self.headers,
        ]
        start: dict[str, Any] = {
            "type": "http.response.start",
            "status": self.status,
            "headers": headers,
        }
        if self.reason is not None:
            start["reason"] = self.reason
        await send(start)
        await send({"type": "http.response.body", "body": self.body})


class StreamingResponse(Response):
    """A response whose body is produced as it goes (chunked), until the producer ends or
    the client leaves: the producer is stopped as soon as ``receive`` reports the client
    gone, so an abandoned stream holds nothing."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        receive: Receive,
        content_type: bytes = OCTET_TYPE,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(200, b"", content_type, headers or [])
        self.chunks = chunks
        self.receive = receive

    async def send(self, send: Send) -> None:
        """Write the head, then each chunk as the producer yields it."""
        headers = [(b"content-type", self.content_type), *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        gone = asyncio.ensure_future(self._client_gone())
        try:
            producer = aiter(self.chunks)
            while True:
                chunk = asyncio.ensure_future(anext(producer))
                await asyncio.wait({chunk, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not chunk.done():
                    chunk.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await chunk
                    return
                try:
                    body = chunk.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            closing = getattr(self.chunks, "aclose", None)
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing()

    async def _client_gone(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass


def dump_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def envelope(result: Any, result_info: dict[str, Any] | None = None, status: int = 200) -> Response:
    """A Cloudflare v4 success envelope."""
    payload: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        payload["result_info"] = result_info
    return Response(status, dump_json(payload))


def error_response(error: errors.KVError) -> Response:
    """A Cloudflare v4 failure envelope with the error's status.

    Client errors that a retry cannot fix say so (``x-should-retry: false``), since the
    Cloudflare SDKs otherwise retry 409s; a 429 says when to come back.
    """
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(error, errors.PreconditionFailed) and error.current_version is not None:
        headers.append((b"etag", b'"%d"' % error.current_version))
    if error.status == 429:
        headers.append((b"retry-after", b"1"))
    elif 400 <= error.status < 500 and error.status != 408:
        headers.append((b"x-should-retry", b"false"))
    return Response(error.status, dump_json(error.envelope()), headers=headers)
