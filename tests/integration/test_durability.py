"""An acknowledged write survives kill -9 of the server, under concurrent load."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.support import ServerProcess

WRITERS = 32


async def _load(proc: ServerProcess, namespace_id: str, seconds: float) -> dict[str, bytes]:
    """Write unique keys from many writers until the server dies; return what was acked."""
    acked: dict[str, bytes] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=WRITERS)

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
        base_url=proc.namespaces_url + "/", headers=proc.headers(), limits=limits, timeout=10
    ) as client:
        tasks = [asyncio.create_task(writer(client, n)) for n in range(WRITERS)]
        await asyncio.sleep(seconds / 2)
        proc.kill9()
        await asyncio.gather(*tasks)
    return acked


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", args=["--writes-per-key-per-second", "0"]).start()
    namespace_id = httpx.post(
        proc.namespaces_url, json={"title": "durable"}, headers=proc.headers()
    ).json()["result"]["id"]

    acked = asyncio.run(_load(proc, namespace_id, seconds=3.0))
    assert len(acked) > 100, "the load should have written something before the kill"

    proc.start()
    try:
        with httpx.Client(base_url=proc.namespaces_url + "/", headers=proc.headers()) as c:
            stored: set[str] = set()
            cursor = ""
            while True:
                params = {"cursor": cursor} if cursor else {}
                body = c.get(f"{namespace_id}/keys", params=params).json()
                stored |= {k["name"] for k in body["result"]}
                cursor = body["result_info"]["cursor"]
                if not cursor:
                    break
            missing = set(acked) - stored
            assert not missing, (
                f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
            )
            for key in list(acked)[:: max(1, len(acked) // 200)]:
                assert c.get(f"{namespace_id}/values/{key}").content == acked[key]
    finally:
        proc.stop()
