"""An edge in front of a frozen origin (SIGSTOP): nothing the cache can answer waits for it.

One origin and one edge as real processes, with token record ages shortened (refresh after
2 s, checked with the origin after 15 s, trusted without it for 25 s). Keys and tokens are
warmed through the edge, the origin is frozen, and every kind of request is timed: fresh
entries while token records pass their refresh age (the background refresh times out after
2 s and opens the circuit breaker), expired entries that may be served stale, cold keys and
writes (503), token records past their max age (trusted) and past --auth-max-stale (refused
with 503). Everything must answer in under a second; a request that waited for the origin
would take at least the 2 s timeout. Then the origin is continued (SIGCONT) and the edge
must fetch fresh values again. The latencies are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.support import ACCOUNT_ID, EdgeProcess, ServerProcess

UPSTREAM_TIMEOUT = 2.0
AUTH_MAX_STALE = 25.0
FAST = 1.0  # every answer that needs no upstream; a wait for the upstream takes >= 2 s
EDGE_FLAGS = [
    "--default-cache-ttl",
    "60",
    "--min-cache-ttl",
    "1",
    "--refresh-interval",
    "120",  # reads with cache_ttl=300 stay fresh for the whole test
    "--max-stale",
    "600",
    "--upstream-timeout",
    str(UPSTREAM_TIMEOUT),
    "--auth-max-stale",
    str(AUTH_MAX_STALE),
    "--token-refresh",
    "2",
    "--token-max-age",
    "15",
]
KEYS = 8
EXTRA_TOKENS = 5


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path / "origin",
        role="origin",
        args=["--min-expiration-ttl", "1"],
    ).start()
    try:
        yield proc
    finally:
        if proc.process is not None and proc.process.poll() is None:
            os.kill(proc.process.pid, signal.SIGCONT)  # a stopped process cannot exit
        proc.stop()


@pytest.fixture
def edge(origin: ServerProcess, tmp_path: Path) -> Iterator[EdgeProcess]:
    proc = EdgeProcess(
        tmp_path, origin.url, origin.admin_token, origin.master_key, args=EDGE_FLAGS
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


class Timings:
    """Latencies by kind of request."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def timed(self, kind: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        started = time.perf_counter()
        response = send()
        self.seconds.setdefault(kind, []).append(time.perf_counter() - started)
        return response

    def worst(self, kind: str) -> float:
        return max(self.seconds[kind])

    def report(self) -> str:
        lines = ["frozen origin: latency by request kind (ms)"]
        for kind, values in self.seconds.items():
            lines.append(
                f"  {kind:<28} n={len(values):<3} median={statistics.median(values) * 1000:8.1f}"
                f"  max={max(values) * 1000:8.1f}"
            )
        return "\n".join(lines)


