"""The access log: one line per answered request, on stderr, as text or JSON.

A line names the time (UTC, ISO 8601), the client, the method, the request target as
received (path and query: pullkv's APIs carry no secret in either; key names are not secret),
the status, the body bytes sent, the duration, the ``Cache-Status`` (or ``CF-Cache-Status``)
sent and the id of the token that authenticated the request. Never the token itself, never a
value.

The hot path answers tens of thousands of requests a second, so recording is cheap: a line is
formatted into a list and the list is written to stderr in one write per event-loop turn.
"""

from __future__ import annotations

import asyncio
import sys
import time
from json.encoder import encode_basestring_ascii
from typing import Literal, TextIO

from pullkv.limits import (
    ACCESS_LOG_FIELD_MEMO,
    ACCESS_LOG_FIELD_MEMO_LENGTH,
    ACCESS_LOG_FLUSH_LINES,
    ACCESS_LOG_TARGET_CHARS,
)

AccessLogFormat = Literal["off", "text", "json"]
FORMATS: tuple[AccessLogFormat, ...] = ("off", "text", "json")
# The ASGI scope key under which the app puts the id of the token behind a request.
TOKEN_ID_KEY = "pullkv.token_id"


_quoted = encode_basestring_ascii  # a JSON string literal, in C


def _field(text: str) -> str:
    """A text-format value: as is when plain (printable ASCII with no space, quote or
    backslash), else a JSON string literal."""
    if (
        text
        and text.isascii()
        and text.isprintable()
        and " " not in text
        and '"' not in text
        and "\\" not in text
    ):
        return text
    return _quoted(text)


def _text(raw: bytes | str) -> str:
    """A raw value (bytes: as received) as text, bounded in length."""
    if isinstance(raw, bytes):
        text = raw[:ACCESS_LOG_TARGET_CHARS].decode("ascii", "backslashreplace")
    else:
        text = raw[:ACCESS_LOG_TARGET_CHARS]
    return text + "..." if len(raw) > ACCESS_LOG_TARGET_CHARS else text


def text_value(raw: bytes | str | None) -> str:
    """A value as a text-format field: ``-`` for none."""
    return "-" if not raw else _field(_text(raw))


def json_value(raw: bytes | str | None) -> str:
    """A value as a JSON literal: null for none."""
    return "null" if raw is None else _quoted(_text(raw))


# "T12:42:36" -> ".123Z": the milliseconds part of a timestamp, by millisecond.
_MILLISECONDS = [f".{ms:03d}Z" for ms in range(1000)]


