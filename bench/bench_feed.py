"""The change feed (issue 11): write-to-visible latency across edges, and what the feed costs.

Real processes on loopback, as ``pullkv cluster up`` runs them: ``pullkv origin`` and
``pullkv edge --upstream ...`` (the origin's admin token as the edges' upstream token and the
clients' token, its master key in PULLKV_MASTER_KEY), every edge with the default cacheTtl
(60 s) and refresh interval (60 s). By default every server runs on CPU 0 and wrk and this
script's client on CPU 1 (``--server-cpus``, ``--wrk-cpus``).

(a) Write-to-visible, flat: one origin and three edges, each ``--upstream-latency-ms 80``.
    Keys are written at the origin and read at every edge until each edge holds them
    (``Cache-Status: hit``). A writer then writes through edge 1 at a steady pace,
    round-robin over ``--keys`` keys (value = the write's number), while a reader per other
    edge polls, every ``--poll-ms``, each key that has a write it has not seen yet (async
    httpx). A write is *visible* at an edge at the end of the first GET there that returns
    it or a later write of the key. Per write and edge: that moment minus the write's
    acknowledgement, and minus its start. Configurations: the feed on (default),
    ``--feed-loss 0.1``, and ``--invalidation off`` (only the TTL bounds staleness: one key,
    fewer writes spread evenly over one cacheTtl after the edges cached it, so that the
    run waits at most one TTL; see the report).
(b) The same through a middle tier: origin -> regional edge (80 ms) -> two lower edges
    (80 ms to the regional edge); the writer at lower edge 1, readers at lower edge 2 and
    at the regional edge.
(c) Write throughput, feed on against off, in the same run: two clusters (origin + three
    edges each), all edges ``--invalidation on`` in one and ``off`` in the other; wrk PUTs
    fresh keys (bench/put_unique.lua) through edge 1, interleaved rounds; with 80 ms upstream
    delay and with none (where the origin's cost of serving three feeds shows most).
(d) Hot reads at an edge, feed on against off, same run: wrk GETs one 1 KiB value at edge 1
    of each of the two clusters without delay (bench/get_static.lua), while a background
    thread writes other keys at each origin at ``--background-rate`` writes/s, so that the
    edges with the feed on receive and apply changes throughout.

    .venv/bin/python bench/bench_feed.py            # about 7 minutes
    .venv/bin/python bench/bench_feed.py --quick    # about 3.5 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import shlex
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx

from benchlib import (
    HERE,
    PullkvServer,
    Run,
    WrkResult,
    add_pin_arguments,
    check_cpus,
    cpu_seconds,
    cpu_set,
    default_server_command,
    find_tool,
    http,
    interleaved_rounds,
    kept_results,
    machine_busy_seconds,
    machine_facts,
    median,
    paired_ratios,
    percentile,
    pin,
    rounds_table,
    run_wrk,
    summary_table,
    table,
)

LATENCY_MS = 80.0  # the injected upstream delay
DEFAULT_TTL = 60.0  # the edges' default cacheTtl and refresh interval (left as they are)
VALUE_PAD = 56  # bytes after the 8-digit write number
INITIAL = -1  # the version number of the values written before measuring
TARGETS = {"feed on": 1.0, "feed loss 0.1": 2.0}  # p99 bounds from the issue, seconds
THROUGHPUT_TARGET = 0.9  # feed on over feed off
HOT_BYTES = 1024
WRITE_BYTES = 1024
FEED_ON = "feed on"
FEED_OFF = "feed off"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_pin_arguments(p)
    p.add_argument("--quick", action="store_true", help="a shorter run (about half the time)")
    p.add_argument("--parts", default="abcd", help="which parts to run (default abcd)")
    p.add_argument(
        "--writes", type=int, default=0, help="(a, b) writes per configuration (default 200)"
    )
    p.add_argument("--keys", type=int, default=8, help="(a, b) keys written round-robin")
    p.add_argument(
        "--pace-ms", type=float, default=250, help="(a, b) ms between write starts (default 250)"
    )
    p.add_argument("--poll-ms", type=float, default=5, help="(a, b) reader poll interval")
    p.add_argument(
        "--off-writes",
        type=int,
        default=0,
        help="(a) writes with --invalidation off (default 20; quick 8; spread over one TTL)",
    )
    p.add_argument(
        "--other-edge-cpus",
        default="1",
        help='(c, d) CPUs for e2 and e3, the other locations (default 1; "": as the servers)',
    )
    p.add_argument("--connections", type=int, default=32, help="(c, d) wrk connections")
    p.add_argument("--duration", type=float, default=0, help="(c, d) s per wrk run (default 8)")
    p.add_argument("--rounds", type=int, default=0, help="(c, d) interleaved rounds (default 3)")
    p.add_argument("--background-rate", type=float, default=20, help="(d) writes/s at each origin")
    p.add_argument("--wrk", help="path of wrk (default: from PATH)")
    p.add_argument("--server", help="command that runs pullkv (default: this Python -m pullkv)")
    p.add_argument("--source", help="what source --server runs, for the report")
    args = p.parse_args(argv)
    check_cpus(p, args.server_cpus, args.wrk_cpus)
    args.writes = args.writes or (60 if args.quick else 200)
    args.off_writes = args.off_writes or (8 if args.quick else 20)
    args.duration = args.duration or (4 if args.quick else 8)
    args.rounds = args.rounds or (2 if args.quick else 3)
    if not (
        set(args.parts) <= set("abcd")
        and 1 <= args.writes <= 2000
        and 1 <= args.keys <= 64
        and 20 <= args.pace_ms <= 5000
        and 1 <= args.poll_ms <= 100
        and 1 <= args.off_writes <= 100
        and 1 <= args.connections <= 256
        and 1 <= args.duration <= 60
        and 1 <= args.rounds <= 10
        and 0 < args.background_rate <= 200
    ):
        p.error(
            "keep --parts within abcd, --writes in 1..2000, --keys in 1..64, --pace-ms in"
            " 20..5000, --poll-ms in 1..100, --off-writes in 1..100, --connections in 1..256,"
            " --duration in 1..60, --rounds in 1..10, --background-rate in (0, 200]"
        )
    return args


class Node(PullkvServer):
    """A ``PullkvServer`` whose edges may stand below another edge (a middle tier): an
    edge's master key is its origin's, however many tiers up."""

    def master_key(self) -> str:
        """The master key of the origin at the top of this node's chain."""
        if self.upstream is not None:
            return self.upstream.master_key()
        return super().master_key()


