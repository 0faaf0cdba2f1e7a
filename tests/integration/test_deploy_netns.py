"""docs/deploy.md tested as written, with network namespaces standing in for machines.

Three namespaces (an origin and the edges ``lhr`` and ``nrt``) are joined by veth pairs to a
bridge in a fourth (the switch), with addresses from 10.200.0.0/24 that exist only inside them
and ``tc netem`` adding 20 ms to every packet a machine sends. TLS everywhere, from certificates
made by ``pullkv tls init``'s library; tokens made with ``pullkv token create`` at the origin;
every HTTP check runs inside the namespace of the machine it stands for.

Needs root and iproute2 (``ip``, ``tc``): skipped without them, failed under ``CI=true``.
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pullkv.tlsinit import init_tls

pytestmark = pytest.mark.timeout(300)

ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
SUBNET = "10.200.0"
PORT = 8443  # every namespace has its own ports: no clash with anything else running
DELAY_MS = 20
TTL = 2  # the edges' --default-cache-ttl: a write elsewhere is visible within it

# Runs inside a namespace: one HTTPS request, trusting only the deployment's CA, answered as
# JSON on stdout. Standard library only, so it starts in a few tens of milliseconds.
PROBE = """
import base64, json, ssl, sys, time, urllib.error, urllib.request
spec = json.loads(sys.argv[1])
context = ssl.create_default_context(cafile=spec["ca"])
body = base64.b64decode(spec["body"]) if spec["body"] is not None else None
request = urllib.request.Request(
    spec["url"], data=body, method=spec["method"], headers=spec["headers"]
)
started = time.monotonic()
try:
    with urllib.request.urlopen(request, context=context, timeout=spec["timeout"]) as r:
        status, headers, content = r.status, r.headers, r.read()
except urllib.error.HTTPError as e:
    status, headers, content = e.code, e.headers, e.read()
except OSError as e:
    print(json.dumps({"error": repr(e), "elapsed": time.monotonic() - started}))
    sys.exit(0)