def wait_until_clock(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def test_edge_never_stalls_on_a_frozen_origin(origin: ServerProcess, edge: EdgeProcess) -> None:
    assert origin.process is not None
    admin = origin.headers()
    with httpx.Client(headers=admin, timeout=30) as at_origin, httpx.Client(timeout=30) as client:
        created = at_origin.post(origin.namespaces_url, json={"title": "frozen"})
        ns = created.json()["result"]["id"]
        values = f"{edge.namespaces_url}/{ns}/values"
        for n in range(KEYS):
            for kind in ("fresh", "stale"):
                put = at_origin.put(f"{origin.namespaces_url}/{ns}/values/{kind}{n}", content=b"1")
                assert put.status_code == 200
        tokens = []
        for n in range(EXTRA_TOKENS):
            made = at_origin.post(
                f"{origin.api}/accounts/{ACCOUNT_ID}/tokens",
                json={"name": f"reader{n}", "read_only": True},
            )
            tokens.append({"Authorization": f"Bearer {made.json()['result']['value']}"})

        def read(key: str, ttl: int, headers: dict[str, str] = admin) -> httpx.Response:
            return client.get(f"{values}/{key}", params={"cache_ttl": ttl}, headers=headers)

        # Warm the edge: values, and every token's record.
        for n in range(KEYS):
            assert read(f"fresh{n}", 300).status_code == 200
            assert read(f"stale{n}", 1).status_code == 200
        for headers in tokens:
            assert read("fresh0", 300, headers).status_code == 200
        confirmed = time.monotonic()  # the edge confirmed every token record before this
        times = Timings()

        def fresh_read() -> None:
            fresh = times.timed("fresh entry", lambda: read("fresh0", 300))
            assert fresh.status_code == 200 and fresh.content == b"1"

        def token_reads(kind: str, status: int) -> None:
            for headers in tokens:
                answer = times.timed(kind, partial(read, "fresh1", 300, headers))
                assert answer.status_code == status, answer.text
                if status == 503:
                    message = answer.json()["errors"][0]["message"]
                    assert "has not confirmed this token" in message

        os.kill(origin.process.pid, signal.SIGSTOP)
        try:
            # Fresh entries, while the edge's verification cache (10 s) runs out and token
            # records pass their refresh age: the refresh goes on in the background, its
            # timeout opens the breaker, and no read waits for either.
            while time.monotonic() < confirmed + 11:
                fresh_read()
                time.sleep(0.1)
            token_reads("token past refresh age", 200)

            def breaker_open() -> bool:
                opened = edge.metric(
                    "pullkv_upstream_requests_total",
                    origin.admin_token,
                    operation="token",
                    outcome="unavailable",
                )
                return opened > 0

            deadline = time.monotonic() + 3 * UPSTREAM_TIMEOUT
            while not breaker_open():
                assert time.monotonic() < deadline, edge.log()
                time.sleep(0.1)

            for n in range(KEYS):
                fresh_read()
                stale = times.timed("stale-usable entry", partial(read, f"stale{n}", 1))
                assert stale.status_code == 200 and stale.content == b"1"
                assert "stale-if-error" in stale.headers["cache-status"]
                cold = times.timed("cold key (503)", partial(read, f"cold{n}", 60))
                assert cold.status_code == 503
                message = cold.json()["errors"][0]["message"]
                assert origin.url in message and "not answering" in message
                write = times.timed(
                    "write (503)",
                    partial(client.put, f"{values}/w{n}", content=b"x", headers=admin),
                )
                assert write.status_code == 503 and "not answering" in write.text
                time.sleep(0.2)

            # Past the token max age (15 s): still trusted, the origin cannot be asked.
            wait_until_clock(confirmed + 22)
            token_reads("token past max age", 200)
            # Past --auth-max-stale (25 s): refused, clearly, and fast.
            wait_until_clock(confirmed + 33)
            token_reads("token past auth-max-stale", 503)
        finally:
            os.kill(origin.process.pid, signal.SIGCONT)
            continued = time.monotonic()
        print("\n" + times.report())
        for kind in (
            "fresh entry",
            "stale-usable entry",
            "cold key (503)",
            "write (503)",
            "token past refresh age",
            "token past max age",
            "token past auth-max-stale",
        ):
            assert times.worst(kind) < FAST, (kind, times.report())

        # Recovery: a probe finds the origin again and fresh values are fetched.
        assert at_origin.put(f"{origin.namespaces_url}/{ns}/values/stale0", content=b"2").is_success
        deadline = continued + 30
        while True:
            back = read("stale0", 1)
            if back.status_code == 200 and back.content == b"2":
                break
            assert time.monotonic() < deadline, (back.status_code, back.text, edge.log())
            time.sleep(0.2)
        print(f"  recovered: fresh value read {time.monotonic() - continued:.1f} s after SIGCONT")
        assert "stale-if-error" not in back.headers["cache-status"]
        for headers in tokens:  # records confirmed again
            assert read("fresh1", 300, headers).status_code == 200
