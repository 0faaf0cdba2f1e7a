"""Shared pieces of the pullkv benchmarks: servers, wrk runs, the REST calls they need,
machine facts and markdown tables.

Everything binds to 127.0.0.1 on a free port, lives in a temporary folder and is torn down
by its process id when the ``with`` block ends, however it ends.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import re
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant of it (a supervisor's workers, nginx's workers),
    from the ``children`` lists of all their threads."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{p}/task/{task}/children").read_text()
                todo += [int(c) for c in children.split()]
    return found


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` and its live descendants, plus those of its
    children that exited and were waited for (cutime, cstime)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime (fields 14-17 of proc(5); 11-14 after the name)
        user += (int(fields[11]) + int(fields[13])) / tick
        system += (int(fields[12]) + int(fields[14])) / tick
    return user, system


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
    """``pullkv serve`` on a fresh temporary data folder and a free port.

    ``role="origin"`` starts ``pullkv origin`` instead; ``role="edge"`` starts ``pullkv edge``
    in front of ``upstream`` (a running origin), with the origin's admin token as its
    upstream token (and for clients: tokens made at the origin work at its edges) and the
    origin's master key, both passed in the environment as in ``pullkv cluster up``.
    """

    def __init__(
        self,
        command: Sequence[str],
        extra_args: Sequence[str] = (),
        label: str = "pullkv",
        *,
        role: str = "serve",
        upstream: PullkvServer | None = None,
    ) -> None:
        if role not in ("serve", "origin", "edge") or (role == "edge") != (upstream is not None):
            raise ValueError("role is serve, origin, or edge with an upstream")
        self.command = list(command)
        self.extra_args = list(extra_args)
        self.label = label
        self.role = role
        self.upstream = upstream
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
        # No access log: nginx, the reference, runs with access_log off too.
        listen = ["--host", HOST, "--port", str(self.port), "--log-level", "warning"]
        listen += ["--access-log", "off"]
        env: dict[str, str] | None = None
        if self.upstream is not None:
            args = [
                *self.command,
                "edge",
                "--upstream",
                self.upstream.origin,
                "--location",
                self.label,
                "--data",
                str(self.tmp),  # holds nothing: the master key comes from the environment
                *listen,
                *self.extra_args,
            ]
            env = {
                **os.environ,
                "PULLKV_UPSTREAM_TOKEN": self.upstream.token,
                "PULLKV_MASTER_KEY": self.upstream.master_key(),
            }
        else:
            args = [
                *self.command,
                self.role,
                "--data",
                str(self.data),
                "--account-id",
                ACCOUNT_ID,
                *listen,
                *self.extra_args,
            ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
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
        if self.upstream is not None:
            self.token = self.upstream.token
        else:
            self.token = (self.data / "admin-token").read_text().strip()
        return True

    def master_key(self) -> str:
        """The master key (base64), for an edge's PULLKV_MASTER_KEY (not for an edge)."""
        return base64.b64encode(base64.b64decode((self.data / "master.key").read_text())).decode()

    def metrics_text(self) -> str:
        """This node's /metrics (Prometheus text), read with the admin token."""
        reply = http("GET", self.origin + "/metrics", self.token)
        if reply.status != 200:
            raise RuntimeError(f"/metrics: {reply.status} {reply.body!r}")
        return reply.body.decode()

    def metric(self, name: str, **labels: str) -> float:
        """One sample of this node's /metrics, with exactly these labels (0 when absent)."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "")
        found = re.search(rf"^{pattern} ([0-9.e+-]+)$", self.metrics_text(), flags=re.M)
        return float(found.group(1)) if found else 0.0

    def metric_total(self, name: str) -> float:
        """The sum of every sample of ``name`` in this node's /metrics, whatever the labels."""
        found = re.findall(
            rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", self.metrics_text(), flags=re.M
        )
        return sum(float(v) for v in found)

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


# What nginx answers GET /hot from: the file with sendfile (the default), the file through
# open_file_cache (no open/fstat per request), or the bytes in its configuration (return 200).
NGINX_MODES = ("file", "open_file_cache", "memory")


