"""The simulator against a real loopback cluster: the same small configuration in both.

Issue 13 §3: one origin and three edges, each 80 ms (round trip) from it, the change feed on
(the default), the same Zipf workload. The request stream is the simulator's own: the
workload generator of ``pullkv.simulate.workload`` with the bench's seed gives the list of
(time, edge, operation, key, size) that the simulator runs in virtual time and that a load
generator here replays against real processes in real time (an open loop: each request at
its time, at most ``--concurrency`` in flight). Every key exists at the start in both.

Measured per read: whether the edge answered from its cache (``Cache-Status`` with ``hit``,
against ``fwd=...``) and the latency as the client saw it. For a sample of writes, the time
from the write's acknowledgement until a read at each other edge returns it (each other
edge polled every ``--poll-ms``). The loopback cluster applies an edge's whole upstream
delay before it sends a request, so the origin commits a write at the end of the writer's
round trip and the acknowledgement follows at once: the real "from the acknowledgement" is
the simulator's "from the commit", which is what the simulator measures.

Calibration. A real request also spends time in Python servers and the client, which the
simulator's model holds as two constants (``SimConfig.hit_time``, an edge answering from
its cache, and ``SimConfig.origin_time``, the rest of a miss beyond the round trip). This
script measures both from the real run (the median hit; the median miss less the round
trip and the hit time) and runs the simulator twice: with the model's defaults, and with the
calibrated constants (``pullkv.simulate.config.LOOPBACK``, written down there as data).

    .venv/bin/python bench/bench_sim_vs_cluster.py --duration 75

Writes bench/RESULTS-simulate.md's comparison section (``--no-write``: print only). Every
process it starts is stopped by its pid at the end (``start_cluster``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import re
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

import httpx

from bench_feed import start_cluster
from benchlib import default_server_command, percentile
from pullkv.simulate import stats
from pullkv.simulate.config import LOOPBACK, SimConfig, Star
from pullkv.simulate.engine import HIT
from pullkv.simulate.scenarios import build
from pullkv.simulate.workload import DELETE, READ, WRITE, WorkloadSpec, synthetic

RESULTS = Path(__file__).resolve().parent / "RESULTS-simulate.md"
MARKER = "<!-- sim-vs-cluster -->"
DISCUSSION = "<!-- discussion -->"
EDGES = 3
TOLERANCE = 0.10
QUANTILES = 100  # of the real hits' latency, the calibrated server-time distribution


@dataclasses.dataclass
class Real:
    """What the real cluster did."""

    reads: list[tuple[bool, float]] = dataclasses.field(default_factory=list)  # hit, seconds
    statuses: dict[int, int] = dataclasses.field(default_factory=dict)
    writes: list[float] = dataclasses.field(default_factory=list)  # acknowledgement latency
    visibility: list[float] = dataclasses.field(default_factory=list)
    followed: list[tuple[float, int, int, int, int]] = dataclasses.field(default_factory=list)
    unseen: int = 0  # polls that gave up
    lag: list[float] = dataclasses.field(default_factory=list)  # how late each request left
    elapsed: float = 0.0


def key_name(key: int) -> str:
    """The real key of a workload key index."""
    return f"k{key:06d}"


def body(number: int, size: int) -> bytes:
    """A value of ``size`` bytes that says which write made it (``w<number>:``)."""
    head = b"w%08d:" % number
    return head + b"x" * max(0, size - len(head))


def written_by(content: bytes) -> int:
    """The write number a value carries (-1 if none)."""
    found = re.match(rb"w(\d{8}):", content)
    return int(found.group(1)) if found else -1


async def preload(origin_url: str, values: str, token: str, sizes: list[int]) -> None:
    """Every workload key at version 1, written at the origin directly (no delay)."""
    headers = {"Authorization": f"Bearer {token}"}
    limit = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=origin_url, headers=headers, timeout=30) as client:

        async def put(key: int) -> None:
            async with limit:
                url = values + urllib.parse.quote(key_name(key), safe="")
                reply = await client.put(url, content=body(0, sizes[key]))
                reply.raise_for_status()

        await asyncio.gather(*(put(k) for k in range(len(sizes))))


async def replay(
    requests: list[tuple[float, int, int, int, int]],
    edge_urls: list[str],
    values: str,
    token: str,
    args: argparse.Namespace,
) -> Real:
    """Issue the requests at their times against the edges; measure (module docstring)."""
    real = Real()
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    clients = [
        httpx.AsyncClient(base_url=u, headers=headers, timeout=30, limits=limits) for u in edge_urls
    ]
    gate = asyncio.Semaphore(args.concurrency)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    writes_so_far = 0
    latest: dict[int, int] = {}  # key -> the newest write number issued for it
    samples_left = args.visibility_samples
    poll = args.poll_ms / 1000

    def url_of(key: int) -> str:
        return values + urllib.parse.quote(key_name(key), safe="")

    async def read(edge: int, key: int) -> None:
        started = time.perf_counter()
        reply = await clients[edge].get(url_of(key))
        latency = time.perf_counter() - started
        parts = [p.strip() for p in reply.headers.get("cache-status", "").split(";")]
        real.reads.append(("hit" in parts, latency))
        real.statuses[reply.status_code] = real.statuses.get(reply.status_code, 0) + 1

    async def follow(edge: int, key: int, number: int, acked: float, deleted: bool) -> None:
        deadline = acked + 10.0
        polls = 1
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            reply = await clients[edge].get(url_of(key))
            done = time.perf_counter()
            seen = written_by(reply.content) if reply.status_code == 200 else -1
            # A delete is seen as "not found"; a value as this write's or a later one's.
            gone = reply.status_code == 404 and (deleted or latest.get(key, 0) > number)
            if seen >= number or gone:
                real.visibility.append(done - acked)
                real.followed.append((done - acked, edge, key, number, polls))
                return
            polls += 1
            await asyncio.sleep(max(0.0, poll - (done - started)))
        real.unseen += 1

    async def write(edge: int, key: int, op: int, size: int, number: int, sample: bool) -> None:
        started = time.perf_counter()
        if op == DELETE:
            reply = await clients[edge].delete(url_of(key))
        else:
            reply = await clients[edge].put(url_of(key), content=body(number, size))
        acked = time.perf_counter()
        real.writes.append(acked - started)
        if reply.status_code != 200:
            real.statuses[reply.status_code] = real.statuses.get(reply.status_code, 0) + 1
            return
        if sample:
            others = [e for e in range(EDGES) if e != edge]
            deleted = op == DELETE
            await asyncio.gather(*(follow(e, key, number, acked, deleted) for e in others))

    async def guarded(work: asyncio.Future[None] | object) -> None:
        try:
            await work  # type: ignore[misc]
        finally:
            gate.release()

    begin = loop.time() + 0.5
    wall = time.perf_counter()
    for t, edge, op, key, size in requests:
        wait = begin + t - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        await gate.acquire()
        real.lag.append(max(0.0, loop.time() - (begin + t)))
        if op == READ:
            work = read(edge, key)
        else:
            writes_so_far += 1
            latest[key] = writes_so_far
            sample = op == WRITE and samples_left > 0
            samples_left -= sample
            work = write(edge, key, op, size, writes_so_far, sample)
        task = asyncio.create_task(guarded(work))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    real.elapsed = time.perf_counter() - wall
    for client in clients:
        await client.aclose()
    return real


def simulate(config: SimConfig) -> dict[str, float]:
    """The simulator's figures for ``config``: hit ratio, read p50/p99, visibility."""
    result = build(config).run()
    counts = result.counts
    reads = sum(sum(c) for c in counts)
    hist = stats.merge(result.hist)
    remote = sorted(result.visibility_remote)
    return {
        "hit_ratio": sum(c[HIT] for c in counts) / reads,
        "p50": stats.percentile(hist, 50) or 0.0,
        "p99": stats.percentile(hist, 99) or 0.0,
        "vis_p50": percentile(remote, 50) if remote else 0.0,
        "vis_p99": percentile(remote, 99) if remote else 0.0,
        "vis_n": len(remote),
        "reads": reads,
    }


