"""Every input gets a clean answer (issue 8 §6), against a real ``pullkv serve``: deeply
nested JSON in any body or in metadata, and integers out of range, are 400s that name the
problem, never a 500; and every metadata Workers KV accepts (any JSON up to 1,024 bytes,
which nests at most 512 deep) still round-trips through every interface."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.pg import parametrize_server
from tests.support import ServerProcess


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_server(metafunc)  # on SQLite and on PostgreSQL (64-bit integers in both)


DEEP_METADATA = "[" * 512 + "]" * 512  # 1,024 bytes: the deepest metadata Workers KV takes
TOO_DEEP = "[" * 5000 + "]" * 5000
HUGE = [str(10**20), str(2**63), "99999999999999999999", str(-(2**63) - 1)]


@pytest.fixture(scope="module")
def rest(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.namespaces_url, headers=server.headers(), timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def ns(rest: httpx.Client) -> str:
    made = rest.post("", json={"title": "clean-answers"})
    assert made.status_code == 200, made.text
    return str(made.json()["result"]["id"])


@pytest.fixture(scope="module")
def binding(server: ServerProcess, ns: str) -> Iterator[httpx.Client]:
    headers = {**server.headers(), "X-PullKV-Namespace": ns}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


def _refused(response: httpx.Response, *words: str) -> None:
    """A 400 whose message (envelope, or reason phrase for the binding) names the problem."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    try:
        message = response.json()["errors"][0]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text
    for word in words:
        assert word in message, message


DEEP_BODIES = [
    ("POST", "", {"title": "x", "extra": json.loads("[" * 700 + "]" * 700)}),
    ("PUT", "{ns}", {"title": "x", "extra": json.loads("[" * 700 + "]" * 700)}),
    ("PUT", "{ns}/bulk", [{"key": "k", "value": "v", "metadata": None}, TOO_DEEP]),
    ("POST", "{ns}/bulk/delete", ["k", TOO_DEEP]),
    ("DELETE", "{ns}/bulk", ["k", TOO_DEEP]),
    ("POST", "{ns}/bulk/get", {"keys": ["k"], "x": TOO_DEEP}),
]


@pytest.mark.parametrize(("method", "path", "body"), DEEP_BODIES)
def test_deep_json_bodies_are_400(
    rest: httpx.Client, ns: str, method: str, path: str, body: Any
) -> None:
    text = json.dumps(body)
    if isinstance(body, list) and TOO_DEEP in body:
        text = text.replace(json.dumps(TOO_DEEP), TOO_DEEP)  # raw nesting, not a string
    elif isinstance(body, dict) and "x" in body:
        text = text.replace(json.dumps(TOO_DEEP), TOO_DEEP)
    response = rest.request(method, path.format(ns=ns), content=text.encode())
    _refused(response, "nested deeper than")


def test_deep_metadata_over_rest_round_trips(rest: httpx.Client, ns: str) -> None:
    """Bulk put, multipart, metadata, list and bulk get all carry 512-deep metadata."""
    metadata = json.loads(DEEP_METADATA)
    items = [{"key": "deep-bulk", "value": "v", "metadata": metadata}]
    assert rest.put(f"{ns}/bulk", json=items).status_code == 200
    files = {"value": (None, b"w"), "metadata": (None, DEEP_METADATA.encode())}
    assert rest.put(f"{ns}/values/deep-form", files=files).status_code == 200
    for key in ("deep-bulk", "deep-form"):
        assert rest.get(f"{ns}/metadata/{key}").json()["result"] == metadata
        header = rest.get(f"{ns}/values/{key}").headers["cf-kv-metadata"]
        assert json.loads(header) == metadata
    listed = rest.get(f"{ns}/keys", params={"prefix": "deep-"}).json()["result"]
    assert [k["metadata"] for k in listed] == [metadata, metadata]
    got = rest.post(f"{ns}/bulk/get", json={"keys": ["deep-bulk"], "withMetadata": True})
    assert got.json()["result"]["values"]["deep-bulk"]["metadata"] == metadata


def test_bulk_get_json_of_a_deep_value_is_400(rest: httpx.Client, ns: str) -> None:
    assert rest.put(f"{ns}/values/deep-value", content=TOO_DEEP.encode()).status_code == 200
    response = rest.post(f"{ns}/bulk/get", json={"keys": ["deep-value"], "type": "json"})
    _refused(response, "non-json value")
    text = rest.post(f"{ns}/bulk/get", json={"keys": ["deep-value"]}).json()
    assert text["result"]["values"]["deep-value"] == TOO_DEEP


