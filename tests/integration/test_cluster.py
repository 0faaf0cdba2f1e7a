"""``pullkv cluster up`` as a small real deployment: the README walk-through run as written,
deaths reported while the rest keeps running, stop/start/status from another process, one-line
start failures, children that never outlive ``cluster up``, and an origin on PostgreSQL.

Every test stops what it started by pid: ``cluster up`` itself, then any location process still
there (found by its pid in ``/proc``, its command line naming pullkv and the test's folder).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.pg import fresh_schema, postgres_url
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TTL = 3  # the walk-through's --default-cache-ttl 30, shortened
START_WAIT = 90.0  # generous: two cores shared with other test runs


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1."""
    while True:
        base = free_port()
        if base + count < 65536 and all(_bindable(base + i) for i in range(count)):
            return base


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pullkv_processes(folder: Path) -> list[int]:
    """Running pullkv processes started for ``folder``: named in their command line, or
    running in it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        inside = str(folder) in cmdline or cwd == str(folder) or cwd.startswith(f"{folder}/")
        if "pullkv" in cmdline and inside and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` for ``pids`` to end; those still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


def _kill_leftovers(folder: Path) -> None:
    for pid in _pullkv_processes(folder):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pullkv(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pullkv", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ClusterUp:
    """A ``pullkv cluster up`` child: its output collected line by line as it comes."""

    def __init__(self, folder: Path, args: list[str]) -> None:
        self.folder = folder
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pullkv", "cluster", "up", *args],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = START_WAIT) -> re.Match[str]:
        """Wait until the output matches ``pattern``; the match."""
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.output)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.process.poll() is not None and self.lines.empty()):
                raise AssertionError(f"no {pattern!r} in cluster up's output:\n{self.output}")
            with suppress(queue.Empty):
                self.output += self.lines.get(timeout=min(remaining, 0.5))
        return found

    def status(self) -> dict[str, dict[str, object]]:
        """``pullkv --json cluster status``, by location."""
        result = _pullkv("--json", "cluster", "status", cwd=self.folder)
        assert result.returncode == 0, result.stderr
        return {m["location"]: m for m in json.loads(result.stdout)["members"]}

    def pids(self) -> list[int]:
        """The running locations' pids."""
        return [int(str(m["pid"])) for m in self.status().values() if m["pid"] is not None]

    def stop(self) -> None:
        """SIGTERM ``cluster up`` (SIGKILL if it lingers), then any location left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        _kill_leftovers(self.folder)


@contextmanager
def cluster_up(folder: Path, args: list[str]) -> Iterator[ClusterUp]:
    """A running cluster in ``folder`` (its cluster folder is ``folder/pullkv-cluster``)."""
    folder.mkdir(parents=True, exist_ok=True)
    up = ClusterUp(folder, args)
    try:
        up.wait_for(r"Ctrl-C stops the cluster")
        yield up
    finally:
        up.stop()


class Shell:
    """One bash session fed command by command, as a person types them in a terminal."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def run(self, command: str, timeout: float = 90) -> tuple[int, str]:
        """Run one command; its exit status and output."""
        assert self.process.stdin is not None
        marker = f"__done_{uuid.uuid4().hex}__"
        self.process.stdin.write(f"{command}\necho; echo {marker} $?\n")
        self.process.stdin.flush()
        output = ""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line.startswith(marker):
                return int(line.split()[1]), output
            output += line

    def close(self) -> None:
        """End the session (by its pid)."""
        self.process.kill()
        self.process.wait(10)


def _readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## A global store on one machine: `pullkv cluster up`")
    return readme[start:].split("\n## ", 1)[0]


def _commands(block: str) -> list[str]:
    """A shell block's commands, continuation lines joined."""
    return [c.strip() for c in re.sub(r"\\\n\s*", " ", block).splitlines() if c.strip()]


def _header(response: str, name: str) -> str:
    found = re.search(rf"^{name}:\s*(.*?)\r?$", response, flags=re.M | re.I)
    assert found is not None, f"no {name} in:\n{response}"
    return found.group(1)