@dataclass
class Cluster:
    """An origin and its edges (by label), started together and stopped together."""

    name: str
    origin: Node
    edges: dict[str, Node]

    @property
    def pids(self) -> list[int]:
        """Every server's process id."""
        return [self.origin.pid, *(e.pid for e in self.edges.values())]


@contextlib.contextmanager
def start_cluster(
    name: str,
    command: list[str],
    edge_args: Sequence[str],
    *,
    latency_ms: float,
    tiered: bool = False,
    others: list[str] | None = None,
) -> Iterator[Cluster]:
    """Flat: origin + edges e1, e2, e3. Tiered: origin -> regional -> lower1, lower2. Every
    edge adds ``latency_ms`` to each exchange with its upstream. ``others`` runs e2 and e3
    (other locations, which are other machines in production) with another command (pinned
    elsewhere)."""
    args = [*edge_args, "--upstream-latency-ms", f"{latency_ms:g}"]
    with contextlib.ExitStack() as stack:

        def started(node: Node) -> Node:
            stack.enter_context(node)
            return node

        origin = started(Node(command, [], f"{name}-origin", role="origin"))
        edges: dict[str, Node] = {}
        if tiered:
            regional = started(Node(command, args, "regional", role="edge", upstream=origin))
            edges["regional"] = regional
            for label in ("lower1", "lower2"):
                edges[label] = started(Node(command, args, label, role="edge", upstream=regional))
        else:
            for label in ("e1", "e2", "e3"):
                run = command if label == "e1" or others is None else others
                edges[label] = started(Node(run, args, label, role="edge", upstream=origin))
        yield Cluster(name, origin, edges)


def feed_metrics(node: PullkvServer) -> dict[str, float]:
    """Every ``pullkv_feed_*`` sample of a node's /metrics, by name and labels."""
    found: dict[str, float] = {}
    for line in node.metrics_text().splitlines():
        if line.startswith("pullkv_feed_") and "_created" not in line:
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def metric_delta(after: dict[str, float], before: dict[str, float]) -> str:
    """The counters that moved, compactly (``messages{kind="beat"} +12``)."""
    moved = []
    for name, value in after.items():
        if not name.endswith("}") or "_total" not in name:
            continue
        delta = value - before.get(name, 0.0)
        if delta:
            short = name.removeprefix("pullkv_feed_").replace("_total", "")
            moved.append(f"{short} +{delta:g}")
    return ", ".join(moved) or "-"