def test_deep_metadata_over_the_binding(binding: httpx.Client) -> None:
    put = binding.put(
        "/bnd-deep?urlencoded=true", content=b"v", headers={"CF-KV-Metadata": DEEP_METADATA}
    )
    assert put.status_code == 200, put.text
    got = binding.get("/bnd-deep?urlencoded=true")
    assert json.loads(got.headers["cf-kv-metadata"]) == json.loads(DEEP_METADATA)
    deep_body = '{"keys":["bnd-deep"],"x":' + TOO_DEEP + "}"
    _refused(binding.post("/bulk/get", content=deep_body.encode()), "nested deeper than")


def test_deep_json_to_the_internal_api_is_400(server: ServerProcess) -> None:
    made = httpx.post(
        f"{server.api}/accounts/{server.account_id}/tokens",
        headers=server.headers(),
        json={"name": "fuzz-edge", "edge": True},
    )
    assert made.status_code == 200, made.text
    edge = {"Authorization": f"Bearer {made.json()['result']['value']}"}
    for operation in ("fetch", "namespace", "tokens/get", "namespaces/list"):
        response = httpx.post(
            f"{server.url}/pullkv/v1/{operation}", headers=edge, content=TOO_DEEP.encode()
        )
        _refused(response, "nested deeper than")


# Integer parameters: (method, path relative to the namespaces URL, query parameter).
REST_INTEGERS = [
    ("GET", "", "page"),
    ("GET", "", "per_page"),
    ("GET", "{ns}/keys", "limit"),
    ("PUT", "{ns}/values/k", "expiration"),
    ("PUT", "{ns}/values/k", "expiration_ttl"),
    ("GET", "{ns}/values/k", "cache_ttl"),
    ("POST", "{ns}/bulk/get", "cache_ttl"),
]
# The message names the parameter as Workers KV does (a list limit is key_count_limit there).
SPOKEN = {"limit": "key_count_limit", "expiration_ttl": "expiration_ttl"}


@pytest.mark.parametrize("raw", HUGE)
@pytest.mark.parametrize(("method", "path", "name"), REST_INTEGERS)
def test_rest_integers_out_of_range_are_400(
    rest: httpx.Client, ns: str, method: str, path: str, name: str, raw: str
) -> None:
    body = json.dumps({"keys": ["k"]}).encode() if path.endswith("bulk/get") else b"v"
    response = rest.request(method, path.format(ns=ns), params={name: raw}, content=body)
    _refused(response, SPOKEN.get(name, name))


BULK_NUMBERS = ["1e400", "-1e400", "NaN", "Infinity", str(2**63), str(-(2**63)), "1e19"]


@pytest.mark.parametrize("raw", BULK_NUMBERS)
@pytest.mark.parametrize("name", ["expiration", "expiration_ttl"])
def test_bulk_put_numbers_out_of_range_are_400(
    rest: httpx.Client, ns: str, name: str, raw: str
) -> None:
    body = f'[{{"key":"k","value":"v","{name}":{raw}}}]'
    _refused(rest.put(f"{ns}/bulk", content=body.encode()), "item 0", name)


@pytest.mark.parametrize("raw", HUGE)
@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/k?urlencoded=true", "cache_ttl"),
        ("PUT", "/k?urlencoded=true", "expiration"),
        ("PUT", "/k?urlencoded=true", "expiration_ttl"),
        ("GET", "/", "key_count_limit"),
    ],
)
def test_binding_integers_out_of_range_are_400(
    binding: httpx.Client, method: str, path: str, name: str, raw: str
) -> None:
    separator = "&" if "?" in path else "?"
    response = binding.request(method, f"{path}{separator}{name}={raw}", content=b"v")
    _refused(response, name)


@pytest.mark.parametrize("raw", [*HUGE, "1e400", "true", '"60.5"', "[60]"])
def test_binding_bulk_get_cache_ttl_out_of_range_is_400(binding: httpx.Client, raw: str) -> None:
    body = f'{{"keys":["k"],"cacheTtl":{raw}}}'
    _refused(binding.post("/bulk/get", content=body.encode()), "cache_ttl")


def test_largest_accepted_integers_still_work(rest: httpx.Client, ns: str) -> None:
    """The bounds refuse nothing reasonable: the last page, a 68-year cache TTL."""
    most = str(2**31 - 1)
    listed = rest.get("", params={"page": most, "per_page": most})
    assert listed.status_code == 200, listed.text
    assert listed.json()["result"] == []
    assert listed.json()["result_info"]["per_page"] == 1000
    assert rest.put(f"{ns}/values/big-ttl", content=b"v").status_code == 200
    read = rest.get(f"{ns}/values/big-ttl", params={"cache_ttl": most})
    assert (read.status_code, read.content) == (200, b"v")
