"""``pullkv cluster up``: one origin and several edges on loopback, with simulated distance.

Each location is its own process (``pullkv origin`` / ``pullkv edge``), so the cluster behaves
like a small real deployment: edges reach the origin over HTTP, through a delay added to every
edge-origin exchange, and share the origin's master key and admin token (an edge token). When
one process dies the others keep running, and the death is reported; ``pullkv cluster
stop/start/status`` (from another terminal) talk to the running ``cluster up`` through a unix
socket in the cluster folder, so one location can be taken down and brought back.

The cluster folder holds ``origin/`` (the origin's data folder), ``logs/LOCATION.log`` and
``control.sock``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

LOCATIONS = ["lhr", "nrt", "iad", "syd", "gru", "fra", "sin", "jnb", "ord", "bom", "cdg", "sea"]
START_TIMEOUT = 30.0  # seconds a location may take to listen
STOP_TIMEOUT = 10.0  # seconds a location may take to stop after SIGTERM before SIGKILL
POLL_INTERVAL = 0.2  # seconds between checks for dead locations and control requests
LOG_TAIL_LINES = 5  # lines of a dead location's log shown with its death
CONTROL_SOCKET = "control.sock"
MAX_REQUEST_BYTES = 4096  # a control request is one short JSON line
# What the server commands print once they listen (pullkv.cli.servers announce): seeing it in
# the location's own log proves this process listens, where a /healthz answer could come from
# whatever else holds the port.
READY_MARKER = " serving at "
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ClusterError(Exception):
    """A cluster could not be started or controlled; the message is one line for a person."""


@dataclass
class ClusterSpec:
    """What to start."""

    data_dir: Path
    edges: int = 3
    latency_ms: float = 80.0
    base_port: int = 8787
    host: str = "127.0.0.1"
    # More command-line options for every edge: the cache options ``cluster up`` was given.
    edge_args: tuple[str, ...] = ()
    # The origin's store URL (``--store``); None for the SQLite file in its data folder.
    store_url: str | None = None

    @property
    def origin_dir(self) -> Path:
        """The origin's data folder: master.key, admin-token and (by default) the store."""
        return self.data_dir / "origin"

    @property
    def log_dir(self) -> Path:
        """Where each location's stdout and stderr go, as ``LOCATION.log``."""
        return self.data_dir / "logs"


def control_path(data_dir: Path) -> Path:
    """The unix socket a running ``cluster up`` answers on."""
    return data_dir / CONTROL_SOCKET