# --- (a), (b): write-to-visible ------------------------------------------------------------


def value_of(index: int) -> bytes:
    """The value of write ``index``: its number, then padding."""
    return f"{index:08d}".encode() + b"v" * VALUE_PAD


def version_in(body: bytes) -> int:
    """The write number a value carries (INITIAL for the values written before measuring)."""
    return int(body[:8])


@dataclass
class Write:
    """One measured write and when each reader first saw it (or a later write of its key)."""

    index: int
    key: str
    started: float
    acked: float = math.nan
    seen: dict[str, float] = field(default_factory=dict)
    exact: dict[str, bool] = field(default_factory=dict)


@dataclass
class Visibility:
    """The writes of one configuration and what surrounded them."""

    config: str
    writer: str
    readers: list[str]
    writes: list[Write]
    pace_s: float
    poll_s: float
    keys: int
    wall_s: float
    others_percent: float
    metrics: dict[str, str]  # reader label -> feed counters that moved
    note: str = ""

    def delays(self, reader: str, since: str) -> list[float]:
        """Seconds to visibility at ``reader`` from each write's ack or start."""
        return [
            w.seen[reader] - (w.acked if since == "ack" else w.started)
            for w in self.writes
            if reader in w.seen
        ]


def url_of(node: PullkvServer, namespace_id: str, key: str) -> str:
    """A value's REST URL at a node."""
    return node.origin + node.values_path(namespace_id) + urllib.parse.quote(key, safe="")


def prepare_keys(cluster: Cluster, namespace_id: str, keys: list[str], readers: list[Node]) -> None:
    """Write every key at the origin, then read it at each reader until the reader's cache
    holds it (``Cache-Status`` says hit): a write then has something to invalidate."""
    for key in keys:
        cluster.origin.put(namespace_id, key, value_of(INITIAL))
    with httpx.Client(headers={"Authorization": f"Bearer {cluster.origin.token}"}) as client:
        for node in readers:
            for key in keys:
                for _attempt in range(20):
                    got = client.get(url_of(node, namespace_id, key), timeout=10)
                    hit = "hit" in got.headers.get("cache-status", "")
                    if got.status_code == 200 and version_in(got.content) == INITIAL and hit:
                        break
                else:
                    raise RuntimeError(f"{node.label} never cached {key}: {got.status_code}")


