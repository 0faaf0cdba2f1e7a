"""The access log's formats, its buffering, and the Cache-Status it finds."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from pullkv.http.accesslog import (
    AccessLog,
    Timestamps,
    cache_status_in,
    cache_status_of,
    format_json,
    format_text,
)
from pullkv.http.framing import build_response
from pullkv.limits import ACCESS_LOG_FIELD_MEMO as FIELD_MEMO
from pullkv.limits import ACCESS_LOG_TARGET_CHARS as MAX_TARGET_CHARS

WHEN = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z


def test_timestamps_are_utc_to_the_millisecond() -> None:
    times = Timestamps()
    assert times.format(WHEN) == "2026-05-28T20:26:40.250Z"
    assert times.format(WHEN + 0.5) == "2026-05-28T20:26:40.750Z"
    assert times.format(WHEN + 1) == "2026-05-28T20:26:41.250Z"


def test_text_line() -> None:
    line = format_text(
        "T",
        "127.0.0.1",
        b"GET",
        b"/client/v4/accounts/a/storage/kv/namespaces/n/values/k?cacheTtl=60",
        200,
        5,
        0.000123,
        b"pullkv; hit; ttl=59",
        "abcd",
    )
    assert line == (
        "T access client=127.0.0.1 method=GET"
        " target=/client/v4/accounts/a/storage/kv/namespaces/n/values/k?cacheTtl=60"
        ' status=200 bytes=5 duration_ms=0.123 cache_status="pullkv; hit; ttl=59" token_id=abcd'
    )


def test_text_line_without_token_or_cache_status() -> None:
    line = format_text("T", None, b"GET", b"/healthz", 401, 0, 0.0, None, None)
    assert line.endswith(
        "client=- method=GET target=/healthz status=401 bytes=0"
        " duration_ms=0.000 cache_status=- token_id=-"
    )


@pytest.mark.parametrize(
    "target",
    [b'/a "quoted" key', b"/a\\b", b"/line\nbreak", b"/tab\there", b"/caf\xc3\xa9", b"/ key=x"],
)
def test_awkward_targets_stay_on_one_parseable_field(target: bytes) -> None:
    line = format_text("T", None, b"GET", target, 200, 0, 0.0, None, None)
    assert "\n" not in line
    after = line.split(" target=", 1)[1]
    assert after.startswith('"')
    decoded, end = json.JSONDecoder().raw_decode(after)
    assert after[end:].startswith(" status=200")
    assert isinstance(decoded, str)


def test_long_targets_are_cut() -> None:
    line = format_text("T", None, b"GET", b"/" + b"k" * 10_000, 200, 0, 0.0, None, None)
    assert len(line) < MAX_TARGET_CHARS + 200
    assert "k..." in line


def test_json_line() -> None:
    line = format_json("T", "::1", b"PUT", b"/v", 412, 88, 0.0105, None, None)
    assert json.loads(line) == {
        "time": "T",
        "client": "::1",
        "method": "PUT",
        "target": "/v",
        "status": 412,
        "bytes": 88,
        "duration_ms": 10.5,
        "cache_status": None,
        "token_id": None,
    }


def test_cache_status_in_headers_and_rendered_responses() -> None:
    assert cache_status_of([(b"content-type", b"x"), (b"cache-status", b"c; hit")]) == b"c; hit"
    assert cache_status_of([(b"CF-Cache-Status", b"MISS")]) == b"MISS"
    assert cache_status_of(()) is None
    assert cache_status_of(None) is None
    rendered = build_response(200, b"cache-status: not a header", [(b"cache-status", b"c; hit")])
    head_end = rendered.find(b"\r\n\r\n") + 4
    assert cache_status_in(rendered, head_end) == b"c; hit"
    plain = build_response(200, b"cache-status: in the body", [])
    assert cache_status_in(plain, plain.find(b"\r\n\r\n") + 4) is None


def test_lines_are_written_once_per_loop_turn() -> None:
    async def main() -> str:
        stream = io.StringIO()
        log = AccessLog("text", asyncio.get_running_loop(), stream)
        for status in (200, 404):
            log.record(("127.0.0.1", 1), b"GET", b"/", status, 0, 0.0, None, None)
        assert stream.getvalue() == ""  # buffered until the loop turns
        await asyncio.sleep(0)
        return stream.getvalue()

    written = asyncio.run(main())
    lines = written.splitlines()
    assert len(lines) == 2 and written.endswith("\n")
    assert "status=200" in lines[0] and "status=404" in lines[1]


def test_json_lines_are_one_object_each() -> None:
    async def main() -> str:
        stream = io.StringIO()
        log = AccessLog("json", asyncio.get_running_loop(), stream)
        log.record(None, b"GET", b"/x", 200, 1, 0.0, b"HIT", "t1")
        log.flush()
        return stream.getvalue()

    record = json.loads(asyncio.run(main()))
    assert record["cache_status"] == "HIT" and record["token_id"] == "t1"


def test_off_is_not_an_access_log() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            AccessLog("off", loop)
    finally:
        loop.close()


def test_the_field_memo_stays_bounded() -> None:
    async def main() -> tuple[int, str]:
        stream = io.StringIO()
        log = AccessLog("text", asyncio.get_running_loop(), stream)
        for number in range(FIELD_MEMO + 10):
            log.record(None, b"GET", b"/k%d" % number, 200, 0, 0.0, None, None)
        log.record(None, b"GET", b"/" + b"x" * 5000, 200, 0, 0.0, None, None)
        log.flush()
        return len(log._fields), stream.getvalue()

    size, written = asyncio.run(main())
    assert size <= FIELD_MEMO
    lines = written.splitlines()
    assert len(lines) == FIELD_MEMO + 11
    assert f"target=/k{FIELD_MEMO + 9} " in lines[-2]
