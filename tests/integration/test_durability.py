"""An acknowledged write survives kill -9 of the server, under concurrent load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support import ServerProcess, all_keys, write_until_killed


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    namespace_id = httpx.post(
        proc.namespaces_url, json={"title": "durable"}, headers=proc.headers()
    ).json()["result"]["id"]

    acked = asyncio.run(write_until_killed(proc, namespace_id, seconds=10.0, enough=300))
    assert len(acked) > 100, "the load should have written something before the kill"

    proc.start()
    try:
        with httpx.Client(base_url=proc.namespaces_url + "/", headers=proc.headers()) as c:
            stored = all_keys(c, namespace_id)
            missing = set(acked) - stored
            assert not missing, (
                f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
            )
            for key in list(acked)[:: max(1, len(acked) // 200)]:
                assert c.get(f"{namespace_id}/values/{key}").content == acked[key]
    finally:
        proc.stop()
