"""Durable writes per second through HTTP: group commit against one commit per write.

Starts two ``pullkv serve`` processes on fresh temporary data folders, one with group commit
(the default) and one with ``--no-group-commit``, both with ``--writes-per-key-per-second 0``.
Then, in interleaved rounds, wrk drives N concurrent connections (32 by default) that each
PUT fresh, unique keys (``put_unique.lua``) for a fixed time. After every round the keys
written in it are counted through the REST list endpoint (following the cursor): every
acknowledged (2xx) write must be there. Prints a markdown report.

    .venv/bin/python bench/bench_writes.py --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from benchlib import (
    HERE,
    PullkvServer,
    WrkResult,
    add_common_arguments,
    check_common_arguments,
    default_server_command,
    find_tool,
    label_of,
    machine_facts,
    median,
    run_wrk,
    table,
    wait_until_quiet,
)

MODES: dict[str, list[str]] = {"group": [], "no-group": ["--no-group-commit"]}
NOTES = (
    "Medians are over the kept rounds. Server CPU: the server process's user+system time"
    " over the run, in % of one core. Others' CPU: machine CPU time (user+system+steal) used"
    " by neither the server nor wrk over the run, in % of one core (other tenants, and kernel"
    " threads such as the ext4 journal); a round where it passed --max-noise was redone."
    " Keys listed after: keys with the run's prefix listed through REST after it (a few more"
    " than acknowledged: writes still in flight when wrk stopped)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_common_arguments(p, connections=32, per="mode")
    p.add_argument("--value-bytes", type=int, default=1024, help="value size (default 1024)")
    args = p.parse_args(argv)
    check_common_arguments(p, args)
    if not 1 <= args.value_bytes <= 1 << 20:
        p.error("keep --value-bytes in 1..1048576")
    return args


@dataclass
class Run:
    """One measured run: which round and mode, wrk's figures, the durability count."""

    label: str
    mode: str
    result: WrkResult
    listed: int
    kept: bool = True


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; non-zero exit if a write was lost."""
    args = parse_args(argv)
    wrk = find_tool("wrk", args.wrk)
    server_command = shlex.split(args.server) if args.server else default_server_command()
    script: Path = HERE / "put_unique.lua"
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "bench/bench_writes.py", *given])
    facts = machine_facts(wrk, server_command, source=args.source)

    runs: list[Run] = []
    base_args = ["--writes-per-key-per-second", "0"]
    with (
        PullkvServer(server_command, base_args + MODES["group"], "group") as group,
        PullkvServer(server_command, base_args + MODES["no-group"], "nogroup") as nogroup,
    ):
        servers = {"group": group, "no-group": nogroup}
        namespaces = {mode: s.create_namespace(f"bench-{mode}") for mode, s in servers.items()}

        def once(mode: str, key_prefix: str, seconds: float) -> WrkResult:
            server = servers[mode]
            return run_wrk(
                wrk,
                server.origin,
                script,
                [
                    server.values_path(namespaces[mode]),
                    server.token,
                    key_prefix,
                    str(args.value_bytes),
                ],
                threads=args.threads,
                connections=args.connections,
                duration=seconds,
                server_pid=server.pid,
            )

        if args.warmup > 0:
            for mode in MODES:
                once(mode, "warm-", args.warmup)
        rnd, retries = 1, 0
        while rnd <= args.rounds:
            label = f"{rnd}" + ("" if retries == 0 else f" (retry {retries})")
            if args.quiet_wait > 0:
                wait_until_quiet(args.quiet_wait)
            order = list(MODES) if rnd % 2 else list(reversed(MODES))
            this_round = []
            for mode in order:
                prefix = f"r{rnd}-{retries}-"
                result = once(mode, prefix, args.duration)
                listed = servers[mode].count_keys(namespaces[mode], prefix)
                this_round.append(Run(label, mode, result, listed))
                print(
                    f"round {label} {mode}: {result.rate:.0f} writes/s,"
                    f" p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms,"
                    f" acked {result.ok}, listed {listed},"
                    f" others' CPU {result.others_percent:.0f}%",
                    file=sys.stderr,
                    flush=True,
                )
            runs += this_round
            noisy = any(r.result.others_percent > args.max_noise for r in this_round)
            if noisy and retries < args.retries:
                retries += 1
                for r in this_round:
                    r.kept = False
                continue
            rnd, retries = rnd + 1, 0

    print(report(args, command, facts, runs))
    return 1 if any(r.listed < r.result.ok for r in runs) else 0


def report(args: argparse.Namespace, command: str, facts: list[str], runs: list[Run]) -> str:
    """The markdown report."""
    kept = {mode: [r.result for r in runs if r.kept and r.mode == mode] for mode in MODES}
    out = [
        f"### Writes: {args.connections} concurrent writers, group commit vs one commit per write",
        "",
        f"Command: `{command}`",
        "",
        *[f"- {fact}" for fact in facts],
        f"- load generator: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s,"
        f" PUT of a unique key per request, {args.value_bytes}-byte raw body"
        " (bench/put_unique.lua)",
        "",
    ]
    rows = []
    for mode, results in kept.items():
        rows.append(
            [
                mode,
                f"**{median([r.rate for r in results]):.0f}**",
                f"{median([r.p50_ms for r in results]):.2f}",
                f"{median([r.p99_ms for r in results]):.2f}",
                f"{median([r.cpu_percent for r in results]):.0f}%",
                sum(r.non2xx for r in results),
                sum(r.socket_errors for r in results),
            ]
        )
    out.append(
        table(
            [
                "mode",
                "median writes/s",
                "p50 ms",
                "p99 ms",
                "server CPU",
                "non-2xx",
                "socket errors",
            ],
            rows,
        )
    )
    g = median([r.rate for r in kept["group"]])
    n = median([r.rate for r in kept["no-group"]])
    paired = [a.rate / b.rate for a, b in zip(kept["group"], kept["no-group"], strict=True)]
    out += [
        "",
        f"Ratio group / no-group: **{g / n:.2f}x** of the medians;"
        f" {' / '.join(f'{r:.2f}x' for r in paired)} round by round.",
        "",
    ]
    out.append(
        table(
            [
                "round",
                "mode",
                "writes/s",
                "p50 ms",
                "p99 ms",
                "server CPU",
                "others' CPU",
                "acknowledged (2xx)",
                "keys listed after",
                "durable",
            ],
            [
                [
                    label_of(r.label, r.kept, r.result, args.max_noise),
                    r.mode,
                    f"{r.result.rate:.0f}",
                    f"{r.result.p50_ms:.2f}",
                    f"{r.result.p99_ms:.2f}",
                    f"{r.result.cpu_percent:.0f}%",
                    f"{r.result.others_percent:.0f}%",
                    r.result.ok,
                    r.listed,
                    "yes" if r.listed >= r.result.ok else "**NO**",
                ]
                for r in runs
            ],
        )
    )
    out += ["", NOTES]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
