"""Hot 1 KiB reads at one pullkv edge process against nginx answering the same bytes, same run,
with each server's CPU time per request split into user and system time.

Starts ``pullkv origin`` and one ``pullkv edge --upstream <origin>`` (as ``bench_edge.py``
part (a) does), writes 1 KiB under ``hot`` and reads it through the edge until the edge's fast
path answers it. nginx (one worker) serves the same bytes in each mode of ``--nginx-modes``:
``memory`` (``return 200 "<the bytes>"``: no file at all), ``open_file_cache`` (the file, its
descriptor kept open) and ``file`` (the file with sendfile, as ``bench_edge.py``). Every server
runs on CPU 0 and wrk on CPU 1 (``--server-cpus``, ``--wrk-cpus``), so each server gets one core
that the load generator does not share.

Interleaved rounds of ``wrk -t1 -c64`` on the REST value GET and on nginx; with
``--pipeline N`` each connection sends N requests back to back (``get_pipelined.lua``).
Reported per target: median req/s, p50/p99, and from ``/proc/<pid>/stat`` of the server's
processes (nginx: master and worker) the user and system CPU microseconds per request and the
requests per CPU-second; the ratio of pullkv to each nginx mode, of the medians and round by
round.

    .venv/bin/python bench/bench_hot.py --duration 10 --rounds 3
    .venv/bin/python bench/bench_hot.py --duration 10 --rounds 3 --pipeline 16
"""

from __future__ import annotations

import argparse
import shlex
import sys
import urllib.request
from contextlib import ExitStack

