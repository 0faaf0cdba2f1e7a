"""Simulated requests per second of ``pullkv simulate``'s engine on one core.

Runs one configuration (300 locations, 16 regional tiers, the change feed on, Zipf 1.0 keys,
1 % writes) in process, pinned to one CPU when ``taskset`` semantics are available, and
writes bench/RESULTS-simulate.md with the command, the machine and the figure. The issue's
bar is 50,000 simulated requests per second on one core.

    .venv/bin/python bench/bench_simulate.py --requests 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

from pullkv.simulate.config import SimConfig
from pullkv.simulate.scenarios import build
from pullkv.simulate.workload import WorkloadSpec

RESULTS = Path(__file__).resolve().parent / "RESULTS-simulate.md"
MARKER = "<!-- sim-vs-cluster -->"


def measure(requests: int, keys: int, duration: float, seed: int) -> tuple[float, int, int, float]:
    """(seconds, requests, events, hit ratio) of one run; building the nodes is not timed."""
    config = SimConfig(
        locations=300,
        tiers=16,
        feed=True,
        seed=seed,
        workload=dataclasses.replace(
            WorkloadSpec(), requests=requests, duration=duration, keys=keys
        ),
    )
    simulation = build(config)
    started = time.process_time()
    result = simulation.run()
    seconds = time.process_time() - started
    reads = sum(sum(c) for c in result.counts)
    hits = sum(c[0] for c in result.counts)
    return seconds, result.requests, result.events, hits / reads


def main() -> None:
    """Measure, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rows = []
    for keys, duration in ((10_000, 900.0), (10_000, 7200.0), (100_000, 7200.0)):
        rates = []
        for round_ in range(args.rounds):
            seconds, requests, events, hit_ratio = measure(
                args.requests, keys, duration, seed=round_ + 1
            )
            rates.append(requests / seconds)
            print(
                f"{keys:,} keys over {duration / 60:.0f} min, round {round_ + 1}: "
                f"{requests:,} requests, {events:,} events in {seconds:.1f} s CPU: "
                f"{requests / seconds:,.0f} simulated requests/s",
                file=sys.stderr,
            )
        median = sorted(rates)[len(rates) // 2]
        rows.append(
            f"| {keys:,} | {duration / 60:.0f} min | {hit_ratio:.1%} | {events / requests:.1f} "
            f"| {args.rounds} | {median:,.0f} | {max(rates):,.0f} |"
        )
    command = f"python bench/bench_simulate.py --requests {args.requests} --rounds {args.rounds}"
    table = "\n".join(rows)
    text = f"""# pullkv simulate: engine speed

Command: `{command}` (one process pinned to one CPU; CPU time of the run, building the
300 locations' network not included).

Configuration: 300 locations, 16 regional tiers, change feed on, Zipf(1.0) key popularity,
1 % writes, {args.requests:,} requests, cacheTtl 60 s; the same requests over 15 minutes
or 2 hours, over 10,000 or 100,000 keys (busier locations hit more).
A hit costs no event; a miss costs two to six (to the tier, to the origin, and back), so the
rate falls as the hit ratio does.

Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs
shared with other work while it ran (figures vary by about 20 % from run to run).

| keys | simulated time | edge hit ratio | events/request | rounds | median req/s | best req/s |
|---|---|---|---|---|---|---|
{table}

The issue's bar is 50,000 simulated requests per second on one core.
"""
    print(text)
    if not args.no_write:
        # bench_sim_vs_cluster.py writes its section below the marker: keep it.
        old = RESULTS.read_text() if RESULTS.exists() else ""
        rest = old[old.index(MARKER) :] if MARKER in old else ""
        RESULTS.write_text(f"{text}\n{rest}" if rest else text)


if __name__ == "__main__":
    main()
