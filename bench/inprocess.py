"""Shared mechanics of the in-process micro-benchmarks (``bench_*_inprocess.py``).

Such a script measures one piece of pullkv in its own process and prints ns per operation.
``main`` runs it, and with ``--compare REF`` also runs it on REF's source (``git archive REF
src``, unpacked into a temporary folder), alternating the two trees in subprocesses round by
round, so that both figures come from the same run on the same (shared, noisy) machine.
Measurements use the thread's CPU time, which time spent descheduled does not inflate.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export_src(ref: str, into: Path) -> Path:
    """REF's ``src`` folder, unpacked into ``into`` (read-only use of git)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _run_child(script: str, src: Path, count: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, script, "--child", "--count", str(count)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(out.splitlines()[-1])
    return figures


def main(
    script: str, description: str, measure: Callable[[int], dict[str, float]], count: int
) -> None:
    """Parse the command line; measure (``measure(count)``: ns per operation, by kind) in a
    child process per tree and round; print a markdown table of the figures."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--count", type=int, default=count, help="timed operations per kind")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per source tree")
    parser.add_argument("--compare", metavar="REF", help="also measure this git ref")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.count)))
        return
    with tempfile.TemporaryDirectory() as folder:
        trees = {"working tree": ROOT / "src"}
        if args.compare:
            trees = {args.compare: export_src(args.compare, Path(folder)), **trees}
        results: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for round_no in range(args.rounds):
            # Alternate the order so drift on a shared machine hits both alike.
            order = list(trees.items())
            if round_no % 2:
                order.reverse()
            for name, src in order:
                for kind, ns in _run_child(script, src, args.count).items():
                    results[name].setdefault(kind, []).append(ns)
    print(f"| source | kind | ns/operation (median of {args.rounds}) | min | max |")
    print("|---|---|---|---|---|")
    for name, kinds in results.items():
        for kind, values in kinds.items():
            print(
                f"| {name} | {kind} | {statistics.median(values):.0f} "
                f"| {min(values):.0f} | {max(values):.0f} |"
            )
