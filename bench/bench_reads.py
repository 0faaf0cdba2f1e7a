"""Point reads per second through HTTP: pullkv against nginx serving the same 1 KiB as a file.

Starts ``pullkv serve`` on a fresh temporary data folder, writes a 1 KiB value under the key
``hot``, and starts nginx (a temporary prefix and config, a free loopback port, one worker by
default so that it is one process against one process) serving a 1 KiB static file. Then, in
interleaved rounds, ``wrk -t1 -c64 --latency`` reads each for a fixed time: pullkv's
``GET .../values/hot`` with the bearer token, nginx's file, and (unless --no-healthz)
pullkv's ``/healthz``, which has no authentication and no store behind it: the cost of the
HTTP stack alone. Prints a markdown report.

    .venv/bin/python bench/bench_reads.py --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import shlex
import sys
import urllib.request

from benchlib import (
    HERE,
    NginxServer,
    PullkvServer,
    Run,
    WrkResult,
    add_common_arguments,
    check_common_arguments,
    default_server_command,
    find_tool,
    http,
    interleaved_rounds,
    kept_results,
    machine_facts,
    median,
    paired_ratios,
    rounds_table,
    run_wrk,
    summary_table,
)

VALUE_BYTES = 1024
PULLKV = "pullkv GET values/hot"
NGINX = "nginx static file"
HEALTHZ = "pullkv GET /healthz (no auth, no store)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, connections=64, per="target")
    p.add_argument("--nginx-workers", type=int, default=1, help="nginx workers (default 1)")
    p.add_argument("--no-healthz", action="store_true", help="skip the /healthz reference")
    p.add_argument("--nginx", help="path of nginx (default: from PATH or /usr/sbin)")
    args = p.parse_args(argv)
    check_common_arguments(p, args)
    if not 1 <= args.nginx_workers <= 16:
        p.error("keep --nginx-workers in 1..16")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    args = parse_args(argv)
    wrk = find_tool("wrk", args.wrk)
    nginx_path = find_tool("nginx", args.nginx)
    server_command = shlex.split(args.server) if args.server else default_server_command()
    script = HERE / "get_static.lua"
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "bench/bench_reads.py", *given])
    facts = machine_facts(wrk, server_command, nginx_path, source=args.source)
    value = bytes(ord("a") + i % 26 for i in range(VALUE_BYTES))

    with (
        PullkvServer(server_command, [], "reads") as server,
        NginxServer(nginx_path, value, workers=args.nginx_workers) as nginx,
    ):
        ns = server.create_namespace("bench-reads")
        server.put(ns, "hot", value)
        value_url = server.origin + server.values_path(ns) + "hot"
        got = http("GET", value_url, server.token)
        with urllib.request.urlopen(nginx.url, timeout=10) as resp:
            from_nginx = resp.read()
        if got.body != value or from_nginx != value:
            raise RuntimeError("the targets do not return the 1 KiB value")

        # target name -> (url, token for the Authorization header, pid to measure)
        targets: dict[str, tuple[str, str, int]] = {
            PULLKV: (value_url, server.token, server.pid),
            NGINX: (nginx.url, "", nginx.pid),
        }
        if not args.no_healthz:
            targets[HEALTHZ] = (server.origin + "/healthz", "", server.pid)

        def once(name: str, seconds: float) -> WrkResult:
            url, token, pid = targets[name]
            return run_wrk(
                wrk,
                url,
                script,
                [token],
                threads=args.threads,
                connections=args.connections,
                duration=seconds,
                server_pid=pid,
            )

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

    print(report(args, command, facts, runs))
    return 0


def report(args: argparse.Namespace, command: str, facts: list[str], runs: list[Run]) -> str:
    """The markdown report."""
    pullkv_rate = median([r.rate for r in kept_results(runs, PULLKV)])
    nginx_rate = median([r.rate for r in kept_results(runs, NGINX)])
    paired = paired_ratios(runs, PULLKV, NGINX)
    out = [
        "### Point reads: pullkv against nginx serving a 1 KiB static file",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {fact}" for fact in facts],
        f"- load generator: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s"
        " --latency, the same GET on every request (bench/get_static.lua)",
        f"- nginx config: {args.nginx_workers} worker process(es), sendfile, access log off",
        "",
        summary_table(runs),
        "",
        f"Ratio pullkv / nginx: **{pullkv_rate / nginx_rate:.2f}x** of the medians;"
        f" {' / '.join(f'{r:.2f}x' for r in paired)} round by round.",
    ]
    healthz = kept_results(runs, HEALTHZ)
    if healthz:
        healthz_rate = median([r.rate for r in healthz])
        out.append(
            f"Ratio pullkv GET value / pullkv /healthz: **{pullkv_rate / healthz_rate:.2f}x**"
            " (what is left of the HTTP stack's throughput after auth, routing, the lookup"
            " and decryption)."
        )
    out += [
        "",
        rounds_table(runs, args.max_noise),
        "",
        "Medians are over the kept rounds. Server CPU: the server's user+system time over the"
        " run (nginx: master and workers), in % of one core. Others' CPU: machine CPU time"
        " (user+system+steal) used by neither the server nor wrk over the run, in % of one"
        " core (other tenants); a round where it passed --max-noise was redone.",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