async def measure_visibility(
    config: str,
    cluster: Cluster,
    namespace_id: str,
    writer: Node,
    readers: list[Node],
    *,
    writes: int,
    keys: list[str],
    pace: float,
    poll: float,
    tail: float,
) -> tuple[list[Write], float]:
    """Write ``writes`` times through ``writer`` (one start every ``pace`` s, round-robin
    over ``keys``) while each reader polls the keys with writes it has not seen; wait up to
    ``tail`` s after the last write for the readers to see everything. Returns the writes
    and the wall time."""
    headers = {"Authorization": f"Bearer {cluster.origin.token}"}
    limits = httpx.Limits(max_connections=len(keys) + 2)
    done: list[Write] = []
    unseen: dict[tuple[str, str], list[Write]] = {(r.label, k): [] for r in readers for k in keys}
    wake: dict[tuple[str, str], asyncio.Event] = {pair: asyncio.Event() for pair in unseen}

    async def follow(client: httpx.AsyncClient, reader: Node, key: str) -> None:
        pair = (reader.label, key)
        url = url_of(reader, namespace_id, key)
        while True:
            waiting = unseen[pair]
            if not waiting:
                wake[pair].clear()
                await wake[pair].wait()
                continue
            got = await client.get(url)
            now = time.monotonic()
            if got.status_code != 200:
                raise RuntimeError(f"{reader.label} GET {key}: {got.status_code} {got.text}")
            version = version_in(got.content)
            while waiting and waiting[0].index <= version:
                write = waiting.pop(0)
                write.seen[reader.label] = now
                write.exact[reader.label] = write.index == version
            await asyncio.sleep(poll)

    async def write_all(client: httpx.AsyncClient) -> None:
        due = time.monotonic()
        for index in range(writes):
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            key = keys[index % len(keys)]
            write = Write(index, key, time.monotonic())
            done.append(write)
            for reader in readers:  # polled from the start: visible before the ack counts
                unseen[(reader.label, key)].append(write)
                wake[(reader.label, key)].set()
            got = await client.put(url_of(writer, namespace_id, key), content=value_of(index))
            write.acked = time.monotonic()
            if got.status_code != 200:
                raise RuntimeError(f"PUT {key} through {writer.label}: {got.status_code}")
            due += pace

    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        writer_client = await stack.enter_async_context(
            httpx.AsyncClient(headers=headers, timeout=30)
        )
        clients = {
            r.label: await stack.enter_async_context(
                httpx.AsyncClient(headers=headers, limits=limits, timeout=30)
            )
            for r in readers
        }
        followers = [
            asyncio.create_task(follow(clients[r.label], r, k)) for r in readers for k in keys
        ]
        try:
            await write_all(writer_client)
            deadline = time.monotonic() + tail
            while any(unseen.values()) and time.monotonic() < deadline:
                for task in followers:
                    if task.done():
                        task.result()  # a reader failed: raise its error
                await asyncio.sleep(0.05)
        finally:
            for task in followers:
                task.cancel()
            results = await asyncio.gather(*followers, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result
    return done, time.monotonic() - started


def run_visibility(
    config: str,
    cluster: Cluster,
    writer_label: str,
    reader_labels: list[str],
    *,
    writes: int,
    key_count: int,
    pace: float,
    poll: float,
    tail: float,
    client_cpus: str,
    note: str = "",
) -> Visibility:
    """One configuration of (a) or (b): prepare the keys, measure, collect the readers'
    feed counters and the machine's noise."""
    namespace_id = cluster.origin.create_namespace(f"feed-{config}")
    keys = [f"k{n:02d}" for n in range(key_count)]
    writer = cluster.edges[writer_label]
    readers = [cluster.edges[label] for label in reader_labels]
    prepare_keys(cluster, namespace_id, keys, readers)
    # The writer's namespace lookup and token check, so that the first write is like others.
    http("GET", url_of(writer, namespace_id, keys[0]), cluster.origin.token)
    before = {r.label: feed_metrics(r) for r in readers}
    servers_before = sum(cpu_seconds(p) for p in cluster.pids)
    machine_before = machine_busy_seconds()
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    saved = _pin_self(client_cpus)
    try:
        writes_done, wall = asyncio.run(
            measure_visibility(
                config,
                cluster,
                namespace_id,
                writer,
                readers,
                writes=writes,
                keys=keys,
                pace=pace,
                poll=poll,
                tail=tail,
            )
        )
    finally:
        _unpin_self(saved)
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    own = (own_after.ru_utime - own_before.ru_utime) + (own_after.ru_stime - own_before.ru_stime)
    servers = sum(cpu_seconds(p) for p in cluster.pids) - servers_before
    others = machine_busy_seconds() - machine_before - servers - own
    moved = {r.label: metric_delta(feed_metrics(r), before[r.label]) for r in readers}
    result = Visibility(
        config,
        writer_label,
        reader_labels,
        writes_done,
        pace,
        poll,
        key_count,
        wall,
        max(0.0, 100 * others / wall),
        moved,
        note,
    )
    for reader in reader_labels:
        from_ack = result.delays(reader, "ack")
        if from_ack:
            print(
                f"({config}) {reader}: {len(from_ack)}/{len(writes_done)} seen, from ack p50"
                f" {1000 * percentile(from_ack, 50):.0f} ms, p99"
                f" {1000 * percentile(from_ack, 99):.0f} ms, max {1000 * max(from_ack):.0f} ms",
                file=sys.stderr,
                flush=True,
            )
    return result


def _pin_self(cpus: str) -> set[int] | None:
    """Run this process on ``cpus`` (none: leave it); the affinity it had."""
    if not cpus:
        return None
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpu_set(cpus))
    return saved


def _unpin_self(saved: set[int] | None) -> None:
    """Restore the affinity ``_pin_self`` saved."""
    if saved is not None:
        os.sched_setaffinity(0, saved)


def visibility_rows(results: list[Visibility]) -> list[list[object]]:
    """One row per configuration and reader."""
    rows: list[list[object]] = []
    for v in results:
        target = TARGETS.get(v.config.split(", ")[-1])
        for reader in v.readers:
            from_ack = v.delays(reader, "ack")
            from_start = v.delays(reader, "start")
            acks = [w.acked - w.started for w in v.writes]
            superseded = sum(1 for w in v.writes if reader in w.seen and not w.exact[reader])
            if from_ack:
                p99 = percentile(from_ack, 99)
                verdict = "-" if target is None else ("PASS" if p99 <= target else "FAIL")
                figures = [
                    f"{1000 * percentile(from_ack, 50):.0f}",
                    f"**{1000 * p99:.0f}**",
                    f"{1000 * max(from_ack):.0f}",
                    f"{1000 * percentile(from_start, 50):.0f}",
                    f"{1000 * percentile(from_start, 99):.0f}",
                    f"{1000 * max(from_start):.0f}",
                ]
            else:
                verdict, figures = "FAIL", ["-"] * 6
            rows.append(
                [
                    v.config,
                    reader,
                    f"{len(from_ack)}/{len(v.writes)}",
                    *figures,
                    superseded,
                    f"{1000 * percentile(acks, 50):.0f}",
                    "-" if target is None else f"<= {1000 * target:.0f}: {verdict}",
                ]
            )
    return rows


