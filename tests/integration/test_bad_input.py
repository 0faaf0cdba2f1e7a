"""Every malformed request gets the right status, code and a message naming the problem,
and changes nothing (table-driven, against a real server)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pg import parametrize_server
from tests.support import ServerProcess


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_server(metafunc)  # every test with a server runs on SQLite and on PostgreSQL


MIB = 1024 * 1024
UNKNOWN_NS = "f" * 32


@dataclass
class Case:
    """One bad request; ``path`` is relative to the namespace ("" for the namespace itself),
    or absolute from /client/v4 when it starts with "/"."""

    id: str
    method: str
    path: str
    status: int
    message: str
    code: int | None = None
    params: dict[str, str | list[str]] = field(default_factory=dict)
    # A callable gives a fresh stream for each run (a generator is spent after one request).
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    json_body: Any = None  # any JSON value, valid for the route or not
    headers: dict[str, str] = field(default_factory=dict)


def _chunks(total: int) -> Iterator[bytes]:
    block = b"x" * MIB
    sent = 0
    while sent < total:
        piece = block[: min(MIB, total - sent)]
        sent += len(piece)
        yield piece


def _form(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b""
    for name, data in parts:
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


META_1025 = json.dumps({"m": "x" * 1016})
assert len(META_1025) == 1025
FORM_BIG_META, FORM_TYPE = _form([("value", b"v"), ("metadata", META_1025.encode())])
FORM_BAD_META, _ = _form([("value", b"v"), ("metadata", b"{not json")])
FORM_LATIN1_META, _ = _form([("value", b"v"), ("metadata", b'"\xff"')])
FORM_NO_VALUE, _ = _form([("metadata", b"{}")])

CASES = [
    # Keys.
    Case(
        "key-513-bytes",
        "PUT",
        "/values/" + "a" * 513,
        414,
        "UTF-8 encoded length of 513 exceeds key length limit of 512.",
        content=b"v",
    ),
    Case(
        "key-multibyte-513",
        "GET",
        "/values/" + "%E2%82%AC" * 171,
        414,
        "UTF-8 encoded length of 513 exceeds key length limit of 512.",
    ),
    Case("key-dot", "PUT", "/values/%2E", 400, 'Illegal key name ".".', content=b"v"),
    Case("key-dotdot", "DELETE", "/values/%2E%2E", 400, 'Illegal key name "..".'),
    Case(
        "key-not-utf8", "PUT", "/values/%FF%FE", 400, "Could not URL-decode key name", content=b"v"
    ),
    Case("key-empty", "PUT", "/values/", 400, "Key names must not be empty", content=b"v"),
    # Values.
    Case(
        "value-25mib-plus-1",
        "PUT",
        "/values/big",
        413,
        "Value length of 26214401 exceeds limit of 26214400.",
        content=b"x" * (25 * MIB + 1),
    ),
    Case(
        "value-chunked-too-big",
        "PUT",
        "/values/big",
        413,
        "Value length of 26214401 exceeds limit of 26214400.",
        content=lambda: _chunks(25 * MIB + 1),  # a fresh stream for each engine's run
    ),
    Case(
        "metadata-1025-bytes",
        "PUT",
        "/values/k",
        413,
        "Metadata length of 1025 exceeds limit of 1024.",
        content=FORM_BIG_META,
        headers={"content-type": FORM_TYPE},
    ),
    Case(
        "metadata-not-json",
        "PUT",
        "/values/k",
        400,
        "Invalid metadata: not valid JSON",
        content=FORM_BAD_META,
        headers={"content-type": FORM_TYPE},
    ),
    Case(
        "metadata-not-utf8",
        "PUT",
        "/values/k",
        400,
        "metadata part is not UTF-8",
        content=FORM_LATIN1_META,
        headers={"content-type": FORM_TYPE},
    ),
    Case(
        "multipart-no-value",
        "PUT",
        "/values/k",
        400,
        'no "value" part',
        content=FORM_NO_VALUE,
        headers={"content-type": FORM_TYPE},
    ),
    Case(
        "multipart-no-boundary",
        "PUT",
        "/values/k",
        400,
        "no boundary",
        content=b"--x\r\n",
        headers={"content-type": "multipart/form-data"},
    ),
    Case(
        "multipart-garbage",
        "PUT",
        "/values/k",
        400,
        "multipart",
        content=b"this is not multipart at all",
        headers={"content-type": "multipart/form-data; boundary=zzz"},
    ),
    # Expiration.
    Case(
        "ttl-zero",
        "PUT",
        "/values/k",
        400,
        "Invalid expiration_ttl of 0. Please specify integer greater than 0.",
        params={"expiration_ttl": "0"},
        content=b"v",
    ),
    Case(
        "ttl-negative",
        "PUT",
        "/values/k",
        400,
        "Invalid expiration_ttl of -5.",
        params={"expiration_ttl": "-5"},
        content=b"v",
    ),
    Case(
        "ttl-not-integer",
        "PUT",
        "/values/k",
        400,
        "Invalid expiration_ttl of 'abc': expected an integer",
        params={"expiration_ttl": "abc"},
        content=b"v",
    ),
    Case(
        "ttl-fraction",
        "PUT",
        "/values/k",
        400,
        "expected an integer",
        params={"expiration_ttl": "1.5"},
        content=b"v",
    ),
    Case(
        "expiration-past",
        "PUT",
        "/values/k",
        400,
        "Invalid expiration of 1000.",
        params={"expiration": "1000"},
        content=b"v",
    ),
    Case(
        "expiration-beyond-int32",
        "PUT",
        "/values/k",
        400,
        "must be at most 2147483647",
        params={"expiration": "99999999999"},
        content=b"v",
    ),
    Case(
        "expiration-twice",
        "PUT",
        "/values/k",
        400,
        "given more than once",
        params={"expiration": ["1", "2"]},
        content=b"v",
    ),
    Case(
        "cache-ttl-under-floor",
        "GET",
        "/values/k",
        400,
        "Invalid cache_ttl of 10. Cache TTL must be at least 30.",
        params={"cache_ttl": "10"},
    ),
    # Key list.
    Case(
        "list-limit-zero",
        "GET",
        "/keys",
        400,
        "Invalid key_count_limit of 0.",
        params={"limit": "0"},
    ),
    Case(
        "list-limit-1001",
        "GET",
        "/keys",
        400,
        "Invalid key_count_limit of 1001. Please specify an integer less than 1000.",
        params={"limit": "1001"},
    ),
    Case("list-limit-text", "GET", "/keys", 400, "Invalid key_count_limit", params={"limit": "x"}),
    Case(
        "list-bad-cursor", "GET", "/keys", 400, "Invalid cursor", params={"cursor": "!!!notbase64"}
    ),
    Case("list-foreign-cursor", "GET", "/keys", 400, "Invalid cursor", params={"cursor": "YmFk"}),
    Case(
        "list-prefix-513",
        "GET",
        "/keys",
        414,
        "UTF-8 encoded length of 513",
        params={"prefix": "p" * 513},
    ),
    # Bulk write.
    Case("bulk-put-not-json", "PUT", "/bulk", 400, "not valid JSON", content=b"[{"),
    Case("bulk-put-not-utf8", "PUT", "/bulk", 400, "not UTF-8", content=b'["\xff"]'),
    Case("bulk-put-empty-body", "PUT", "/bulk", 400, "empty", content=b""),
    Case("bulk-put-not-array", "PUT", "/bulk", 400, "JSON array", json_body={"key": "a"}),
    Case(
        "bulk-put-item-no-value",
        "PUT",
        "/bulk",
        400,
        'item 1: "value" must be a string',
        json_body=[{"key": "a", "value": "1"}, {"key": "b"}],
    ),
    Case(
        "bulk-put-bad-base64",
        "PUT",
        "/bulk",
        400,
        'item 0: "value" is not valid base64',
        json_body=[{"key": "a", "value": "***", "base64": True}],
    ),
    Case(
        "bulk-put-bad-ttl",
        "PUT",
        "/bulk",
        400,
        "item 0: Invalid expiration_ttl of -1",
        json_body=[{"key": "a", "value": "1", "expiration_ttl": -1}],
    ),
    Case(
        "bulk-put-key-too-long",
        "PUT",
        "/bulk",
        414,
        "item 2: UTF-8 encoded length of 600",
        json_body=[
            {"key": "a", "value": "1"},
            {"key": "b", "value": "2"},
            {"key": "k" * 600, "value": "3"},
        ],
    ),
    Case(
        "bulk-put-big-metadata",
        "PUT",
        "/bulk",
        413,
        "item 0: Metadata length of",
        json_body=[{"key": "a", "value": "1", "metadata": {"m": "x" * 2000}}],
    ),
    Case(
        "bulk-put-10001",
        "PUT",
        "/bulk",
        400,
        "10001 items; the maximum is 10000",
        json_body=[{"key": f"k{i}", "value": "v"} for i in range(10_001)],
    ),
    # Bulk delete.
    Case(
        "bulk-delete-not-strings",
        "POST",
        "/bulk/delete",
        400,
        "array of key names",
        json_body=[1, 2],
    ),
    Case(
        "bulk-delete-old-form-bad",
        "DELETE",
        "/bulk",
        400,
        "array of key names",
        json_body={"keys": ["a"]},
    ),
    Case(
        "bulk-delete-empty-key",
        "POST",
        "/bulk/delete",
        400,
        "Key names must not be empty",
        json_body=["a", ""],
    ),
    # Bulk get.
    Case(
        "bulk-get-no-keys",
        "POST",
        "/bulk/get",
        400,
        "You must request a minimum of 1 key",
        json_body={"keys": []},
    ),
    Case(
        "bulk-get-101-keys",
        "POST",
        "/bulk/get",
        400,
        "You can request a maximum of 100 keys",
        json_body={"keys": [f"k{i}" for i in range(101)]},
    ),
    Case(
        "bulk-get-bad-type",
        "POST",
        "/bulk/get",
        400,
        '"stream" is not a valid type. Use "json" or "text"',
        json_body={"keys": ["a"], "type": "stream"},
    ),
    Case(
        "bulk-get-bad-with-metadata",
        "POST",
        "/bulk/get",
        400,
        '"withMetadata" must be',
        json_body={"keys": ["a"], "withMetadata": "yes"},
    ),
    Case(
        "bulk-get-keys-not-list",
        "POST",
        "/bulk/get",
        400,
        '"keys" must be an array',
        json_body={"keys": "a"},
    ),
    Case(
        "bulk-get-empty-key",
        "POST",
        "/bulk/get",
        400,
        "Key names must not be empty",
        json_body={"keys": ["p/0", ""]},
    ),
    # Namespaces.
    Case("unknown-namespace", "/", f"/{UNKNOWN_NS}/keys", 404, "namespace not found", code=10013),
    Case(
        "invalid-namespace-id",
        "GET",
        "/../not-an-id/keys",
        404,
        "Could not route to namespace",
        code=7003,
    ),
    Case("namespace-trailing-slash", "GET", "/", 404, "No route", code=7000),
    Case("create-no-title", "POST", "/..", 400, '"title"', json_body={"name": "x"}),
    Case(
        "create-empty-title",
        "POST",
        "/..",
        400,
        "title must not be empty",
        json_body={"title": "  "},
    ),
    Case(
        "create-long-title",
        "POST",
        "/..",
        400,
        "the maximum is 512",
        json_body={"title": "t" * 513},
    ),
    Case(
        "create-title-not-string",
        "POST",
        "/..",
        400,
        "title must be a string",
        json_body={"title": 5},
    ),
    Case("create-bad-json", "POST", "/..", 400, "not valid JSON", content=b"{title"),
    Case("rename-empty-title", "PUT", "", 400, "title must not be empty", json_body={"title": ""}),
    Case(
        "list-ns-per-page-zero",
        "GET",
        "/..",
        400,
        "Invalid per_page of 0",
        params={"per_page": "0"},
    ),
    Case("list-ns-page-negative", "GET", "/..", 400, "Invalid page of -1", params={"page": "-1"}),
    Case("list-ns-bad-order", "GET", "/..", 400, "Invalid order 'size'", params={"order": "size"}),
    Case(
        "list-ns-bad-direction", "GET", "/..", 400, "Invalid direction", params={"direction": "up"}
    ),
    Case(
        "list-ns-page-float", "GET", "/..", 400, "expected an integer", params={"page": "6.9e307"}
    ),
    # Routing.
    Case("method-not-allowed", "PATCH", "/values/k", 405, "Method PATCH not allowed", code=7001),
    Case("no-such-route", "GET", "/nothing-here", 404, "No route", code=7000),
]

# "/" as a method marks a GET to an absolute namespace path; "/.." paths address the
# namespaces collection.
for case in CASES:
    if case.method == "/":
        case.method = "GET"


def _url(server: ServerProcess, namespace_id: str, case: Case) -> str:
    base = server.namespaces_url
    if case.path == "/..":
        return base
    if case.path.startswith("/../"):
        return base + case.path[3:]
    if case.id == "unknown-namespace":
        return base + case.path
    return f"{base}/{namespace_id}{case.path}"


@pytest.fixture(scope="module")
def raw(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(headers=server.headers(), timeout=60) as client:
        yield client


def _snapshot(raw: httpx.Client, server: ServerProcess, namespace_id: str) -> Any:
    namespaces = raw.get(server.namespaces_url, params={"per_page": "1000"}).json()["result"]
    keys = raw.get(f"{server.namespaces_url}/{namespace_id}/keys").json()["result"]
    return sorted((n["id"], n["title"]) for n in namespaces), keys


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    case: Case, server: ServerProcess, raw: httpx.Client, namespace_id: str
) -> None:
    raw.put(f"{server.namespaces_url}/{namespace_id}/values/existing", content=b"before")
    before = _snapshot(raw, server, namespace_id)

    response = raw.request(
        case.method,
        _url(server, namespace_id, case),
        params=case.params or None,
        content=case.content() if callable(case.content) else case.content,
        json=case.json_body,
        headers=case.headers or None,
    )

    assert response.status_code == case.status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    assert len(body["errors"]) == 1
    message = body["errors"][0]["message"]
    assert case.message in message
    if case.code is not None:
        assert body["errors"][0]["code"] == case.code
    assert isinstance(body["errors"][0]["code"], int) and body["errors"][0]["code"] >= 1000
    if case.status != 429:
        assert response.headers.get("x-should-retry") == "false"

    assert raw.get(f"{server.url}/healthz").status_code == 200
    assert _snapshot(raw, server, namespace_id) == before
    existing = raw.get(f"{server.namespaces_url}/{namespace_id}/values/existing")
    assert existing.content == b"before"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer pkv_0000000000000000_" + "x" * 43},
    ],
    ids=["missing", "wrong", "not-bearer", "unknown-id"],
)
def test_missing_or_wrong_token_is_401(server: ServerProcess, headers: dict[str, str]) -> None:
    response = httpx.get(server.namespaces_url, headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"] == [{"code": 10000, "message": "Authentication error"}]


def test_other_account_is_403(server: ServerProcess) -> None:
    other = server.namespaces_url.replace(server.account_id, "a" * 32)
    response = httpx.get(other, headers=server.headers())
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == 10000


def test_half_bad_bulk_writes_nothing(
    server: ServerProcess, raw: httpx.Client, namespace_id: str
) -> None:
    items: list[dict[str, Any]] = [{"key": f"k{i}", "value": "v"} for i in range(10)]
    items[5]["value"] = 5
    response = raw.put(f"{server.namespaces_url}/{namespace_id}/bulk", json=items)
    assert response.status_code == 400
    assert "item 5" in response.json()["errors"][0]["message"]
    keys = raw.get(f"{server.namespaces_url}/{namespace_id}/keys").json()["result"]
    assert keys == []


def test_expiration_floor_applies(tmp_path: Path) -> None:
    """With the default 60 s floor, short TTLs and near expirations are refused."""
    proc = ServerProcess(tmp_path / "data").start()
    try:
        with httpx.Client(headers=proc.headers(), timeout=30) as c:
            ns = c.post(proc.namespaces_url, json={"title": "floor"}).json()["result"]["id"]
            url = f"{proc.namespaces_url}/{ns}/values/k"
            r = c.put(url, params={"expiration_ttl": "59"}, content=b"v")
            assert r.status_code == 400
            assert "Invalid expiration_ttl of 59. Expiration TTL must be at least 60." in r.text
            near = int(time.time()) + 30
            r = c.put(url, params={"expiration": str(near)}, content=b"v")
            assert r.status_code == 400
            assert "Expiration times must be at least 60 seconds in the future." in r.text
            assert c.put(url, params={"expiration_ttl": "60"}, content=b"v").status_code == 200
    finally:
        proc.stop()