class NginxServer:
    """nginx serving one 1 KiB body (``mode``: see NGINX_MODES) from a temporary prefix on a
    free port."""

    def __init__(
        self,
        nginx: str,
        body: bytes,
        workers: int = 1,
        wrapper: Sequence[str] = (),
        mode: str = "file",
    ) -> None:
        if mode not in NGINX_MODES:
            raise ValueError(f"nginx mode is one of {NGINX_MODES}")
        if mode == "memory" and not re.fullmatch(rb"[A-Za-z0-9 .,:;_-]*", body):
            raise ValueError("nginx answers from memory only bodies of plain characters")
        self.mode = mode
        self.body = body
        self.nginx = nginx
        self.wrapper = list(wrapper)  # e.g. taskset -c 0 (the workers inherit the affinity)
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
        if self.mode == "memory":
            location = f'location = /hot {{ return 200 "{self.body.decode()}"; }}'
        elif self.mode == "open_file_cache":
            location = "open_file_cache max=16 inactive=60s; open_file_cache_valid 60s;"
        else:
            location = ""
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
        {location}
    }}
}}
"""
        )
        args = [*self.wrapper, self.nginx, "-p", str(t), "-e", str(self.log), "-c", str(self.conf)]
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
    extra: dict[str, float] = field(default_factory=dict)  # a script's own figures per run
    error_kinds: dict[str, int] = field(default_factory=dict)  # socket errors by wrk's kind

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
    server_pids: Sequence[int] = (),
    wrapper: Sequence[str] = (),
) -> WrkResult:
    """Run wrk once (bounded by ``duration`` plus a margin) and parse the JSON line that the
    script's ``done()`` prints; measure the server's CPU time meanwhile (``server_pid`` and
    every one of ``server_pids``, with their children). ``wrapper`` goes before wrk's own
    command, e.g. ``taskset -c 1``."""
    pids = ([server_pid] if server_pid else []) + list(server_pids)
    args = [
        *wrapper,
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
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    wrk_before, machine_before = children_cpu_seconds(), machine_busy_seconds()
    done = subprocess.run(args, capture_output=True, timeout=duration + 30, check=False)
    cpu_after = sum(cpu_seconds(pid) for pid in pids)
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
        error_kinds={k: data[k] for k in ("connect", "read", "write", "timeout") if data[k]},
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


def pin(cpus: str) -> list[str]:
    """The prefix that runs a command on ``cpus`` only (``taskset -c 0``), or [] for ""."""
    if not cpus:
        return []
    return [find_tool("taskset", None), "-c", cpus]


def cpu_set(cpus: str) -> set[int]:
    """The CPUs of a ``taskset -c`` list such as ``0``, ``0,1`` or ``0-3`` (ValueError if not)."""
    named: set[int] = set()
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        named.update(range(int(low), int(high or low) + 1))
    return named


def check_cpus(p: argparse.ArgumentParser, *cpu_lists: str) -> None:
    """Exit clearly unless every CPU named in the ``taskset -c`` lists is ours to use."""
    allowed = os.sched_getaffinity(0)
    for cpus in cpu_lists:
        if not cpus:
            continue
        try:
            named = cpu_set(cpus)
        except ValueError:
            p.error(f"not a CPU list: {cpus!r} (e.g. 0 or 0-1)")
        if not named <= allowed:
            p.error(f"CPUs {cpus} are not all available (allowed: {sorted(allowed)})")


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Run:
    """One measured run: which round and target, and wrk's figures."""

    label: str
    target: str
    result: WrkResult
    kept: bool = True


def interleaved_rounds(
    targets: Sequence[str],
    once: Callable[[str, float], WrkResult],
    *,
    rounds: int,
    duration: float,
    warmup: float,
    quiet_wait: float,
    max_noise: float,
    retries: int,
    tag: str = "",
) -> list[Run]:
    """Warm each target up (``warmup`` s), then run ``rounds`` interleaved rounds (A B, B A,
    ...) of ``once(target, duration)``. Before each round, wait up to ``quiet_wait`` s for an
    idle machine; a round in which others' CPU passed ``max_noise`` in any run is redone (up
    to ``retries`` times) and its runs marked not kept. Progress goes to stderr."""
    if warmup > 0:
        for name in targets:
            once(name, warmup)
    runs: list[Run] = []
    rnd, redo = 1, 0
    while rnd <= rounds:
        label = f"{rnd}" + ("" if redo == 0 else f" (retry {redo})")
        if quiet_wait > 0:
            wait_until_quiet(quiet_wait)
        order = list(targets) if rnd % 2 else list(reversed(targets))
        this_round = []
        for name in order:
            result = once(name, duration)
            this_round.append(Run(label, name, result))
            extras = "".join(f", {k} {v:g}" for k, v in result.extra.items())
            print(
                f"{tag}round {label} {name}: {result.rate:.0f} req/s, p50 {result.p50_ms:.2f} ms,"
                f" p99 {result.p99_ms:.2f} ms, non-2xx {result.non2xx},"
                f" errors {result.socket_errors}, server CPU {result.cpu_percent:.0f}%,"
                f" others' CPU {result.others_percent:.0f}%{extras}",
                file=sys.stderr,
                flush=True,
            )
        runs += this_round
        noisy = any(r.result.others_percent > max_noise for r in this_round)
        if noisy and redo < retries:
            redo += 1
            for r in this_round:
                r.kept = False
            continue
        rnd, redo = rnd + 1, 0
    return runs


