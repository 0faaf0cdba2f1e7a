"""Starting real pullkv processes (serve, origin, edge) on loopback for tests."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

ACCOUNT_ID = "0123456789abcdef0123456789abcdef"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NodeProcess:
    """A pullkv child process: how to start it, reach it and stop it."""

    log_dir: Path
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    account_id: str = ACCOUNT_ID
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    name: str = "node"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/client/v4"

    @property
    def namespaces_url(self) -> str:
        return f"{self.api}/accounts/{self.account_id}/storage/kv/namespaces"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0, verify: bool | str = True) -> Self:
        """Start the process and wait until it answers /healthz."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{self.name}-{self.port}.log"
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env}
        if "PULLKV_ADMIN_TOKEN" not in self.env:
            env.pop("PULLKV_ADMIN_TOKEN", None)
        command = [sys.executable, "-m", "pullkv", *self.command()]
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=context).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def kill9(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def metric(self, name: str, token: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent)."""
        text = httpx.get(
            f"{self.url}/metrics", headers={"Authorization": f"Bearer {token}"}, verify=False
        ).text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "")
        match = re.search(rf"^{pattern} ([0-9.e+-]+)$", text, flags=re.M)
        return float(match.group(1)) if match else 0.0


class ServerProcess(NodeProcess):
    """A ``pullkv serve`` (or ``pullkv origin``) process with its data folder."""

    def __init__(
        self,
        data_dir: Path,
        *,
        role: str = "serve",
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(log_dir=data_dir.parent, args=args or [], env=env or {})
        self.data_dir = data_dir
        self.role = role
        self.name = f"{role}-{data_dir.name}"

    @property
    def admin_token(self) -> str:
        if "PULLKV_ADMIN_TOKEN" in self.env:
            return self.env["PULLKV_ADMIN_TOKEN"]
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def master_key(self) -> str:
        return (self.data_dir / "master.key").read_text().strip()

    def command(self) -> list[str]:
        return [
            self.role,
            "--data",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--account-id",
            self.account_id,
            *self.args,
        ]

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}


class EdgeProcess(NodeProcess):
    """A ``pullkv edge`` process pulling from ``upstream`` with the origin's keys."""

    def __init__(
        self,
        log_dir: Path,
        upstream: str,
        token: str,
        master_key: str,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        env = {**(env or {}), "PULLKV_UPSTREAM_TOKEN": token, "PULLKV_MASTER_KEY": master_key}
        super().__init__(log_dir=log_dir, args=args or [], env=env)
        self.upstream = upstream
        self.name = "edge"

    def command(self) -> list[str]:
        return [
            "edge",
            "--upstream",
            self.upstream,
            "--port",
            str(self.port),
            "--data",
            str(self.log_dir / "no-data"),
            *self.args,
        ]


KILL_WRITERS = 32


async def write_until_killed(
    proc: ServerProcess, namespace_id: str, seconds: float, enough: int | None = None
) -> dict[str, bytes]:
    """Unique keys from many concurrent writers; kill -9 the server halfway through (or
    as soon as ``enough`` writes are acknowledged, writes still in flight); return every
    write that was acknowledged before it died."""
    acked: dict[str, bytes] = {}
    deadline = time.monotonic() + seconds

    async def writer(client: httpx.AsyncClient, number: int) -> None:
        sequence = 0
        while time.monotonic() < deadline:
            key = f"w{number:02d}-{sequence:06d}"
            value = f"{key}:{'x' * (sequence % 50)}".encode()
            try:
                response = await client.put(f"{namespace_id}/values/{key}", content=value)
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 200:
                acked[key] = value
            sequence += 1

    async with httpx.AsyncClient(
        base_url=proc.namespaces_url + "/",
        headers=proc.headers(),
        limits=httpx.Limits(max_connections=KILL_WRITERS),
        timeout=10,
    ) as client:
        tasks = [asyncio.create_task(writer(client, n)) for n in range(KILL_WRITERS)]
        # A count rather than a time alone: a server measured by coverage writes at about
        # half speed, so a fixed time would leave a slow machine with too few writes.
        halfway = time.monotonic() + seconds / 2
        while time.monotonic() < halfway and (enough is None or len(acked) < enough):
            await asyncio.sleep(0.01)
        proc.kill9()
        await asyncio.gather(*tasks)
    return acked


def all_keys(client: httpx.Client, namespace_id: str) -> set[str]:
    """Every key of a namespace, following the list cursor to the end."""
    found: set[str] = set()
    cursor = ""
    while True:
        params = {"cursor": cursor} if cursor else {}
        body = client.get(f"{namespace_id}/keys", params=params).json()
        found |= {k["name"] for k in body["result"]}
        cursor = body["result_info"]["cursor"]
        if not cursor:
            return found
