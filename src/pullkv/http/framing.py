"""HTTP/1.1 wire format: status lines, reason phrases, response heads and the date header.

Pure functions shared by the server and by apps that pre-render hot responses.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus

Headers = list[tuple[bytes, bytes]]

MAX_REASON_BYTES = 1024

_STATUS_LINES: dict[int, bytes] = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("latin-1"))
    for status in HTTPStatus
}

# reason-phrase = *( HTAB / SP / VCHAR / obs-text ): every other control byte becomes a space,
# so an error message can never end the status line early or smuggle a header.
_CONTROLS = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])
_REASON_TABLE = bytes.maketrans(_CONTROLS, b" " * len(_CONTROLS))

_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Response headers the server decides itself (framing, connection reuse, date).
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection", b"date"))


def sanitise_reason(reason: str) -> bytes:
    """A reason phrase safe for the status line: latin-1, no control bytes, at most 1 KiB."""
    raw = reason.encode("latin-1", "replace")[:MAX_REASON_BYTES]
    return raw.translate(_REASON_TABLE)


def status_line(status: int, reason: str | None = None) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; the standard phrase unless ``reason`` is given."""
    if reason is None:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
        if not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status {status!r}")
        return b"HTTP/1.1 %d \r\n" % status
    if not 100 <= status <= 999:
        raise ValueError(f"invalid HTTP status {status!r}")
    return b"HTTP/1.1 %d %s\r\n" % (status, sanitise_reason(reason))


def http_date(when: float) -> bytes:
    """An IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return formatdate(when, usegmt=True).encode("ascii")


def allows_body(status: int) -> bool:
    """Whether a response with this status may carry a body."""
    return status >= 200 and status != 204 and status != 304


def check_header(name: bytes, value: bytes) -> None:
    """Refuse a header that would break the message framing (RuntimeError)."""
    # Byte-level tests rather than regular expressions: this runs for every header of every
    # ASGI response. A name must be a non-empty token; a value must not end the line.
    if not name or name.translate(None, _TOKEN_BYTES) or b"\n" in value or b"\r" in value:
        raise RuntimeError(f"invalid response header {name!r}: {value!r}")
    if b"\0" in value:
        raise RuntimeError(f"invalid response header {name!r}: {value!r}")


class HeadInfo:
    """What the server needs to know about an app's response headers."""

    __slots__ = ("block", "chunked", "close", "content_length", "has_date")

    def __init__(self) -> None:
        self.block = b""
        self.content_length: int | None = None
        self.chunked = False
        self.close = False
        self.has_date = False


def scan_headers(headers: Iterable[tuple[bytes, bytes]]) -> HeadInfo:
    """Validate response headers and render all but the framing ones.

    ``connection`` and ``transfer-encoding`` are taken as wishes (close; frame the body in
    chunks) and rendered by the server from its own decision, so they appear exactly once.
    """
    info = HeadInfo()
    parts: list[bytes] = []
    for name, value in headers:
        check_header(name, value)
        lower = name.lower()
        if lower in _FRAMING:
            if lower == b"content-length":
                if not value.isdigit():
                    raise RuntimeError(f"invalid content-length {value!r}")
                info.content_length = int(value)
            elif lower == b"transfer-encoding":
                info.chunked = True
                continue
            elif lower == b"connection":
                info.close = b"close" in value.lower()
                continue
            else:
                info.has_date = True
        parts.append(b"%s: %s\r\n" % (name, value))
    info.block = b"".join(parts)
    return info


def build_response(status: int, body: bytes, headers: Headers, reason: str | None = None) -> bytes:
    """A complete serialized response (status line, headers, body) for the fast path.

    ``content-length`` is added unless given. Leave out ``date``: the server adds a current
    one as it writes the response, so a pre-rendered response can be reused for any time.
    """
    parts = [status_line(status, reason)]
    has_length = False
    for name, value in headers:
        check_header(name, value)
        lower = name.lower()
        if lower == b"content-length":
            has_length = True
        elif lower in (b"date", b"transfer-encoding", b"connection"):
            raise ValueError(f"{name!r} is set by the server, not by a pre-rendered response")
        parts.append(b"%s: %s\r\n" % (name, value))
    if not has_length and allows_body(status):
        parts.append(b"content-length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)