def kept_results(runs: Sequence[Run], target: str) -> list[WrkResult]:
    """The kept runs' figures for one target, in round order."""
    return [r.result for r in runs if r.kept and r.target == target]


def paired_ratios(runs: Sequence[Run], target: str, reference: str) -> list[float]:
    """Round by round, ``target``'s req/s over ``reference``'s (kept rounds only)."""
    return [
        a.rate / b.rate
        for a, b in zip(kept_results(runs, target), kept_results(runs, reference), strict=True)
    ]


# A column of a script's own per-run figures (WrkResult.extra): header, key, format.
ExtraColumn = tuple[str, str, str]


def summary_table(runs: Sequence[Run], extra_columns: Sequence[ExtraColumn] = ()) -> str:
    """Medians per target over the kept rounds, as a markdown table."""
    rows = []
    for name in dict.fromkeys(r.target for r in runs):
        results = kept_results(runs, name)
        extras = []
        for _header, key, fmt in extra_columns:
            values = [r.extra[key] for r in results if key in r.extra]
            extras.append(format(median(values), fmt) if values else "-")
        rows.append(
            [
                name,
                f"**{median([r.rate for r in results]):.0f}**",
                f"{median([r.p50_ms for r in results]):.2f}",
                f"{median([r.p99_ms for r in results]):.2f}",
                f"{median([r.cpu_percent for r in results]):.0f}%",
                *extras,
                sum(r.non2xx for r in results),
                sum(r.socket_errors for r in results),
            ]
        )
    headers = ["target", "median req/s", "p50 ms", "p99 ms", "server CPU"]
    headers += [c[0] for c in extra_columns] + ["non-2xx", "socket errors"]
    return table(headers, rows)


def rounds_table(
    runs: Sequence[Run], max_noise: float, extra_columns: Sequence[ExtraColumn] = ()
) -> str:
    """Every run, redone rounds struck through, as a markdown table."""
    headers = ["round", "target", "req/s", "p50 ms", "p99 ms", "server CPU", "others' CPU"]
    headers += [c[0] for c in extra_columns]
    rows = [
        [
            label_of(r.label, r.kept, r.result, max_noise),
            r.target,
            f"{r.result.rate:.0f}",
            f"{r.result.p50_ms:.2f}",
            f"{r.result.p99_ms:.2f}",
            f"{r.result.cpu_percent:.0f}%",
            f"{r.result.others_percent:.0f}%",
            *[
                format(r.result.extra[key], fmt) if key in r.result.extra else "-"
                for _h, key, fmt in extra_columns
            ],
        ]
        for r in runs
    ]
    return table(headers, rows)


# Per-run CPU figures (WrkResult.extra) that measure_cpu adds, as summary/rounds columns.
CPU_COLUMNS: list[ExtraColumn] = [
    ("user µs/req", "user_us", ".2f"),
    ("system µs/req", "system_us", ".2f"),
    ("req per CPU-s", "req_per_cpu_s", ".0f"),
]


def measure_cpu(pids: Sequence[int], run: Callable[[], WrkResult]) -> WrkResult:
    """``run()``, with the user and system CPU time of ``pids`` and all their descendants
    over it added to the result per request (``user_us``, ``system_us``) and as requests
    per CPU-second of the server (``req_per_cpu_s``): figures the load generator's share of
    the cores does not move."""
    before = [tree_cpu_times(p) for p in pids]
    result = run()
    after = [tree_cpu_times(p) for p in pids]
    user = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    system = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    answered = max(1, result.ok)
    result.extra["user_us"] = 1e6 * user / answered
    result.extra["system_us"] = 1e6 * system / answered
    result.extra["req_per_cpu_s"] = answered / (user + system) if user + system else 0.0
    return result


def add_pin_arguments(p: argparse.ArgumentParser) -> None:
    """--server-cpus and --wrk-cpus (taskset lists; "" turns pinning off)."""
    p.add_argument(
        "--server-cpus",
        default="0",
        help='CPUs for every server process, as taskset -c takes them (default 0; "": unpinned)',
    )
    p.add_argument(
        "--wrk-cpus",
        default="1",
        help='CPUs for wrk and the Python client (default 1; "": unpinned)',
    )
