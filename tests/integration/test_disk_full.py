"""A full disk: writes fail cleanly (503, retryable), reads go on, nothing acknowledged is
lost, and the server recovers once there is space again. Needs root to mount a small tmpfs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ServerProcess

VALUE_BYTES = 64 * 1024
MAX_WRITES = 200  # a 4 MiB disk fills long before this


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk-full test needs root to mount a tmpfs, and CI runs as root")
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_refuses_writes_cleanly_and_recovers(small_disk: Path) -> None:
    proc = ServerProcess(small_disk / "data").start()
    try:
        with httpx.Client(
            base_url=proc.namespaces_url + "/", headers=proc.headers(), timeout=30
        ) as http:
            ns = http.post("", json={"title": "full"}).json()["result"]["id"]
            acked: dict[str, bytes] = {}
            refusal = None
            for number in range(MAX_WRITES):
                value = os.urandom(VALUE_BYTES)
                response = http.put(f"{ns}/values/k{number:04d}", content=value)
                if response.status_code != 200:
                    refusal = response
                    break
                acked[f"k{number:04d}"] = value
            assert refusal is not None, "the disk never filled"
            assert refusal.status_code == 503, refusal.text
            body = refusal.json()
            assert body["success"] is False
            assert "disk is full" in body["errors"][0]["message"]
            # The server lives on, reads work, and every acknowledged write is intact.
            assert httpx.get(f"{proc.url}/healthz").status_code == 200
            for key, value in acked.items():
                assert http.get(f"{ns}/values/{key}").content == value
            # Room again: writes succeed without a restart.
            subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
            value = os.urandom(VALUE_BYTES)
            response = http.put(f"{ns}/values/after", content=value)
            assert response.status_code == 200, response.text
            acked["after"] = value
        proc.stop()
        proc.start()
        with httpx.Client(
            base_url=proc.namespaces_url + "/", headers=proc.headers(), timeout=30
        ) as http:
            for key, value in acked.items():
                assert http.get(f"{ns}/values/{key}").content == value
    finally:
        proc.stop()
