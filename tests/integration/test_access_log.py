"""The access log of real processes: one line per request, in text and JSON, on the hot path
and the ordinary one, with the token's id and never the token; off when asked; no httpx lines
at an edge."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ACCOUNT_ID, EdgeProcess, ServerProcess

TEXT_LINE = re.compile(r"^\S+Z access (.*)$")
TEXT_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def text_lines(log: str) -> list[dict[str, str]]:
    """The text access log lines of a process's output, as field -> value."""
    found = []
    for line in log.splitlines():
        match = TEXT_LINE.match(line)
        if match:
            fields = {}
            for name, value in TEXT_FIELD.findall(match.group(1)):
                fields[name] = json.loads(value) if value.startswith('"') else value
            found.append(fields)
    return found


def json_lines(log: str) -> list[dict[str, Any]]:
    """The JSON access log lines of a process's output."""
    found = []
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            assert isinstance(record, dict)
            if "duration_ms" in record:
                found.append(record)
    return found


def wait_for(
    proc: ServerProcess | EdgeProcess,
    parse: Callable[[str], list[Any]],
    accept: Callable[[Any], bool],
    timeout: float = 10.0,
) -> Any:
    """The first access log line ``accept`` takes (lines are written once per loop turn)."""
    deadline = time.monotonic() + timeout
    while True:
        for record in parse(proc.log()):
            if accept(record):
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no such access log line in:\n{proc.log()[-4000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = Path(tmp_path_factory.mktemp("access-serve")) / "data"
    proc = ServerProcess(data, args=["--access-log", "json"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def edge(origin: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    log_dir = Path(tmp_path_factory.mktemp("access-edge"))
    proc = EdgeProcess(log_dir, origin.url, origin.admin_token, origin.master_key).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def token_id(origin: ServerProcess) -> str:
    verified = httpx.get(f"{origin.api}/user/tokens/verify", headers=origin.headers())
    assert verified.status_code == 200, verified.text
    value = verified.json()["result"]["id"]
    assert isinstance(value, str)
    return value


@pytest.fixture(scope="module")
def namespace(origin: ServerProcess) -> str:
    made = httpx.post(
        origin.namespaces_url,
        json={"title": f"access-{uuid.uuid4().hex[:10]}"},
        headers=origin.headers(),
    )
    assert made.status_code == 200, made.text
    value = made.json()["result"]["id"]
    assert isinstance(value, str)
    return value


def test_edge_lines_in_text(
    origin: ServerProcess, edge: EdgeProcess, namespace: str, token_id: str
) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    headers = origin.headers()
    value_path = f"/client/v4/accounts/{ACCOUNT_ID}/storage/kv/namespaces/{namespace}/values/{key}"
    put = httpx.put(f"{edge.url}{value_path}", content=b"hello", headers=headers)
    assert put.status_code == 200, put.text
    for _ in range(3):  # the write cached it: hot reads
        got = httpx.get(f"{edge.url}{value_path}", headers=headers)
        assert got.status_code == 200 and got.content == b"hello"
    wait_for(
        edge,
        text_lines,
        lambda r: r["target"] == value_path and r["method"] == "GET" and "hit" in r["cache_status"],
    )
    lines = [line for line in text_lines(edge.log()) if line["target"] == value_path]
    assert [line["method"] for line in lines] == ["PUT", "GET", "GET", "GET"], lines
    for line in lines:
        assert line["status"] == "200"
        assert line["token_id"] == token_id
        assert line["client"] == "127.0.0.1"
        assert float(line["duration_ms"]) >= 0
    assert all(line["bytes"] == "5" for line in lines[1:])
    assert "; hit;" in lines[-1]["cache_status"]

    # The binding protocol, and a 401 and a 404 at the edge.
    binding = {**headers, "X-PullKV-Namespace": namespace}
    assert httpx.get(f"{edge.url}/{key}?urlencoded=true", headers=binding).status_code == 200
    bad = {"Authorization": "Bearer not-a-token"}
    assert httpx.get(f"{edge.url}{value_path}", headers=bad).status_code == 401
    missing = value_path + "-missing"
    assert httpx.get(f"{edge.url}{missing}", headers=headers).status_code == 404
    wait_for(edge, text_lines, lambda r: r["target"] == f"/{key}?urlencoded=true")
    denied = wait_for(
        edge, text_lines, lambda r: r["target"] == value_path and r["status"] == "401"
    )
    assert denied["token_id"] == "-"
    absent = wait_for(edge, text_lines, lambda r: r["target"] == missing)
    assert absent["status"] == "404" and absent["token_id"] == token_id

    log = edge.log()
    assert origin.admin_token not in log
    assert "not-a-token" not in log
    assert "logger=httpx" not in log
    assert edge.metric("pullkv_errors_total", origin.admin_token, status="401", code="10000") >= 1


def test_serve_lines_in_json(origin: ServerProcess, namespace: str, token_id: str) -> None:
    key = f"j-{uuid.uuid4().hex[:8]}"
    value_path = f"/client/v4/accounts/{ACCOUNT_ID}/storage/kv/namespaces/{namespace}/values/{key}"
    headers = origin.headers()
    assert httpx.put(f"{origin.url}{value_path}", content=b"abc", headers=headers).is_success
    for _ in range(2):
        assert httpx.get(f"{origin.url}{value_path}?cacheTtl=60", headers=headers).is_success
    assert httpx.get(f"{origin.url}/no/such/route", headers=headers).status_code == 404
    assert httpx.get(f"{origin.url}{value_path}").status_code == 401
    target = f"{value_path}?cacheTtl=60"
    wait_for(origin, json_lines, lambda r: r["target"] == target and r["cache_status"])
    gets = [r for r in json_lines(origin.log()) if r["target"] == target]
    assert len(gets) == 2, gets
    for record in gets:
        assert record["method"] == "GET" and record["status"] == 200 and record["bytes"] == 3
        assert record["token_id"] == token_id
        assert record["time"].endswith("Z")
    route = wait_for(origin, json_lines, lambda r: r["target"] == "/no/such/route")
    assert route["status"] == 404 and route["token_id"] is None
    denied = wait_for(
        origin, json_lines, lambda r: r["target"] == value_path and r["status"] == 401
    )
    assert denied["token_id"] is None
    assert origin.admin_token not in origin.log()
    assert origin.metric("pullkv_errors_total", origin.admin_token, status="401", code="10000") >= 1


def test_malformed_requests_are_logged_and_counted(origin: ServerProcess) -> None:
    before = origin.metric("pullkv_errors_total", origin.admin_token, status="400", code="10001")
    with socket.create_connection(("127.0.0.1", origin.port), timeout=5) as sock:
        sock.sendall(b"GET /bad HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")
    wait_for(origin, json_lines, lambda r: r["status"] == 400 and r["target"] == "/bad")
    after = origin.metric("pullkv_errors_total", origin.admin_token, status="400", code="10001")
    assert after == before + 1


def test_off_prints_no_access_lines(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", args=["--access-log", "off"]).start()
    try:
        for _ in range(3):
            assert httpx.get(f"{proc.url}/healthz").status_code == 200
        assert httpx.get(f"{proc.api}/user/tokens/verify").status_code == 401
        time.sleep(0.3)
    finally:
        proc.stop()
    log = proc.log()
    assert not text_lines(log) and not json_lines(log)
    assert "/healthz" not in log
