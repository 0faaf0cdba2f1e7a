"""Shared pieces of the pullkv benchmarks: servers, wrk runs, the REST calls they need,
machine facts and markdown tables.

Everything binds to 127.0.0.1 on a free port, lives in a temporary folder and is torn down
by its process id when the ``with`` block ends, however it ends.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
ACCOUNT_ID = "be4c40000000000000000000000000be"
WRK_TAG = "WRKJSON "


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Block until something accepts on ``port``; fail early if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s:\n{log.read_text()}")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 15
) -> None:
    """Stop one process we started, by its pid: ``sig``, then SIGKILL after ``grace`` s."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children (nginx workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy or stolen (all cores, from /proc/stat;
    interrupt time left out, since it is mostly our own loopback traffic)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User + system CPU seconds of our finished, waited-for children (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Reply:
    """A REST reply: status and parsed JSON (or raw bytes)."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def http(
    method: str, url: str, token: str, body: bytes | None = None, json_body: Any = None
) -> Reply:
    """One HTTP request with a bearer token; errors become replies, not exceptions."""
    headers = {"Authorization": f"Bearer {token}"}
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Reply(resp.status, resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read())


class PullkvServer:
    """``pullkv serve`` on a fresh temporary data folder and a free port."""

    def __init__(
        self, command: Sequence[str], extra_args: Sequence[str] = (), label: str = "pullkv"
    ) -> None:
        self.command = list(command)
        self.extra_args = list(extra_args)
        self.label = label
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"pullkv-bench-{label}-"))
        self.data = self.tmp / "data"
        self.log = self.tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    @property
    def origin(self) -> str:
        """http://127.0.0.1:port"""
        return f"http://{HOST}:{self.port}"

    @property
    def namespaces_path(self) -> str:
        """The REST path of the account's namespaces."""
        return f"/client/v4/accounts/{ACCOUNT_ID}/storage/kv/namespaces"

    def __enter__(self) -> PullkvServer:
        try:
            for _attempt in range(3):  # another process may take the free port first
                if self._start():
                    return self
                self.port = free_port()
            raise RuntimeError(f"pullkv could not bind a port:\n{self.log.read_text()}")
        except BaseException:
            self.close()
            raise

    def _start(self) -> bool:
        """Start on ``self.port``; False if the port was taken meanwhile."""
        args = [
            *self.command,
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--data",
            str(self.data),
            "--account-id",
            ACCOUNT_ID,
            "--log-level",
            "warning",
            *self.extra_args,
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            wait_for_port(self.port, self.proc, 30, self.log)
        except RuntimeError:
            if self.proc.poll() is not None and "address already in use" in self.log.read_text():
                return False
            raise
        time.sleep(0.2)  # a server that lost the port race exits at once
        if self.proc.poll() is not None:
            if "address already in use" in self.log.read_text():
                return False
            raise RuntimeError(
                f"server exited with {self.proc.returncode}:\n{self.log.read_text()}"
            )
        self.token = (self.data / "admin-token").read_text().strip()
        return True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its data."""
        if self.proc is not None:
            stop_process(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def create_namespace(self, title: str) -> str:
        """Create a namespace; return its id."""
        reply = http(
            "POST", self.origin + self.namespaces_path, self.token, json_body={"title": title}
        )
        if reply.status != 200:
            raise RuntimeError(f"create namespace: {reply.status} {reply.body!r}")
        return str(reply.json()["result"]["id"])

    def values_path(self, namespace_id: str) -> str:
        """The REST path prefix of a namespace's values (add a URL-encoded key)."""
        return f"{self.namespaces_path}/{namespace_id}/values/"

    def put(self, namespace_id: str, key: str, value: bytes) -> None:
        """Write one value."""
        url = self.origin + self.values_path(namespace_id) + urllib.parse.quote(key, safe="")
        reply = http("PUT", url, self.token, body=value)
        if reply.status != 200:
            raise RuntimeError(f"put {key!r}: {reply.status} {reply.body!r}")

    def count_keys(self, namespace_id: str, prefix: str) -> int:
        """How many keys start with ``prefix``, listing through REST and following the cursor."""
        count, cursor = 0, ""
        base = f"{self.origin}{self.namespaces_path}/{namespace_id}/keys"
        for _ in range(100_000):  # bounded: far more pages than any run writes
            query = {"prefix": prefix, "limit": "1000"}
            if cursor:
                query["cursor"] = cursor
            reply = http("GET", f"{base}?{urllib.parse.urlencode(query)}", self.token)
            if reply.status != 200:
                raise RuntimeError(f"list keys: {reply.status} {reply.body!r}")
            page = reply.json()
            count += len(page["result"])
            cursor = page["result_info"]["cursor"]
            if not cursor:
                return count
        raise RuntimeError("list keys: too many pages")


class NginxServer:
    """nginx serving one static file from a temporary prefix on a free port."""

    def __init__(self, nginx: str, body: bytes, workers: int = 1) -> None:
        self.nginx = nginx
        self.port = free_port()
        self.workers = workers
        self.tmp = Path(tempfile.mkdtemp(prefix="pullkv-bench-nginx-"))
        self.tmp.chmod(0o755)  # workers run as an unprivileged user when we are root
        (self.tmp / "www").mkdir()
        (self.tmp / "www" / "hot").write_bytes(body)
        (self.tmp / "www").chmod(0o755)
        (self.tmp / "www" / "hot").chmod(0o644)
        self.conf = self.tmp / "nginx.conf"
        self.log = self.tmp / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL of the static file."""
        return f"http://{HOST}:{self.port}/hot"

    def __enter__(self) -> NginxServer:
        t = self.tmp
        self.conf.write_text(
            f"""daemon off;
master_process on;
worker_processes {self.workers};
pid {t}/nginx.pid;
error_log {self.log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {t}/client_temp;
    proxy_temp_path {t}/proxy_temp;
    fastcgi_temp_path {t}/fastcgi_temp;
    uwsgi_temp_path {t}/uwsgi_temp;
    scgi_temp_path {t}/scgi_temp;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {{
        listen {HOST}:{self.port};
        root {t}/www;
    }}
}}
"""
        )
        args = [self.nginx, "-p", str(t), "-e", str(self.log), "-c", str(self.conf)]
        try:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
            )
            wait_for_port(self.port, self.proc, 15, self.log)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop nginx by its master's pid (SIGQUIT: graceful) and remove the prefix."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGQUIT, grace=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def pid(self) -> int:
        """The master's process id."""
        assert self.proc is not None
        return self.proc.pid


@dataclass
class WrkResult:
    """The figures of one wrk run (latencies in milliseconds)."""

    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_s: float = 0.0
    wrk_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0

    @property
    def ok(self) -> int:
        """Responses with a 2xx/3xx status."""
        return self.requests - self.non2xx

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds

    @property
    def cpu_percent(self) -> float:
        """Server CPU use over the run, in percent of one core."""
        return 100 * self.server_cpu_s / self.seconds

    @property
    def others_percent(self) -> float:
        """CPU used during the run by neither the server nor wrk (other tenants of the
        machine), in percent of one core: the noise indicator."""
        others = self.machine_cpu_s - self.server_cpu_s - self.wrk_cpu_s
        return max(0.0, 100 * others / self.seconds)


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    script_args: Sequence[str],
    *,
    threads: int,
    connections: int,
    duration: float,
    server_pid: int | None = None,
) -> WrkResult:
    """Run wrk once (bounded by ``duration`` plus a margin) and parse the JSON line that the
    script's ``done()`` prints; measure the server's CPU time meanwhile."""
    args = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
        "--",
        *script_args,
    ]
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    wrk_before, machine_before = children_cpu_seconds(), machine_busy_seconds()
    done = subprocess.run(args, capture_output=True, timeout=duration + 30, check=False)
    cpu_after = cpu_seconds(server_pid) if server_pid else 0.0
    wrk_after, machine_after = children_cpu_seconds(), machine_busy_seconds()
    out = done.stdout.decode(errors="replace")
    lines = [line for line in out.splitlines() if line.startswith(WRK_TAG)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"wrk failed ({done.returncode}):\n{out}\n{done.stderr.decode(errors='replace')}"
        )
    data = json.loads(lines[-1][len(WRK_TAG) :])
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non2xx=data["non2xx"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        server_cpu_s=cpu_after - cpu_before,
        wrk_cpu_s=wrk_after - wrk_before,
        machine_cpu_s=machine_after - machine_before,
    )


