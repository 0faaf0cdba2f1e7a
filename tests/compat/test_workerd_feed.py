"""Workers get the change feed's freshness too: a Worker whose KV binding is served by one
edge sees a write made through another edge within seconds, not after the 60 s cacheTtl."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.compat.test_workerd import Worker, _require_workerd
from tests.support import EdgeProcess, ServerProcess


@dataclass
class Binding:
    """What the Worker's config needs of the node serving its binding."""

    port: int
    admin_token: str


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ServerProcess, EdgeProcess, EdgeProcess]]:
    _require_workerd()
    origin = ServerProcess(tmp_path / "origin", role="origin").start()
    edges: list[EdgeProcess] = []
    try:
        for name in ("writer", "worker"):
            edge = EdgeProcess(
                tmp_path / name,
                origin.url,
                origin.admin_token,
                origin.master_key,
                args=["--upstream-latency-ms", "20"],
            )
            edges.append(edge.start())
        yield origin, edges[0], edges[1]
    finally:
        for edge in edges:
            edge.stop()
        origin.stop()


def test_a_worker_sees_another_locations_write_within_seconds(
    cluster: tuple[ServerProcess, EdgeProcess, EdgeProcess], tmp_path: Path
) -> None:
    origin, writer, worker_edge = cluster
    headers = origin.headers()
    namespace = httpx.post(
        origin.namespaces_url, json={"title": f"feed-{uuid.uuid4().hex[:8]}"}, headers=headers
    ).json()["result"]["id"]
    values = f"{writer.namespaces_url}/{namespace}/values/flag"
    assert httpx.put(values, content="off", headers=headers).status_code == 200
    worker = Worker(
        tmp_path / "worker",
        Binding(worker_edge.port, origin.admin_token),
        namespace,
    )
    try:
        assert worker.run("flag") == {"value": "off"}  # now cached at the Worker's edge
        assert worker.run("flag") == {"value": "off"}
        assert httpx.put(values, content="on", headers=headers).status_code == 200
        started = time.monotonic()
        while worker.run("flag") != {"value": "on"}:
            assert time.monotonic() - started < 5, "the Worker still reads the old value"
            time.sleep(0.05)
        assert httpx.delete(values, headers=headers).status_code == 200
        started = time.monotonic()
        while worker.run("flag") != {"value": None}:
            assert time.monotonic() - started < 5, "the Worker still reads the deleted value"
            time.sleep(0.05)
    finally:
        worker.stop()
