"""The in-process cache (``Client(..., cache=LocalCache())``) against the same client without
one, and against ``dict.get``, in one run.

An origin and an edge run on loopback (``benchlib.PullkvServer``); the benchmark writes
``--keys`` values of ``--value-size`` bytes, then measures in this process:

1. hit latency: ``ns.get(key)`` on a hot key with the cache, one call at a time, timed with
   ``perf_counter_ns`` (the timer's own cost, measured alongside, is subtracted), beside
   ``dict.get`` timed the same way and the plain client's ``ns.get`` over HTTP to the edge;
2. a Zipf(``--alpha``) workload over ``--keys`` keys with a write fraction from another client
   (another process's writes, which reach the cache through the feed): hit ratio, latency
   p50/p99 with the cache and without.

    .venv/bin/python bench/bench_localcache.py            # about a minute
    .venv/bin/python bench/bench_localcache.py --quick

Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Callable

from benchlib import ACCOUNT_ID, PullkvServer, default_server_command, percentile, table
from pullkv import Client, LocalCache


def timed(call: Callable[[], object], count: int) -> list[float]:
    """Nanoseconds per call, each call timed on its own, the timer's cost taken off."""
    clock = time.perf_counter_ns
    empty: list[float] = []
    for _ in range(min(count, 100_000)):
        start = clock()
        empty.append(clock() - start)
    overhead = sorted(empty)[len(empty) // 2]
    samples: list[float] = []
    for _ in range(count):
        start = clock()
        call()
        samples.append(clock() - start - overhead)
    return samples


def zipf_keys(count: int, alpha: float, draws: int, rng: random.Random) -> list[int]:
    """Key indexes drawn from Zipf(alpha) over ``count`` keys."""
    weights = [1.0 / (rank**alpha) for rank in range(1, count + 1)]
    return rng.choices(range(count), weights=weights, k=draws)


def main(argv: list[str]) -> int:
    """Run the benchmark; print a Markdown report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-size", type=int, default=1024)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--write-fraction", type=float, default=0.01)
    p.add_argument("--reads", type=int, default=0, help="Zipf reads per client (default 20,000)")
    args = p.parse_args(argv)
    hits_count = 200_000 if args.quick else 1_000_000
    plain_count = 500 if args.quick else 2_000
    reads = args.reads or (5_000 if args.quick else 20_000)
    rng = random.Random(7)
    command = default_server_command()
    with (
        PullkvServer(command, label="origin", role="origin") as origin,
        PullkvServer(command, label="edge", role="edge", upstream=origin) as edge,
    ):
        cache = LocalCache(256 << 20)
        with (
            Client(edge.origin, origin.token, account_id=ACCOUNT_ID, cache=cache) as cached,
            Client(edge.origin, origin.token, account_id=ACCOUNT_ID) as plain,
            Client(origin.origin, origin.token, account_id=ACCOUNT_ID) as writer,
        ):
            ns_id = writer.create_namespace(f"bench-{time.time_ns()}")["id"]
            wns = writer.namespace(ns_id)
            value = "v" * args.value_size
            wns.bulk_put([{"key": f"k{i}", "value": value} for i in range(args.keys)])
            cns, pns = cached.namespace(ns_id), plain.namespace(ns_id)

            # 1. Hit latency.
            cns.get("k0")
            table_ = {"k0": value}
            rows = []
            for label, call, count in (
                ("dict.get", lambda: table_.get("k0"), hits_count),
                ("Client + LocalCache: ns.get (hit)", lambda: cns.get("k0"), hits_count),
                (
                    "Client, no cache: ns.get over HTTP to the edge",
                    lambda: pns.get("k0"),
                    plain_count,
                ),
            ):
                samples = timed(call, count)
                rows.append(
                    (
                        label,
                        f"{percentile(samples, 50):,.0f}",
                        f"{percentile(samples, 99):,.0f}",
                        f"{count:,}",
                    )
                )

            # 2. A Zipf workload, with another process writing.
            draws = zipf_keys(args.keys, args.alpha, reads, rng)
            stop = threading.Event()
            written = [0]

            def write_elsewhere() -> None:
                pace = 1.0 / max(1.0, args.write_fraction * 2000)
                while not stop.is_set():
                    wns.put(f"k{rng.randrange(args.keys)}", value + str(written[0]))
                    written[0] += 1
                    stop.wait(pace)

            background = threading.Thread(target=write_elsewhere, daemon=True)
            background.start()
            zipf_rows = []
            try:
                for label, ns in (("with LocalCache", cns), ("without", pns)):
                    misses_before = cache.stats.misses
                    hits_before = cache.stats.fast_hits + cache.stats.hits
                    latencies: list[float] = []
                    clock = time.perf_counter_ns
                    for index in draws:
                        start = clock()
                        ns.get(f"k{index}")
                        latencies.append(clock() - start)
                    hits = cache.stats.fast_hits + cache.stats.hits - hits_before
                    misses = cache.stats.misses - misses_before
                    ratio = f"{hits / (hits + misses):.3f}" if ns is cns else "-"
                    zipf_rows.append(
                        (
                            label,
                            ratio,
                            f"{percentile(latencies, 50) / 1000:,.1f}",
                            f"{percentile(latencies, 99) / 1000:,.1f}",
                            f"{sum(latencies) / 1e9:,.2f}",
                        )
                    )
            finally:
                stop.set()
                background.join(5)
    print("# LocalCache benchmark\n")
    print(f"`{' '.join(['python', 'bench/bench_localcache.py', *argv])}`\n")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; nproc {os.cpu_count()}; "
        f"load average {load} (a shared machine: quote ratios)"
    )
    print("\n## Hit latency (ns per call)\n")
    print(table(("read", "p50 ns", "p99 ns", "calls"), rows))
    print(
        f"\n## Zipf({args.alpha}) over {args.keys:,} keys, {reads:,} reads each, "
        f"{written[0]:,} writes by another client meanwhile\n"
    )
    print(table(("client", "hit ratio", "p50 µs", "p99 µs", "total s"), zipf_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
