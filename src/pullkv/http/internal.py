"""The internal API between tiers, under ``/pullkv/v1/``: what an edge asks its upstream.

Every node serves it over its own backend, so an edge can stand in front of an origin or of
another edge (a regional tier). Callers need an edge token, and reach only that token's
account: every account id a message names is checked against it, token records of other
accounts read as unknown, and tokens are added or revoked only as the edge token itself could
(``auth.creation_refusal``). Requests are POSTs with a JSON body, or the framed format of
``pullkv.wire`` where sealed values travel.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pullkv import errors, wire
from pullkv.auth import authorize_creation, authorize_internal
from pullkv.backend import Backend
from pullkv.http.asgi import Request, Response, dump_json
from pullkv.types import TokenRecord

PREFIX = "/pullkv/v1/"
_FRAMED = wire.CONTENT_TYPE.encode()

Operation = Callable[[Backend, Request, TokenRecord], Awaitable[Response]]


def _json(payload: Any) -> Response:
    return Response(200, dump_json(payload))


def _framed(body: bytes) -> Response:
    return Response(200, body, _FRAMED)


async def _body(request: Request, limit: int) -> Any:
    return await request.json(limit)


def _field(body: Any, name: str) -> Any:
    if not isinstance(body, dict) or name not in body:
        raise errors.bad_request(f"internal request lacks {name!r}")
    return body[name]


def _account(body: Any, token: TokenRecord) -> str:
    """The message's account id, once the edge token is known to be valid for it."""
    return authorize_internal(token, _field(body, "a"))


async def _fetch(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 20)
    account_id = _account(body, token)
    keys = [(str(k), None if v is None else int(v)) for k, v in _field(body, "keys")]
    answers = await backend.fetch(account_id, _field(body, "n"), keys, body.get("ttl"))
    return _framed(wire.pack_fetched(answers))


async def _list(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 20)
    rows = await backend.list_keys(
        _account(body, token),
        _field(body, "n"),
        _field(body, "prefix"),
        body.get("after"),
        int(_field(body, "limit")),
    )
    return _framed(wire.pack_listed(rows))


async def _write(backend: Backend, request: Request, token: TokenRecord) -> Response:
    raw = await request.body(1 << 31, lambda n: errors.request_too_large(1 << 31))
    try:
        header, writes = wire.unpack_writes(raw)
    except wire.WireError as exc:
        raise errors.bad_request(f"internal write: {exc}") from None
    result = await backend.write(_account(header, token), header["n"], writes)
    return _json({"versions": result.versions, "refused": result.refused})


async def _delete(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 27)
    account_id = _account(body, token)
    result = await backend.delete(account_id, _field(body, "n"), _field(body, "keys"))
    return _json({"versions": result.versions, "refused": result.refused})


async def _namespace(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 16)
    account_id = _account(body, token)
    found = await backend.namespace(account_id, _field(body, "n"), _field(body, "op"))
    return _json(wire.namespace_to_wire(found))


async def _namespaces_list(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 20)
    items, total = await backend.list_namespaces(
        _account(body, token),
        "id" if body.get("order") == "id" else "title",
        bool(body.get("desc")),
        int(_field(body, "offset")),
        int(_field(body, "limit")),
        body.get("only"),
    )
    return _json({"items": [wire.namespace_to_wire(n) for n in items], "total": total})


async def _namespaces_create(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 16)
    namespace = wire.namespace_from_wire(_field(body, "namespace"))
    authorize_internal(token, namespace.account_id)
    created = await backend.create_namespace(namespace)
    return _json(wire.namespace_to_wire(created))


async def _namespaces_rename(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 16)
    renamed = await backend.rename_namespace(
        _account(body, token), _field(body, "n"), _field(body, "title")
    )
    return _json(wire.namespace_to_wire(renamed))


async def _namespaces_delete(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 16)
    await backend.delete_namespace(_account(body, token), _field(body, "n"))
    return _json({})


async def _token_get(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 16)
    record = await backend.get_token(str(_field(body, "id")))
    if record is not None and record.account_id != token.account_id:
        record = None  # another account's token is unknown to this edge, as if absent
    return _json({"token": None if record is None else wire.token_to_wire(record)})


async def _token_add(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 16)
    record = wire.token_from_wire(_field(body, "token"))
    # The edge checked its client's rights; this node checks the edge's own, so a token made
    # through an edge is within both.
    authorize_creation(token, record)
    await backend.add_token(record)
    return _json({})


async def _token_list(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 16)
    records = await backend.list_tokens(_account(body, token))
    return _json({"tokens": [wire.token_to_wire(r) for r in records]})


async def _token_revoke(backend: Backend, request: Request, token: TokenRecord) -> Response:
    body = await _body(request, 1 << 16)
    account_id = _account(body, token)
    token_id = str(_field(body, "id"))
    target = await backend.get_token(token_id)
    if target is None or target.account_id != account_id:
        return _json({"revoked": False})
    authorize_creation(token, target)
    revoked = await backend.revoke_token(account_id, token_id)
    return _json({"revoked": revoked})


async def _keyring(backend: Backend, request: Request, token: TokenRecord) -> Response:
    keys = await backend.data_keys()
    return _json({"keys": [[key_id, base64.b64encode(w).decode()] for key_id, w in keys]})


OPERATIONS: dict[str, Operation] = {
    "fetch": _fetch,
    "list": _list,
    "write": _write,
    "delete": _delete,
    "namespace": _namespace,
    "namespaces/list": _namespaces_list,
    "namespaces/create": _namespaces_create,
    "namespaces/rename": _namespaces_rename,
    "namespaces/delete": _namespaces_delete,
    "tokens/get": _token_get,
    "tokens/add": _token_add,
    "tokens/list": _token_list,
    "tokens/revoke": _token_revoke,
    "keyring": _keyring,
}


ROUTES = frozenset({*(f"internal.{name}" for name in OPERATIONS), "internal.unknown"})


def route_name(path: str) -> str:
    """The metrics label of an internal path: its operation, or one name for every unknown
    path (so made-up paths add no series)."""
    name = path[len(PREFIX) :]
    return f"internal.{name}" if name in OPERATIONS else "internal.unknown"


async def dispatch(backend: Backend, request: Request, token: TokenRecord) -> Response:
    """Run one internal operation for an edge token."""
    if not token.edge:
        raise errors.permission_denied("the internal API needs an edge token")
    operation = OPERATIONS.get(request.raw_path[len(PREFIX) :])
    if operation is None:
        raise errors.no_route(request.raw_path)
    if request.method != "POST":
        raise errors.method_not_allowed(request.method)
    try:
        return await operation(backend, request, token)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, errors.KVError):
            raise
        raise errors.bad_request(f"malformed internal request: {exc}") from None