@dataclass
class Member:
    """One location of the cluster: how to start it, and its process when it runs."""

    name: str
    role: str
    port: int
    url: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    # "starting", "running", "stopped" (asked to, or never started) or "exited" (died).
    state: str = "stopped"
    _log_offset: int = 0

    @property
    def pid(self) -> int | None:
        """The process id while the process runs."""
        return self.process.pid if self.state in ("starting", "running") and self.process else None

    def spawn(self) -> None:
        """Start the process, its output appended to its log after a line saying so."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- pullkv cluster: starting {self.name} at {stamp} ---\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pullkv", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                # Its own session: a Ctrl-C at the terminal reaches ``cluster up`` only, which
                # then stops the locations in order.
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        self.state = "starting"

    def new_log(self) -> str:
        """What the process has written to its log since it was started."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last lines this process wrote to its log."""
        return [line for line in self.new_log().splitlines() if line.strip()][-lines:]

    def wait_ready(self, timeout: float, abandon: Callable[[], bool]) -> None:
        """Return once the process listens; raise ClusterError (one line) if it fails first."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not abandon():
            if self.process.poll() is not None:
                self.state = "exited"
                raise ClusterError(self.failure(self.cause()))
            if READY_MARKER in self.new_log():
                self.state = "running"
                return
            time.sleep(0.05)
        if abandon():
            raise ClusterError(f"{self.name}: start abandoned")
        self.terminate()
        raise ClusterError(self.failure(f"did not listen within {timeout:.0f} s"))

    def cause(self) -> str:
        """Why the process ended, from its log: its ``Error:`` line, else its last line."""
        lines = self.tail(50)
        errors = [line for line in lines if line.startswith("Error: ")]
        if errors:
            return errors[-1].removeprefix("Error: ").strip()
        if lines:
            return lines[-1].strip()
        return self.exit_text()

    def failure(self, cause: str) -> str:
        """The one line saying this location could not start, and where its log is."""
        return f"{self.name} (port {self.port}) failed to start: {cause} (log: {self.log_path})"

    def exit_text(self) -> str:
        """How the process ended: ``exited with status 1`` or ``was killed by SIGKILL``."""
        code = self.process.returncode if self.process else None
        if code is None:
            return "is running"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with status {code}"

    def signal_stop(self) -> None:
        """Ask the process to stop (SIGTERM): it finishes in-flight requests first."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it is still there after ``timeout``."""
        self.signal_stop()
        self.reap(time.monotonic() + timeout)

    def reap(self, deadline: float) -> None:
        """Wait for the process until ``deadline`` (monotonic), then SIGKILL it."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def describe(self) -> dict[str, Any]:
        """This location for ``cluster status``."""
        state = self.state
        if state == "exited":
            state = self.exit_text().removeprefix("was ")
        return {
            "location": self.name,
            "role": self.role,
            "pid": self.pid,
            "port": self.port,
            "url": self.url,
            "state": state,
            "log": str(self.log_path),
        }


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the child SIGTERM when ``cluster up`` dies, however
    it dies (SIGKILL included); None where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child

    def preexec() -> None:
        # The parent's Python-level SIGTERM handler would swallow a SIGTERM arriving before
        # exec; the default action cannot.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def plan(spec: ClusterSpec) -> list[Member]:
    """The cluster's locations, the origin first; edges get their environment once the origin
    has made the master key and admin token."""
    url = f"http://{spec.host}:{{}}"
    origin_args = ["origin", "--data", str(spec.origin_dir), "--host", spec.host]
    origin_args += ["--port", str(spec.base_port), "--log-level", "warning"]
    if spec.store_url is not None:
        origin_args += ["--store", spec.store_url]
    members = [
        Member(
            "origin",
            "origin",
            spec.base_port,
            url.format(spec.base_port),
            origin_args,
            spec.log_dir / "origin.log",
            env=dict(os.environ),
        )
    ]
    for number in range(spec.edges):
        location = LOCATIONS[number % len(LOCATIONS)]
        port = spec.base_port + 1 + number
        args = ["edge", "--upstream", members[0].url, "--location", location]
        args += ["--host", spec.host, "--port", str(port), "--data", str(spec.origin_dir)]
        args += ["--upstream-latency-ms", str(spec.latency_ms), "--log-level", "warning"]
        members.append(
            Member(
                location,
                "edge",
                port,
                url.format(port),
                [*args, *spec.edge_args],
                spec.log_dir / f"{location}.log",
            )
        )
    return members


def _edge_env(origin_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PULLKV_UPSTREAM_TOKEN": (origin_dir / "admin-token").read_text().strip(),
        "PULLKV_MASTER_KEY": (origin_dir / "master.key").read_text().strip(),
    }


def _account_id(url: str, token: str) -> str:
    from pullkv.client import Client

    with Client(url, token) as client:
        return client.account_id


class Supervisor:
    """Runs a cluster: starts it, reports deaths, answers control requests, stops it."""

    def __init__(self, spec: ClusterSpec, echo: Callable[[str], None]) -> None:
        self.spec = spec
        self.members = plan(spec)
        self.account_id = ""
        self.stopping = False
        self._echo = echo

    def say(self, text: str) -> None:
        """Print, unless the terminal or pipe is gone: running and stopping never depend on
        being able to print."""
        try:
            self._echo(text)
        except OSError:
            _silence_stdio()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: stop at the next check (never prints: output may be closed)."""
        self.stopping = True

    def run(self) -> None:
        """Start the cluster, print it, and keep it up until Ctrl-C, SIGTERM or SIGHUP."""
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self.request_stop) for signum in handled}
        try:
            with self._control_socket() as server:
                try:
                    self._start_all()
                except ClusterError:
                    if self.stopping:
                        return
                    raise
                self.say(self.describe())
                while not self.stopping:
                    self._report_deaths()
                    self._serve_one(server)
                self.stop_all()
                self.say("stopped")
        finally:
            self.stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _start_all(self) -> None:
        self.spec.log_dir.mkdir(parents=True, exist_ok=True)
        origin, *edges = self.members
        origin.spawn()
        origin.wait_ready(START_TIMEOUT, lambda: self.stopping)
        edge_env = _edge_env(self.spec.origin_dir)
        for member in edges:
            member.env = edge_env
            member.spawn()
        for member in edges:
            member.wait_ready(START_TIMEOUT, lambda: self.stopping)
        token = (self.spec.origin_dir / "admin-token").read_text().strip()
        try:
            self.account_id = _account_id(origin.url, token)
        except Exception as exc:  # any failure here is one line, like a failed start
            raise ClusterError(f"cannot read the account id from the origin: {exc}") from None

    def stop_all(self) -> None:
        """Stop every location: all are asked at once, edges first, then waited for."""
        for member in reversed(self.members):
            if member.state in ("starting", "running"):
                member.state = "stopped"
            member.signal_stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        for member in reversed(self.members):
            member.reap(deadline)

    def describe(self) -> str:
        """The table a person reads after ``cluster up``."""
        lines = [f"{'location':<10} {'role':<7} {'URL':<26} upstream delay"]
        for member in self.members:
            delay = "-" if member.role == "origin" else f"{self.spec.latency_ms:g} ms"
            lines.append(f"{member.name:<10} {member.role:<7} {member.url:<26} {delay}")
        lines += [
            "",
            f"account id:  {self.account_id}",
            f"admin token: {self.spec.origin_dir / 'admin-token'}",
            f"logs:        {self.spec.log_dir}/",
            "`pullkv cluster status`, `pullkv cluster stop LOCATION` and `pullkv cluster start "
            "LOCATION` (in this folder, or with --data) control it. Ctrl-C stops the cluster.",
        ]
        return "\n".join(lines)

    def _report_deaths(self) -> None:
        for member in self.members:
            process = member.process
            if member.state not in ("starting", "running") or process is None:
                continue
            if process.poll() is None:
                continue
            member.state = "exited"
            others = "the other locations keep running"
            self.say(f"{member.name} (pid {process.pid}) {member.exit_text()}; {others}.")
            tail = member.tail()
            if tail:
                self.say(f"  last lines of {member.log_path}:")
                for line in tail:
                    self.say(f"    {line}")
            self.say(f"  `pullkv cluster start {member.name}` starts it again.")

    @contextlib.contextmanager
    def _control_socket(self) -> Iterator[socket.socket]:
        path = control_path(self.spec.data_dir)
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            answer = request(self.spec.data_dir, {"command": "status"}, timeout=2)
        except ClusterError:
            pass  # nobody answers: a socket left by a cluster that was killed, or none
        else:
            raise ClusterError(
                f"a cluster is already running in {self.spec.data_dir} "
                f"(pid {answer.get('pid')}): see `pullkv cluster status`"
            )
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                server.bind(str(path))
            except OSError as exc:
                raise ClusterError(f"cannot make the control socket {path}: {exc}") from None
            os.chmod(path, 0o600)  # it starts and stops processes: the owner's only
            server.listen(8)
            server.settimeout(POLL_INTERVAL)
            yield server
        finally:
            server.close()
            path.unlink(missing_ok=True)

    def _serve_one(self, server: socket.socket) -> None:
        """Answer one control request, or return after POLL_INTERVAL without one."""
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return
        with conn:
            try:
                conn.settimeout(5)
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_REQUEST_BYTES:
                    chunk = conn.recv(MAX_REQUEST_BYTES)
                    if not chunk:
                        break
                    data += chunk
                try:
                    message = json.loads(data)
                    answer = self.handle(message if isinstance(message, dict) else {})
                except ValueError:
                    answer = {"ok": False, "message": "a control request is one JSON object"}
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                pass  # the asker went away: nothing to tell it

    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """Carry out one control request: ``status``, ``stop`` or ``start`` a location."""
        command = message.get("command")
        if command == "status":
            return self._answer(True, "")
        members = {member.name: member for member in self.members}
        member = members.get(str(message.get("location")))
        if command not in ("stop", "start"):
            return self._answer(False, f"unknown command {command!r}")
        if member is None:
            known = ", ".join(members)
            return self._answer(False, f"no location {message.get('location')!r} (known: {known})")
        if command == "stop":
            return self._stop(member)
        return self._start(member)

    def _stop(self, member: Member) -> dict[str, Any]:
        if member.state not in ("starting", "running"):
            return self._answer(False, f"{member.name} is not running")
        pid = member.pid
        member.state = "stopped"
        member.terminate()
        self.say(f"{member.name} (pid {pid}) stopped by `pullkv cluster stop {member.name}`")
        return self._answer(True, f"stopped {member.name} (pid {pid})")

    def _start(self, member: Member) -> dict[str, Any]:
        if member.state in ("starting", "running"):
            return self._answer(False, f"{member.name} is already running (pid {member.pid})")
        try:
            member.spawn()
            member.wait_ready(START_TIMEOUT, lambda: self.stopping)
        except ClusterError as exc:
            member.terminate()
            member.state = "exited"
            self.say(str(exc))
            return self._answer(False, str(exc))
        self.say(f"{member.name} (pid {member.pid}) started at {member.url}")
        return self._answer(True, f"started {member.name} (pid {member.pid}) at {member.url}")

    def _answer(self, ok: bool, message: str) -> dict[str, Any]:
        return {
            "ok": ok,
            "message": message,
            "pid": os.getpid(),
            "account_id": self.account_id,
            "logs": str(self.spec.log_dir),
            "members": [member.describe() for member in self.members],
        }