from bench_edge import warm_hot_path
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
PULLKV = "pullkv edge GET values/hot"
NGINX = {
    "memory": "nginx return 200 (memory)",
    "open_file_cache": "nginx file, open_file_cache",
    "file": "nginx static file",
}
COLUMNS = [("hot %", "hot", ".1f"), *CPU_COLUMNS]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, connections=64, per="target")
    add_pin_arguments(p)
    p.add_argument(
        "--nginx-modes",
        default="memory,open_file_cache",
        help=f"nginx modes to compare with, of {','.join(NGINX_MODES)} (default"
        " memory,open_file_cache)",
    )
    p.add_argument(
        "--pipeline", type=int, default=1, help="requests sent back to back per connection"
    )
    p.add_argument("--cache-size", default="256MiB", help="the edge's --cache-size")
    p.add_argument(
        "--compare-server",
        help="also measure an edge run by this command (another build, e.g. a commit exported"
        " with git archive), in front of the same origin, in the same rounds",
    )
    p.add_argument(
        "--compare-label", default="other build", help="what --compare-server runs (report)"
    )
    p.add_argument("--nginx", help="path of nginx (default: from PATH or /usr/sbin)")
    args = p.parse_args(argv)
    check_common_arguments(p, args)
    check_cpus(p, args.server_cpus, args.wrk_cpus)
    modes = args.nginx_modes.split(",")
    if not modes or not set(modes) <= set(NGINX_MODES) or not 1 <= args.pipeline <= 64:
        p.error(f"--nginx-modes within {','.join(NGINX_MODES)}; --pipeline in 1..64")
    args.modes = list(dict.fromkeys(modes))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    args = parse_args(argv)
    wrk = find_tool("wrk", args.wrk)
    nginx_path = find_tool("nginx", args.nginx)
    base_command = shlex.split(args.server) if args.server else default_server_command()
    server_pin, wrk_pin = pin(args.server_cpus), pin(args.wrk_cpus)
    server_command = [*server_pin, *base_command]
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "bench/bench_hot.py", *given])
    facts = machine_facts(wrk, base_command, nginx_path, source=args.source)
    value = bytes(ord("a") + i % 26 for i in range(VALUE_BYTES))
    script, script_args = HERE / "get_static.lua", []
    if args.pipeline > 1:
        script, script_args = HERE / "get_pipelined.lua", [str(args.pipeline)]

    with ExitStack() as stack:
        origin = stack.enter_context(PullkvServer(server_command, [], "origin", role="origin"))
        edge_args = ["--cache-size", args.cache_size]
        edge = stack.enter_context(
            PullkvServer(server_command, edge_args, "near", role="edge", upstream=origin)
        )
        nginxes = {
            NGINX[mode]: stack.enter_context(
                NginxServer(nginx_path, value, wrapper=server_pin, mode=mode)
            )
            for mode in args.modes
        }
        ns = origin.create_namespace("bench-hot")
        origin.put(ns, "hot", value)
        hot_url = edge.origin + edge.values_path(ns) + "hot"
        warm_share = warm_hot_path(edge, hot_url, value)
        if warm_share < 1:
            print(f"warning: only {warm_share:.0%} of warm GETs were hot", file=sys.stderr)
        for nginx in nginxes.values():
            with urllib.request.urlopen(nginx.url, timeout=10) as resp:
                if resp.read() != value:
                    raise RuntimeError(f"nginx ({nginx.mode}) does not return the 1 KiB value")
        targets = {PULLKV: (hot_url, edge.token, edge.pid)}
        edges = {PULLKV: edge}
        if args.compare_server:
            other_name = f"{PULLKV} ({args.compare_label})"
            other = stack.enter_context(
                PullkvServer(
                    [*server_pin, *shlex.split(args.compare_server)],
                    edge_args,
                    "other",
                    role="edge",
                    upstream=origin,
                )
            )
            other_url = other.origin + other.values_path(ns) + "hot"
            if warm_hot_path(other, other_url, value) < 1:
                print("warning: the other edge's warm GETs were not all hot", file=sys.stderr)
            targets[other_name] = (other_url, other.token, other.pid)
            edges[other_name] = other
        targets.update({name: (n.url, "", n.pid) for name, n in nginxes.items()})

        def once(name: str, seconds: float) -> WrkResult:
            url, token, pid = targets[name]
            server = edges.get(name)
            hot_before = server.metric("pullkv_hot_responses_total") if server else 0.0
            result = measure_cpu(
                [pid],
                lambda: run_wrk(
                    wrk,
                    url,
                    script,
                    [token, *script_args],
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
    print(report(args, command, facts, warm_share, runs, list(nginxes)))
    return 0


def report(
    args: argparse.Namespace,
    command: str,
    facts: list[str],
    warm_share: float,
    runs: list[Run],
    references: list[str],
) -> str:
    """The markdown report."""
    load = f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency"
    if args.pipeline > 1:
        load += f", {args.pipeline} requests pipelined per connection (bench/get_pipelined.lua)"
    else:
        load += ", one request at a time per connection (bench/get_static.lua)"
    lines = [
        "### Hot reads at one edge process against nginx from memory and from its file",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {fact}" for fact in facts],
        "- topology: `pullkv origin` and one `pullkv edge --upstream <origin>` on 127.0.0.1;"
        " nginx, 1 worker, access log off, in modes: " + ", ".join(references),
        f"- pinning: servers on CPU(s) {args.server_cpus or 'any'}, wrk on CPU(s)"
        f" {args.wrk_cpus or 'any'}",
        f"- load generator: {load}",
        f"- fast-path check before measuring: {warm_share:.0%} of 5 GETs counted by"
        " `pullkv_hot_responses_total`",
        "",
        summary_table(runs, COLUMNS),
        "",
    ]
    edges = list(dict.fromkeys(r.target for r in runs if r.target.startswith(PULLKV)))
    for pullkv in edges:
        pullkv_rate = median([r.rate for r in kept_results(runs, pullkv)])
        pullkv_cpu = median(
            [r.result.extra["req_per_cpu_s"] for r in runs if r.kept and r.target == pullkv]
        )
        for name in references:
            rate = median([r.rate for r in kept_results(runs, name)])
            cpu = median(
                [r.result.extra["req_per_cpu_s"] for r in runs if r.kept and r.target == name]
            )
            by_round = " / ".join(f"{x:.2f}x" for x in paired_ratios(runs, pullkv, name))
            lines.append(
                f"- {pullkv} / {name}: **{pullkv_rate / rate:.2f}x** in req/s (medians;"
                f" {by_round} round by round), **{pullkv_cpu / cpu:.2f}x** in requests per"
                " CPU-second"
            )
    lines.append("")
    lines += [
        rounds_table(runs, args.max_noise, COLUMNS),
        "",
        "user/system µs/req: CPU time of the server's processes (pullkv: the edge; nginx:"
        " master and worker) from /proc/<pid>/stat over the run, per request answered."
        " req per CPU-s: requests answered per second of that CPU time. hot %: responses"
        " counted by `pullkv_hot_responses_total` over the requests wrk counted. Others'"
        " CPU: machine CPU time used by none of our processes, in % of one core; a round"
        " where it passed --max-noise was redone.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