def visibility_report(results: list[Visibility]) -> list[str]:
    """The tables of (a) and (b)."""
    headers = [
        "configuration",
        "reader",
        "seen",
        "from ack p50 ms",
        "p99 ms",
        "max ms",
        "from start p50 ms",
        "p99 ms",
        "max ms",
        "seen as a later write",
        "write (ack) p50 ms",
        "p99 target",
    ]
    out = [table(headers, visibility_rows(results)), ""]
    details = [
        [
            v.config,
            v.writer,
            len(v.writes),
            v.keys,
            f"{1000 * v.pace_s:.0f}",
            f"{1000 * v.poll_s:.0f}",
            f"{v.wall_s:.0f}",
            f"{v.others_percent:.0f}%",
            "; ".join(f"{r}: {m}" for r, m in v.metrics.items()),
        ]
        for v in results
    ]
    out += [
        table(
            [
                "configuration",
                "writer",
                "writes",
                "keys",
                "pace ms",
                "poll ms",
                "wall s",
                "others' CPU",
                "readers' feed counters during the run",
            ],
            details,
        ),
        "",
    ]
    notes = [f"- {v.config}: {v.note}" for v in results if v.note]
    return [*out, *notes, ""] if notes else out


# --- (c), (d): throughput, feed on against off ---------------------------------------------


def wrk_once(
    wrk: str,
    cluster: Cluster,
    url: str,
    script: str,
    script_args: list[str],
    seconds: float,
    connections: int,
    wrk_pin: list[str],
) -> WrkResult:
    """One wrk run at ``url``, with each role's CPU (origin, edge 1, other edges) in % of
    one core as extra figures."""
    pids = {cluster.origin.pid: "origin"}
    pids |= {e.pid: ("e1" if label == "e1" else "others") for label, e in cluster.edges.items()}
    before = {pid: cpu_seconds(pid) for pid in pids}
    result = run_wrk(
        wrk,
        url,
        HERE / script,
        script_args,
        threads=1,
        connections=connections,
        duration=seconds,
        server_pids=list(pids),
        wrapper=wrk_pin,
    )
    for pid, role in pids.items():
        share = 100 * (cpu_seconds(pid) - before[pid]) / result.seconds
        result.extra[role] = result.extra.get(role, 0.0) + share
    return result


CPU_COLUMNS = [("origin CPU", "origin", ".0f"), ("e1 CPU", "e1", ".0f")]
CPU_COLUMNS += [("e2+e3 CPU", "others", ".0f")]


def throughput(
    args: argparse.Namespace,
    wrk: str,
    wrk_pin: list[str],
    clusters: dict[str, Cluster],
    tag: str,
) -> list[Run]:
    """(c) at one delay: interleaved wrk PUT rounds through edge 1 of each cluster."""
    namespaces = {name: c.origin.create_namespace(f"writes-{tag}") for name, c in clusters.items()}
    counter = iter(range(1_000_000))

    def once(name: str, seconds: float) -> WrkResult:
        cluster = clusters[name]
        edge = cluster.edges["e1"]
        prefix = f"r{next(counter)}-"
        return wrk_once(
            wrk,
            cluster,
            edge.origin,
            "put_unique.lua",
            [edge.values_path(namespaces[name]), edge.token, prefix, str(WRITE_BYTES)],
            seconds,
            args.connections,
            wrk_pin,
        )

    return interleaved_rounds(
        [FEED_ON, FEED_OFF],
        once,
        rounds=args.rounds,
        duration=args.duration,
        warmup=min(2.0, args.duration),
        quiet_wait=0,
        max_noise=1e9,  # no redos: the run's length stays bounded; others' CPU is reported
        retries=0,
        tag=f"(c, {tag}) ",
    )


