"""Power-loss trials of pullkv on lazyfs, more of them than CI runs (tests/powerloss).

Each trial mounts lazyfs (a FUSE file system that drops everything not fsynced on a
simulated power cut), starts ``pullkv serve`` with its data folder on it (fresh, or one that
has run before; with and without ``PULLKV_ADMIN_TOKEN``), writes under load from 32
concurrent clients, kill -9s the server at a random moment (one trial in five while it is
still starting), crashes the file system, remounts it, starts the server again and reads
every acknowledged write back. Not a speed benchmark: the figures are acknowledged writes lost
or changed (target: none) and restarts that failed (target: none). That lazyfs really drops
unsynced data is shown by tests/powerloss/test_lazyfs.py (SQLite with synchronous=OFF loses
commits on it).

    .venv/bin/python bench/bench_powerloss.py --trials 100 --seed 1

Needs root and FUSE (scripts/fuse.sh).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.powerloss.trials import plans, run_trial


def main() -> int:
    """Run the trials and print a summary table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = []
    started = time.monotonic()
    for number, plan in enumerate(plans(args.trials, args.seed)):
        with tempfile.TemporaryDirectory(prefix="powerloss-") as workdir:
            result = run_trial(plan, Path(workdir))
        results.append(result)
        print(
            f"trial {number + 1}/{args.trials} seed={plan.seed} seasoned={plan.seasoned} "
            f"env_admin={plan.env_admin} during_start={plan.crash_during_start} "
            f"acked={result.acknowledged} lost={len(result.lost)} "
            f"restarted={result.restarted} ok={result.ok} {result.error[:200]}",
            flush=True,
        )
    acked = sum(r.acknowledged for r in results)
    lost = sum(len(r.lost) + len(r.wrong) for r in results)
    failed = [r for r in results if not r.ok]
    print()
    print(
        "| trials | kinds | acknowledged writes | lost or changed | restarts failed | "
        "median s/trial | total s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {len(results)} | fresh/seasoned x file/env admin token, 1 in 5 during start "
        f"| {acked:,} | {lost} | {sum(not r.restarted for r in results)} "
        f"| {statistics.median(r.seconds for r in results):.1f} "
        f"| {time.monotonic() - started:.0f} |"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
