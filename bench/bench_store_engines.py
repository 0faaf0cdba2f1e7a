"""The store engines side by side: one ``pullkv origin`` on PostgreSQL against one on SQLite.

1. Durable writes/s and point reads/s through HTTP. Two origins run at once, each on a fresh
   store (a SQLite file in a temporary data folder; a new schema of the PostgreSQL database),
   without a same-key write rate (the default). Each gets N keys written first (1 KiB values,
   bulk PUTs). Then, in interleaved rounds (A B, B A, ...), wrk drives 32 connections that
   PUT fresh unique keys (``put_unique.lua``), then 32 that GET random ones of the N keys
   (``get_random.lua``). An origin has no cache, so every GET reads the store. After each
   write round the round's keys are listed through REST: every acknowledged write must be
   there, or the script says NO and exits 1.
2. The time to copy a store of 1,000,000 keys between engines with ``pullkv store copy``
   (SQLite -> PostgreSQL, then back to a new SQLite file), verification included. The source
   is filled directly through the Store API (bulk puts of 10,000 opaque 100-byte values: the
   copy never decrypts, so the values need not be ciphertext).

PostgreSQL: ``--postgres-url`` or PULLKV_TEST_POSTGRES_URL, else ``scripts/postgres.sh start``
(a throwaway cluster on 127.0.0.1, stopped at the end). Everything runs on 127.0.0.1; every
process is stopped by its pid and every schema and folder removed when the script ends.

    .venv/bin/python bench/bench_store_engines.py --duration 10 --rounds 2 --copy-keys 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg

from benchlib import (
    HERE,
    HOST,
    WrkResult,
    find_tool,
    free_port,
    http,
    machine_facts,
    median,
    run_wrk,
    stop_process,
    table,
    wait_for_port,
)

ROOT = HERE.parent
ACCOUNT_ID = "be4c40000000000000000000000000be"
ENGINES = ("sqlite", "postgresql")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per engine (default 2)")
    p.add_argument("--connections", type=int, default=32, help="connections (default 32)")
    p.add_argument("--keys", type=int, default=10_000, help="keys for the reads (default 10000)")
    p.add_argument(
        "--copy-keys", type=int, default=1_000_000, help="store size to copy (default 1000000)"
    )
    p.add_argument("--postgres-url", help="database to use (default: a throwaway cluster)")
    p.add_argument("--wrk", help="path of wrk (default: from PATH)")
    args = p.parse_args(argv)
    bounded = (
        1 <= args.duration <= 60
        and 1 <= args.rounds <= 10
        and 1 <= args.connections <= 256
        and 1_000 <= args.keys <= 100_000
        and 0 <= args.copy_keys <= 2_000_000
    )
    if not bounded:
        p.error(
            "keep --duration in 1..60, --rounds in 1..10, --connections in 1..256, "
            "--keys in 1000..100000 and --copy-keys in 0..2000000"
        )
    return args


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def postgres(given: str | None) -> Iterator[str]:
    """A database URL: the one given, or a throwaway cluster started (and stopped) here."""
    url = given or os.environ.get("PULLKV_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    script = str(ROOT / "scripts" / "postgres.sh")
    started = subprocess.run([script, "start"], capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh start failed:\n{started.stderr}")
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([script, "stop"], capture_output=True, timeout=120)


@contextmanager
def schema(base: str) -> Iterator[str]:
    """A store URL on a new schema of ``base``, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}".encode())
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE".encode())