def warm_hot(edge: PullkvServer, url: str, value: bytes) -> float:
    """Read the hot value at an edge until it is cached; the share of five more GETs that
    ``pullkv_hot_responses_total`` counted (1.0: all on the fast path)."""
    for _ in range(3):
        got = http("GET", url, edge.token)
        if got.status != 200 or got.body != value:
            raise RuntimeError(f"{edge.label} GET hot: {got.status}")
    before = edge.metric("pullkv_hot_responses_total")
    for _ in range(5):
        http("GET", url, edge.token)
    return (edge.metric("pullkv_hot_responses_total") - before) / 5


class BackgroundWriter:
    """A thread writing fresh keys at each origin, ``rate`` writes/s each, until stopped."""

    def __init__(self, targets: list[tuple[PullkvServer, str]], rate: float) -> None:
        self.targets = targets
        self.rate = rate
        self.count = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        due = time.monotonic()
        n = 0
        while not self._stop.is_set():
            for origin, namespace_id in self.targets:
                reply = http("PUT", url_of(origin, namespace_id, f"bg-{n}"), origin.token, b"b")
                if reply.status == 200:
                    self.count += 1
                else:
                    self.failed += 1
            n += 1
            due += 1 / self.rate
            self._stop.wait(max(0.0, due - time.monotonic()))


def hot_reads(
    args: argparse.Namespace, wrk: str, wrk_pin: list[str], clusters: dict[str, Cluster]
) -> tuple[list[Run], dict[str, float], dict[str, str], int]:
    """(d): interleaved wrk GET rounds of the hot value at edge 1 of each cluster, with the
    background writer running. Returns the runs, the fast-path share at warm-up, the feed
    counters that moved at edge 1, and the background writes done."""
    value = bytes(ord("a") + i % 26 for i in range(HOT_BYTES))
    urls: dict[str, str] = {}
    warm: dict[str, float] = {}
    background: list[tuple[PullkvServer, str]] = []
    for name, cluster in clusters.items():
        ns = cluster.origin.create_namespace("hot")
        cluster.origin.put(ns, "hot", value)
        edge = cluster.edges["e1"]
        urls[name] = url_of(edge, ns, "hot")
        warm[name] = warm_hot(edge, urls[name], value)
        background.append((cluster.origin, ns))
    before = {name: feed_metrics(c.edges["e1"]) for name, c in clusters.items()}

    def once(name: str, seconds: float) -> WrkResult:
        edge = clusters[name].edges["e1"]
        hot_before = edge.metric("pullkv_hot_responses_total")
        result = wrk_once(
            wrk,
            clusters[name],
            urls[name],
            "get_static.lua",
            [edge.token],
            seconds,
            64,
            wrk_pin,
        )
        hot = edge.metric("pullkv_hot_responses_total") - hot_before
        result.extra["hot"] = 100 * hot / max(1, result.requests)
        return result

    with BackgroundWriter(background, args.background_rate) as writer:
        runs = interleaved_rounds(
            [FEED_ON, FEED_OFF],
            once,
            rounds=args.rounds,
            duration=args.duration,
            warmup=min(2.0, args.duration),
            quiet_wait=0,
            max_noise=1e9,
            retries=0,
            tag="(d) ",
        )
    moved = {
        name: metric_delta(feed_metrics(c.edges["e1"]), before[name])
        for name, c in clusters.items()
    }
    if writer.failed:
        raise RuntimeError(f"background writer: {writer.failed} writes failed")
    return runs, warm, moved, writer.count


def ratio_lines(runs: list[Run], what: str, target: float | None) -> tuple[str, str]:
    """The medians' ratio, round by round too, and a verdict line."""
    on = median([r.rate for r in kept_results(runs, FEED_ON)])
    off = median([r.rate for r in kept_results(runs, FEED_OFF)])
    ratio = on / off
    rounds = " / ".join(f"{r:.2f}x" for r in paired_ratios(runs, FEED_ON, FEED_OFF))
    line = f"Ratio feed on / off: **{ratio:.2f}x** of the medians; {rounds} round by round."
    verdict = f"{what}: {on:.0f} vs {off:.0f} req/s, {ratio:.2f}x"
    if target is not None:
        verdict += f", target >= {target}x: **{'PASS' if ratio >= target else 'FAIL'}**"
    return line, verdict


