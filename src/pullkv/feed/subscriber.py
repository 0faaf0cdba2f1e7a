"""An edge following its upstream's change feed.

It subscribes from its position (none at first: the upstream answers with a reset), applies
each change to the cache (``on_change``: the edge drops what the change supersedes), keeps
what it heard in a ``FeedLog`` for the edges below it, and checks every message's ``from``
against its position: a message lost on the way (or dropped by ``--feed-loss``) shows as a
gap, and the subscriber resumes from its position at once, so the upstream sends what was
missed. Silence for ``policy.silence`` means the connection is dead: the cache then behaves
as without a feed (TTLs bound everything) until a new subscription catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from pullkv import errors
from pullkv.feed.log import FeedLog, FeedSource
from pullkv.feed.policy import FeedPolicy
from pullkv.metrics import FEED_MESSAGE_KINDS, Metrics
from pullkv.types import ChangeRecord
from pullkv.wire import FeedBeat, FeedChange, FeedMessage, FeedReset, decode_feed_line

log = logging.getLogger("pullkv.feed")

# Opens a subscription at a position (None: from now) in a sequence space; yields the
# stream's text as it arrives (chunks of JSON lines, a line possibly split between two).
OpenStream = Callable[[int | None, str | None], AbstractAsyncContextManager[AsyncIterator[str]]]


class Resubscribe(Exception):
    """The stream lost a message or fell silent: resume from the position."""


@dataclass(slots=True)
class FeedState:
    """Where the subscriber is: for metrics and ``pullkv info``."""

    position: int | None = None
    feed_id: str | None = None
    heard_at: float | None = None  # when the last message arrived (monotonic seconds)


class FeedSubscriber:
    """Follows one upstream's feed (see the module docstring)."""

    def __init__(
        self,
        open_stream: OpenStream,
        relay: FeedLog,
        on_change: Callable[[ChangeRecord], object],
        on_reset: Callable[[], None],
        policy: FeedPolicy,
        metrics: Metrics,
        *,
        loss: float = 0.0,
        delay: float = 0.0,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_stream
        self.relay = relay
        self._on_change = on_change
        self._on_reset = on_reset
        self.policy = policy
        self.metrics = metrics
        self.loss = loss  # fraction of received messages dropped (tests and demos)
        self.delay = delay  # added to each message (pullkv cluster up's simulated distance)
        self._draw = draw
        self._clock = clock
        self.state = FeedState()
        # Label children looked up once: this runs for every message.
        self._counts = {kind: metrics.feed_messages.labels(kind) for kind in FEED_MESSAGE_KINDS}
        metrics.feed_position.set_function(lambda: self.state.position or 0)
        metrics.feed_silence.set_function(self.silence)

    def silence(self) -> float:
        """Seconds since the upstream was last heard (0 before the first subscription)."""
        heard = self.state.heard_at
        return 0.0 if heard is None else max(0.0, self._clock() - heard)

    async def run(self) -> None:
        """Subscribe, follow, and resubscribe after any interruption, until cancelled."""
        backoff = self.policy.reconnect_min
        while True:
            try:
                await self._follow()
                backoff = self.policy.reconnect_min  # the upstream closed the stream
            except Resubscribe:
                backoff = self.policy.reconnect_min
                continue
            except asyncio.CancelledError:
                raise
            except errors.KVError as exc:
                log.info("change feed: %s; resubscribing in %.1f s", exc.message, backoff)
            except Exception as exc:  # a broken stream is the upstream's fault, not ours
                log.info("change feed interrupted (%s); resubscribing in %.1f s", exc, backoff)
            finally:
                self.relay.set_live(False)
            self.metrics.feed_subscriptions.labels("failed").inc()
            await asyncio.sleep(backoff * (0.5 + self._draw()))
            backoff = min(backoff * 2, self.policy.reconnect_max)

    async def _follow(self) -> None:
        state = self.state
        async with contextlib.AsyncExitStack() as stack:
            # A frozen upstream accepts the connection and never answers: the opening is
            # bounded too (an edge relay may take up to a silence to hear its own upstream).
            try:
                async with asyncio.timeout(2 * self.policy.silence):
                    opening = self._open(state.position, state.feed_id)
                    chunks = await stack.enter_async_context(opening)
            except TimeoutError:
                self._counts["silence"].inc()
                raise errors.upstream_unreachable("the upstream's feed did not answer") from None
            self.metrics.feed_subscriptions.labels("opened").inc()
            arrivals = self._arrivals(aiter(chunks))
            if self.delay:
                # Read on as chunks arrive, and apply each ``delay`` after its arrival: a
                # reader that slept per chunk would add the delay up under a burst.
                arrivals = _delayed(arrivals, self.delay, self._clock)
            async with contextlib.aclosing(arrivals):
                async for line in _lines(arrivals):
                    self._receive(decode_feed_line(line))

    async def _arrivals(self, chunks: AsyncIterator[str]) -> AsyncGenerator[str, None]:
        """The stream's chunks as they arrive; silence past ``policy.silence`` resubscribes."""
        while True:
            try:
                async with asyncio.timeout(self.policy.silence):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                self._counts["silence"].inc()
                log.info("change feed silent for %.1f s; resubscribing", self.policy.silence)
                raise Resubscribe from None
            yield chunk

    def _receive(self, message: FeedMessage) -> None:
        self.state.heard_at = self._clock()
        if self.loss and self._draw() < self.loss:
            self._counts["dropped"].inc()
            return
        if not self.handle(message):
            self._counts["gap"].inc()
            raise Resubscribe

    def handle(self, message: FeedMessage) -> bool:
        """Apply one message; False when it shows that an earlier one was lost."""
        state = self.state
        if isinstance(message, FeedReset):
            self._counts["reset"].inc()
            self._on_reset()
            self.relay.reset(message.feed, message.high)
            self.relay.set_live(True)
            state.position, state.feed_id = message.high, message.feed
            return True
        if isinstance(message, FeedChange):
            # Applied even after a gap: invalidation by version is safe in any order.
            self._counts["change"].inc()
            self._on_change(message.record)
            if message.start != state.position:
                return False
            self.relay.extend([message.record], message.record.seq)
            state.position = message.record.seq
            return True
        assert isinstance(message, FeedBeat)
        self._counts["beat"].inc()
        if message.start != state.position or message.feed != state.feed_id:
            return False
        self.relay.extend([], message.high)
        self.relay.set_live(True)
        state.position = message.high
        return True


async def _delayed(
    chunks: AsyncIterator[str], delay: float, clock: Callable[[], float]
) -> AsyncGenerator[str, None]:
    """``chunks``, each given ``delay`` seconds after it arrived (a simulated distance),
    read by a task of its own so that the delays do not add up."""
    queue: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()

    async def read() -> None:
        try:
            async for chunk in chunks:
                queue.put_nowait((chunk, clock()))
        finally:
            queue.put_nowait(None)

    reader = asyncio.ensure_future(read())
    try:
        while (item := await queue.get()) is not None:
            chunk, arrived = item
            await asyncio.sleep(max(0.0, arrived + delay - clock()))
            yield chunk
        await reader  # the reader's end: silence (Resubscribe), the stream's close, an error
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _lines(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """The non-empty lines of a stream of text chunks (a line may be split between two)."""
    partial = ""
    async for chunk in chunks:
        *lines, partial = (partial + chunk).split("\n")
        for line in lines:
            if line:
                yield line


async def backfill(
    open_stream: OpenStream, since: int, feed: str, until: int, timeout: float
) -> list[ChangeRecord] | None:
    """The records in (``since``, ``until``] of sequence space ``feed``, read from the
    upstream's feed (for a subscriber below resuming from before this edge's log began);
    None if the upstream cannot serve them either, or does not answer in ``timeout``."""
    records: list[ChangeRecord] = []
    position = since
    try:
        async with asyncio.timeout(timeout), open_stream(since, feed) as chunks:
            async for line in _lines(chunks):
                message = decode_feed_line(line)
                if isinstance(message, FeedReset) or message.start != position:
                    return None
                if isinstance(message, FeedChange):
                    records.append(message.record)
                    position = message.record.seq
                else:
                    position = message.high
                if position >= until:
                    return [r for r in records if r.seq <= until]
    except (TimeoutError, errors.KVError):
        return None
    return None


async def follow_in_process(
    source: FeedSource,
    on_change: Callable[[ChangeRecord], object],
    page: int,
) -> None:
    """Apply a feed in this process to a cache in front of its store (``pullkv serve``, whose
    store other origins may share), from now on, until cancelled or the node shuts down."""
    position = source.high
    while not source.closed:
        records = await source.records_after(position, page)
        if records is None:  # fell behind what is retained: cannot happen in one process
            position = source.high
            await asyncio.sleep(0)
            continue
        for record in records:
            on_change(record)
            position = record.seq
        if len(records) < page:
            await source.wait(position, 1.0)
        else:
            await asyncio.sleep(0)  # a long catch-up still lets the loop run
