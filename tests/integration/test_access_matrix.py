"""Who may call what: every route family × every kind of token, generated from the table in
docs/security.md ("## Who may call what"), against a real ``pullkv serve`` and a real edge.

The table is the specification: its rows name the request (method, path, and for the binding
protocol the namespace header), its columns the kind of token, and each cell the outcome
(``yes`` for 2xx, else the denial status). This module only knows how to make each kind of
token and what body each route family sends.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pullkv import wire
from pullkv.auth import generate_token, make_record
from pullkv.store.sqlite import SQLiteStore
from pullkv.types import SealedWrite, TokenRecord
from tests.conftest import TEST_SERVER_ARGS
from tests.support import EdgeProcess, ServerProcess

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
SECTION = "## Who may call what"
OTHER_ACCOUNT = "fedcba9876543210fedcba9876543210"

# How each kind of token (a column of the table) is made: the body of its creation request.
KIND_BODIES: dict[str, dict[str, Any] | None] = {
    "unrestricted admin": {"admin": True},
    "namespace-limited admin": {"admin": True, "namespaces": ["{A}"]},
    "read-only admin": {"admin": True, "read_only": True},
    "plain read-write": {},
    "read-only": {"read_only": True},
    "namespace-limited": {"namespaces": ["{A}"]},
    "edge token": {"edge": True},
}
SPECIAL_KINDS = (
    "edge token of another account",
    "bootstrap admin (admin + edge)",
    "no token",
    "revoked token",
)


@dataclass(frozen=True)
class Row:
    """One route family of the table."""

    family: str
    method: str
    path: str
    namespace: str | None  # the X-PullKV-Namespace placeholder of a binding request
    cells: dict[str, str]


def parse_table(text: str) -> tuple[list[str], list[Row]]:
    """The token kinds (columns) and route families (rows) of the section's table."""
    section = text.split(SECTION, 1)[1]
    lines = [line.strip() for line in section.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table: list[list[str]] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    header, _, *body = table
    kinds = header[2:]
    rows = []
    for cells in body:
        spans = re.findall(r"`([^`]*)`", cells[1])
        method, path = spans[0].split(" ", 1)
        namespace = None
        if len(spans) > 1:
            name, _, value = spans[1].partition(":")
            assert name.strip().lower() == "x-pullkv-namespace", cells[1]
            namespace = value.strip()
        rows.append(
            Row(cells[0], method, path, namespace, dict(zip(kinds, cells[2:], strict=True)))
        )
    return kinds, rows


KINDS, ROWS = parse_table(DOC.read_text())


@dataclass
class World:
    """A running node and everything the table's requests refer to."""

    url: str
    origin: ServerProcess
    names: dict[str, str]  # placeholder -> value ({account}, {A}, {B})
    tokens: dict[str, str | None]  # kind -> bearer token
    scratch: list[str] = field(default_factory=list)

    def admin(self) -> dict[str, str]:
        return self.origin.headers()

    def fill(self, text: str) -> str:
        for name, value in self.names.items():
            text = text.replace("{" + name + "}", value)
        return text


def _create_token(origin: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{origin.api}/accounts/{origin.account_id}/tokens", json=body, headers=origin.headers()
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    return result


def _fill_body(body: Any, names: dict[str, str]) -> Any:
    if isinstance(body, str):
        for name, value in names.items():
            body = body.replace("{" + name + "}", value)
        return body
    if isinstance(body, list):
        return [_fill_body(item, names) for item in body]
    if isinstance(body, dict):
        return {k: _fill_body(v, names) for k, v in body.items()}
    return body


async def _add_other_account_edge_token(store_path: Path) -> str:
    # No API makes a token of another account (that is the point); the store can.
    store = SQLiteStore(store_path)
    try:
        token_id, token = generate_token()
        record = make_record(token, token_id, OTHER_ACCOUNT, "other edge", now=0, edge=True)
        await store.add_token(record)
    finally:
        await store.close()
    return token


@pytest.fixture(scope="module")
def origin_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A ``pullkv serve`` with namespaces A and B, key ``k`` in both, and a token of each kind."""
    data = Path(tmp_path_factory.mktemp("matrix")) / "data"
    origin = ServerProcess(data, args=TEST_SERVER_ARGS).start()
    origin.stop()
    other_edge = asyncio.run(_add_other_account_edge_token(data / "pullkv.sqlite3"))
    origin.start()
    try:
        with httpx.Client(base_url=origin.namespaces_url, headers=origin.headers()) as http:
            names = {"account": origin.account_id}
            for name in ("A", "B"):
                created = http.post("", json={"title": f"matrix-{name}"}).json()["result"]
                names[name] = created["id"]
                assert http.put(f"/{created['id']}/values/k", content=b"v").status_code == 200
        tokens: dict[str, str | None] = {}
        for kind, body in KIND_BODIES.items():
            made = _create_token(origin, {"name": kind, **_fill_body(body, names)})
            tokens[kind] = str(made["value"])
        revoked = _create_token(origin, {"name": "revoked"})
        response = httpx.delete(
            f"{origin.api}/accounts/{origin.account_id}/tokens/{revoked['id']}",
            headers=origin.headers(),
        )
        assert response.status_code == 200, response.text
        tokens["revoked token"] = str(revoked["value"])
        tokens["edge token of another account"] = other_edge
        tokens["bootstrap admin (admin + edge)"] = origin.admin_token
        tokens["no token"] = None
        yield World(origin.url, origin, names, tokens)
    finally:
        origin.stop()


@pytest.fixture(scope="module")
def edge_world(origin_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """An edge in front of the origin, with the origin's bootstrap token as its upstream token."""
    origin = origin_world.origin
    edge = EdgeProcess(
        Path(tmp_path_factory.mktemp("matrix-edge")),
        origin.url,
        origin.admin_token,
        origin.master_key,
    ).start()
    try:
        yield World(edge.url, origin, origin_world.names, origin_world.tokens)
    finally:
        edge.stop()


# Request bodies by route family; a family that is not here sends no body.
def _fetch(names: dict[str, str]) -> dict[str, Any]:
    return wire.FetchRequest(names["account"], names["A"], (("k", None),), None).to_wire()


def _delete(names: dict[str, str], key: str) -> dict[str, Any]:
    return wire.DeleteRequest(names["account"], names["A"], (key,)).to_wire()


def _record(account_id: str) -> TokenRecord:
    token_id, token = generate_token()
    return make_record(token, token_id, account_id, "added", now=0)


def _victim(world: World, body: dict[str, Any]) -> str:
    return str(_create_token(world.origin, {"name": "victim", **body})["id"])


def _scratch(world: World) -> str:
    response = httpx.post(
        world.origin.namespaces_url,
        json={"title": f"scratch-{uuid.uuid4().hex[:12]}"},
        headers=world.admin(),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["id"])


JSON_BODIES: dict[str, Callable[[World], Any]] = {
    "namespace create": lambda w: {"title": f"made-{uuid.uuid4().hex[:12]}"},
    "namespace rename": lambda w: {"title": f"matrix-A-{uuid.uuid4().hex[:12]}"},
    "bulk get": lambda w: {"keys": ["k"]},
    "bulk put": lambda w: [{"key": "bulk", "value": "v"}],
    "bulk delete": lambda w: ["gone"],
    "bulk delete (DELETE form)": lambda w: ["gone"],
    "tokens create: read-only, limited to A": lambda w: {
        "read_only": True,
        "namespaces": [w.names["A"]],
    },
    "tokens create: read-write, limited to A": lambda w: {"namespaces": [w.names["A"]]},
    "tokens create: read-only, every namespace": lambda w: {"read_only": True},
    "tokens create: read-write, every namespace": lambda w: {},
    "tokens create: admin": lambda w: {"admin": True},
    "tokens create: edge": lambda w: {"edge": True},
    "internal read": lambda w: _fetch(w.names),
    "internal list": lambda w: wire.ListRequest(
        w.names["account"], w.names["A"], "", None, 10
    ).to_wire(),
    "internal delete": lambda w: _delete(w.names, "gone"),
    "internal namespaces list": lambda w: wire.NamespaceListRequest(
        w.names["account"], "title", False, 0, 10, None
    ).to_wire(),
    "internal namespace create": lambda w: {
        "namespace": {
            "id": uuid.uuid4().hex,
            "account_id": w.names["account"],
            "title": f"internal-{uuid.uuid4().hex[:12]}",
            "jurisdiction": None,
        }
    },
    "internal tokens list": lambda w: wire.TokenListRequest(w.names["account"]).to_wire(),
    "internal token add: read-write": lambda w: {
        "token": wire.token_to_wire(_record(w.names["account"]))
    },
    "internal token revoke: read-write": lambda w: wire.TokenRevokeRequest(
        w.names["account"], _victim(w, {})
    ).to_wire(),
    "internal keyring": lambda w: {},
    "binding bulk get": lambda w: {"keys": ["k"]},
}
RAW_BODIES: dict[str, Callable[[World], bytes]] = {
    "value write": lambda w: b"v",
    "value write, another namespace": lambda w: b"v",
    "binding write": lambda w: b"v",
    "internal write": lambda w: wire.WriteRequest(
        w.names["account"],
        w.names["A"],
        (SealedWrite("raw", b"opaque to this test", None, None),),
    ).to_wire(),
}
VICTIMS: dict[str, dict[str, Any]] = {
    "tokens revoke: read-only, limited to A": {"read_only": True, "namespaces": ["{A}"]},
    "tokens revoke: read-write, every namespace": {},
    "tokens revoke: admin": {"admin": True},
}


def expected(row: Row, kind: str, node: str) -> str:
    """The table's cell, as it applies at ``node``."""
    cell = row.cells[kind]
    # An edge knows only the tokens of its upstream token's account (docs/security.md).
    if (
        node == "edge"
        and kind == "edge token of another account"
        and row.cells["no token"] != "yes"
    ):
        return "401"
    return cell


def call(world: World, row: Row, kind: str) -> httpx.Response:
    """Make the row's request with a token of ``kind``."""
    names = dict(world.names)
    if "{scratch}" in row.path:
        names["scratch"] = _scratch(world)
    if "{victim}" in row.path:
        names["victim"] = _victim(world, _fill_body(VICTIMS[row.family], world.names))
    path = row.path
    for name, value in names.items():
        path = path.replace("{" + name + "}", value)
    headers: dict[str, str] = {}
    token = world.tokens[kind]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if row.namespace is not None:
        headers["X-PullKV-Namespace"] = world.fill(row.namespace)
    content: bytes | None = None
    json_body: Any = None
    if row.family in RAW_BODIES:
        content = RAW_BODIES[row.family](world)
        if row.family.startswith("internal"):
            headers["Content-Type"] = wire.CONTENT_TYPE
    elif row.family in JSON_BODIES:
        json_body = JSON_BODIES[row.family](world)
    with httpx.stream(
        row.method, world.url + path, headers=headers, content=content, json=json_body, timeout=30
    ) as response:
        if not response.headers.get("content-type", "").startswith("application/x-ndjson"):
            response.read()
            return response
        # The change feed answers with a stream that never ends: its status and first
        # message say enough.
        first = next(response.iter_lines(), "")
        return httpx.Response(response.status_code, text=first, request=response.request)


def check(response: httpx.Response, row: Row, want: str) -> None:
    """The response is what the cell says, with the right error shape when denied."""
    where = f"{row.method} {row.path}: {response.status_code} {response.text[:300]!r}"
    if want == "yes":
        assert response.is_success, where
        return
    assert response.status_code == int(want), where
    if row.namespace is not None:  # the binding protocol: the message is the reason phrase
        if want in ("401", "403"):
            assert response.reason_phrase.startswith("Authentication error"), where
        return
    body = response.json()
    assert body["success"] is False and body["result"] is None, where
    if want in ("401", "403"):
        assert body["errors"][0]["code"] == 10000, where


CASES = [
    pytest.param(row, kind, id=f"{row.family}|{kind}".replace(" ", "-"))
    for row in ROWS
    for kind in KINDS
]


@pytest.mark.parametrize(("row", "kind"), CASES)
def test_origin(origin_world: World, row: Row, kind: str) -> None:
    check(call(origin_world, row, kind), row, expected(row, kind, "serve"))


@pytest.mark.parametrize(("row", "kind"), CASES)
def test_edge(edge_world: World, row: Row, kind: str) -> None:
    check(call(edge_world, row, kind), row, expected(row, kind, "edge"))


def test_the_table_covers_every_kind_and_family() -> None:
    assert set(KINDS) == set(KIND_BODIES) | set(SPECIAL_KINDS)
    families = {row.family for row in ROWS}
    assert len(families) == len(ROWS), "route families are named once"
    for name in (*JSON_BODIES, *RAW_BODIES, *VICTIMS):
        assert name in families, f"{name!r} is not a row of the table any more"
    prefixes = {re.sub(r"\{\w+\}.*", "", row.path) for row in ROWS}
    for wanted in ("/pullkv/v1/", "/metrics", "/healthz", "/client/v4/accounts"):
        assert any(p.startswith(wanted) for p in prefixes), wanted
    assert all(
        cell == "yes" or cell in ("401", "403", "404") for r in ROWS for cell in r.cells.values()
    )


def test_limited_admin_lists_only_tokens_it_could_have_made(origin_world: World) -> None:
    world = origin_world
    limited = world.tokens["namespace-limited admin"]
    mine = _victim(world, {"namespaces": [world.names["A"]], "read_only": True})
    wider = _victim(world, {})
    response = httpx.get(
        f"{world.origin.api}/accounts/{world.names['account']}/tokens",
        headers={"Authorization": f"Bearer {limited}"},
    )
    assert response.status_code == 200, response.text
    listed = {t["id"]: t for t in response.json()["result"]}
    assert mine in listed and wider not in listed
    assert all(not t["admin"] or t["name"] == "namespace-limited admin" for t in listed.values())
    for token in listed.values():
        assert token["namespaces"] is not None


def test_internal_token_lookup_hides_other_accounts(origin_world: World) -> None:
    world = origin_world
    other = str(world.tokens["edge token of another account"])
    edge = str(world.tokens["edge token"])
    bootstrap_id = world.origin.admin_token.split("_")[1]
    other_id = other.split("_")[1]
    for token, token_id, found in (
        (edge, bootstrap_id, True),
        (other, bootstrap_id, False),
        (edge, other_id, False),
        (other, other_id, True),
    ):
        response = httpx.post(
            f"{world.url}/pullkv/v1/tokens/get",
            json=wire.TokenGetRequest(token_id).to_wire(),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        assert (response.json()["token"] is not None) is found, (token_id, response.text)


def test_an_edge_of_another_account_reaches_nothing_here(
    origin_world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    world = origin_world
    origin = world.origin
    other = str(world.tokens["edge token of another account"])
    edge = EdgeProcess(
        Path(tmp_path_factory.mktemp("other-edge")), origin.url, other, origin.master_key
    ).start()
    try:
        as_other = {"Authorization": f"Bearer {other}"}
        for operation, body in (
            ("fetch", _fetch(world.names)),
            ("delete", _delete(world.names, "k")),
            ("tokens/list", wire.TokenListRequest(world.names["account"]).to_wire()),
        ):
            response = httpx.post(f"{edge.url}/pullkv/v1/{operation}", json=body, headers=as_other)
            assert response.status_code == 403, (operation, response.text)
        value_url = (
            f"/client/v4/accounts/{world.names['account']}/storage/kv/namespaces/"
            f"{world.names['A']}/values/k"
        )
        assert httpx.get(edge.url + value_url, headers=as_other).status_code == 403
        # This account's tokens are unknown there.
        bootstrap = {"Authorization": f"Bearer {origin.admin_token}"}
        assert httpx.get(edge.url + value_url, headers=bootstrap).status_code == 401
        assert httpx.get(origin.url + value_url, headers=bootstrap).content == b"v"
    finally:
        edge.stop()
