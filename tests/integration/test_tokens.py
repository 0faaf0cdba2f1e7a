"""Tokens end to end: admin bootstrap, scopes, read-only, revocation, secrets on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from pullkv import Client, PermissionDenied
from tests.support import ServerProcess


def _token(server: ServerProcess, **body: object) -> dict[str, object]:
    response = httpx.post(
        f"{server.api}/accounts/{server.account_id}/tokens", json=body, headers=server.headers()
    )
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()["result"]
    return result


def test_secret_files_are_private(server: ServerProcess) -> None:
    for name in ("admin-token", "master.key"):
        mode = stat.S_IMODE((server.data_dir / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))


def test_read_only_token(server: ServerProcess, http: httpx.Client, namespace_id: str) -> None:
    http.put(f"{namespace_id}/values/k", content=b"v")
    token = str(_token(server, name="reader", read_only=True)["value"])
    with httpx.Client(base_url=server.namespaces_url + "/", headers=server.headers(token)) as c:
        assert c.get(f"{namespace_id}/values/k").content == b"v"
        assert c.post(f"{namespace_id}/bulk/get", json={"keys": ["k"]}).status_code == 200
        for response in (
            c.put(f"{namespace_id}/values/k", content=b"w"),
            c.delete(f"{namespace_id}/values/k"),
            c.post(f"{namespace_id}/bulk/delete", json=["k"]),
            c.post("", json={"title": "nope"}),
        ):
            assert response.status_code == 403
            assert response.json()["errors"][0]["code"] == 10000
    assert http.get(f"{namespace_id}/values/k").content == b"v"


def test_namespace_limited_token(server: ServerProcess, http: httpx.Client) -> None:
    mine = http.post("", json={"title": "limited-mine"}).json()["result"]["id"]
    other = http.post("", json={"title": "limited-other"}).json()["result"]["id"]
    token = str(_token(server, name="scoped", namespaces=[mine])["value"])
    with httpx.Client(base_url=server.namespaces_url + "/", headers=server.headers(token)) as c:
        assert c.put(f"{mine}/values/k", content=b"v").status_code == 200
        assert c.get(f"{other}/keys").status_code == 403
        assert c.put(f"{other}/values/k", content=b"v").status_code == 403
        listed = c.get("").json()["result"]
        assert [n["id"] for n in listed] == [mine]
        assert c.delete(f"{mine}").status_code == 403
        assert c.put(f"{mine}", json={"title": "x"}).status_code == 403


def test_only_admins_manage_tokens(server: ServerProcess) -> None:
    token = str(_token(server, name="plain")["value"])
    with Client(server.url, token, account_id=server.account_id) as client:
        with pytest.raises(PermissionDenied) as raised:
            client.create_token("sneaky", admin=True)
        assert raised.value.status == 403
        with pytest.raises(PermissionDenied):
            client.list_tokens()


def test_revoked_token_stops_working_at_once(server: ServerProcess) -> None:
    created = _token(server, name="short-lived")
    token = str(created["value"])
    assert httpx.get(server.namespaces_url, headers=server.headers(token)).status_code == 200
    with Client(server.url, server.admin_token, account_id=server.account_id) as admin:
        listed = {t["id"]: t for t in admin.list_tokens()}
        assert listed[created["id"]]["status"] == "active"
        assert "value" not in listed[created["id"]] and "secret_hash" not in listed[created["id"]]
        admin.revoke_token(str(created["id"]))
        assert {t["id"]: t for t in admin.list_tokens()}[created["id"]]["status"] == "revoked"
    assert httpx.get(server.namespaces_url, headers=server.headers(token)).status_code == 401


def test_tokens_are_stored_hashed(server: ServerProcess) -> None:
    token = str(_token(server, name="hashed")["value"])
    secret = token.rsplit("_", 1)[1].encode()
    for path in server.data_dir.iterdir():
        assert secret not in path.read_bytes(), path
    assert server.admin_token.encode() not in (server.data_dir / "pullkv.sqlite3").read_bytes()


def test_admin_token_from_environment(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", env={"PULLKV_ADMIN_TOKEN": "operator-chosen-secret"})
    proc.start()
    try:
        assert not (proc.data_dir / "admin-token").exists()
        ok = httpx.get(proc.namespaces_url, headers=proc.headers("operator-chosen-secret"))
        assert ok.status_code == 200
        assert "PULLKV_ADMIN_TOKEN" in proc.log()
        assert "operator-chosen-secret" not in proc.log()
    finally:
        proc.stop()


def test_account_id_is_kept_and_checked(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    proc.stop()
    proc.account_id = "b" * 32
    with pytest.raises(RuntimeError, match="belongs to account"):
        proc.start(timeout=10)


def test_revocation_reaches_the_hot_path(server: ServerProcess, http: httpx.Client) -> None:
    namespace_id = http.post("", json={"title": "hot-revoke"}).json()["result"]["id"]
    http.put(f"{namespace_id}/values/k", content=b"v")
    created = _token(server, name="hot")
    headers = server.headers(str(created["value"]))
    url = f"{server.namespaces_url}/{namespace_id}/values/k"
    for _ in range(3):  # the last ones are answered on the hot path
        assert httpx.get(url, headers=headers).content == b"v"
    hot = server.metric("pullkv_hot_responses_total", server.admin_token)
    assert hot >= 1
    with Client(server.url, server.admin_token, account_id=server.account_id) as admin:
        admin.revoke_token(str(created["id"]))
    assert httpx.get(url, headers=headers).status_code == 401
    other = httpx.get(url.replace("/values/k", "/values/other"), headers=headers)
    assert other.status_code == 401