class Origin:
    """``pullkv origin`` on a temporary data folder (and ``--store`` if given)."""

    def __init__(self, engine: str, tmp: Path, store_url: str | None) -> None:
        self.engine = engine
        self.data = tmp / engine
        self.log = tmp / f"{engine}.log"
        self.port = free_port()
        args = [sys.executable, "-m", "pullkv", "origin", "--host", HOST]
        args += ["--port", str(self.port), "--data", str(self.data)]
        args += ["--account-id", ACCOUNT_ID, "--log-level", "warning", "--access-log", "off"]
        if store_url:
            args += ["--store", store_url]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_for_port(self.port, self.proc, 30, self.log)
        self.token = (self.data / "admin-token").read_text().strip()
        base = f"http://{HOST}:{self.port}/client/v4/accounts/{ACCOUNT_ID}/storage/kv/namespaces"
        reply = http("POST", base, self.token, json_body={"title": "bench"})
        if reply.status != 200:
            raise RuntimeError(f"create namespace: {reply.status} {reply.body!r}")
        self.ns = str(reply.json()["result"]["id"])
        self.ns_url = f"{base}/{self.ns}"
        self.values_path = self.ns_url.split(str(self.port), 1)[1] + "/values/"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def prefill(self, count: int) -> None:
        """``count`` keys k-000000..., 1 KiB each, in bulk PUTs of 1,000."""
        for start in range(0, count, 1000):
            items = [
                {"key": f"k-{i:06d}", "value": "v" * 1024}
                for i in range(start, min(count, start + 1000))
            ]
            reply = http("PUT", f"{self.ns_url}/bulk", self.token, json_body=items)
            if reply.status != 200:
                raise RuntimeError(f"bulk put: {reply.status} {reply.body!r}")

    def count_keys(self, prefix: str) -> int:
        """Keys with ``prefix``, listed through REST (following the cursor)."""
        count, cursor = 0, ""
        for _ in range(100_000):
            query = f"prefix={quote(prefix)}&limit=1000" + (f"&cursor={cursor}" if cursor else "")
            reply = http("GET", f"{self.ns_url}/keys?{query}", self.token)
            page = reply.json()
            count += len(page["result"])
            cursor = page["result_info"]["cursor"]
            if not cursor:
                return count
        raise RuntimeError("too many pages")

    def close(self) -> None:
        stop_process(self.proc)


def http_rounds(args: argparse.Namespace, wrk: str, base_url: str, tmp: Path) -> list[str]:
    """Part 1: the report's lines."""
    with schema(base_url) as pg_store:
        origins = {
            "sqlite": Origin("sqlite", tmp, None),
            "postgresql": Origin("postgresql", tmp, pg_store),
        }
        try:
            for origin in origins.values():
                log(f"prefilling {args.keys} keys on {origin.engine}")
                origin.prefill(args.keys)
            writes: dict[str, list[WrkResult]] = {e: [] for e in ENGINES}
            reads: dict[str, list[WrkResult]] = {e: [] for e in ENGINES}
            durable = True
            for round_no in range(args.rounds):
                order = ENGINES if round_no % 2 == 0 else ENGINES[::-1]
                for engine in order:
                    origin = origins[engine]
                    prefix = f"r{round_no}-"
                    log(f"round {round_no + 1}: writes on {engine}")
                    result = run_wrk(
                        wrk,
                        origin.url,
                        HERE / "put_unique.lua",
                        [origin.values_path, origin.token, prefix, "1024"],
                        threads=1,
                        connections=args.connections,
                        duration=args.duration,
                        server_pid=origin.proc.pid,
                    )
                    listed = origin.count_keys(prefix)
                    if listed < result.ok:
                        durable = False
                        log(f"NO: {engine} acknowledged {result.ok} writes, lists {listed}")
                    writes[engine].append(result)
                    log(f"round {round_no + 1}: reads on {engine}")
                    reads[engine].append(
                        run_wrk(
                            wrk,
                            origin.url,
                            HERE / "get_random.lua",
                            [origin.values_path, origin.token, "k-", str(args.keys)],
                            threads=1,
                            connections=args.connections,
                            duration=args.duration,
                            server_pid=origin.proc.pid,
                        )
                    )
        finally:
            for origin in origins.values():
                origin.close()
    rows = []
    for name, results in (("durable writes", writes), ("point reads", reads)):
        for engine in ENGINES:
            rs = results[engine]
            rows.append(
                [
                    name,
                    engine,
                    f"{median([r.rate for r in rs]):,.0f}",
                    f"{median([r.p50_ms for r in rs]):.2f}",
                    f"{median([r.p99_ms for r in rs]):.2f}",
                    f"{median([r.cpu_percent for r in rs]):.0f}%",
                    ", ".join(f"{r.rate:,.0f}" for r in rs),
                    sum(r.non2xx + r.socket_errors for r in rs),
                ]
            )
    lines = [
        f"### HTTP through one origin ({args.connections} connections, {args.duration} s runs, "
        f"{args.rounds} rounds, {args.keys:,} keys of 1 KiB for the reads)",
        "",
        table(
            [
                "load",
                "engine",
                "req/s (median)",
                "p50 ms",
                "p99 ms",
                "origin CPU",
                "rounds",
                "errors",
            ],
            rows,
        ),
        "",
        f"Every acknowledged write listed afterwards: {'yes' if durable else '**NO**'}.",
    ]
    if not durable:
        lines.append("DURABILITY CHECK FAILED")
    return lines