def parse_args() -> argparse.Namespace:
    """The command line (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=75.0, help="seconds of workload")
    p.add_argument("--rate", type=float, default=25.0, help="requests/s per edge")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--zipf", type=float, default=1.0)
    p.add_argument("--write-fraction", type=float, default=0.01)
    p.add_argument("--latency-ms", type=float, default=80.0)
    p.add_argument("--visibility-samples", type=int, default=100, help="writes followed")
    p.add_argument("--poll-ms", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--raw", type=Path, help="also write the real run's samples here (JSON)")
    args = p.parse_args()
    if not (
        5 <= args.duration <= 300
        and 1 <= args.rate <= 200
        and 1 <= args.keys <= 100_000
        and 0 <= args.write_fraction <= 0.5
        and 1 <= args.poll_ms <= 100
        and 1 <= args.concurrency <= 512
    ):
        p.error(
            "keep --duration in 5..300 s, --rate in 1..200, --keys in 1..100000, "
            "--write-fraction in 0..0.5, --poll-ms in 1..100, --concurrency in 1..512"
        )
    return args


def agreement(real: float, sim: float) -> str:
    """``+4 %, within 10 %`` or ``-23 %, outside``: the simulator against reality."""
    if real == 0:
        return "n/a"
    off = (sim - real) / real
    return f"{off:+.0%}, {'within' if abs(off) <= TOLERANCE else 'outside'} 10 %"


def main() -> None:
    """Run the real cluster, then the simulator, and write the comparison."""
    args = parse_args()
    spec = WorkloadSpec(
        requests=int(args.rate * EDGES * args.duration),
        duration=args.duration,
        keys=args.keys,
        zipf=args.zipf,
        write_fraction=args.write_fraction,
    )
    shares = [1.0 / EDGES] * EDGES
    workload = synthetic(spec, shares, args.seed)
    requests = list(workload)
    rtt = args.latency_ms / 1000
    print(f"{len(requests):,} requests over {args.duration:g} s", file=sys.stderr)
    with start_cluster("sim", default_server_command(), [], latency_ms=args.latency_ms) as cluster:
        namespace = cluster.origin.create_namespace("sim-vs-cluster")
        token = cluster.origin.token
        values = cluster.origin.values_path(namespace)
        asyncio.run(preload(cluster.origin.origin, values, token, workload.sizes))
        edge_urls = [cluster.edges[label].origin for label in ("e1", "e2", "e3")]
        # Each edge's namespace lookup and token check, once, as long-running edges have.
        for url in edge_urls:
            httpx.get(
                url + values + "warm",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        started = time.time()
        real = asyncio.run(replay(requests, edge_urls, values, token, args))
        load = os.getloadavg()
    if args.raw:
        args.raw.write_text(
            json.dumps({"reads": real.reads, "visibility": real.followed, "lag": real.lag})
        )
    hits = [lat for hit, lat in real.reads if hit]
    misses = [lat for hit, lat in real.reads if not hit]
    latencies = sorted(lat for _, lat in real.reads)
    vis = sorted(real.visibility)
    real_fig = {
        "hit_ratio": len(hits) / len(real.reads),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "vis_p50": percentile(vis, 50) if vis else 0.0,
        "vis_p99": percentile(vis, 99) if vis else 0.0,
        "vis_n": len(vis),
        "reads": len(real.reads),
    }
    ordered_hits = sorted(hits)
    quantiles = tuple(round(percentile(ordered_hits, (i + 0.5)), 5) for i in range(QUANTILES))
    hit_time = statistics.median(hits)
    origin_time = round(max(0.0, statistics.median(misses) - rtt - hit_time), 5)
    print(f"calibration: server_time={quantiles!r}, origin_time={origin_time!r}", file=sys.stderr)
    base = SimConfig(
        topology=Star(EDGES, rtt),
        feed=True,
        workload=spec,
        seed=args.seed,
        visibility_samples=10 * len(requests),  # every write
    )
    model = simulate(base)
    calibrated = simulate(dataclasses.replace(base, server_time=quantiles, origin_time=origin_time))
    stored = simulate(
        dataclasses.replace(
            base, server_time=LOOPBACK.server_time, origin_time=LOOPBACK.origin_time
        )
    )

    def row(name: str, key: str, scale: float, unit: str) -> str:
        r, m, c, s = (x[key] * scale for x in (real_fig, model, calibrated, stored))
        return (
            f"| {name} | {r:.{1 if unit else 3}f}{unit} | {m:.{1 if unit else 3}f}{unit} "
            f"({agreement(r, m)}) | {c:.{1 if unit else 3}f}{unit} ({agreement(r, c)}) "
            f"| {s:.{1 if unit else 3}f}{unit} ({agreement(r, s)}) |"
        )

    lag = sorted(real.lag)
    command = "python bench/bench_sim_vs_cluster.py " + " ".join(sys.argv[1:])
    text = f"""{MARKER}