# --- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for and print the markdown report."""
    args = parse_args(argv)
    wrk = find_tool("wrk", args.wrk) if set(args.parts) & set("cd") else ""
    base_command = shlex.split(args.server) if args.server else default_server_command()
    server_command = [*pin(args.server_cpus), *base_command]
    # The other locations' edges on the client's CPUs: their cost of following the feed is
    # not the writing location's (in production they are other machines).
    others = [*pin(args.other_edge_cpus), *base_command] if args.other_edge_cpus else None
    wrk_pin = pin(args.wrk_cpus)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "bench/bench_feed.py", *given])
    facts = machine_facts(wrk or "wrk", base_command, source=args.source)
    pace, poll = args.pace_ms / 1000, args.poll_ms / 1000
    started = time.monotonic()
    visibility: list[Visibility] = []
    tier: list[Visibility] = []
    writes_runs: dict[str, list[Run]] = {}
    hot: tuple[list[Run], dict[str, float], dict[str, str], int] | None = None

    def flat(config: str, cluster: Cluster) -> None:
        visibility.append(
            run_visibility(
                config,
                cluster,
                "e1",
                ["e2", "e3"],
                writes=args.writes,
                key_count=args.keys,
                pace=pace,
                poll=poll,
                tail=10,
                client_cpus=args.wrk_cpus,
            )
        )

    on_args = ["--invalidation", "on"]
    off_args = ["--invalidation", "off"]
    if "a" in args.parts or "c" in args.parts:
        with (
            start_cluster(
                "on", server_command, on_args, latency_ms=LATENCY_MS, others=others
            ) as on,
            start_cluster(
                "off", server_command, off_args, latency_ms=LATENCY_MS, others=others
            ) as off,
        ):
            if "a" in args.parts:
                flat(f"80 ms, {FEED_ON}", on)
                with start_cluster(
                    "loss",
                    server_command,
                    [*on_args, "--feed-loss", "0.1"],
                    latency_ms=LATENCY_MS,
                ) as lossy:
                    flat("80 ms, feed loss 0.1", lossy)
                # Without the feed a write shows when the reader's entry is next refreshed,
                # at most one cacheTtl after it was cached: spread the writes evenly over the
                # first TTL after caching (so the run waits one TTL, not one per write), on
                # one key, polled less often (20 ms; the figures are seconds).
                spacing = (DEFAULT_TTL - 3) / args.off_writes
                visibility.append(
                    run_visibility(
                        "80 ms, feed off (--invalidation off)",
                        off,
                        "e1",
                        ["e2", "e3"],
                        writes=args.off_writes,
                        key_count=1,
                        pace=spacing,
                        poll=max(poll, 0.02),
                        tail=DEFAULT_TTL + 10,
                        client_cpus=args.wrk_cpus,
                        note=(
                            f"{args.off_writes} writes of one key, {spacing:.2f} s apart,"
                            " starting just after the readers' edges cached it (TTL 60 s,"
                            " refresh interval 60 s, both the defaults): each write's"
                            " visibility is the wait for the next refresh, so the writes"
                            " sample it evenly from about 60 s down to 0; the readers"
                            " polled every 20 ms."
                        ),
                    )
                )
            if "c" in args.parts:
                writes_runs["80 ms"] = throughput(
                    args, wrk, wrk_pin, {FEED_ON: on, FEED_OFF: off}, "80 ms"
                )
    if "b" in args.parts:
        with start_cluster(
            "tier", server_command, on_args, latency_ms=LATENCY_MS, tiered=True
        ) as tiered:
            tier.append(
                run_visibility(
                    f"middle tier, 80 ms per hop, {FEED_ON}",
                    tiered,
                    "lower1",
                    ["lower2", "regional"],
                    writes=args.writes,
                    key_count=args.keys,
                    pace=pace,
                    poll=poll,
                    tail=10,
                    client_cpus=args.wrk_cpus,
                )
            )
    if "c" in args.parts or "d" in args.parts:
        with (
            start_cluster("on0", server_command, on_args, latency_ms=0, others=others) as on0,
            start_cluster("off0", server_command, off_args, latency_ms=0, others=others) as off0,
        ):
            clusters = {FEED_ON: on0, FEED_OFF: off0}
            if "c" in args.parts:
                writes_runs["0 ms"] = throughput(args, wrk, wrk_pin, clusters, "0 ms")
            if "d" in args.parts:
                hot = hot_reads(args, wrk, wrk_pin, clusters)
    wall = time.monotonic() - started
    print(report(args, command, facts, wall, visibility, tier, writes_runs, hot))
    return 0


