"""Serving the change feed to one subscriber: ``GET /pullkv/v1/changes?since=SEQ&feed=ID``.

The answer is a stream of JSON lines (``wire.FeedChange``, ``FeedBeat``, ``FeedReset``) that
lasts until the subscriber leaves or the node shuts down. It starts with the changes after
``since``, then a heartbeat, then changes as they commit and a heartbeat at least every
``policy.heartbeat`` seconds while the source is live. A ``since`` the source cannot serve
(none given, older than what is retained, ahead of it, or of another ``feed``) gets a reset
first: the subscriber revalidates everything and continues from the reset's position.

Only changes of the subscriber's account are sent (of one namespace and key prefix for an
application's watch); positions still cover every record, so a heartbeat tells the
subscriber it missed nothing up to the high-water mark.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from pullkv import errors
from pullkv.feed.log import FeedSource
from pullkv.feed.policy import FeedPolicy
from pullkv.types import ChangeRecord
from pullkv.wire import FeedBeat, FeedChange, FeedMessage, FeedReset, encode_feed

# The stream's media type: newline-delimited JSON.
FEED_TYPE = b"application/x-ndjson"


async def feed_stream(
    source: FeedSource,
    account_id: str,
    since: int | None,
    feed_id: str | None,
    policy: FeedPolicy,
    clock: Callable[[], float] = time.monotonic,
    *,
    namespace_id: str | None = None,
    prefix: str = "",
) -> AsyncGenerator[bytes, None]:
    """The stream's chunks, each one or more JSON lines (see the module docstring); with
    ``namespace_id`` (and ``prefix``), only that namespace's changes (of keys with that
    prefix; a namespace's deletion always): an application's watch."""

    def wanted(record: ChangeRecord) -> bool:
        if record.account_id != account_id:
            return False
        if namespace_id is None:
            return True
        if record.namespace_id != namespace_id:
            return False
        return record.key is None or record.key.startswith(prefix)

    source.streams += 1
    try:
        async for chunk in _stream(source, wanted, since, feed_id, policy, clock):
            yield chunk
    finally:
        source.streams -= 1


async def _stream(
    source: FeedSource,
    wanted: Callable[[ChangeRecord], bool],
    since: int | None,
    feed_id: str | None,
    policy: FeedPolicy,
    clock: Callable[[], float],
) -> AsyncIterator[bytes]:
    await source.ready(policy.silence)  # a node that just started: hear its upstream first
    position = since  # what the subscriber has: the ``from`` of the next message
    scanned = since  # how far this stream has read the source
    if since is None or feed_id != source.feed_id or since > source.high:
        position = scanned = source.high
        yield encode_feed([FeedReset(position, source.feed_id)])
    assert position is not None and scanned is not None
    beat_due = 0.0  # a heartbeat at once, after the catch-up
    while not source.closed:
        messages: list[FeedMessage] = []
        records = await source.records_after(scanned, policy.page)
        if records is None:
            position = scanned = source.high
            messages.append(FeedReset(position, source.feed_id))
            records = []
        for record in records:
            if wanted(record):
                messages.append(FeedChange(position, record))
                position = record.seq
            scanned = record.seq
        caught_up = len(records) < policy.page
        now = clock()
        if caught_up and source.live and (now >= beat_due or position != scanned):
            # A beat also after changes were skipped (other accounts' records), so the
            # subscriber's position keeps up with the high-water mark.
            scanned = max(scanned, source.high) if not records else scanned
            messages.append(FeedBeat(position, scanned, source.feed_id))
            position = scanned
            beat_due = now + policy.heartbeat
        if messages:
            yield encode_feed(messages)
        if caught_up:
            await source.wait(scanned, max(0.0, beat_due - clock()) or policy.heartbeat)
            if source.high > scanned and policy.coalesce:
                await asyncio.sleep(policy.coalesce)


async def while_allowed(
    chunks: AsyncIterator[bytes],
    check: Callable[[], Awaitable[object]],
    every: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncGenerator[bytes, None]:
    """``chunks`` for as long as ``check()`` (the subscriber's token, authenticated again
    every ``every`` seconds) passes: a token revoked while its stream is open stops
    receiving changes within that time, plus the time its revocation takes to reach this
    node. The stream just ends; a subscriber that resubscribes is refused."""
    checked = clock()
    async for chunk in chunks:
        if clock() - checked >= every:
            try:
                await check()
            except errors.KVError:
                return
            checked = clock()
        yield chunk
