"""The change feed's parts in process: the wire format, the in-memory log, serving a stream
(positions, account scoping, heartbeats, resets), the store-backed source, and a subscriber
(gaps, resets, relaying), each driven directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pullkv import errors
from pullkv.feed.log import FeedLog, StoreFeed
from pullkv.feed.policy import FeedPolicy
from pullkv.feed.stream import feed_stream
from pullkv.feed.subscriber import FeedSubscriber, backfill, follow_in_process
from pullkv.metrics import Metrics
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import ChangeRecord, NamespaceRecord, SealedWrite
from pullkv.wire import (
    FeedBeat,
    FeedChange,
    FeedMessage,
    FeedReset,
    decode_feed_line,
    encode_feed,
)

A, B = "a" * 32, "b" * 32
POLICY = FeedPolicy(heartbeat=0.05, retention=5, page=3)


def rec(seq: int, account: str = A, key: str | None = "k", version: int = 0) -> ChangeRecord:
    return ChangeRecord(seq, account, "n" * 32, key, version or seq * 10, False)


# The wire format.
def test_messages_round_trip() -> None:
    messages: list[FeedMessage] = [
        FeedReset(4, "f"),
        FeedChange(4, rec(6, key="ü/x")),
        FeedBeat(6, 9, "f"),
    ]
    lines = encode_feed(messages).decode().splitlines()
    assert [decode_feed_line(line) for line in lines] == messages
    assert decode_feed_line(encode_feed([FeedChange(0, rec(1, key=None))])) == FeedChange(
        0, rec(1, key=None)
    )


@pytest.mark.parametrize(
    "message",
    [
        {"t": "nope"},
        {"t": "beat", "from": 5, "to": 4, "feed": "f"},
        {"t": "beat", "from": -1, "to": 4, "feed": "f"},
        {"t": "change", "from": 3, "seq": 3, "account": A, "namespace": "n", "key": "k",
         "version": 1, "deleted": False},
        {"t": "change", "from": 1, "seq": 3, "account": A, "namespace": "n", "key": "k",
         "version": 1, "deleted": "no"},
        {"t": "reset", "to": True, "feed": "f"},
    ],
)  # fmt: skip
def test_malformed_messages_are_refused(message: dict[str, object]) -> None:
    with pytest.raises(errors.KVError) as raised:
        decode_feed_line(json.dumps(message))
    assert raised.value.status == 400 and "feed message" in raised.value.message


# The in-memory log.
async def test_log_keeps_the_newest_and_knows_its_floor() -> None:
    log = FeedLog(POLICY, "f", 10)
    assert await log.records_after(10, 100) == []
    log.extend([rec(s) for s in range(11, 19)], 18)
    assert log.floor == 13 and log.high == 18  # retention 5: 14..18 held
    assert [r.seq for r in await log.records_after(13, 100) or []] == [14, 15, 16, 17, 18]
    assert [r.seq for r in await log.records_after(15, 2) or []] == [16, 17]
    assert await log.records_after(12, 100) is None  # older than retained
    assert await log.records_after(19, 100) is None  # ahead of the log
    log.extend([], 30)  # a heartbeat: nothing for us up to 30
    assert await log.records_after(18, 100) == [] and log.high == 30
    log.reset("g", 7)
    assert (log.feed_id, log.floor, log.high) == ("g", 7, 7)


async def test_log_wait_returns_on_news_timeout_and_close() -> None:
    log = FeedLog(POLICY, "f", 0)
    waiter = asyncio.ensure_future(log.wait(0, 5))
    await asyncio.sleep(0)
    log.extend([rec(1)], 1)
    await asyncio.wait_for(waiter, 1)
    await log.wait(1, 0.01)  # times out quietly
    waiter = asyncio.ensure_future(log.wait(1, 5))
    await asyncio.sleep(0)
    log.stop_streams()
    await asyncio.wait_for(waiter, 1)


# Serving a stream.
async def collect(stream: AsyncIterator[bytes], until: int) -> list[object]:
    """Messages from a stream until ``until`` of them arrived."""
    messages: list[object] = []
    async for chunk in stream:
        messages += [decode_feed_line(line) for line in chunk.splitlines()]
        if len(messages) >= until:
            break
    return messages


async def test_a_stream_sends_the_accounts_changes_with_positions() -> None:
    log = FeedLog(POLICY, "f", 0)
    log.live = True
    log.extend([rec(1), rec(2, B), rec(3), rec(4, B)], 4)
    stream = feed_stream(log, A, 0, "f", POLICY)
    got = await collect(stream, 3)
    # Records of account B are skipped; the heartbeat then covers up to 4.
    assert got == [FeedChange(0, rec(1)), FeedChange(1, rec(3)), FeedBeat(3, 4, "f")]
    log.extend([rec(5, B), rec(6)], 6)
    got = await collect(stream, 2)
    assert got[0] == FeedChange(4, rec(6))
    assert isinstance(got[1], FeedBeat) and got[1].start == 6 and got[1].high == 6
    assert log.streams == 1
    await stream.aclose()
    assert log.streams == 0


@pytest.mark.parametrize(
    ("since", "feed"), [(None, None), (0, "f"), (99, "f"), (6, "other")]
)  # fmt: skip
async def test_a_position_that_cannot_be_served_gets_a_reset(
    since: int | None, feed: str | None
) -> None:
    log = FeedLog(POLICY, "f", 0)
    log.live = True
    log.extend([rec(s) for s in range(1, 9)], 8)  # retention 5: floor 3
    stream = feed_stream(log, A, since, feed, POLICY)
    got = await collect(stream, 2)
    assert got == [FeedReset(8, "f"), FeedBeat(8, 8, "f")]
    await stream.aclose()


async def test_heartbeats_keep_coming_while_live_and_stop_when_not() -> None:
    log = FeedLog(POLICY, "f", 0)
    log.live = True
    stream = feed_stream(log, A, 0, "f", POLICY)
    assert await collect(stream, 3) == [FeedBeat(0, 0, "f")] * 3
    log.set_live(False)
    nothing = asyncio.ensure_future(collect(stream, 1))
    await asyncio.sleep(0.3)
    assert not nothing.done()
    log.stop_streams()  # the node shuts down: the stream ends
    assert await asyncio.wait_for(nothing, 1) == []


# The store-backed source (an origin's feed).
async def test_store_feed_serves_recent_records_from_memory_and_older_from_the_store(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    try:
        await store.create_namespace(NamespaceRecord("n" * 32, A, "t"), 100)
        for i in range(4):
            await store.put("n" * 32, [SealedWrite(f"k{i}", b"v", None, None)])
        feed = StoreFeed(store, "f", FeedPolicy(retention=2, page=3, poll=0.01))
        await feed.open()
        assert feed.high == 4
        runner = asyncio.ensure_future(feed.run())
        await store.put("n" * 32, [SealedWrite(f"k{i}", b"v", None, None) for i in range(5)])
        feed.wake()
        await asyncio.wait_for(feed.wait(4, 5), 5)
        for _ in range(100):
            if feed.high == 9:
                break
            await asyncio.sleep(0.01)
        assert feed.high == 9 and feed.log.floor == 7  # two held in memory
        older = await feed.records_after(2, 100)  # from the store: up to memory's floor
        assert older is not None and [r.seq for r in older] == [3, 4, 5, 6, 7]
        assert [r.seq for r in await feed.records_after(7, 100) or []] == [8, 9]
        await store.prune_changes(3)
        assert await feed.records_after(2, 100) is None  # pruned: a reset
        assert await feed.records_after(10, 100) is None  # ahead of the store
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    finally:
        await store.close()


async def test_following_a_feed_in_process(tmp_path: Path) -> None:
    log = FeedLog(POLICY, "f", 0)
    seen: list[int] = []
    follower = asyncio.ensure_future(follow_in_process(log, lambda r: seen.append(r.seq), 3))
    await asyncio.sleep(0)
    log.extend([rec(s) for s in range(1, 5)], 4)
    for _ in range(50):
        if len(seen) == 4:
            break
        await asyncio.sleep(0.01)
    assert seen == [1, 2, 3, 4]
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower


# A subscriber.
class Recorder:
    def __init__(self) -> None:
        self.changes: list[ChangeRecord] = []
        self.resets = 0

    def subscriber(self, relay: FeedLog, **kwargs: float) -> FeedSubscriber:
        def never(
            since: int | None, feed: str | None
        ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[str]]:
            raise AssertionError("not opened in these tests")

        return FeedSubscriber(
            never,
            relay,
            self.changes.append,
            self.reset,
            POLICY,
            Metrics(),
            **kwargs,  # type: ignore[arg-type]
        )

    def reset(self) -> None:
        self.resets += 1


def test_subscriber_follows_positions_and_relays() -> None:
    recorder, relay = Recorder(), FeedLog(POLICY)
    sub = recorder.subscriber(relay)
    assert sub.handle(FeedReset(10, "f")) and recorder.resets == 1
    assert (relay.feed_id, relay.high) == ("f", 10)
    assert sub.handle(FeedChange(10, rec(12)))
    assert sub.handle(FeedBeat(12, 20, "f"))
    assert sub.state.position == 20 and relay.high == 20 and relay.live
    assert [r.seq for r in recorder.changes] == [12]


def test_subscriber_sees_gaps_but_still_applies_the_change() -> None:
    recorder, relay = Recorder(), FeedLog(POLICY)
    sub = recorder.subscriber(relay)
    sub.handle(FeedReset(10, "f"))
    assert not sub.handle(FeedChange(11, rec(12)))  # 10..11 was lost
    assert recorder.changes == [rec(12)]  # invalidation is safe out of order
    assert sub.state.position == 10 and relay.high == 10  # not relayed: relays stay whole
    assert not sub.handle(FeedBeat(12, 20, "f"))
    assert not sub.handle(FeedBeat(10, 20, "other feed"))


class FakeUpstream:
    """Serves a subscriber scripted streams, and notes where each subscription began."""

    def __init__(self, scripts: list[list[object]]) -> None:
        self.scripts = scripts
        self.opened: list[tuple[int | None, str | None]] = []

    @contextlib.asynccontextmanager
    async def open(self, since: int | None, feed: str | None) -> AsyncIterator[AsyncIterator[str]]:
        self.opened.append((since, feed))
        script = self.scripts.pop(0) if self.scripts else []

        async def lines() -> AsyncIterator[str]:
            for message in script:
                if isinstance(message, float):
                    await asyncio.sleep(message)  # silence
                else:
                    assert isinstance(message, (FeedChange, FeedBeat, FeedReset))
                    yield encode_feed([message]).decode()
            await asyncio.sleep(3600)

        yield lines()


async def test_subscriber_resumes_from_its_position_after_a_gap_and_silence() -> None:
    upstream = FakeUpstream(
        [
            [FeedReset(10, "f"), FeedChange(10, rec(11)), FeedChange(12, rec(13))],  # gap
            [FeedChange(11, rec(13)), 0.5],  # then silence
            [FeedBeat(13, 15, "f")],
        ]
    )
    recorder, relay = Recorder(), FeedLog(POLICY)
    policy = FeedPolicy(silence=0.2, reconnect_min=0.01)
    metrics = Metrics()
    sub = FeedSubscriber(
        upstream.open, relay, recorder.changes.append, recorder.reset, policy, metrics
    )
    task = asyncio.ensure_future(sub.run())
    for _ in range(300):
        if sub.state.position == 15:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert upstream.opened == [(None, None), (11, "f"), (13, "f")]
    assert sub.state.position == 15 and relay.high == 15
    assert [r.seq for r in recorder.changes] == [11, 13, 13]

    def sample(kind: str) -> float:
        return metrics.registry.get_sample_value("pullkv_feed_messages_total", {"kind": kind}) or 0

    assert sample("gap") == 1 and sample("silence") == 1


async def test_feed_loss_drops_messages_at_random() -> None:
    upstream = FakeUpstream([[FeedReset(0, "f"), *(FeedBeat(0, 0, "f") for _ in range(50))]])
    recorder, relay = Recorder(), FeedLog(POLICY)
    draws = iter([0.9] + [0.0, 0.9] * 25)  # the reset kept; then every other beat dropped
    sub = FeedSubscriber(
        upstream.open,
        relay,
        recorder.changes.append,
        recorder.reset,
        FeedPolicy(silence=5),
        Metrics(),
        loss=0.5,
        draw=lambda: next(draws, 0.9),
    )
    task = asyncio.ensure_future(sub.run())
    for _ in range(100):
        if sub.metrics.registry.get_sample_value("pullkv_feed_messages_total", {"kind": "beat"}):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    dropped = sub.metrics.registry.get_sample_value(
        "pullkv_feed_messages_total", {"kind": "dropped"}
    )
    assert dropped == 25 and recorder.resets == 1


async def test_a_log_backfills_positions_older_than_its_floor() -> None:
    asked: list[tuple[int, str, int]] = []

    async def further_up(since: int, feed: str, until: int) -> list[ChangeRecord] | None:
        asked.append((since, feed, until))
        return None if since < 2 else [rec(s) for s in range(since + 1, until + 1) if s % 2]

    log = FeedLog(POLICY, "f", 10, backfill=further_up)
    log.extend([rec(11), rec(12)], 12)
    got = await log.records_after(4, 100)
    assert got is not None and [r.seq for r in got] == [5, 7, 9, 11, 12]
    assert asked == [(4, "f", 10)]
    assert await log.records_after(1, 100) is None  # not to be had further up either
    limited = await log.records_after(4, 2)
    assert limited is not None and [r.seq for r in limited] == [5, 7]


async def test_backfill_reads_a_range_from_the_upstream_feed() -> None:
    upstream = FakeUpstream(
        [
            [FeedChange(3, rec(5)), FeedBeat(5, 8, "f"), FeedChange(8, rec(9))],
            [FeedReset(9, "f")],
            [FeedChange(4, rec(5))],  # does not start where asked: a gap
            [0.5],  # silence
        ]
    )
    got = await backfill(upstream.open, 3, "f", 8, timeout=1)
    assert got == [rec(5)]
    assert await backfill(upstream.open, 3, "f", 8, timeout=1) is None
    assert await backfill(upstream.open, 3, "f", 8, timeout=1) is None
    assert await backfill(upstream.open, 3, "f", 8, timeout=0.1) is None
    assert upstream.opened == [(3, "f")] * 4


async def test_a_stream_waits_for_a_log_to_hear_its_upstream_before_resetting() -> None:
    log = FeedLog(POLICY, "", 0)  # an edge that just started
    stream = feed_stream(log, A, 5, "f", POLICY)
    first = asyncio.ensure_future(collect(stream, 2))
    await asyncio.sleep(0.05)
    log.reset("f", 5)  # it heard its upstream: position 5 is served, not reset
    log.set_live(True)
    log.extend([rec(6)], 6)
    got = await asyncio.wait_for(first, 2)
    assert got[0] == FeedChange(5, rec(6))
    await stream.aclose()


async def test_following_in_process_ends_when_the_node_shuts_down() -> None:
    log = FeedLog(POLICY, "f", 0)
    follower = asyncio.ensure_future(follow_in_process(log, lambda r: None, 3))
    await asyncio.sleep(0.01)
    log.stop_streams()
    await asyncio.wait_for(follower, 1)  # returns: it does not spin on the closed log


async def test_a_subscription_the_upstream_never_answers_is_given_up() -> None:
    opened: list[int | None] = []

    async def nothing() -> AsyncIterator[str]:
        await asyncio.sleep(3600)
        yield ""

    @contextlib.asynccontextmanager
    async def frozen(since: int | None, feed: str | None) -> AsyncIterator[AsyncIterator[str]]:
        opened.append(since)
        await asyncio.sleep(3600)  # accepted, never answered
        yield nothing()

    metrics = Metrics()
    sub = FeedSubscriber(
        frozen,
        FeedLog(POLICY),
        lambda r: None,
        lambda: None,
        FeedPolicy(silence=0.05, reconnect_min=0.01, reconnect_max=0.02),
        metrics,
    )
    task = asyncio.ensure_future(sub.run())
    for _ in range(200):
        if len(opened) >= 3:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(opened) >= 3  # it kept trying rather than wait forever
    failed = metrics.registry.get_sample_value(
        "pullkv_feed_subscriptions_total", {"outcome": "failed"}
    )
    assert failed is not None and failed >= 2


async def test_a_simulated_distance_delays_each_message_once() -> None:
    # 30 messages at once, each to be applied 0.2 s after it arrived: all of them about
    # 0.2 s later, not 0.2 s apiece (a reader that slept per chunk would take 6 s).
    beats = [FeedBeat(0, 0, "f") for _ in range(30)]
    upstream = FakeUpstream([[FeedReset(0, "f"), *beats]])
    sub = FeedSubscriber(
        upstream.open,
        FeedLog(POLICY),
        lambda r: None,
        lambda: None,
        FeedPolicy(silence=5),
        Metrics(),
        delay=0.2,
    )
    started = time.monotonic()
    task = asyncio.ensure_future(sub.run())
    registry = sub.metrics.registry
    while (registry.get_sample_value("pullkv_feed_messages_total", {"kind": "beat"}) or 0) < 30:
        assert time.monotonic() - started < 3, "the delays added up"
        await asyncio.sleep(0.01)
    assert time.monotonic() - started >= 0.2
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
