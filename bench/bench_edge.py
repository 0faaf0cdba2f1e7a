"""A pullkv edge in front of an origin: hot reads against nginx, p99 at half load, cold reads.

Starts ``pullkv origin`` and two ``pullkv edge --upstream <origin>`` processes on loopback
(the origin's admin token as the edges' upstream token and the clients' token, its master
key in PULLKV_MASTER_KEY, as ``pullkv cluster up`` does): the *near* edge with no added
delay, and the *far* edge with ``--upstream-latency-ms`` (50 ms by default) added to every
exchange with the origin. nginx (one worker) serves the same 1 KiB as a static file. By
default every server runs on CPU 0 (``taskset -c 0``; nginx's worker inherits it) and wrk, or
this script's client, on CPU 1, so pullkv and nginx each get one core and never compete with
the load generator.

(a) Hot reads: 1 KiB under ``hot``, written at the origin and read through the near edge
    until it is served on the edge's fast path (``pullkv_hot_responses_total`` on the
    edge's /metrics must grow by one per GET). Then interleaved rounds of
    ``wrk -t1 -c64 --latency`` on the REST value GET (bearer token) and on nginx's file:
    median req/s, p99 and the ratio (target: pullkv >= 0.6x nginx). Each pullkv run reports
    the share of its responses that the fast path answered.
(b) p99 at half load: wrk paced by ``get_paced.lua`` (wrk's ``delay()`` hook) to
    ``--load-fraction`` (0.5) of pullkv's median maximum from (a), on pullkv and, at the
    same rate, on nginx; the achieved rate is reported beside p99 (target: p99 < 2 ms).
(c) Cold reads: keys written at the origin beforehand, each read once, one after another
    (a bounded loop of httpx GETs on one keep-alive connection): through the far edge,
    after one read of another key has fetched the token record (the keyring is loaded at
    start) and opened the upstream connection (target: median and p99 at most the upstream
    delay + 5 ms); through the near edge (the cost of a miss without distance); and ``hot``
    through the near edge (the client's own floor).

    .venv/bin/python bench/bench_edge.py --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from benchlib import (
    HERE,
    NginxServer,
    PullkvServer,
    Run,
    WrkResult,
    add_common_arguments,
    add_pin_arguments,
    check_common_arguments,
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
    wait_until_quiet,
)

VALUE_BYTES = 1024
PULLKV = "pullkv edge GET values/hot"
NGINX = "nginx static file"
PULLKV_PACED = "pullkv edge, paced"
NGINX_PACED = "nginx, paced"
UNPACED = {PULLKV_PACED: PULLKV, NGINX_PACED: NGINX}
HOT_TARGET = 0.6  # pullkv req/s over nginx's
P99_TARGET_MS = 2.0  # at half load
COLD_MARGIN_MS = 5.0  # over one upstream round trip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, connections=64, per="target and part")
    add_pin_arguments(p)
    p.add_argument(
        "--load-fraction",
        type=float,
        default=0.5,
        help="(b): paced rate as a fraction of pullkv's median max req/s (default 0.5)",
    )
    p.add_argument(
        "--rate", type=int, default=0, help="(b): paced rate in req/s instead (default: derived)"
    )
    p.add_argument(
        "--cold-keys", type=int, default=200, help="(c): cold reads per edge (default 200)"
    )
    p.add_argument(
        "--upstream-latency-ms",
        type=float,
        default=50,
        help="(c): delay the far edge adds to every upstream exchange (default 50)",
    )
    p.add_argument("--cache-size", default="256MiB", help="edges' --cache-size (default 256MiB)")
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx workers (default 1)")
    p.add_argument("--nginx", help="path of nginx (default: from PATH or /usr/sbin)")
    p.add_argument("--parts", default="abc", help="which parts to run, e.g. ab or c (default abc)")
    args = p.parse_args(argv)
    check_common_arguments(p, args)
    check_cpus(p, args.server_cpus, args.wrk_cpus)
    if not (
        0.05 <= args.load_fraction <= 1
        and 0 <= args.rate <= 1_000_000
        and 1 <= args.cold_keys <= 5000
        and 0 <= args.upstream_latency_ms <= 1000
        and 1 <= args.nginx_workers <= 16
        and args.parts
        and set(args.parts) <= set("abc")
    ):
        p.error(
            "keep --load-fraction in 0.05..1, --rate in 0..1000000, --cold-keys in 1..5000,"
            " --upstream-latency-ms in 0..1000, --nginx-workers in 1..16, --parts within abc"
        )
    if "b" in args.parts and "a" not in args.parts and not args.rate:
        p.error("part b without part a needs --rate")
    return args


@dataclass
class Series:
    """One sequential series of single reads (part c), latencies in milliseconds."""

    name: str
    edge: str
    latencies: list[float]
    others_percent: float
    upstream_per_read: float  # the edge's upstream requests (any operation) per read
    fetch_ms: float | None  # the edge's mean time for one upstream fetch, delay included

    def pct(self, q: float) -> float:
        """A percentile of the latencies."""
        return percentile(self.latencies, q)


def bulk_put(origin: PullkvServer, namespace_id: str, pairs: list[tuple[str, str]]) -> None:
    """Write many small string values at the origin, 1000 per request."""
    url = f"{origin.origin}{origin.namespaces_path}/{namespace_id}/bulk"
    for start in range(0, len(pairs), 1000):
        chunk = [{"key": k, "value": v} for k, v in pairs[start : start + 1000]]
        reply = http("PUT", url, origin.token, json_body=chunk)
        if reply.status != 200:
            raise RuntimeError(f"bulk put: {reply.status} {reply.body!r}")


def warm_hot_path(edge: PullkvServer, url: str, value: bytes) -> float:
    """Read ``hot`` through the edge until its fast path answers; return the share of five
    further GETs that ``pullkv_hot_responses_total`` counted (1.0 when all were hot)."""
    for _ in range(3):  # the first read fills the cache and the token cache
        got = http("GET", url, edge.token)
        if got.status != 200 or got.body != value:
            raise RuntimeError(f"edge GET hot: {got.status} {got.body[:200]!r}")
    before = edge.metric("pullkv_hot_responses_total")
    for _ in range(5):
        http("GET", url, edge.token)
    return (edge.metric("pullkv_hot_responses_total") - before) / 5


def sequential_reads(
    name: str,
    edge: PullkvServer,
    urls: list[str],
    expect: dict[str, bytes],
    cache_word: str,
    server_pids: list[int],
    client_cpus: str,
    pause: float = 0.0,
) -> Series:
    """GET each URL once, one after another (``pause`` s apart), on one keep-alive
    connection; check each answer (status, body, that ``Cache-Status`` contains
    ``cache_word``) and time it. The edge's /metrics give its upstream calls meanwhile."""
    fetch_sum = "pullkv_upstream_latency_seconds_sum"
    fetch_count = "pullkv_upstream_latency_seconds_count"
    upstream_before = edge.metric_total("pullkv_upstream_requests_total")
    fetch_before = (
        edge.metric(fetch_sum, operation="fetch"),
        edge.metric(fetch_count, operation="fetch"),
    )
    saved = os.sched_getaffinity(0)
    if client_cpus:
        os.sched_setaffinity(0, cpu_set(client_cpus))
    latencies: list[float] = []
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {edge.token}"}, timeout=10) as client:
            client.get(edge.origin + "/healthz")  # open the connection
            servers_before = sum(cpu_seconds(p) for p in server_pids)
            own = resource.getrusage(resource.RUSAGE_SELF)
            machine_before, started = machine_busy_seconds(), time.monotonic()
            for url in urls:
                if pause:
                    time.sleep(pause)
                t0 = time.perf_counter()
                response = client.get(url)
                latencies.append(1000 * (time.perf_counter() - t0))
                if response.status_code != 200 or response.content != expect[url]:
                    raise RuntimeError(f"{name}: {url} answered {response.status_code}")
                status = response.headers.get("cache-status", "")
                if cache_word not in status:
                    raise RuntimeError(f"{name}: {url} has Cache-Status {status!r}")
            elapsed = time.monotonic() - started
            own_after = resource.getrusage(resource.RUSAGE_SELF)
            own_cpu = (own_after.ru_utime - own.ru_utime) + (own_after.ru_stime - own.ru_stime)
            servers = sum(cpu_seconds(p) for p in server_pids) - servers_before
            others = machine_busy_seconds() - machine_before - servers - own_cpu
    finally:
        os.sched_setaffinity(0, saved)
    upstream = edge.metric_total("pullkv_upstream_requests_total") - upstream_before
    fetches = edge.metric(fetch_count, operation="fetch") - fetch_before[1]
    fetch_s = edge.metric(fetch_sum, operation="fetch") - fetch_before[0]
    return Series(
        name,
        edge.label,
        latencies,
        max(0.0, 100 * others / elapsed),
        upstream / len(urls),
        1000 * fetch_s / fetches if fetches else None,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    args = parse_args(argv)
    wrk = find_tool("wrk", args.wrk)
    nginx_path = find_tool("nginx", args.nginx)
    base_command = shlex.split(args.server) if args.server else default_server_command()
    server_pin, wrk_pin = pin(args.server_cpus), pin(args.wrk_cpus)
    server_command = [*server_pin, *base_command]
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "bench/bench_edge.py", *given])
    facts = machine_facts(wrk, base_command, nginx_path, source=args.source)
    value = bytes(ord("a") + i % 26 for i in range(VALUE_BYTES))
    edge_args = ["--cache-size", args.cache_size]
    far_args = [*edge_args, "--upstream-latency-ms", f"{args.upstream_latency_ms:g}"]

    hot_runs: list[Run] = []
    paced_runs: list[Run] = []
    series: list[Series] = []
    warm_share = 0.0
    rate = float(args.rate)
    with (
        PullkvServer(server_command, [], "origin", role="origin") as origin,
        PullkvServer(server_command, edge_args, "near", role="edge", upstream=origin) as near,
        PullkvServer(server_command, far_args, "far", role="edge", upstream=origin) as far,
        NginxServer(nginx_path, value, workers=args.nginx_workers, wrapper=server_pin) as nginx,
    ):
        ns = origin.create_namespace("bench-edge")
        origin.put(ns, "hot", value)
        cold = {
            edge: [f"cold-{edge}-{i:06d}" for i in range(args.cold_keys)]
            for edge in ("near", "far")
        }
        pairs = [(k, f"value of {k}") for keys in cold.values() for k in keys]
        bulk_put(origin, ns, [*pairs, ("warm-far", "w")])
        hot_url = near.origin + near.values_path(ns) + "hot"
        warm_share = warm_hot_path(near, hot_url, value)
        with urllib.request.urlopen(nginx.url, timeout=10) as resp:
            if resp.read() != value:
                raise RuntimeError("nginx does not return the 1 KiB value")
        if warm_share < 1:
            print(f"warning: only {warm_share:.0%} of warm GETs were hot", file=sys.stderr)

        targets: dict[str, tuple[str, str, list[int]]] = {
            PULLKV: (hot_url, near.token, [near.pid]),
            NGINX: (nginx.url, "", [nginx.pid]),
        }

        def rounds(
            names: list[str], once: Callable[[str, float], WrkResult], warmup: float, tag: str
        ) -> list[Run]:
            return interleaved_rounds(
                names,
                once,
                rounds=args.rounds,
                duration=args.duration,
                warmup=warmup,
                quiet_wait=args.quiet_wait,
                max_noise=args.max_noise,
                retries=args.retries,
                tag=tag,
            )

        def measure(name: str, seconds: float, script: str, script_args: list[str]) -> WrkResult:
            url, token, pids = targets[UNPACED.get(name, name)]
            hot_before = near.metric("pullkv_hot_responses_total") if url == hot_url else None
            result = run_wrk(
                wrk,
                url,
                HERE / script,
                [token, *script_args],
                threads=args.threads,
                connections=args.connections,
                duration=seconds,
                server_pids=pids,
                wrapper=wrk_pin,
            )
            if hot_before is not None:
                hot = near.metric("pullkv_hot_responses_total") - hot_before
                result.extra["hot"] = 100 * hot / max(1, result.requests)
            return result

        if "a" in args.parts:
            hot_runs = rounds(
                [PULLKV, NGINX],
                lambda name, s: measure(name, s, "get_static.lua", []),
                args.warmup,
                "(a) ",
            )
            if not rate:
                rate = args.load_fraction * median([r.rate for r in kept_results(hot_runs, PULLKV)])
        if "b" in args.parts:
            per_thread = f"{rate / args.threads:.3f}"
            paced_runs = rounds(
                [PULLKV_PACED, NGINX_PACED],
                lambda name, s: measure(name, s, "get_paced.lua", [per_thread]),
                0,
                "(b) ",
            )
        if "c" in args.parts:
            if args.quiet_wait > 0:
                wait_until_quiet(args.quiet_wait)
            pids = [origin.pid, near.pid, far.pid]

            def urls(edge: PullkvServer, keys: list[str]) -> list[str]:
                base = edge.origin + edge.values_path(ns)
                return [base + urllib.parse.quote(k, safe="") for k in keys]

            expect = {hot_url: value}
            for edge in (near, far):
                for url, key in zip(urls(edge, cold[edge.label]), cold[edge.label], strict=True):
                    expect[url] = f"value of {key}".encode()
            far_warm = urls(far, ["warm-far"])[0]
            got = http("GET", far_warm, far.token)  # token record, namespace, connection
            if got.status != 200:
                raise RuntimeError(f"far edge warm-up read: {got.status} {got.body!r}")
            series.append(
                sequential_reads(
                    f"cold, far edge (+{args.upstream_latency_ms:g} ms upstream)",
                    far,
                    urls(far, cold["far"]),
                    expect,
                    "fwd=miss",
                    pids,
                    args.wrk_cpus,
                )
            )
            http("GET", hot_url, near.token)  # the near edge's namespace lookup, if expired
            series.append(
                sequential_reads(
                    "cold, near edge (no added delay)",
                    near,
                    urls(near, cold["near"]),
                    expect,
                    "fwd=miss",
                    pids,
                    args.wrk_cpus,
                )
            )
            series.append(
                sequential_reads(
                    "hot, near edge (the client's floor)",
                    near,
                    [hot_url] * args.cold_keys,
                    expect,
                    "hit",
                    pids,
                    args.wrk_cpus,
                )
            )
            pause = args.upstream_latency_ms / 1000
            series.append(
                sequential_reads(
                    f"hot, near edge, each after a {args.upstream_latency_ms:g} ms pause",
                    near,
                    [hot_url] * args.cold_keys,
                    expect,
                    "hit",
                    pids,
                    args.wrk_cpus,
                    pause=pause,
                )
            )
            for s in series:
                print(
                    f"(c) {s.name}: median {median(s.latencies):.2f} ms, p90 {s.pct(90):.2f},"
                    f" p99 {s.pct(99):.2f}, max {max(s.latencies):.2f},"
                    f" others' CPU {s.others_percent:.0f}%",
                    file=sys.stderr,
                    flush=True,
                )

    print(report(args, command, facts, warm_share, hot_runs, paced_runs, rate, series))
    return 0