## The simulator against a real cluster (issue 13 §3)

Command: `{command.strip()}` ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))}).
One origin and three edges on loopback, each edge `--upstream-latency-ms {args.latency_ms:g}`,
the change feed on (the default), cacheTtl 60 s; the simulator with
`--topology star:3:{args.latency_ms:g}ms --invalidation on`. The same request stream in both
(the simulator's workload generator, seed {args.seed}): {len(requests):,} requests over
{args.duration:g} s ({args.rate:g} per second per edge), {args.keys:,} keys, Zipf
{args.zipf:g}, {args.write_fraction:.0%} writes; every key written before the start.
Visibility: from a write's acknowledgement (the real cluster) or commit (the simulator) until
a read at another edge returns it; {real_fig["vis_n"]} real samples ({args.visibility_samples}
writes followed at the two other edges, polled every {args.poll_ms:g} ms;
{real.unseen} gave up), {model["vis_n"]} simulated (every write, the two other edges).

Real run: {real_fig["reads"]:,} reads, statuses {dict(sorted(real.statuses.items()))},
write acknowledgement p50 {percentile(sorted(real.writes), 50) * 1000:.0f} ms; the load
generator left requests late by p50 {percentile(lag, 50) * 1000:.1f} ms, p99
{percentile(lag, 99) * 1000:.1f} ms; the run took {real.elapsed:.0f} s; load average at the
end {load[0]:.1f} on {os.cpu_count()} CPUs ({platform.machine()}, Python
{platform.python_version()}), shared with other agents' work.
Calibration measured in this run: a hit's latency p50 {hit_time * 1000:.2f} ms, p90
{quantiles[90] * 1000:.2f} ms, p99.5 {quantiles[99] * 1000:.2f} ms (its {QUANTILES} quantiles
are the calibrated server-time distribution), a miss's median time beyond the round trip
and a median hit {origin_time * 1000:.2f} ms. Stored in `pullkv.simulate.config.LOOPBACK`
(from an earlier run): p50 {percentile(list(LOOPBACK.server_time), 50) * 1000:.2f} ms, p99.5
{LOOPBACK.server_time[-1] * 1000:.2f} ms, and {LOOPBACK.origin_time * 1000:.2f} ms. Model
defaults: a constant 0.30 ms per read, and 1.00 ms at the origin.

| measure | real cluster | simulator: model defaults | calibrated by this run | `LOOPBACK` |
|---|---|---|---|---|
{row("edge hit ratio", "hit_ratio", 1, "")}
{row("read p50", "p50", 1000, " ms")}
{row("read p99", "p99", 1000, " ms")}
{row("visibility p50", "vis_p50", 1000, " ms")}
{row("visibility p99", "vis_p99", 1000, " ms")}
"""
    print(text)
    if args.no_write:
        return
    old = RESULTS.read_text() if RESULTS.exists() else ""
    head = old.split(MARKER)[0].rstrip()
    # The discussion below the figures is written by hand: kept, to be revised by hand.
    notes = DISCUSSION + old.split(DISCUSSION, 1)[1] if DISCUSSION in old else ""
    text = f"{text}\n{notes}" if notes else text
    RESULTS.write_text(f"{head}\n\n{text}" if head else text)


if __name__ == "__main__":
    main()