class Timestamps:
    """ISO 8601 UTC times to the millisecond; the seconds part is rendered once a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, when: float) -> str:
        """``when`` (seconds since the epoch) as ``2026-11-30T12:42:36.123Z``."""
        second = int(when)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._prefix + _MILLISECONDS[int((when - second) * 1000)]


def text_line(
    timestamp: str,
    client: str,
    method: str,
    target: str,
    status: int,
    size: int,
    duration: float,
    cache_status: str,
    token_id: str,
) -> str:
    """A text line from fields already rendered by ``text_value``."""
    return (
        f"{timestamp} access client={client} method={method} target={target} status={status}"
        f" bytes={size} duration_ms={duration * 1000:.3f} cache_status={cache_status}"
        f" token_id={token_id}"
    )


def json_line(
    timestamp: str,
    client: str,
    method: str,
    target: str,
    status: int,
    size: int,
    duration: float,
    cache_status: str,
    token_id: str,
) -> str:
    """A JSON object from fields already rendered by ``json_value``."""
    # Spelled out rather than json.dumps of a dict: a third of the cost.
    return (
        f'{{"time":"{timestamp}","client":{client},"method":{method},"target":{target}'
        f',"status":{status},"bytes":{size},"duration_ms":{duration * 1000:.3f}'
        f',"cache_status":{cache_status},"token_id":{token_id}}}'
    )


def format_text(
    timestamp: str,
    client: str | None,
    method: bytes,
    target: bytes,
    status: int,
    size: int,
    duration: float,
    cache_status: bytes | None,
    token_id: str | None,
) -> str:
    """One text line (key=value, values quoted as JSON strings where they need it, ``-``
    for none), no newline."""
    value = text_value
    return text_line(
        timestamp,
        value(client),
        value(method),
        value(target),
        status,
        size,
        duration,
        value(cache_status),
        value(token_id),
    )


def format_json(
    timestamp: str,
    client: str | None,
    method: bytes,
    target: bytes,
    status: int,
    size: int,
    duration: float,
    cache_status: bytes | None,
    token_id: str | None,
) -> str:
    """One JSON object (null for none), no newline."""
    value = json_value
    return json_line(
        timestamp,
        value(client),
        value(method),
        value(target),
        status,
        size,
        duration,
        value(cache_status),
        value(token_id),
    )


def cache_status_of(headers: object) -> bytes | None:
    """The ``Cache-Status`` or ``CF-Cache-Status`` value among ASGI response headers."""
    if not isinstance(headers, list | tuple):
        return None
    for item in headers:
        name = item[0].lower()
        if name == b"cache-status" or name == b"cf-cache-status":
            return bytes(item[1])
    return None


def cache_status_in(response: bytes, head_end: int) -> bytes | None:
    """The ``Cache-Status`` or ``CF-Cache-Status`` value in a pre-rendered response head
    (both spelled in lower case by ``build_response``)."""
    at = response.find(b"cache-status: ", 0, head_end)
    if at < 0:
        return None
    start = at + 14
    return response[start : response.find(b"\r\n", start)]


class AccessLog:
    """Formats lines and writes them to stderr, once per loop turn."""

    __slots__ = (
        "_fields",
        "_flush_scheduled",
        "_line",
        "_lines",
        "_loop",
        "_times",
        "_value",
        "stream",
    )

    def __init__(
        self,
        style: AccessLogFormat,
        loop: asyncio.AbstractEventLoop,
        stream: TextIO | None = None,
    ) -> None:
        if style == "off":
            raise ValueError("an access log that is off is None, not an AccessLog")
        json_style = style == "json"
        self._line = json_line if json_style else text_line
        self._value = json_value if json_style else text_value
        # Rendered fields by raw value: clients repeat their targets, tokens, addresses and
        # cache statuses, and rendering one costs more than looking it up.
        self._fields: dict[bytes | str | None, str] = {}
        self._loop = loop
        # None: whatever sys.stderr is when the lines are written (tests swap it).
        self.stream = stream
        self._lines: list[str] = []
        self._flush_scheduled = False
        self._times = Timestamps()

    def _render(self, raw: bytes | str | None) -> str:
        if raw is not None and len(raw) > ACCESS_LOG_FIELD_MEMO_LENGTH:
            return self._value(raw)  # kept out of the memo, which stays a few MB at most
        fields = self._fields
        if len(fields) >= ACCESS_LOG_FIELD_MEMO:
            fields.clear()
        rendered = fields[raw] = self._value(raw)
        return rendered

    def record(
        self,
        client: tuple[str, int] | None,
        method: bytes,
        target: bytes,
        status: int,
        size: int,
        duration: float,
        cache_status: bytes | None,
        token_id: str | None,
    ) -> None:
        """Buffer one request's line; it is written at the end of this loop turn."""
        fields = self._fields
        render = self._render
        address = None if client is None else client[0]
        line = self._line(
            self._times.format(time.time()),
            fields.get(address) or render(address),
            fields.get(method) or render(method),
            fields.get(target) or render(target),
            status,
            size,
            duration,
            fields.get(cache_status) or render(cache_status),
            fields.get(token_id) or render(token_id),
        )
        lines = self._lines
        lines.append(line)
        if len(lines) >= ACCESS_LOG_FLUSH_LINES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the buffered lines in one write."""
        self._flush_scheduled = False
        lines = self._lines
        if not lines:
            return
        lines.append("")
        text = "\n".join(lines)
        lines.clear()
        stream = self.stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: serving goes on without the log