print(json.dumps({
    "status": status,
    "headers": {k.lower(): v for k, v in headers.items()},
    "body": base64.b64encode(content).decode(),
    "elapsed": time.monotonic() - started,
}))
"""


def _unavailable(reason: str) -> None:
    """Skip where namespaces cannot be made; under CI that is a failure, not a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the deployment test cannot run: {reason}")
    pytest.skip(reason)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the test process dies (prctl PR_SET_PDEATHSIG),
    so no server outlives a test killed from outside."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class Reply:
    """One HTTP answer seen from inside a namespace (``status`` 0: no answer at all)."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float
    error: str = ""


@dataclass
class Machine:
    """A network namespace with one address: one machine of the deployment."""

    name: str
    netns: str
    address: str
    work: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://{self.address}:{PORT}"

    def run(self, command: list[str], env: dict[str, str], timeout: float = 60) -> str:
        """Run a command on this machine; its stdout (a failure shows its stderr)."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, *command],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"{command} on {self.name}: {done.stderr}"
        return done.stdout

    def start(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running command on this machine (``ip netns exec`` execs it, so the
        pid is the server's own)."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *command],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                preexec_fn=_die_with_parent,
            )
        self.processes.append(process)
        return process

    def request(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        body: bytes | None = None,
        json_body: Any = None,
        timeout: float = 15,
    ) -> Reply:
        """One HTTPS request made from this machine, trusting only the deployment's CA."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        spec = {
            "method": method,
            "url": url,
            "headers": headers,
            "body": base64.b64encode(body).decode() if body is not None else None,
            "ca": str(self.work / "tls" / "ca.pem"),
            "timeout": timeout,
        }
        out = self.run(
            [sys.executable, "-S", "-c", PROBE, json.dumps(spec)], env={}, timeout=timeout + 15
        )
        answer = json.loads(out)
        if "error" in answer:
            return Reply(0, {}, b"", answer["elapsed"], answer["error"])
        return Reply(
            answer["status"],
            answer["headers"],
            base64.b64decode(answer["body"]),
            answer["elapsed"],
        )

    def stop_all(self) -> None:
        """SIGTERM every process started here (then SIGKILL), each by its pid."""
        for process in self.processes:
            stop(process, timeout=10)


def stop(process: subprocess.Popen[bytes], timeout: float = 40) -> int:
    """SIGTERM, SIGKILL past ``timeout``; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(10)


@dataclass
class Network:
    """The machines, and whether ``tc netem`` could add its delay."""

    machines: dict[str, Machine]
    delayed: bool


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    """Three machines on one switch; every namespace (and so every veth) removed afterwards."""
    if not sys.platform.startswith("linux"):
        _unavailable("network namespaces are a Linux feature")
    if os.geteuid() != 0:
        _unavailable("network namespaces need root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            _unavailable(f"`{tool}` not found (install iproute2)")
    prefix = f"pkv{os.getpid()}{secrets.token_hex(2)}"
    switch = f"{prefix}-sw"
    machines = {
        name: Machine(name, f"{prefix}-{name}", f"{SUBNET}.{number}", tmp_path)
        for number, name in enumerate(("origin", "lhr", "nrt"), start=1)
    }
    made: list[str] = []
    try:
        added = _ip("netns", "add", switch, check=False)
        if added.returncode != 0:
            _unavailable(f"`ip netns add` failed: {added.stderr.strip()}")
        made.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        delayed = True
        for number, machine in enumerate(machines.values(), start=1):
            _ip("netns", "add", machine.netns)
            made.append(machine.netns)
            port = f"p{number}"
            _ip(*f"-n {switch} link add {port} type veth peer eth0 netns {machine.netns}".split())
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", machine.netns, "addr", "add", f"{machine.address}/24", "dev", "eth0")
            _ip("-n", machine.netns, "link", "set", "eth0", "up")
            _ip("-n", machine.netns, "link", "set", "lo", "up")
            delay = f"tc qdisc add dev eth0 root netem delay {DELAY_MS}ms"
            netem = _ip("netns", "exec", machine.netns, *delay.split(), check=False)
            if netem.returncode != 0:
                delayed = False
        if not delayed:
            warnings.warn(
                f"tc netem is unavailable ({netem.stderr.strip()}; the sch_netem kernel module "
                "is missing?): the machines are joined with no added delay",
                stacklevel=1,
            )
        yield Network(machines, delayed)
    finally:
        # Edges first: their connections to the origin close, so it need not wait for them.
        for machine in reversed(machines.values()):
            machine.stop_all()
        for netns in made:  # deleting a namespace deletes the veth ends inside it
            _ip("netns", "delete", netns, check=False)
        left = _ip("netns", "list", check=False).stdout
        assert prefix not in left, f"namespaces left behind: {left}"


def _pullkv(arguments: str) -> list[str]:
    """``pullkv ARGUMENTS`` with the installed command, as a systemd unit would run it."""
    script = Path(sys.executable).parent / "pullkv"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pullkv"]
    return [*command, *shlex.split(arguments)]


def _wait(
    what: str, check: Callable[[], Reply | None], timeout: float, logs: Callable[[], str]
) -> Reply:
    """Call ``check`` until it returns a reply (not None), or fail after ``timeout`` s showing
    the servers' logs."""
    deadline = time.monotonic() + timeout
    while True:
        reply = check()
        if reply is not None:
            return reply
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{logs()}")
        time.sleep(0.2)


def test_origin_and_two_edges_on_three_machines(network: Network, tmp_path: Path) -> None:
    origin, lhr, nrt = network.machines["origin"], network.machines["lhr"], network.machines["nrt"]
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()

    def logs() -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')}" for p in logs_dir.iterdir()
        )

    # 1. Certificates (docs/deploy.md: `pullkv tls init`), naming each machine by its address.
    tls = tmp_path / "tls"
    init_tls(
        tls,
        {m.name: [m.address, f"{m.name}.internal"] for m in network.machines.values()},
        now=datetime.datetime.now(datetime.UTC),
    )

    # 2. The origin, on its own data folder.
    data = tmp_path / "origin-data"
    origin_command = _pullkv(
        f"origin --host {origin.address} --port {PORT} --data {data} --account-id {ACCOUNT_ID}"
        f" --tls-cert {tls}/origin.pem --tls-key {tls}/origin.key"
    )
    started = time.monotonic()
    origin_process = origin.start(origin_command, {}, logs_dir / "origin.log")

    def healthy(machine: Machine, url: str) -> Callable[[], Reply | None]:
        def check() -> Reply | None:
            reply = machine.request("GET", f"{url}/healthz", timeout=2)
            return reply if reply.status == 200 else None

        return check

    # Checked from an edge's machine: the origin answers across the network, with TLS.
    _wait("the origin answers", healthy(lhr, origin.url), 60, logs)
    print(f"origin up in {time.monotonic() - started:.1f} s")

    # 3. Tokens, made at the origin with the CLI: one per edge, and one for the application.
    admin = (data / "admin-token").read_text().strip()
    cli_env = {"SSL_CERT_FILE": str(tls / "ca.pem")}

    def create_token(args: str) -> str:
        out = origin.run(
            _pullkv(f"--url {origin.url} --token {admin} --json token create {args}"), cli_env
        )
        return str(json.loads(out)["value"])

    edge_tokens = {name: create_token(f"--edge --name edge-{name}") for name in ("lhr", "nrt")}
    app = create_token("--name app")
    master_key = (data / "master.key").read_text().strip()

    # 4. The edges, each on its machine, pulling from the origin over verified TLS.
    for edge in (lhr, nrt):
        edge.start(
            _pullkv(
                f"edge --upstream {origin.url} --upstream-ca {tls}/ca.pem"
                f" --host {edge.address} --port {PORT} --location {edge.name}"
                f" --tls-cert {tls}/{edge.name}.pem --tls-key {tls}/{edge.name}.key"
                f" --data {tmp_path}/{edge.name}-nothing"
                f" --default-cache-ttl {TTL} --min-cache-ttl 1 --refresh-interval 1"
                " --upstream-timeout 2"
            ),
            {
                "PULLKV_UPSTREAM_TOKEN": edge_tokens[edge.name],
                "PULLKV_MASTER_KEY": master_key,
            },
            logs_dir / f"{edge.name}.log",
        )
    for edge in (lhr, nrt):
        _wait(f"{edge.name} answers", healthy(edge, edge.url), 60, logs)

    def api(edge: Machine) -> str:
        return f"{edge.url}/client/v4/accounts/{ACCOUNT_ID}/storage/kv/namespaces"

    created = lhr.request("POST", api(lhr), token=app, json_body={"title": "deploy"})
    assert created.status == 200, (created, logs())
    namespace = json.loads(created.body)["result"]["id"]

    def value_url(edge: Machine) -> str:
        return f"{api(edge)}/{namespace}/values/greeting"

    def put(edge: Machine, value: bytes, timeout: float) -> float:
        """Write at ``edge``, retrying while refused (same-key rate, or an edge whose breaker
        has not yet seen the origin come back); when it was accepted."""

        def attempt() -> Reply | None:
            reply = edge.request("PUT", value_url(edge), token=app, body=value)
            assert reply.status in (200, 429, 503), (reply, logs())
            return reply if reply.status == 200 else None

        _wait(f"a write at {edge.name}", attempt, timeout, logs)
        return time.monotonic()

    def until_seen(edge: Machine, value: bytes, timeout: float) -> float:
        """Read at ``edge`` until it answers ``value``; when it did."""

        def check() -> Reply | None:
            reply = edge.request("GET", value_url(edge), token=app)
            return reply if reply.status == 200 and reply.body == value else None

        _wait(f"{value!r} at {edge.name}", check, timeout, logs)
        return time.monotonic()

    # 5. A write at lhr is read at nrt: pulled from the origin on a miss, then from memory.
    put(lhr, b"v1", 10)
    cold = nrt.request("GET", value_url(nrt), token=app)
    assert (cold.status, cold.body) == (200, b"v1"), (cold, logs())
    assert "fwd=miss" in cold.headers["cache-status"], cold.headers
    hot = nrt.request("GET", value_url(nrt), token=app)
    assert hot.body == b"v1" and "hit" in hot.headers["cache-status"], hot.headers
    # The same read with the pullkv command, as docs/deploy.md shows it.
    cli_get = nrt.run(_pullkv(f"--url {nrt.url} --token {app} key get -n deploy greeting"), cli_env)
    assert cli_get == "v1"
    if network.delayed:  # nrt → origin → nrt crosses the network twice
        assert cold.elapsed >= 2 * DELAY_MS / 1000, cold.elapsed
    print(f"read at nrt: cold {cold.elapsed * 1000:.0f} ms, hot {hot.elapsed * 1000:.0f} ms")

    # An update at lhr: lhr reads its own write at once; nrt within its cache TTL.
    written = put(lhr, b"v2", 10)
    mine = lhr.request("GET", value_url(lhr), token=app)
    assert mine.body == b"v2", mine
    visible = until_seen(nrt, b"v2", TTL + 5) - written
    print(f"update visible at nrt after {visible:.1f} s (cache TTL {TTL} s)")

    # 6. The origin stops (as `systemctl stop` would: SIGTERM, a clean exit).
    stopping = time.monotonic()
    assert stop(origin_process) == 0, logs()
    print(f"origin stopped in {time.monotonic() - stopping:.1f} s")
    time.sleep(TTL + 0.5)  # every cached entry is now past its TTL
    for edge in (lhr, nrt):
        stale = edge.request("GET", value_url(edge), token=app)
        assert (stale.status, stale.body) == (200, b"v2"), (edge.name, stale, logs())
        assert "stale" in stale.headers["cache-status"], stale.headers
    refused = lhr.request("PUT", value_url(lhr), token=app, body=b"lost")
    assert refused.status == 503, refused
    assert nrt.request("GET", f"{nrt.url}/readyz").status == 503

    # 7. The origin comes back on the same data: the edges pick it up and see new writes.
    restarted = time.monotonic()
    origin.start(origin_command, {}, logs_dir / "origin.log")
    _wait("the restarted origin answers", healthy(lhr, origin.url), 60, logs)
    for edge in (lhr, nrt):
        _wait(f"{edge.name} ready again", _ready(edge), 30, logs)
    ready = time.monotonic()
    written = put(lhr, b"v3", 20)
    after = until_seen(nrt, b"v3", TTL + 10) - written
    print(
        f"origin restart to edges ready: {ready - restarted:.1f} s; v3 at nrt after {after:.1f} s"
    )
    assert nrt.request("GET", value_url(nrt), token=app).body == b"v3"


def _ready(machine: Machine) -> Callable[[], Reply | None]:
    def check() -> Reply | None:
        reply = machine.request("GET", f"{machine.url}/readyz", timeout=5)
        return reply if reply.status == 200 else None

    return check
