"""Shared fixtures: a real server process per test module, a fresh namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullkv import Client
from tests.pg import store_args
from tests.support import ServerProcess

# Short floors so expiry tests need no long sleeps; no same-key rate limit unless a test
# asks for one.
TEST_SERVER_ARGS = ["--min-expiration-ttl", "1"]


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A running ``pullkv serve`` for the whole test module, on SQLite unless the module
    parametrises the store engine (``tests.pg.parametrize_server``)."""
    data = Path(tmp_path_factory.mktemp("server")) / "data"
    with store_args(getattr(request, "param", "sqlite")) as store:
        proc = ServerProcess(data, args=[*TEST_SERVER_ARGS, *store]).start()
        yield proc
        proc.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """An httpx client with the admin token, based at the namespaces URL."""
    with httpx.Client(
        base_url=server.namespaces_url, headers=server.headers(), timeout=30
    ) as client:
        yield client


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    """A pullkv.Client with the admin token."""
    with Client(server.url, server.admin_token, account_id=server.account_id) as c:
        yield c


@pytest.fixture
def namespace_id(http: httpx.Client) -> str:
    """A fresh namespace for one test."""
    response = http.post("", json={"title": f"test-{uuid.uuid4().hex[:12]}"})
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["id"])
