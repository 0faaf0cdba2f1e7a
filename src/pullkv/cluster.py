"""``pullkv cluster up``: one origin and several edges on loopback, with simulated distance.

Each node is its own process (``pullkv origin`` / ``pullkv edge``), so the cluster behaves
like a real deployment: edges reach the origin over HTTP, through a delay added to every
edge-origin exchange, and share the origin's master key and admin token (an edge token).
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LOCATIONS = ["lhr", "nrt", "iad", "syd", "gru", "fra", "sin", "jnb", "ord", "bom", "cdg", "sea"]
START_TIMEOUT = 30.0


@dataclass
class ClusterSpec:
    """What to start."""

    data_dir: Path
    edges: int = 3
    latency_ms: float = 80.0
    base_port: int = 8787
    host: str = "127.0.0.1"
    default_cache_ttl: int | None = None
    min_cache_ttl: int | None = None
    refresh_interval: float | None = None


@dataclass
class Member:
    """One running node of the cluster."""

    name: str
    url: str
    process: subprocess.Popen[bytes]


@dataclass
class Cluster:
    """A running cluster: the origin first, then the edges."""

    members: list[Member] = field(default_factory=list)
    account_id: str = ""
    admin_token_path: Path | None = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every member (edges first), then SIGKILL what is left."""
        for member in reversed(self.members):
            if member.process.poll() is None:
                member.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for member in reversed(self.members):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                member.process.wait(remaining)
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait(5)


def _wait_healthy(member: Member, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if member.process.poll() is not None:
            raise RuntimeError(f"{member.name} exited with status {member.process.returncode}")
        try:
            with urllib.request.urlopen(f"{member.url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"{member.name} did not start within {timeout:.0f} s")


def _cache_flags(spec: ClusterSpec) -> list[str]:
    flags: list[str] = []
    if spec.default_cache_ttl is not None:
        flags += ["--default-cache-ttl", str(spec.default_cache_ttl)]
    if spec.min_cache_ttl is not None:
        flags += ["--min-cache-ttl", str(spec.min_cache_ttl)]
    if spec.refresh_interval is not None:
        flags += ["--refresh-interval", str(spec.refresh_interval)]
    return flags


def start_cluster(spec: ClusterSpec, log_dir: Path | None = None) -> Cluster:
    """Start the origin, then the edges; return once every node answers /healthz."""
    origin_dir = spec.data_dir / "origin"
    logs = log_dir or spec.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cluster = Cluster()
    python = [sys.executable, "-m", "pullkv"]

    def spawn(name: str, args: list[str], env: dict[str, str]) -> Member:
        log = (logs / f"{name}.log").open("ab")
        process = subprocess.Popen([*python, *args], stdout=log, stderr=log, env=env)
        port = args[args.index("--port") + 1]
        member = Member(name, f"http://{spec.host}:{port}", process)
        cluster.members.append(member)
        return member

    try:
        env = {**os.environ}
        origin = spawn(
            "origin",
            [
                "origin",
                "--data",
                str(origin_dir),
                "--host",
                spec.host,
                "--port",
                str(spec.base_port),
                "--log-level",
                "warning",
            ],
            env,
        )
        _wait_healthy(origin, START_TIMEOUT)
        token_path = origin_dir / "admin-token"
        master_key = (origin_dir / "master.key").read_text().strip()
        edge_env = {
            **env,
            "PULLKV_UPSTREAM_TOKEN": token_path.read_text().strip(),
            "PULLKV_MASTER_KEY": base64.b64encode(base64.b64decode(master_key)).decode(),
        }
        edges = []
        for number in range(spec.edges):
            location = LOCATIONS[number % len(LOCATIONS)]
            edges.append(
                spawn(
                    location,
                    [
                        "edge",
                        "--upstream",
                        origin.url,
                        "--location",
                        location,
                        "--host",
                        spec.host,
                        "--port",
                        str(spec.base_port + 1 + number),
                        "--data",
                        str(origin_dir),
                        "--upstream-latency-ms",
                        str(spec.latency_ms),
                        "--log-level",
                        "warning",
                        *_cache_flags(spec),
                    ],
                    edge_env,
                )
            )
        for member in edges:
            _wait_healthy(member, START_TIMEOUT)
        cluster.admin_token_path = token_path
        cluster.account_id = _account_id(origin_dir)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _account_id(origin_dir: Path) -> str:
    import sqlite3

    from pullkv.node import ACCOUNT_SETTING
    from pullkv.store import sqlite_path_for

    with sqlite3.connect(sqlite_path_for(origin_dir)) as db:
        row = db.execute("SELECT value FROM settings WHERE name=?", (ACCOUNT_SETTING,)).fetchone()
    return str(row[0]) if row else ""


def describe(cluster: Cluster, spec: ClusterSpec) -> str:
    """The table a person reads after ``cluster up``."""
    lines = [
        f"{'location':<10} {'role':<7} {'URL':<26} upstream delay",
    ]
    for index, member in enumerate(cluster.members):
        role = "origin" if index == 0 else "edge"
        delay = "-" if index == 0 else f"{spec.latency_ms:g} ms"
        lines.append(f"{member.name:<10} {role:<7} {member.url:<26} {delay}")
    lines += [
        "",
        f"account id:  {cluster.account_id}",
        f"admin token: {cluster.admin_token_path}",
        "Every URL serves the REST API at <URL>/client/v4. Ctrl-C stops the cluster.",
    ]
    return "\n".join(lines)


def run_cluster(spec: ClusterSpec, echo: Callable[[str], None]) -> None:
    """Start a cluster, print it, and keep it up until Ctrl-C / SIGTERM or a member dies."""
    cluster = start_cluster(spec)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, request_stop)
    echo(describe(cluster, spec))
    try:
        while not stopping:
            dead = [m for m in cluster.members if m.process.poll() is not None]
            if dead:
                echo(f"{dead[0].name} exited (status {dead[0].process.returncode}); stopping")
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        echo("stopping the cluster ...")
        cluster.stop()
        signal.signal(signal.SIGTERM, previous)
        echo("stopped")
