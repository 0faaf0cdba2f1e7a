"""Watching a namespace's changes from an application: ``Namespace.watch(prefix=...)``.

The server side is the namespace's change feed (``GET …/namespaces/{id}/changes``, a pullkv
extension beside the Workers KV API; ``pullkv.feed.stream``). A watch yields
``WatchEvent(key, version, deleted)`` in commit order. It remembers its position, and after
a dropped connection, a silence or a lost message it subscribes again from there, so no
change is lost or repeated. If the server cannot resume from the position (the watch fell
further behind than the server keeps), ``next()`` raises ``WatchReset``: changes may have
been missed, so re-read what you hold; iterating the same watch again continues from the
reset's position.

``WatchProtocol`` is the I/O-free part both clients share; ``Watch`` (sync) and
``AsyncWatch`` drive it over httpx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import NamedTuple

import httpx

from pullkv import errors
from pullkv.wire import FeedBeat, FeedChange, FeedReset, decode_feed_line

# A heartbeat comes at least every second: silence this long means the connection is dead.
SILENCE = 3.0
RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0


class WatchEvent(NamedTuple):
    """A committed change: the key (None when the whole namespace was deleted), its new
    version (the ETag's number) and whether it was a delete."""

    key: str | None
    version: int
    deleted: bool


class WatchReset(Exception):
    """The server could not resume the watch where it was: changes may have been missed.

    Re-read what you hold; the watch continues from ``position`` if iterated again."""

    def __init__(self, position: int, feed: str) -> None:
        super().__init__(f"the watch was reset to position {position}: re-read what you hold")
        self.position = position
        self.feed = feed


class _Resubscribe(Exception):
    """A message did not start at the position held: subscribe again from it."""


class WatchProtocol:
    """What a watch knows (its position in the feed) and how a line moves it."""

    def __init__(
        self,
        since: int | None = None,
        feed: str | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.position = since
        self.feed = feed
        self.on_reset = on_reset
        self.backoff = RECONNECT_MIN

    def request(
        self, http: httpx.Client | httpx.AsyncClient, path: str, prefix: str
    ) -> httpx.Request:
        """A subscription from the position held (no read timeout beyond the silence that
        means the connection is dead)."""
        params = {"prefix": prefix} if prefix else {}
        if self.position is not None:
            params["since"] = str(self.position)
            params["feed"] = self.feed or ""
        timeout = httpx.Timeout(http.timeout.connect, read=SILENCE)
        return http.build_request("GET", path, params=params, timeout=timeout)

    def refused(self, response: httpx.Response) -> Exception:
        """What an unsuccessful answer (already read) means: a refusal to raise, or a
        transport error to retry after the backoff (a 5xx)."""
        if response.status_code < 500:
            return errors.error_from_response(response)
        return httpx.TransportError(f"the server answered {response.status_code}")

    def wait(self) -> float:
        """Seconds to wait before subscribing again after a failure (doubling, capped)."""
        wait, self.backoff = self.backoff, min(self.backoff * 2, RECONNECT_MAX)
        return wait

    def receive(self, line: str) -> WatchEvent | None:
        """One line of the stream: the event it carries, if any."""
        if not line.strip():
            return None
        message = decode_feed_line(line)
        if isinstance(message, FeedReset):
            first = self.position is None
            self.position, self.feed = message.high, message.feed
            if self.on_reset is not None:
                self.on_reset()  # every reset, the first included: a cache starts over
                return None
            if first:
                return None  # a watch from now starts with one
            raise WatchReset(message.high, message.feed)
        if message.start != self.position:
            raise _Resubscribe
        if isinstance(message, FeedBeat):
            if message.feed != self.feed:
                raise _Resubscribe
            self.position = message.high
            return None
        assert isinstance(message, FeedChange)
        self.position = message.record.seq
        record = message.record
        return WatchEvent(record.key, record.version, record.deleted)


class Watch:
    """A namespace's changes, as a blocking iterator (see the module docstring)."""

    def __init__(
        self,
        http: httpx.Client,
        path: str,
        prefix: str = "",
        since: int | None = None,
        feed: str | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self._http = http
        self._path = path
        self._prefix = prefix
        self.protocol = WatchProtocol(since, feed, on_reset)
        self._response: httpx.Response | None = None
        self._lines: object = None

    @property
    def position(self) -> int | None:
        """The feed position of the last change or heartbeat received."""
        return self.protocol.position

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent:
        while True:
            try:
                line = self._next_line()
                event = self.protocol.receive(line)
            except _Resubscribe:
                self._disconnect()
                continue
            except (httpx.TransportError, StopIteration):
                self._disconnect()
                time.sleep(self.protocol.wait())
                continue
            if event is not None:
                return event

    def _next_line(self) -> str:
        if self._lines is None:
            self._connect()
        assert self._lines is not None
        return next(self._lines)  # type: ignore[call-overload,no-any-return]

    def _connect(self) -> None:
        request = self.protocol.request(self._http, self._path, self._prefix)
        response = self._http.send(request, stream=True)
        if not response.is_success:
            response.read()
            response.close()
            raise self.protocol.refused(response)
        self._response = response
        self._lines = response.iter_lines()
        self.protocol.backoff = RECONNECT_MIN

    def _disconnect(self) -> None:
        if self._response is not None:
            self._response.close()
        self._response = None
        self._lines = None

    def close(self) -> None:
        """End the subscription."""
        self._disconnect()


class AsyncWatch:
    """A namespace's changes, as an async iterator (see the module docstring)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        path: str,
        prefix: str = "",
        since: int | None = None,
        feed: str | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self._http = http
        self._path = path
        self._prefix = prefix
        self.protocol = WatchProtocol(since, feed, on_reset)
        self._response: httpx.Response | None = None
        self._lines: object = None

    @property
    def position(self) -> int | None:
        """The feed position of the last change or heartbeat received."""
        return self.protocol.position

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            try:
                line = await self._next_line()
                event = self.protocol.receive(line)
            except _Resubscribe:
                await self._disconnect()
                continue
            except (httpx.TransportError, StopAsyncIteration):
                await self._disconnect()
                await asyncio.sleep(self.protocol.wait())
                continue
            if event is not None:
                return event

    async def _next_line(self) -> str:
        if self._lines is None:
            await self._connect()
        return await anext(self._lines)  # type: ignore[call-overload,no-any-return]

    async def _connect(self) -> None:
        request = self.protocol.request(self._http, self._path, self._prefix)
        response = await self._http.send(request, stream=True)
        if not response.is_success:
            await response.aread()
            await response.aclose()
            raise self.protocol.refused(response)
        self._response = response
        self._lines = response.aiter_lines()
        self.protocol.backoff = RECONNECT_MIN

    async def _disconnect(self) -> None:
        if self._response is not None:
            await self._response.aclose()
        self._response = None
        self._lines = None

    async def aclose(self) -> None:
        """End the subscription."""
        await self._disconnect()
