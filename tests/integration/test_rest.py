"""The REST API end to end against a real server: values, lists, expiry, namespaces, bulk."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.pg import parametrize_server
from tests.support import ServerProcess


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_server(metafunc)  # every test with a server runs on SQLite and on PostgreSQL


def ns_url(server: ServerProcess, namespace_id: str) -> str:
    return f"{server.namespaces_url}/{namespace_id}"


def test_value_round_trip_is_byte_exact(http: httpx.Client, namespace_id: str) -> None:
    payload = bytes(range(256)) * 10
    assert http.put(f"{namespace_id}/values/bin", content=payload).status_code == 200
    response = http.get(f"{namespace_id}/values/bin")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == payload
    assert "expiration" not in response.headers


def test_empty_value_is_a_value(http: httpx.Client, namespace_id: str) -> None:
    assert http.put(f"{namespace_id}/values/empty", content=b"").status_code == 200
    response = http.get(f"{namespace_id}/values/empty")
    assert response.status_code == 200 and response.content == b""


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "text/plain;charset=UTF-8"}, {}, {"content-type": "application/json"}],
    ids=["wrangler-text", "no-content-type", "json-typed"],
)
def test_raw_body_writes(http: httpx.Client, namespace_id: str, headers: dict[str, str]) -> None:
    assert http.put(f"{namespace_id}/values/k", content=b'{"v":1}', headers=headers).is_success
    assert http.get(f"{namespace_id}/values/k").content == b'{"v":1}'


def test_multipart_write_sdk_shape(http: httpx.Client, namespace_id: str) -> None:
    files = {
        "value": ("upload", b"\x00\x01value", "application/octet-stream"),
        "metadata": (None, b'{"a": 1, "b": "x"}', "application/json"),
    }
    assert http.put(f"{namespace_id}/values/m", files=files).status_code == 200
    assert http.get(f"{namespace_id}/values/m").content == b"\x00\x01value"
    assert http.get(f"{namespace_id}/metadata/m").json()["result"] == {"a": 1, "b": "x"}


def test_multipart_write_wrangler_shape(http: httpx.Client, namespace_id: str) -> None:
    boundary = "----formdata-undici-0123"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="value"\r\n\r\nhello\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        '{"a":1}\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    assert http.put(f"{namespace_id}/values/w", content=body, headers=headers).status_code == 200
    assert http.get(f"{namespace_id}/values/w").content == b"hello"
    assert http.get(f"{namespace_id}/metadata/w").json()["result"] == {"a": 1}


def test_chunked_body(http: httpx.Client, namespace_id: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"part1-"
        yield b"part2"

    assert http.put(f"{namespace_id}/values/chunked", content=chunks()).status_code == 200
    assert http.get(f"{namespace_id}/values/chunked").content == b"part1-part2"


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("a%2Fb", "a/b"),
        ("a%252F", "a%2F"),
        ("my%20key%2Fwith:odd%25chars", "my key/with:odd%chars"),
        ("dir%2Fa%20b%3Fc%25d", "dir/a b?c%d"),
        ("%D0%BA%D0%BB%D1%8E%D1%87", "ключ"),
        ("%F0%9F%98%80", "😀"),
        ("hash%23tag", "hash#tag"),
        ("a:b%3Ac", "a:b:c"),
    ],
)
def test_keys_are_percent_decoded_exactly_once(
    http: httpx.Client, namespace_id: str, encoded: str, key: str
) -> None:
    assert http.put(f"{namespace_id}/values/{encoded}", content=b"v").status_code == 200
    names = [k["name"] for k in http.get(f"{namespace_id}/keys").json()["result"]]
    assert names == [key]
    assert http.get(f"{namespace_id}/values/{encoded}").content == b"v"


def test_get_missing_key(http: httpx.Client, namespace_id: str) -> None:
    response = http.get(f"{namespace_id}/values/nope")
    assert response.status_code == 404
    assert response.json()["errors"] == [{"code": 10009, "message": "get: 'key not found'"}]
    response = http.get(f"{namespace_id}/metadata/nope")
    assert response.json()["errors"][0] == {"code": 10009, "message": "metadata: 'key not found'"}


def test_put_replaces_value_metadata_and_expiration(http: httpx.Client, namespace_id: str) -> None:
    files = {"value": (None, b"one"), "metadata": (None, b'{"m":1}')}
    http.put(f"{namespace_id}/values/k", files=files, params={"expiration_ttl": "600"})
    first = http.get(f"{namespace_id}/keys").json()["result"][0]
    assert first["metadata"] == {"m": 1} and first["expiration"] > time.time()
    http.put(f"{namespace_id}/values/k", content=b"two")
    assert http.get(f"{namespace_id}/keys").json()["result"] == [{"name": "k"}]
    assert http.get(f"{namespace_id}/metadata/k").json()["result"] is None
    assert http.get(f"{namespace_id}/values/k").content == b"two"


def test_expiration_ttl_wins_over_expiration(http: httpx.Client, namespace_id: str) -> None:
    now = int(time.time())
    params = {"expiration_ttl": "120", "expiration": str(now + 5000)}
    http.put(f"{namespace_id}/values/k", content=b"v", params=params)
    response = http.get(f"{namespace_id}/values/k")
    assert abs(int(response.headers["expiration"]) - (now + 120)) <= 2


def test_expired_keys_vanish_everywhere(http: httpx.Client, namespace_id: str) -> None:
    http.put(f"{namespace_id}/values/short", content=b"v", params={"expiration_ttl": "1"})
    http.put(f"{namespace_id}/values/long", content=b"v", params={"expiration_ttl": "600"})
    assert http.get(f"{namespace_id}/values/short").status_code == 200
    time.sleep(2.1)
    assert http.get(f"{namespace_id}/values/short").status_code == 404
    assert http.get(f"{namespace_id}/metadata/short").status_code == 404
    assert [k["name"] for k in http.get(f"{namespace_id}/keys").json()["result"]] == ["long"]
    values = http.post(f"{namespace_id}/bulk/get", json={"keys": ["short", "long"]})
    assert values.json()["result"]["values"] == {"short": None, "long": "v"}


def test_list_order_prefix_and_cursor_paging(http: httpx.Client, namespace_id: str) -> None:
    names = ["é", "~", "b", "a", "Z", "B", "p/1", "p/2", "p/3", "\ue000", "\uffff", "😀", "!", ", "]
    items = [{"key": n, "value": n} for n in names]
    assert http.put(f"{namespace_id}/bulk", json=items).json()["result"] == {
        "successful_key_count": len(names),
        "unsuccessful_keys": [],
    }
    everything = http.get(f"{namespace_id}/keys").json()
    assert [k["name"] for k in everything["result"]] == sorted(names, key=lambda s: s.encode())
    assert everything["result_info"] == {"count": len(names), "cursor": ""}

    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        params = {"limit": "4", "cursor": cursor} if cursor else {"limit": "4"}
        body = http.get(f"{namespace_id}/keys", params=params).json()
        seen += [k["name"] for k in body["result"]]
        pages += 1
        cursor = body["result_info"]["cursor"]
        assert body["result"], "a page before the end is never empty"
        if not cursor:
            break
    assert seen == sorted(names, key=lambda s: s.encode())
    assert pages == 4  # 14 keys, 4 per page: the last page is complete without an empty extra

    prefixed = http.get(f"{namespace_id}/keys", params={"prefix": "p/", "limit": "2"}).json()
    assert [k["name"] for k in prefixed["result"]] == ["p/1", "p/2"]
    rest = http.get(
        f"{namespace_id}/keys", params={"prefix": "p/", "cursor": prefixed["result_info"]["cursor"]}
    ).json()
    assert [k["name"] for k in rest["result"]] == ["p/3"] and rest["result_info"]["cursor"] == ""
    empty_prefix = http.get(f"{namespace_id}/keys", params={"prefix": ""}).json()
    assert empty_prefix["result_info"]["count"] == len(names)


def test_cursor_continues_after_last_key(http: httpx.Client, namespace_id: str) -> None:
    http.put(f"{namespace_id}/bulk", json=[{"key": k, "value": "v"} for k in ["k1", "k3", "k5"]])
    first = http.get(f"{namespace_id}/keys", params={"limit": "2"}).json()
    http.put(f"{namespace_id}/bulk", json=[{"key": k, "value": "v"} for k in ["k2", "k4"]])
    rest = http.get(
        f"{namespace_id}/keys", params={"cursor": first["result_info"]["cursor"]}
    ).json()
    assert [k["name"] for k in rest["result"]] == ["k4", "k5"]


def test_bulk_put_base64_metadata_and_expiry(http: httpx.Client, namespace_id: str) -> None:
    items = [
        {"key": "plain", "value": "text"},
        {"key": "b64", "value": base64.b64encode(b"\x00\xffbin").decode(), "base64": True},
        {"key": "meta", "value": "m", "metadata": {"tag": "x"}, "expiration_ttl": 300},
        {"key": "abs", "value": "a", "expiration": int(time.time()) + 600},
    ]
    result = http.put(f"{namespace_id}/bulk", json=items).json()["result"]
    assert result == {"successful_key_count": 4, "unsuccessful_keys": []}
    assert http.get(f"{namespace_id}/values/b64").content == b"\x00\xffbin"
    listed = {k["name"]: k for k in http.get(f"{namespace_id}/keys").json()["result"]}
    assert listed["meta"]["metadata"] == {"tag": "x"} and "expiration" in listed["meta"]
    assert "metadata" not in listed["plain"] and "expiration" not in listed["plain"]


def test_bulk_delete_both_forms(http: httpx.Client, namespace_id: str) -> None:
    http.put(f"{namespace_id}/bulk", json=[{"key": f"k{i}", "value": "v"} for i in range(6)])
    r1 = http.post(f"{namespace_id}/bulk/delete", json=["k0", "k1", "missing"])
    assert r1.json()["result"] == {"successful_key_count": 3, "unsuccessful_keys": []}
    r2 = http.request("DELETE", f"{namespace_id}/bulk", json=["k2", "k3"])
    assert r2.json()["success"] is True
    assert [k["name"] for k in http.get(f"{namespace_id}/keys").json()["result"]] == ["k4", "k5"]


def test_bulk_get_shapes(http: httpx.Client, namespace_id: str) -> None:
    http.put(
        f"{namespace_id}/bulk",
        json=[
            {"key": "j", "value": '{"a": [1, 2]}', "metadata": {"m": True}},
            {"key": "zero", "value": "0"},
            {"key": "text", "value": "plain"},
        ],
    )
    text = http.post(f"{namespace_id}/bulk/get", json={"keys": ["j", "nope"]}).json()
    assert text["result"]["values"] == {"j": '{"a": [1, 2]}', "nope": None}
    as_json = http.post(f"{namespace_id}/bulk/get", json={"keys": ["j", "zero"], "type": "json"})
    assert as_json.json()["result"]["values"] == {"j": {"a": [1, 2]}, "zero": 0}
    meta = http.post(
        f"{namespace_id}/bulk/get",
        json={"keys": ["j", "zero", "nope"], "type": "json", "withMetadata": True},
    ).json()["result"]["values"]
    assert meta == {
        "j": {"value": {"a": [1, 2]}, "metadata": {"m": True}},
        "zero": {"value": 0, "metadata": None},
        "nope": None,
    }
    bad = http.post(f"{namespace_id}/bulk/get", json={"keys": ["j", "text"], "type": "json"})
    assert bad.status_code == 400
    assert "non-json value" in bad.json()["errors"][0]["message"]
    dup = http.post(f"{namespace_id}/bulk/get", json={"keys": ["j", "j"]}).json()
    assert list(dup["result"]["values"]) == ["j"]


def test_namespaces_crud_paging_and_errors(server: ServerProcess) -> None:
    with httpx.Client(headers=server.headers(), timeout=30) as c:
        base = server.namespaces_url
        created = [c.post(base, json={"title": f"pg-{i:02d}"}).json()["result"] for i in range(7)]
        assert all(len(n["id"]) == 32 and n["id"] == n["id"].lower() for n in created)
        duplicate = c.post(base, json={"title": "pg-00"})
        assert duplicate.status_code == 400
        assert duplicate.json()["errors"][0]["code"] == 10014
        assert duplicate.headers["x-should-retry"] == "false"

        titles = []
        page = 1
        while batch := c.get(base, params={"page": page, "per_page": 5}).json()["result"]:
            titles += [n["title"] for n in batch]
            page += 1
        assert [t for t in titles if t.startswith("pg-")] == [f"pg-{i:02d}" for i in range(7)]

        clamped = c.get(base, params={"per_page": 5000}).json()["result_info"]
        assert clamped["per_page"] == 1000
        past_end = c.get(base, params={"page": 999}).json()
        assert past_end["success"] is True and past_end["result"] == []
        desc = c.get(base, params={"order": "title", "direction": "desc", "per_page": 1000})
        desc_titles = [n["title"] for n in desc.json()["result"]]
        assert desc_titles == sorted(desc_titles, reverse=True)

        target = created[0]["id"]
        c.put(f"{base}/{target}/values/k", content=b"v")
        renamed = c.put(f"{base}/{target}", json={"title": "renamed"}).json()["result"]
        assert renamed == {"id": target, "title": "renamed", "supports_url_encoding": True}
        assert c.get(f"{base}/{target}").json()["result"]["title"] == "renamed"
        taken = c.put(f"{base}/{target}", json={"title": "pg-01"})
        assert taken.status_code == 400 and taken.json()["errors"][0]["code"] == 10014

        deleted = c.delete(f"{base}/{target}")
        assert deleted.json() == {"success": True, "errors": [], "messages": [], "result": None}
        gone = c.get(f"{base}/{target}/values/k")
        assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == 10013
        assert c.delete(f"{base}/{target}").status_code == 404
        # The title is free again.
        assert c.post(base, json={"title": "renamed"}).status_code == 200


def test_writes_of_one_key_within_a_second_by_default(
    http: httpx.Client, namespace_id: str
) -> None:
    # Workers KV's 1 write per second per key is its infrastructure's limit, not pullkv's.
    values = f"{namespace_id}/values/k"
    assert http.put(values, content=b"1").status_code == 200
    assert http.delete(values).status_code == 200
    assert http.put(values, content=b"2").status_code == 200
    bulk = http.put(f"{namespace_id}/bulk", json=[{"key": "k", "value": "3"}])
    assert bulk.json()["result"] == {"successful_key_count": 1, "unsuccessful_keys": []}
    gone = http.request("DELETE", f"{namespace_id}/bulk", json=["k"])
    assert gone.json()["result"] == {"successful_key_count": 1, "unsuccessful_keys": []}
    assert http.get(values).status_code == 404


def test_same_key_write_rate_limit(tmp_path: Path) -> None:
    args = ["--min-expiration-ttl", "1", "--same-key-write-rate", "1"]
    proc = ServerProcess(tmp_path / "data", args=args).start()
    try:
        with httpx.Client(base_url=proc.namespaces_url + "/", headers=proc.headers()) as c:
            ns = c.post("", json={"title": "rate"}).json()["result"]["id"]
            assert c.put(f"{ns}/values/hot", content=b"1").status_code == 200
            limited = c.put(f"{ns}/values/hot", content=b"2")
            assert limited.status_code == 429
            assert limited.headers["retry-after"] == "1"
            assert "x-should-retry" not in limited.headers
            assert c.get(f"{ns}/values/hot").content == b"1"
            assert c.put(f"{ns}/values/other", content=b"x").status_code == 200
            bulk = c.put(
                f"{ns}/bulk", json=[{"key": "hot", "value": "3"}, {"key": "new", "value": "n"}]
            )
            assert bulk.json()["result"] == {
                "successful_key_count": 1,
                "unsuccessful_keys": ["hot"],
            }
            time.sleep(1.05)
            assert c.put(f"{ns}/values/hot", content=b"4").status_code == 200
            assert c.get(f"{ns}/values/hot").content == b"4"
    finally:
        proc.stop()


def test_healthz_needs_no_token(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/healthz").text == "ok\n"