def median(values: Sequence[float]) -> float:
    """The median."""
    return float(statistics.median(values))


def find_tool(name: str, given: str | None) -> str:
    """The path of a required executable, or a clear exit."""
    path = (
        given
        or shutil.which(name)
        or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    )
    if not path:
        sys.exit(f"{name} not found: install it (apt-get install -y {name}) or pass its path")
    return path


def tool_version(args: Sequence[str]) -> str:
    """The first line a tool prints about its version."""
    try:
        done = subprocess.run(args, capture_output=True, timeout=10, check=False)
    except OSError:
        return "?"
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "?"


def pullkv_python(command: Sequence[str]) -> str:
    """The Python version of the interpreter that runs the server."""
    for part in command:
        if Path(part).name.startswith("python"):
            return tool_version([part, "--version"])
    return f"Python {platform.python_version()}"


def machine_facts(
    wrk: str, server_command: Sequence[str], nginx: str | None = None, source: str | None = None
) -> list[str]:
    """Facts worth printing beside every result."""
    load = os.getloadavg()
    facts = [
        f"date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"nproc: {os.cpu_count()}",
        f"cpu: {_cpu_model()}",
        f"kernel: {platform.system()} {platform.release()}",
        f"python (server): {pullkv_python(server_command)}",
        f"sqlite: {sqlite3.sqlite_version}",
        f"wrk: {tool_version([wrk, '-v'])}",
        f"source: {source}" if source else source_fact(),
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    ]
    if nginx:
        facts.insert(8, f"nginx: {tool_version([nginx, '-v'])}")
    else:
        probe = fsync_latency_ms()
        facts.append(f"4 KiB write + fdatasync in {tempfile.gettempdir()}: {probe:.3f} ms median")
    return facts


