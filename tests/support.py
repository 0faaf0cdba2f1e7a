"""Starting real pullkv servers on loopback for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ACCOUNT_ID = "0123456789abcdef0123456789abcdef"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``pullkv serve`` child process and how to reach it."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    account_id: str = ACCOUNT_ID
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/client/v4"

    @property
    def namespaces_url(self) -> str:
        return f"{self.api}/accounts/{self.account_id}/storage/kv/namespaces"

    @property
    def admin_token(self) -> str:
        if "PULLKV_ADMIN_TOKEN" in self.env:
            return self.env["PULLKV_ADMIN_TOKEN"]
        return (self.data_dir / "admin-token").read_text().strip()

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start the server and wait until it answers /healthz."""
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        log = self.log_path.open("ab")
        command = [
            sys.executable,
            "-m",
            "pullkv",
            "serve",
            "--data",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--account-id",
            self.account_id,
            *self.args,
        ]
        env = {**os.environ, **self.env}
        env.pop("PULLKV_ADMIN_TOKEN", None) if "PULLKV_ADMIN_TOKEN" not in self.env else None
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

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

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}