def _body(response: str) -> str:
    return re.split(r"\r?\n\r?\n", response, maxsplit=1)[1].strip()


def _poll(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run ``check`` until it says yes."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.mark.timeout(300)
def test_readme_walkthrough_as_written(tmp_path: Path) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", _readme_section(), flags=re.S)
    assert len(blocks) == 5, "the walk-through's shell blocks changed: update this test"
    up_command = _commands(blocks[0])
    assert up_command == ["pullkv cluster up --edges 3 --latency-ms 80 --default-cache-ttl 30"]
    base = _free_ports(4)

    def localise(command: str) -> str:
        for number in range(4):
            command = command.replace(f"127.0.0.1:{8787 + number}", f"127.0.0.1:{base + number}")
        return command

    args = up_command[0].split()[3:]
    args[args.index("--default-cache-ttl") + 1] = str(TTL)
    args += ["--min-cache-ttl", "1", "--base-port", str(base)]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("PULLKV_TOKEN", None)
    with cluster_up(tmp_path, args) as up:
        table = up.output
        for name, number in (("origin", 0), ("lhr", 1), ("nrt", 2), ("iad", 3)):
            assert re.search(rf"^{name}\s+\S+\s+http://127.0.0.1:{base + number}\s", table, re.M)
        account = up.wait_for(r"account id:\s+([0-9a-f]{32})").group(1)
        assert "logs:        pullkv-cluster/logs/" in table
        shell = Shell(tmp_path, env)
        try:
            placeholders = {"<account id>": account}
            outputs: list[tuple[str, str]] = []

            def said(fragment: str) -> str:
                """The output of the last block's command containing ``fragment``."""
                (output,) = [out for command, out in outputs if fragment in command]
                return output

            def run_block(block: str) -> None:
                outputs.clear()
                for command in _commands(block):
                    for placeholder, value in placeholders.items():
                        command = command.replace(placeholder, value)
                    assert "<" not in command.split("#")[0], command
                    status, output = shell.run(localise(command))
                    assert status == 0, f"{command}\n{output}"
                    outputs.append((command, output))
                    if "namespace create" in command:
                        created = re.search(r"with id ([0-9a-f]{32})", output)
                        assert created is not None, output
                        placeholders["<namespace id>"] = created.group(1)

            def read_greeting() -> str:
                status, output = shell.run(_commands(blocks[1])[-1])
                assert status == 0, output
                return output

            # Written at lhr, read there at once; the first read at nrt goes to the origin.
            run_block(blocks[1])
            assert said("key get greeting").strip() == "hello"
            first = said("curl")
            assert _body(first) == "hello"
            assert _header(first, "cache-status") == f"pullkv-nrt; fwd=miss; stored; ttl={TTL}"
            assert _header(read_greeting(), "cache-status").startswith("pullkv-nrt; hit; ttl=")

            # A new value at lhr: nrt has the old one until its TTL is up, then fetches it.
            run_block(blocks[2])
            assert _body(said("curl")) in ("hello", "bonjour")
            time.sleep(TTL)
            fresh = read_greeting()
            assert _body(fresh) == "bonjour"
            assert _header(fresh, "cache-status").startswith("pullkv-nrt; fwd=stale; stored")

            # The origin taken down: the edges keep running and nrt serves what it holds.
            run_block(blocks[3])
            assert said("cluster stop origin").startswith("stopped origin (pid ")
            table = said("cluster status")
            assert re.search(r"^origin\s+origin\s+-\s+\S+\s+stopped", table, re.M), table
            for edge in ("lhr", "nrt", "iad"):
                assert re.search(rf"^{edge}\s+edge\s+\d+\s+\S+\s+running", table, re.M)
            up.wait_for(r"origin \(pid \d+\) stopped by `pullkv cluster stop origin`")
            time.sleep(TTL)
            stale = read_greeting()
            assert _body(stale) == "bonjour"
            assert re.fullmatch(
                r'pullkv-nrt; hit; fwd=stale; ttl=-\d+; detail="stale-if-error"',
                _header(stale, "cache-status"),
            )
            status, missing = shell.run(_missing_key(blocks))
            assert status == 0 and missing.startswith("HTTP/1.1 503"), missing

            # Back again: nrt fetches from the origin.
            run_block(blocks[4])
            assert said("cluster start origin").startswith("started origin (pid ")
            _poll(
                lambda: "stored" in _header(read_greeting(), "cache-status"),
                timeout=60,
            )
        finally:
            shell.close()
    assert _pullkv_processes(tmp_path) == []


def _missing_key(blocks: list[str]) -> str:
    """The walk-through's read at nrt, of a key nrt does not hold."""
    return _commands(blocks[1])[-1].replace("$VALUES/greeting", "$VALUES/never-written")


@pytest.mark.timeout(240)
def test_origin_death_is_reported_and_edges_keep_serving(tmp_path: Path) -> None:
    base = _free_ports(3)
    args = ["--edges", "2", "--latency-ms", "60", "--base-port", str(base)]
    with cluster_up(tmp_path, args) as up:
        account = up.wait_for(r"account id:\s+([0-9a-f]{32})").group(1)
        token = (tmp_path / "pullkv-cluster" / "origin" / "admin-token").read_text().strip()
        prefix = f"/client/v4/accounts/{account}/storage/kv/namespaces"
        lhr, nrt = f"http://127.0.0.1:{base + 1}", f"http://127.0.0.1:{base + 2}"
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
            ns = c.post(lhr + prefix, json={"title": "demo"}).json()["result"]["id"]
            assert c.put(f"{lhr}{prefix}/{ns}/values/greeting", content=b"hello").is_success
            cold = c.get(f"{nrt}{prefix}/{ns}/values/greeting")
            hot = c.get(f"{nrt}{prefix}/{ns}/values/greeting")
            assert cold.content == hot.content == b"hello"
            assert "fwd=miss" in cold.headers["cache-status"]
            assert "hit" in hot.headers["cache-status"]
            assert cold.elapsed.total_seconds() >= 0.06  # the simulated distance
            assert hot.elapsed.total_seconds() < 0.06

            origin_pid = int(str(up.status()["origin"]["pid"]))
            os.kill(origin_pid, signal.SIGKILL)
            up.wait_for(
                rf"origin \(pid {origin_pid}\) was killed by SIGKILL; "
                "the other locations keep running"
            )
            up.wait_for(r"last lines of pullkv-cluster/logs/origin.log:\n    ")
            up.wait_for(r"`pullkv cluster start origin` starts it again")
            assert _wait_gone([origin_pid], 10) == []
            # Still up, still serving: what nrt holds, and lhr's health.
            assert c.get(f"{nrt}{prefix}/{ns}/values/greeting").content == b"hello"
            assert c.get(f"{lhr}/healthz").status_code == 200
            status = up.status()
            assert status["origin"]["state"] == "killed by SIGKILL"
            assert status["origin"]["pid"] is None
            assert status["lhr"]["state"] == status["nrt"]["state"] == "running"

            # Controlling it from another process: refusals are one line and status 1.
            for command, said in [
                (["stop", "origin"], "Error: origin is not running\n"),
                (["start", "lhr"], f"Error: lhr is already running (pid {status['lhr']['pid']})\n"),
                (["stop", "xyz"], "Error: no location 'xyz' (known: origin, lhr, nrt)\n"),
            ]:
                result = _pullkv("cluster", *command, cwd=tmp_path)
                assert (result.returncode, result.stderr) == (1, said)
            started = _pullkv("cluster", "start", "origin", cwd=tmp_path)
            assert started.returncode == 0, started.stderr
            assert started.stdout.startswith("started origin (pid ")
            assert up.status()["origin"]["state"] == "running"
            assert c.put(f"{lhr}{prefix}/{ns}/values/after", content=b"back").is_success

            stopped = _pullkv("cluster", "stop", "nrt", cwd=tmp_path)
            assert stopped.returncode == 0 and stopped.stdout.startswith("stopped nrt (pid ")
            with pytest.raises(httpx.ConnectError):
                c.get(f"{nrt}/healthz")
            pids = up.pids()
        # Ctrl-C: cluster up stops everything and exits 0.
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(60) == 0
        up.wait_for(r"stopped\n")
    assert _wait_gone(pids, 10) == []
    for port in (base, base + 1, base + 2):
        assert not _listening(port), f"port {port} still served after Ctrl-C"


def test_control_without_a_cluster_is_one_line(tmp_path: Path) -> None:
    result = _pullkv("cluster", "status", "--data", str(tmp_path / "none"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: no cluster is running in {tmp_path / 'none'}")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("busy", ["origin", "lhr"])
def test_busy_port_is_one_line_naming_location_port_and_cause(busy: str, tmp_path: Path) -> None:
    base = _free_ports(2)
    port = base if busy == "origin" else base + 1
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = _pullkv("cluster", "up", "--edges", "1", "--base-port", str(base), cwd=tmp_path)
    finally:
        holder.close()
        _kill_leftovers(tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {busy} (port {port}) failed to start: cannot listen on ")
    assert re.search(r"address already in use", lines[0], re.I), lines[0]
    assert lines[0].endswith(f"(log: pullkv-cluster/logs/{busy}.log)")
    assert _pullkv_processes(tmp_path) == []


def test_children_end_when_cluster_up_is_killed(tmp_path: Path) -> None:
    base = _free_ports(3)
    with cluster_up(tmp_path, ["--edges", "2", "--base-port", str(base)]) as up:
        pids = up.pids()
        assert len(pids) == 3
        up.process.kill()
        up.process.wait(10)
        assert _wait_gone(pids, 15) == [], "locations outlived a SIGKILLed cluster up"


def test_sigterm_with_closed_output_stops_every_child(tmp_path: Path) -> None:
    base = _free_ports(4)
    process = subprocess.Popen(
        [sys.executable, "-m", "pullkv", "cluster", "up", "--base-port", str(base)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        deadline = time.monotonic() + START_WAIT
        while "Ctrl-C" not in process.stdout.readline():
            assert time.monotonic() < deadline and process.poll() is None
        status = _pullkv("--json", "cluster", "status", cwd=tmp_path)
        pids = [m["pid"] for m in json.loads(status.stdout)["members"]]
        assert len(pids) == 4 and all(isinstance(pid, int) for pid in pids)
        # Whoever read its output is gone: every print now fails with EPIPE.
        process.stdout.close()
        process.stderr.close()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        assert _wait_gone(pids, 15) == [], "locations outlived cluster up"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        _kill_leftovers(tmp_path)


@pytest.mark.timeout(240)
def test_origin_on_postgresql(tmp_path: Path) -> None:
    base_url = postgres_url()
    base = _free_ports(2)
    with fresh_schema("cluster") as store:
        args = ["--edges", "1", "--base-port", str(base), "--store", store]
        with cluster_up(tmp_path, args) as up:
            account = up.wait_for(r"account id:\s+([0-9a-f]{32})").group(1)
            origin_dir = tmp_path / "pullkv-cluster" / "origin"
            token = (origin_dir / "admin-token").read_text().strip()
            lhr = f"http://127.0.0.1:{base + 1}/client/v4/accounts/{account}/storage/kv"
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
                ns = c.post(f"{lhr}/namespaces", json={"title": "pg"}).json()["result"]["id"]
                assert c.put(f"{lhr}/namespaces/{ns}/values/k", content=b"v").is_success
            log = (tmp_path / "pullkv-cluster" / "logs" / "origin.log").read_text()
            assert "store:        postgresql://" in log
            assert not list(origin_dir.glob("*.sqlite3"))
            schema = re.search(r"search_path%3D(\w+)", store)
            assert schema is not None, store
            with psycopg.connect(base_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                    (schema.group(1),),
                ).fetchone()
            assert row is not None and row[0] > 0
            assert up.status()["origin"]["state"] == "running"
    assert _pullkv_processes(tmp_path) == []