def fsync_latency_ms(directory: Path | None = None, count: int = 200) -> float:
    """Median time of a 4 KiB write plus fdatasync in a temporary file (the floor under one
    durable commit on this disk)."""
    with tempfile.TemporaryDirectory(prefix="pullkv-bench-fsync-", dir=directory) as tmp:
        fd = os.open(Path(tmp) / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            times = []
            block = b"x" * 4096
            for i in range(count):
                start = time.perf_counter()
                os.pwrite(fd, block, (i % 16) * 4096)
                os.fdatasync(fd)
                times.append(time.perf_counter() - start)
        finally:
            os.close(fd)
    return 1000 * median(times)


def source_fact() -> str:
    """Which pullkv source was measured: the git commit, and a digest of src/ when the working
    tree differs from it (so that runs on the same uncommitted tree can be matched)."""
    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout.decode()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            timeout=10,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return "source: (not a git checkout)"
    if not dirty.strip():
        return f"source: git {head.strip()}, src/ clean"
    digest = hashlib.sha256()
    for path in sorted((root / "src").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    changed = len(dirty.splitlines())
    return (
        f"source: git {head.strip()} + {changed} uncommitted change(s) in src/"
        f" (src digest {digest.hexdigest()[:12]})"
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def default_server_command() -> list[str]:
    """``python -m pullkv`` with this interpreter (the project's virtualenv)."""
    return [sys.executable, "-m", "pullkv"]


def add_common_arguments(p: argparse.ArgumentParser, connections: int, per: str) -> None:
    """The options both benchmarks share."""
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--rounds", type=int, default=3, help=f"runs per {per}, interleaved (default 3)")
    p.add_argument(
        "--connections",
        type=int,
        default=connections,
        help=f"concurrent connections (default {connections})",
    )
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--warmup", type=int, default=2, help=f"warm-up seconds per {per} (default 2)")
    p.add_argument(
        "--max-noise",
        type=float,
        default=25,
        help="redo a round if others' CPU passed this %% of a core in any run (default 25)",
    )
    p.add_argument(
        "--retries", type=int, default=1, help="redos allowed per round (default 1; 0: none)"
    )
    p.add_argument(
        "--quiet-wait",
        type=int,
        default=30,
        help="before each round, wait up to this many s for the machine to be idle (default 30)",
    )
    p.add_argument("--wrk", help="path of wrk (default: from PATH)")
    p.add_argument(
        "--server", help="command that runs pullkv (default: this Python with -m pullkv)"
    )
    p.add_argument(
        "--source", help="what source --server runs, for the report (default: git state)"
    )


def check_common_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Keep every run bounded in time."""
    bounded = (
        1 <= args.duration <= 120
        and 1 <= args.rounds <= 20
        and 0 <= args.warmup <= 30
        and 0 <= args.retries <= 3
        and 1 <= args.connections <= 1000
        and 1 <= args.threads <= 16
        and 0 <= args.quiet_wait <= 300
    )
    if not bounded:
        p.error(
            "keep --duration in 1..120, --rounds in 1..20, --warmup in 0..30,"
            " --retries in 0..3, --connections in 1..1000, --threads in 1..16,"
            " --quiet-wait in 0..300"
        )


def label_of(label: str, kept: bool, result: WrkResult, max_noise: float) -> str:
    """A round's label in the per-round table: struck through when redone, marked when it
    was kept although noisy (no redo left)."""
    if not kept:
        return f"~~{label}~~ noisy, redone"
    if result.others_percent > max_noise:
        return f"{label} (noisy, no redo left)"
    return label


def wait_until_quiet(max_wait: float, threshold: float = 15.0, sample: float = 2.0) -> float:
    """Between runs (when our own processes are idle), wait until the machine's busy CPU over
    ``sample`` seconds is under ``threshold`` % of one core, for at most ``max_wait`` seconds;
    return the busy figure last seen. Other tenants' bursts then fall between rounds."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(sample)
        busy = 100 * (machine_busy_seconds() - before) / sample
        if busy < threshold or time.monotonic() >= deadline:
            return busy