def report(
    args: argparse.Namespace,
    command: str,
    facts: list[str],
    warm_share: float,
    hot_runs: list[Run],
    paced_runs: list[Run],
    rate: float,
    series: list[Series],
) -> str:
    """The markdown report."""
    pinning = (
        f"servers (origin, both edges, nginx and its worker) on CPU {args.server_cpus}"
        f" (taskset -c {args.server_cpus}), wrk and the Python client on CPU {args.wrk_cpus}"
        if args.server_cpus or args.wrk_cpus
        else "none (the scheduler's choice)"
    )
    out = [
        "### Edge: hot reads against nginx, p99 at half load, cold reads through a distant edge",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {fact}" for fact in facts],
        f"- topology: `pullkv origin` and two `pullkv edge --upstream <origin> --cache-size"
        f" {args.cache_size}` on 127.0.0.1: *near* (no added delay) and *far*"
        f" (`--upstream-latency-ms {args.upstream_latency_ms:g}`)",
        f"- pinning: {pinning}",
        f"- nginx config: {args.nginx_workers} worker process(es), sendfile, access log off",
        f"- fast-path check before measuring: {warm_share:.0%} of 5 GETs of `hot` at the near"
        " edge counted by `pullkv_hot_responses_total`",
        "",
    ]
    hot_col = [("hot %", "hot", ".1f")]
    verdicts = []
    if hot_runs:
        pullkv_rate = median([r.rate for r in kept_results(hot_runs, PULLKV)])
        nginx_rate = median([r.rate for r in kept_results(hot_runs, NGINX)])
        ratio = pullkv_rate / nginx_rate
        ok = ratio >= HOT_TARGET
        verdicts.append(
            f"(a) hot reads {ratio:.2f}x nginx, target >= {HOT_TARGET}x:"
            f" **{'PASS' if ok else 'FAIL'}**"
        )
        out += [
            f"#### (a) Hot reads, wrk -t{args.threads} -c{args.connections}"
            f" -d{args.duration:g}s --latency (bench/get_static.lua)",
            "",
            summary_table(hot_runs, hot_col),
            "",
            f"Ratio pullkv / nginx: **{ratio:.2f}x** of the medians;"
            f" {' / '.join(f'{r:.2f}x' for r in paired_ratios(hot_runs, PULLKV, NGINX))}"
            " round by round.",
            "",
            rounds_table(hot_runs, args.max_noise, hot_col),
            "",
            "hot %: responses counted by the edge's `pullkv_hot_responses_total` (answered"
            " on the fast path) over the requests wrk counted; it can pass 100 by the few"
            " requests still in flight when wrk stops.",
            "",
        ]
    if paced_runs:
        source = f"{args.load_fraction:g} x pullkv's median from (a)" if not args.rate else "--rate"
        pullkv_p99 = median([r.p99_ms for r in kept_results(paced_runs, PULLKV_PACED)])
        achieved = median([r.rate for r in kept_results(paced_runs, PULLKV_PACED)])
        ok = pullkv_p99 < P99_TARGET_MS
        verdicts.append(
            f"(b) p99 {pullkv_p99:.2f} ms at {achieved:.0f} req/s achieved (asked {rate:.0f}),"
            f" target < {P99_TARGET_MS:g} ms: **{'PASS' if ok else 'FAIL'}**"
        )
        rows = []
        for name in (PULLKV_PACED, NGINX_PACED):
            results = kept_results(paced_runs, name)
            rows.append(
                [
                    name,
                    f"{rate:.0f}",
                    f"{median([r.rate for r in results]):.0f}",
                    f"{median([r.p50_ms for r in results]):.2f}",
                    f"{median([r.p90_ms for r in results]):.2f}",
                    f"**{median([r.p99_ms for r in results]):.2f}**",
                    f"{median([r.max_ms for r in results]):.2f}",
                    f"{median([r.cpu_percent for r in results]):.0f}%",
                    sum(r.non2xx + r.socket_errors for r in results),
                ]
            )
        out += [
            f"#### (b) Latency at {rate:.0f} req/s ({source}), wrk -t{args.threads}"
            f" -c{args.connections} -d{args.duration:g}s --latency, paced by"
            " bench/get_paced.lua",
            "",
            table(
                [
                    "target",
                    "asked req/s",
                    "achieved req/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "server CPU",
                    "errors",
                ],
                rows,
            ),
            "",
            rounds_table(paced_runs, args.max_noise, hot_col),
            "",
            "Medians over the kept rounds. The pacing script reserves send slots 1000/rate ms"
            " apart, but wrk's timers have whole-millisecond resolution, so requests leave in"
            " bursts of about rate/1000 at each millisecond tick; latency counts from the"
            " moment a request is written.",
            "",
        ]
    if series:
        bound = args.upstream_latency_ms + COLD_MARGIN_MS
        far = series[0]
        ok = far.pct(99) <= bound
        verdicts.append(
            f"(c) cold reads through the far edge: median {median(far.latencies):.2f} ms,"
            f" p99 {far.pct(99):.2f} ms, target <= {bound:g} ms:"
            f" **{'PASS' if ok else 'FAIL'}** (p99)"
        )
        out += [
            f"#### (c) Sequential single reads, {args.cold_keys} per series (httpx, one"
            " keep-alive connection, distinct keys written at the origin beforehand)",
            "",
            table(
                [
                    "series",
                    "reads",
                    "median ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "upstream calls per read",
                    "edge's mean upstream fetch ms",
                    "others' CPU",
                ],
                [
                    [
                        s.name,
                        len(s.latencies),
                        f"**{median(s.latencies):.2f}**",
                        f"{s.pct(90):.2f}",
                        f"**{s.pct(99):.2f}**",
                        f"{max(s.latencies):.2f}",
                        f"{s.upstream_per_read:.2f}",
                        "-" if s.fetch_ms is None else f"{s.fetch_ms:.2f}",
                        f"{s.others_percent:.0f}%",
                    ]
                    for s in series
                ],
            ),
            "",
            f"Target for the far edge: one upstream round trip plus {COLD_MARGIN_MS:g} ms ="
            f" {bound:g} ms. Latency is measured by the client (httpx, on CPU"
            f" {args.wrk_cpus or 'any'}), so it includes the client's own time (the hot"
            " series). Every cold answer carried `Cache-Status: ...; fwd=miss` and every hot"
            " one `hit`. Upstream calls and the fetch time come from the edge's /metrics"
            " (`pullkv_upstream_requests_total`, `pullkv_upstream_latency_seconds`, which"
            " includes the injected delay). The last series repeats the hot read after the"
            " same pause as the injected delay: what a request costs on this machine when it"
            " finds the processes idle. Percentiles are nearest-rank over the series.",
            "",
        ]
    out += ["Against the targets:", "", *[f"- {v}" for v in verdicts], ""]
    out.append(
        "Server CPU: user+system time of the server over the run (pullkv: the near edge;"
        " nginx: master and worker), in % of one core. Others' CPU: machine CPU time"
        " (user+system+steal) used by none of our processes over the run, in % of one core"
        " (other tenants); a round where it passed --max-noise was redone."
    )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