async def fill_sqlite(path: Path, count: int) -> float:
    """A SQLite store of ``count`` keys in one namespace, through the Store API; seconds."""
    from pullkv.store.sqlite import SQLiteStore
    from pullkv.types import NamespaceRecord, SealedWrite

    started = time.monotonic()
    store = SQLiteStore(path)
    try:
        await store.add_data_key(1, os.urandom(60))
        await store.set_setting("default_account_id", ACCOUNT_ID)
        namespace = NamespaceRecord(uuid.uuid4().hex, ACCOUNT_ID, "copied")
        await store.create_namespace(namespace, 1000)
        filler = os.urandom(100)
        for start in range(0, count, 10_000):
            writes = [
                SealedWrite(f"key-{i:08d}", filler[i % 50 :] + filler[: i % 50], None, None)
                for i in range(start, min(count, start + 10_000))
            ]
            await store.put(namespace.id, writes)
    finally:
        await store.close()
    return time.monotonic() - started


def timed_copy(source: str, dest: str) -> tuple[float, dict[str, object]]:
    """``pullkv store copy``; wall-clock seconds and its JSON report."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pullkv", "--json", "store", "copy", "--from", source, "--to", dest],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"store copy failed:\n{done.stderr}")
    return seconds, json.loads(done.stdout)


def copy_rounds(args: argparse.Namespace, base_url: str, tmp: Path) -> list[str]:
    """Part 2: the report's lines."""
    source = tmp / "copy-source.sqlite3"
    log(f"filling a SQLite store with {args.copy_keys:,} keys")
    fill_seconds = asyncio.run(fill_sqlite(source, args.copy_keys))
    size_mb = sum(p.stat().st_size for p in tmp.glob("copy-source.sqlite3*")) / 1e6
    back = tmp / "copy-back.sqlite3"
    with schema(base_url) as pg_store:
        log("copying SQLite -> PostgreSQL")
        there, there_report = timed_copy(f"sqlite://{source}", pg_store)
        with psycopg.connect(pg_store) as conn:
            row = conn.execute("SELECT pg_total_relation_size('entries')").fetchone()
            pg_mb = (row[0] if row else 0) / 1e6
        log("copying PostgreSQL -> SQLite")
        back_time, back_report = timed_copy(pg_store, f"sqlite://{back}")
    same = there_report["checksums"] == back_report["checksums"]
    return [
        f"### Copying a store of {args.copy_keys:,} keys (100-byte values) with "
        "`pullkv store copy`, verification included",
        "",
        table(
            ["step", "seconds", "keys/s"],
            [
                ["fill the SQLite source through the Store API", f"{fill_seconds:.1f}", ""],
                [
                    "SQLite -> PostgreSQL",
                    f"{there:.1f}",
                    f"{args.copy_keys / there:,.0f}",
                ],
                [
                    "PostgreSQL -> SQLite",
                    f"{back_time:.1f}",
                    f"{args.copy_keys / back_time:,.0f}",
                ],
            ],
        ),
        "",
        f"SQLite file {size_mb:.0f} MB; PostgreSQL `entries` with indexes {pg_mb:.0f} MB. "
        f"Checksums of the two copies identical: {'yes' if same else '**NO**'}.",
    ]


def main() -> int:
    """Run both parts and print the markdown report."""
    args = parse_args()
    wrk = find_tool("wrk", args.wrk)
    tmp = Path(tempfile.mkdtemp(prefix="pullkv-bench-engines-"))
    try:
        with postgres(args.postgres_url) as base_url:
            with psycopg.connect(base_url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                version = row[0] if row else "?"
                row = conn.execute("SHOW synchronous_commit").fetchone()
                sync = row[0] if row else "?"
            facts = machine_facts(wrk, [sys.executable, "-m", "pullkv"])
            facts.append(f"postgresql: {version} on 127.0.0.1 (synchronous_commit={sync})")
            lines = ["## Store engines", "", *(f"- {f}" for f in facts), ""]
            lines += http_rounds(args, wrk, base_url, tmp)
            if args.copy_keys:
                lines += ["", *copy_rounds(args, base_url, tmp)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = "\n".join(lines)
    print(report)
    return 1 if "FAILED" in report or "**NO**" in report else 0


if __name__ == "__main__":
    sys.exit(main())
