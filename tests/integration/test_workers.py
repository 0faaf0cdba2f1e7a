"""``--workers N``: one node, several processes on one port, under a supervisor.

Each request below opens a new connection, so the kernel spreads them over the workers
(SO_REUSEPORT hashes each connection's addresses)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_SERVER_ARGS
from tests.support import EdgeProcess, ServerProcess, all_keys, write_until_killed

WORKERS = ["--workers", "2", "--access-log", "off"]
DEADLINE = 60.0


def info(url: str, token: str) -> dict[str, object]:
    """``GET /client/v4/pullkv/info`` on a new connection."""
    answer = httpx.get(
        f"{url}/client/v4/pullkv/info", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    answer.raise_for_status()
    result: dict[str, object] = answer.json()["result"]
    return result


def worker_pids(url: str, token: str, count: int = 2) -> dict[int, int]:
    """Worker index -> pid, asking on new connections until every worker has answered."""
    seen: dict[int, int] = {}
    deadline = time.monotonic() + DEADLINE
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only workers {seen} answered"
        worker = info(url, token)["worker"]
        assert isinstance(worker, dict) and worker["workers"] == count
        seen[int(worker["index"])] = int(worker["pid"])
    return seen


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(part) for part in text.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still takes signal 0: it is dead for this purpose.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """An origin with two workers."""
    data = tmp_path_factory.mktemp("workers") / "data"
    proc = ServerProcess(data, role="origin", args=[*TEST_SERVER_ARGS, *WORKERS]).start()
    yield proc
    proc.stop()


def test_two_workers_answer_on_one_port(origin: ServerProcess) -> None:
    pids = worker_pids(origin.url, origin.admin_token)
    assert origin.process is not None
    assert sorted(pids.values()) == sorted(children(origin.process.pid))
    assert origin.metric("pullkv_workers", origin.admin_token) == 2


def test_a_killed_worker_is_restarted_logged_and_counted(origin: ServerProcess) -> None:
    token = origin.admin_token
    before = origin.metric("pullkv_worker_restarts_total", token)
    pids = worker_pids(origin.url, token)
    os.kill(pids[1], signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE
    while True:
        now = worker_pids(origin.url, token)
        if now[1] != pids[1]:
            break
        assert time.monotonic() < deadline, "worker 1 was not restarted"
        time.sleep(0.1)
    assert now[0] == pids[0], "the other worker kept running"
    assert f"worker 1 (pid {pids[1]}) died: signal SIGKILL" in origin.log()
    assert origin.metric("pullkv_worker_restarts_total", token) == before + 1
    assert origin.metric("pullkv_workers", token) == 2


def test_sigterm_drains_every_worker_and_exits_0(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", role="origin", args=WORKERS).start()
    pids = worker_pids(proc.url, proc.admin_token)
    assert proc.stop() == 0
    assert not any(alive(pid) for pid in pids.values())
    assert "SIGTERM received: draining 2 workers" in proc.log()
    # The supervisor let go of the data folder: a new server may have it.
    again = ServerProcess(tmp_path / "data", role="origin").start()
    assert again.stop() == 0


def test_a_second_node_on_the_port_is_refused(origin: ServerProcess, tmp_path: Path) -> None:
    """Workers listen with SO_REUSEPORT, which would let two nodes share a port silently."""
    other = ServerProcess(tmp_path / "other", role="origin", args=WORKERS)
    command = [sys.executable, "-m", "pullkv", *other.command()]
    command[command.index("--port") + 1] = str(origin.port)
    done = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{origin.port}" in done.stderr.decode()


@pytest.fixture(scope="module")
def edge(origin: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """An edge with two workers, with no change feed: only the workers' shared table keeps
    a worker from answering with what another one's acknowledged write replaced."""
    args = [*WORKERS, "--invalidation", "off", "--min-expiration-ttl", "1"]
    proc = EdgeProcess(
        tmp_path_factory.mktemp("edge"),
        origin.url,
        origin.admin_token,
        origin.master_key,
        args=args,
    ).start()
    worker_pids(proc.url, origin.admin_token)
    yield proc
    proc.stop()


def _namespace(origin: ServerProcess) -> str:
    answer = httpx.post(
        origin.namespaces_url, json={"title": uuid.uuid4().hex}, headers=origin.headers()
    )
    return str(answer.json()["result"]["id"])


def test_metrics_sum_over_the_workers(origin: ServerProcess, edge: EdgeProcess) -> None:
    token = origin.admin_token
    namespace = _namespace(origin)
    before = edge.metric("pullkv_writes_total", token, operation="put")
    url = f"{edge.url}/client/v4/accounts/{origin.account_id}/storage/kv/namespaces/{namespace}"
    served = set()
    for number in range(30):
        answer = httpx.put(f"{url}/values/k{number}", content=b"v", headers=origin.headers())
        assert answer.status_code == 200
        served.add(info(edge.url, token)["worker"]["index"])  # type: ignore[index]
    assert served == {0, 1}, "new connections should reach both workers"
    assert edge.metric("pullkv_writes_total", token, operation="put") == before + 30
    assert edge.metric("pullkv_workers", token) == 2


def test_read_your_writes_across_the_workers_of_an_edge(
    origin: ServerProcess, edge: EdgeProcess
) -> None:
    namespace = _namespace(origin)
    url = f"{edge.url}/client/v4/accounts/{origin.account_id}/storage/kv/namespaces/{namespace}"
    headers = origin.headers()
    key = f"{url}/values/ryw"
    assert httpx.put(key, content=b"0", headers=headers).status_code == 200
    # Both workers cache the key (reads on new connections land on both).
    for _ in range(20):
        assert httpx.get(key, headers=headers).content == b"0"
    for number in range(1, 41):
        value = str(number).encode()
        if number % 10 == 0:
            assert httpx.delete(key, headers=headers).status_code == 200
            assert httpx.get(key, headers=headers).status_code == 404, number
        assert httpx.put(key, content=value, headers=headers).status_code == 200
        for _ in range(3):
            got = httpx.get(key, headers=headers)
            assert got.status_code == 200 and got.content == value, (number, got.content)


def test_no_acknowledged_write_is_lost_under_kill_9(tmp_path: Path) -> None:
    """kill -9 of the supervisor and both workers under concurrent writes; every write that
    was acknowledged is in the store when the node starts again."""
    proc = ServerProcess(tmp_path / "data", role="origin", args=WORKERS).start()
    worker_pids(proc.url, proc.admin_token)
    namespace = _namespace(proc)
    supervisor = proc.process
    assert supervisor is not None
    workers = children(supervisor.pid)
    assert len(workers) == 2

    def kill_every_process() -> None:
        for pid in [supervisor.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
        supervisor.wait(10)

    proc.kill9 = kill_every_process  # type: ignore[method-assign]
    acked = asyncio.run(write_until_killed(proc, namespace, seconds=10.0, enough=300))
    assert len(acked) > 100, "the load should have written something before the kill"
    deadline = time.monotonic() + DEADLINE
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline
        time.sleep(0.05)

    proc.start()
    try:
        with httpx.Client(base_url=proc.namespaces_url + "/", headers=proc.headers()) as c:
            missing = set(acked) - all_keys(c, namespace)
            assert not missing, f"{len(missing)} acknowledged writes lost: {sorted(missing)[:5]}"
            for key in list(acked)[:: max(1, len(acked) // 100)]:
                assert c.get(f"{namespace}/values/{key}").content == acked[key]
    finally:
        proc.stop()
