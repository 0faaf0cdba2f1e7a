"""Durable writes per second through HTTP: group commit against one commit per write.

Starts two ``pullkv serve`` processes on fresh temporary data folders, one with group commit
(the default) and one with ``--no-group-commit`` (neither has a same-key write rate).
Then, in interleaved rounds, wrk drives N concurrent connections (32 by default) that each
PUT fresh, unique keys (``put_unique.lua``) for a fixed time. After every run the keys
written in it are counted through the REST list endpoint (following the cursor): every
acknowledged (2xx) write must be there. Prints a markdown report.

    .venv/bin/python bench/bench_writes.py --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from pathlib import Path

from benchlib import (
    HERE,
    ExtraColumn,
    PullkvServer,
    Run,
    WrkResult,
    add_common_arguments,
    check_common_arguments,
    default_server_command,
    find_tool,
    interleaved_rounds,
    kept_results,
    machine_facts,
    median,
    paired_ratios,
    rounds_table,
    run_wrk,
    summary_table,
)

MODES: dict[str, list[str]] = {"group": [], "no-group": ["--no-group-commit"]}
NOTES = (
    "Medians are over the kept rounds. Server CPU: the server process's user+system time"
    " over the run, in % of one core. Others' CPU: machine CPU time (user+system+steal) used"
    " by neither the server nor wrk over the run, in % of one core (other tenants, and kernel"
    " threads such as the ext4 journal); a round where it passed --max-noise was redone."
    " Keys listed after: keys with the run's prefix listed through REST after it (a few more"
    " than acknowledged: writes still in flight when wrk stopped). Lost: acknowledged writes"
    " missing from that list, which must be 0."
)
# The durability check of each run, as per-run figures beside wrk's.
DURABILITY: list[ExtraColumn] = [
    ("acknowledged (2xx)", "acked", ".0f"),
    ("keys listed after", "listed", ".0f"),
    ("lost", "lost", ".0f"),
]


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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the report; non-zero exit if a write was lost."""
    args = parse_args(argv)
    wrk = find_tool("wrk", args.wrk)
    server_command = shlex.split(args.server) if args.server else default_server_command()
    script: Path = HERE / "put_unique.lua"
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "bench/bench_writes.py", *given])
    facts = machine_facts(wrk, server_command, source=args.source)

    lost = 0  # over every run, the warm-up and redone ones too
    with (
        PullkvServer(server_command, MODES["group"], "group") as group,
        PullkvServer(server_command, MODES["no-group"], "nogroup") as nogroup,
    ):
        servers = {"group": group, "no-group": nogroup}
        namespaces = {mode: s.create_namespace(f"bench-{mode}") for mode, s in servers.items()}
        run_numbers = itertools.count(1)

        def once(mode: str, seconds: float) -> WrkResult:
            """One wrk run of fresh keys, then the count of them that the store lists."""
            nonlocal lost
            server = servers[mode]
            prefix = f"run{next(run_numbers)}-"  # each run's keys are its own to count
            result = run_wrk(
                wrk,
                server.origin,
                script,
                [
                    server.values_path(namespaces[mode]),
                    server.token,
                    prefix,
                    str(args.value_bytes),
                ],
                threads=args.threads,
                connections=args.connections,
                duration=seconds,
                server_pid=server.pid,
            )
            listed = server.count_keys(namespaces[mode], prefix)
            missing = max(0, result.ok - listed)
            result.extra.update(acked=result.ok, listed=listed, lost=missing)
            lost += missing
            return result

        runs = interleaved_rounds(
            list(MODES),
            once,
            rounds=args.rounds,
            duration=args.duration,
            warmup=args.warmup,
            quiet_wait=args.quiet_wait,
            max_noise=args.max_noise,
            retries=args.retries,
        )

    print(report(args, command, facts, runs))
    return 1 if lost else 0


def report(args: argparse.Namespace, command: str, facts: list[str], runs: list[Run]) -> str:
    """The markdown report."""
    g = median([r.rate for r in kept_results(runs, "group")])
    n = median([r.rate for r in kept_results(runs, "no-group")])
    paired = paired_ratios(runs, "group", "no-group")
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
        summary_table(runs),
        "",
        f"Ratio group / no-group: **{g / n:.2f}x** of the medians;"
        f" {' / '.join(f'{r:.2f}x' for r in paired)} round by round.",
        "",
        rounds_table(runs, args.max_noise, DURABILITY),
        "",
        NOTES,
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