def report(
    args: argparse.Namespace,
    command: str,
    facts: list[str],
    wall: float,
    visibility: list[Visibility],
    tier: list[Visibility],
    writes_runs: dict[str, list[Run]],
    hot: tuple[list[Run], dict[str, float], dict[str, str], int] | None,
) -> str:
    """The markdown report."""
    pinning = (
        f"every server on CPU {args.server_cpus or 'any'}, wrk and this script's client"
        f" on CPU {args.wrk_cpus or 'any'}"
    )
    out = [
        "### The change feed: write-to-visible latency and its cost",
        "",
        f"Command: `{command}` (wall time {wall:.0f} s)",
        "",
        *[f"- {fact}" for fact in facts],
        f"- pinning: {pinning}",
        "- edges: default cacheTtl 60 s and refresh interval 60 s; `--upstream-latency-ms`"
        " as stated (the feed's messages are delayed by half of it, one way)",
        "",
    ]
    verdicts: list[str] = []
    if visibility:
        out += [
            "#### (a) Write-to-visible: origin and three edges, 80 ms upstream delay each;"
            " writer at e1, readers at e2 and e3",
            "",
            *visibility_report(visibility),
        ]
    if tier:
        out += [
            "#### (b) Write-to-visible through a middle tier: origin -> regional (80 ms) ->"
            " lower1, lower2 (80 ms each to regional); writer at lower1",
            "",
            *visibility_report(tier),
        ]
    for v in [*visibility, *tier]:
        target = TARGETS.get(v.config.split(", ")[-1])
        for reader in v.readers:
            from_ack = v.delays(reader, "ack")
            p99 = percentile(from_ack, 99) if from_ack else math.inf
            line = f"{v.config}, {reader}: p99 {1000 * p99:.0f} ms"
            if len(from_ack) < len(v.writes):
                line += f" ({len(v.writes) - len(from_ack)} writes never seen)"
            if target is not None:
                ok = p99 <= target and len(from_ack) == len(v.writes)
                line += f", target <= {1000 * target:.0f} ms: **{'PASS' if ok else 'FAIL'}**"
            else:
                line += f", max {1000 * max(from_ack, default=math.inf):.0f} ms"
            verdicts.append(line)
    if visibility or tier:
        out += [
            "Visible: the end of the first GET at the reader's edge that returned the write"
            " or a later write of the same key (*seen as a later write* counts those); from"
            " ack: from the moment the writer got its 200, from start: from when it sent the"
            " PUT. Readers poll each key with an unseen write every poll interval, and only"
            " those. Percentiles are nearest-rank. Feed counters are the readers' edges'"
            " `pullkv_feed_*` increments over the run.",
            "",
        ]
    for delay, runs in writes_runs.items():
        line, verdict = ratio_lines(runs, f"(c) writes/s through e1, {delay}", THROUGHPUT_TARGET)
        verdicts.append(verdict)
        out += [
            f"#### (c) Write throughput through edge 1, {delay} upstream delay: wrk -t1"
            f" -c{args.connections} -d{args.duration:g}s, PUT of fresh keys,"
            f" {WRITE_BYTES} B (bench/put_unique.lua)",
            "",
            summary_table(runs, CPU_COLUMNS),
            "",
            line,
            "",
            rounds_table(runs, 1e9, CPU_COLUMNS),
            "",
        ]
    if hot is not None:
        runs, warm, moved, background = hot
        line, verdict = ratio_lines(runs, "(d) hot reads at e1", None)
        verdicts.append(verdict)
        columns = [("hot %", "hot", ".1f"), *CPU_COLUMNS]
        out += [
            f"#### (d) Hot reads of 1 KiB at edge 1, no delay: wrk -t1 -c64"
            f" -d{args.duration:g}s (bench/get_static.lua), while {args.background_rate:g}"
            " writes/s of other keys go to each origin",
            "",
            summary_table(runs, columns),
            "",
            line,
            "",
            rounds_table(runs, 1e9, columns),
            "",
            "- fast-path share at warm-up: "
            + ", ".join(f"{name} {share:.0%}" for name, share in warm.items()),
            f"- background writes done: {background}",
            *[f"- e1's feed counters during (d), {name}: {m}" for name, m in moved.items()],
            "",
        ]
    if writes_runs or hot is not None:
        out += [
            "Server CPU: all the cluster's servers together, in % of one core; origin, e1"
            " and e2+e3 split it. Others' CPU: the machine's CPU used by none of our"
            " processes (other tenants); rounds are not redone (the run's length stays"
            " bounded), so read it beside each round.",
            "",
        ]
    out += ["Against the targets:", "", *[f"- {v}" for v in verdicts], ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
