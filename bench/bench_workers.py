"""``pullkv serve --workers N`` against nginx ``worker_processes N``: hot 1 KiB reads, same run.

Starts ``pullkv serve --workers 1`` and ``--workers 2`` and nginx with 1 and 2 worker processes
(answering the same 1 KiB from memory, ``return 200``, by default; ``--nginx-mode``), writes
1 KiB under ``hot`` and reads it over many fresh connections until every worker holds it and
the token (the kernel spreads connections over the workers' SO_REUSEPORT sockets). Then
interleaved rounds of ``wrk -c64`` on each target.

Reported per target: median req/s, p50/p99, and from ``/proc/<pid>/stat`` of all the server's
processes (supervisor or master, and its workers) the user and system CPU microseconds per
request and the requests per CPU-second; the ratio pullkv / nginx at each worker count (of
req/s and of requests per CPU-second) and the scaling from 1 to 2 workers of each.

Nothing is pinned by default (``--server-cpus``/``--wrk-cpus`` pin): with 2 workers on a 2-core
machine the servers and wrk share the cores, so req/s there measures the machine, not the
server alone; requests per CPU-second does not depend on that.

If this pullkv has no ``--workers`` (``pullkv serve --help``), the pullkv side runs as one
process only and the report says so.

    .venv/bin/python bench/bench_workers.py --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack

from benchlib import (
    CPU_COLUMNS,
    HERE,
    NGINX_MODES,
    NginxServer,
    PullkvServer,
    Run,
    WrkResult,
    add_common_arguments,
    add_pin_arguments,
    check_common_arguments,
    check_cpus,
    default_server_command,
    find_tool,
    http,
    interleaved_rounds,
    kept_results,
    machine_facts,
    measure_cpu,
    median,
    paired_ratios,
    pin,
    rounds_table,
    run_wrk,
    summary_table,
)

VALUE_BYTES = 1024
COLUMNS = [("hot %", "hot", ".1f"), *CPU_COLUMNS]


def pullkv_name(workers: int) -> str:
    """The target name of pullkv with ``workers`` workers."""
    return f"pullkv serve --workers {workers}"


def nginx_name(workers: int) -> str:
    """The target name of nginx with ``workers`` workers."""
    return f"nginx worker_processes {workers}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, connections=64, per="target")
    add_pin_arguments(p)
    p.set_defaults(server_cpus="", wrk_cpus="")
    p.add_argument(
        "--nginx-mode",
        default="memory",
        choices=NGINX_MODES,
        help="what nginx answers from (default memory: return 200)",
    )
    p.add_argument(
        "--warm-connections",
        type=int,
        default=64,
        help="fresh connections that read the value before measuring (default 64)",
    )
    p.add_argument("--nginx", help="path of nginx (default: from PATH or /usr/sbin)")
    args = p.parse_args(argv)
    check_common_arguments(p, args)
    check_cpus(p, args.server_cpus, args.wrk_cpus)
    if not 1 <= args.warm_connections <= 10_000:
        p.error("--warm-connections in 1..10000")
    return args


def has_workers(command: list[str]) -> bool:
    """Whether this pullkv's ``serve`` takes ``--workers``."""
    done = subprocess.run(
        [*command, "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return "--workers" in done.stdout


def warm(server: PullkvServer, url: str, value: bytes, connections: int) -> None:
    """Read ``url`` on ``connections`` fresh connections (each worker then holds the value
    and the token), checking every answer."""
    for _ in range(connections):
        got = http("GET", url, server.token)
        if got.status != 200 or got.body != value:
            raise RuntimeError(f"GET hot: {got.status} {got.body[:200]!r}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    args = parse_args(argv)
    wrk = find_tool("wrk", args.wrk)
    nginx_path = find_tool("nginx", args.nginx)
    base_command = shlex.split(args.server) if args.server else default_server_command()
    server_pin, wrk_pin = pin(args.server_cpus), pin(args.wrk_cpus)
    server_command = [*server_pin, *base_command]
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "bench/bench_workers.py", *given])
    facts = machine_facts(wrk, base_command, nginx_path, source=args.source)
    value = bytes(ord("a") + i % 26 for i in range(VALUE_BYTES))
    workers_flag = has_workers(base_command)
    pullkv_counts = [1, 2] if workers_flag else [1]
    if not workers_flag:
        print("note: this pullkv has no --workers; measuring one process", file=sys.stderr)

    with ExitStack() as stack:
        targets: dict[str, tuple[str, str, int, PullkvServer | None]] = {}
        for n in pullkv_counts:
            extra = ["--workers", str(n)] if workers_flag else []
            server = stack.enter_context(PullkvServer(server_command, extra, f"w{n}"))
            ns = server.create_namespace("bench-workers")
            server.put(ns, "hot", value)
            url = server.origin + server.values_path(ns) + "hot"
            time.sleep(1)  # every worker up and accepting
            warm(server, url, value, args.warm_connections)
            targets[pullkv_name(n)] = (url, server.token, server.pid, server)
        for n in (1, 2):
            nginx = stack.enter_context(
                NginxServer(nginx_path, value, workers=n, wrapper=server_pin, mode=args.nginx_mode)
            )
            with urllib.request.urlopen(nginx.url, timeout=10) as resp:
                if resp.read() != value:
                    raise RuntimeError("nginx does not return the 1 KiB value")
            targets[nginx_name(n)] = (nginx.url, "", nginx.pid, None)

        def once(name: str, seconds: float) -> WrkResult:
            url, token, pid, server = targets[name]
            hot_before = server.metric("pullkv_hot_responses_total") if server else 0.0
            result = measure_cpu(
                [pid],
                lambda: run_wrk(
                    wrk,
                    url,
                    HERE / "get_static.lua",
                    [token],
                    threads=args.threads,
                    connections=args.connections,
                    duration=seconds,
                    server_pid=pid,
                    wrapper=wrk_pin,
                ),
            )
            if server is not None:
                hot = server.metric("pullkv_hot_responses_total") - hot_before
                result.extra["hot"] = 100 * hot / max(1, result.requests)
            return result

        runs = interleaved_rounds(
            list(targets),
            once,
            rounds=args.rounds,
            duration=args.duration,
            warmup=args.warmup,
            quiet_wait=args.quiet_wait,
            max_noise=args.max_noise,
            retries=args.retries,
        )
    print(report(args, command, facts, workers_flag, pullkv_counts, runs))
    return 0


def _median(runs: list[Run], name: str, key: str) -> float:
    results = kept_results(runs, name)
    if key == "rate":
        return median([r.rate for r in results])
    return median([r.extra[key] for r in results])


def report(
    args: argparse.Namespace,
    command: str,
    facts: list[str],
    workers_flag: bool,
    pullkv_counts: list[int],
    runs: list[Run],
) -> str:
    """The markdown report."""
    pinning = (
        f"servers on CPU(s) {args.server_cpus}, wrk on CPU(s) {args.wrk_cpus or 'any'}"
        if args.server_cpus
        else "none: servers and wrk share the machine's cores (the scheduler's choice)"
    )
    lines = [
        "### `--workers N` against nginx `worker_processes N`, hot 1 KiB reads",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {fact}" for fact in facts],
        "- pullkv: `pullkv serve`, "
        + ("--workers 1 and 2" if workers_flag else "one process (this pullkv has no --workers)")
        + ", access log off",
        f"- nginx: worker_processes 1 and 2, mode {args.nginx_mode}, access log off",
        f"- pinning: {pinning}",
        f"- load generator: wrk -t{args.threads} -c{args.connections} -d{args.duration}s"
        " --latency, one request at a time per connection (bench/get_static.lua)",
        "",
        summary_table(runs, COLUMNS),
        "",
    ]
    for n in pullkv_counts:
        p, g = pullkv_name(n), nginx_name(n)
        by_round = " / ".join(f"{x:.2f}x" for x in paired_ratios(runs, p, g))
        rate = _median(runs, p, "rate") / _median(runs, g, "rate")
        per_cpu = _median(runs, p, "req_per_cpu_s") / _median(runs, g, "req_per_cpu_s")
        lines.append(
            f"- {n} worker(s): pullkv / nginx **{rate:.2f}x** in req/s ({by_round} round by"
            f" round), **{per_cpu:.2f}x** in requests per CPU-second"
        )
    for name in [pullkv_name, nginx_name] if len(pullkv_counts) > 1 else [nginx_name]:
        one, two = name(1), name(2)
        lines.append(
            f"- scaling of {one.rsplit(' ', 1)[0]} from 1 to 2 workers:"
            f" **{_median(runs, two, 'rate') / _median(runs, one, 'rate'):.2f}x** req/s,"
            f" {_median(runs, two, 'req_per_cpu_s') / _median(runs, one, 'req_per_cpu_s'):.2f}x"
            " requests per CPU-second"
        )
    if not workers_flag:
        lines.append("- pullkv with 2 workers: not measured (no --workers in this pullkv)")
    lines += [
        "",
        rounds_table(runs, args.max_noise, COLUMNS),
        "",
        "user/system µs/req: CPU time of all the server's processes (pullkv: the supervisor"
        " and its workers; nginx: master and workers) from /proc/<pid>/stat over the run, per"
        " request answered; req per CPU-s: requests answered per second of that CPU time."
        " On a 2-core machine wrk shares the cores with the servers, so with 2 workers req/s"
        " is bounded by the machine; requests per CPU-second is not. hot %: responses counted"
        " by the node's `pullkv_hot_responses_total` over the requests wrk counted. Others'"
        " CPU: machine CPU time used by neither the servers nor wrk, in % of one"
        " core.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
