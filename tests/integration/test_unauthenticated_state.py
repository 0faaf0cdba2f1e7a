"""Nothing unauthenticated creates lasting state: made-up paths, with no token or a bad one,
leave /metrics (the state an attacker could grow most easily) the same size."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import EdgeProcess, ServerProcess

# Counter values gain digits as requests are counted; series must not be added.
MARGIN_BYTES = 1024


def _made_up_requests(account_id: str, count: int) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(method, path, headers) of ``count`` requests to paths nobody serves, or with tokens
    nobody issued."""
    prefixes = (
        "/pullkv/v1/",
        "/pullkv/v1/tokens/",
        f"/client/v4/accounts/{account_id}/",
        f"/client/v4/accounts/{account_id}/storage/kv/namespaces/",
        "/client/v4/accounts/",
        "/client/v4/",
        "/",
        "/metrics/",
    )
    tokens = (
        None,
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        None,  # a well-formed pullkv token that was never issued: filled per request
    )
    for number in range(count):
        made_up = uuid.uuid4().hex
        path = prefixes[number % len(prefixes)] + made_up
        headers: dict[str, str] = {}
        token = tokens[(number // len(prefixes)) % len(tokens)]
        if token is not None:
            headers["Authorization"] = token
        elif number % 2:
            headers["Authorization"] = f"Bearer pkv_{made_up[:16]}_{made_up}{made_up}"
        if number % 5 == 0:
            headers["X-PullKV-Namespace"] = made_up  # a binding request
        yield ("GET", "POST", "PUT", "DELETE")[number % 4], path, headers


def _metrics_size(url: str, token: str) -> int:
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return len(response.content)


def _attack(url: str, account_id: str, count: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for method, path, headers in _made_up_requests(account_id, count):
            response = client.request(method, path, headers=headers, content=b"{}")
            assert response.status_code in (400, 401, 403, 404, 405), (path, response.text)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, EdgeProcess]]:
    data = Path(tmp_path_factory.mktemp("unauth")) / "data"
    origin = ServerProcess(data).start()
    try:
        edge = EdgeProcess(data.parent, origin.url, origin.admin_token, origin.master_key).start()
        try:
            yield origin, edge
        finally:
            edge.stop()
    finally:
        origin.stop()


@pytest.mark.parametrize("target", ["serve", "edge"])
def test_made_up_paths_add_no_metrics(
    nodes: tuple[ServerProcess, EdgeProcess], target: str
) -> None:
    origin, edge = nodes
    url = origin.url if target == "serve" else edge.url
    # A first round names every fixed label these requests (and the scrape itself) can reach:
    # the "unknown" and "metrics" routes, the 401/403/404 error codes. After it, nothing may
    # grow.
    _attack(url, origin.account_id, 40)
    _metrics_size(url, origin.admin_token)
    before = _metrics_size(url, origin.admin_token)
    _attack(url, origin.account_id, 500)
    after = _metrics_size(url, origin.admin_token)
    assert after - before <= MARGIN_BYTES, (before, after)