def _silence_stdio() -> None:
    """Point stdout and stderr at /dev/null once the terminal or pipe is gone, so later prints
    (and the interpreter's final flush) cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            os.dup2(devnull, stream.fileno())
    os.close(devnull)


def run_cluster(spec: ClusterSpec, echo: Callable[[str], None]) -> None:
    """Start a cluster, print it, and keep it up until Ctrl-C / SIGTERM / SIGHUP."""
    Supervisor(spec, echo).run()


def request(data_dir: Path, message: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one control request to the ``cluster up`` running in ``data_dir``; its answer."""
    path = control_path(data_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise ClusterError(
                f"no cluster is running in {data_dir} (nothing answers on {path}); "
                f"start one with `pullkv cluster up --data {data_dir}`"
            ) from None
        except OSError as exc:
            raise ClusterError(f"cannot reach the cluster through {path}: {exc}") from None
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        except OSError as exc:
            raise ClusterError(f"the cluster in {data_dir} did not answer: {exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ClusterError(f"the cluster in {data_dir} gave no answer") from None
    if not isinstance(answer, dict):
        raise ClusterError(f"the cluster in {data_dir} gave no answer")
    return answer


def control_timeout() -> float:
    """How long a control request may take: a start waits for the location to listen."""
    return START_TIMEOUT + STOP_TIMEOUT + 5


def status_table(answer: dict[str, Any]) -> str:
    """``cluster status`` for a person."""
    lines = [f"{'location':<10} {'role':<7} {'pid':<8} {'URL':<26} state"]
    for member in answer.get("members", []):
        pid = member["pid"] if member["pid"] is not None else "-"
        lines.append(
            f"{member['location']:<10} {member['role']:<7} {pid!s:<8} {member['url']:<26} "
            f"{member['state']}"
        )
    lines.append(f"cluster up: pid {answer.get('pid')}; logs in {answer.get('logs')}/")
    return "\n".join(lines)
