"""The internal API between tiers, under ``/pullkv/v1/``: what an edge asks its upstream.

Every node serves it over its own backend, so an edge can stand in front of an origin or of
another edge (a regional tier). Callers need an edge token, and reach only that token's
account: every account id a message names is checked against it, token records of other
accounts read as unknown, and tokens are added or revoked only as the edge token itself could
(``auth.creation_refusal``). Requests are POSTs carrying a message of ``pullkv.wire`` (JSON,
or framed where sealed values travel), decoded and checked there before anything else.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pullkv import errors, wire
from pullkv.auth import authorize_creation, authorize_internal
from pullkv.backend import Backend
from pullkv.feed.stream import FEED_TYPE, feed_stream
from pullkv.http.asgi import Request, Response, StreamingResponse, dump_json
from pullkv.http.routes import INTERNAL, INTERNAL_ROUTER, INTERNAL_UNKNOWN, handlers, label
from pullkv.limits import DEFAULT_LIMITS
from pullkv.types import TokenRecord
from pullkv.validate import validate_feed_position

_FRAMED = wire.CONTENT_TYPE.encode()

Operation = Callable[[Backend, Request, TokenRecord], Awaitable[Response]]


def _json(payload: Any) -> Response:
    return Response(200, dump_json(payload))


def _framed(body: bytes) -> Response:
    return Response(200, body, _FRAMED)


# Caps from the limits every node shares: those a server may change (the expiration floor,
# the write rate) do not enter them.
_JSON_CAP = DEFAULT_LIMITS.internal_json_max_bytes
_DELETE_CAP = DEFAULT_LIMITS.internal_delete_max_bytes
_WRITE_CAP = DEFAULT_LIMITS.internal_write_max_bytes


async def _message(request: Request, cap: int = _JSON_CAP) -> object:
    """The body as JSON, for a message type of ``pullkv.wire`` to decode and check."""
    return await request.json(cap)


async def _fetch(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.FetchRequest.from_wire(await _message(request))
    answers = await backend.fetch(
        authorize_internal(token, message.account_id),
        message.namespace_id,
        message.keys,
        message.cache_ttl,
        revalidate=message.revalidate,
    )
    return _framed(wire.FetchResponse(answers).to_wire())


async def _list(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.ListRequest.from_wire(await _message(request))
    rows = await backend.list_keys(
        authorize_internal(token, message.account_id),
        message.namespace_id,
        message.prefix,
        message.after,
        message.limit,
    )
    return _framed(wire.ListResponse(tuple(rows)).to_wire())


async def _write(backend: Backend, request: Request, token: TokenRecord) -> Response:
    raw = await request.body(_WRITE_CAP, lambda _: errors.request_too_large(_WRITE_CAP))
    message = wire.WriteRequest.from_wire(raw)
    account_id = authorize_internal(token, message.account_id)
    result = await backend.write(account_id, message.namespace_id, message.writes)
    return _json(wire.WriteResponse(result).to_wire())


async def _delete(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.DeleteRequest.from_wire(await _message(request, _DELETE_CAP))
    account_id = authorize_internal(token, message.account_id)
    result = await backend.delete(account_id, message.namespace_id, message.keys, message.condition)
    return _json(wire.WriteResponse(result).to_wire())


async def _namespace(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.NamespaceRequest.from_wire(await _message(request))
    account_id = authorize_internal(token, message.account_id)
    found = await backend.namespace(account_id, message.namespace_id, message.operation)
    return _json(wire.NamespaceResponse(found).to_wire())


async def _namespaces_list(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.NamespaceListRequest.from_wire(await _message(request))
    items, total = await backend.list_namespaces(
        authorize_internal(token, message.account_id),
        message.order,
        message.descending,
        message.offset,
        message.limit,
        message.only,
    )
    return _json(wire.NamespacePage(tuple(items), total).to_wire())


async def _namespaces_create(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.NamespaceCreateRequest.from_wire(await _message(request))
    authorize_internal(token, message.namespace.account_id)
    created = await backend.create_namespace(message.namespace)
    return _json(wire.NamespaceResponse(created).to_wire())


async def _namespaces_rename(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.NamespaceRenameRequest.from_wire(await _message(request))
    account_id = authorize_internal(token, message.account_id)
    renamed = await backend.rename_namespace(account_id, message.namespace_id, message.title)
    return _json(wire.NamespaceResponse(renamed).to_wire())


async def _namespaces_delete(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.NamespaceDeleteRequest.from_wire(await _message(request))
    await backend.delete_namespace(
        authorize_internal(token, message.account_id), message.namespace_id
    )
    return _json({})


async def _namespaces_stats(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.NamespaceStatsRequest.from_wire(await _message(request))
    stats = await backend.namespace_stats(
        authorize_internal(token, message.account_id), message.namespace_id
    )
    return _json(wire.NamespaceStatsResponse(stats).to_wire())


async def _token_get(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.TokenGetRequest.from_wire(await _message(request))
    record = await backend.get_token(message.token_id)
    if record is not None and record.account_id != token.account_id:
        record = None  # another account's token is unknown to this edge, as if absent
    return _json(wire.TokenResponse(record).to_wire())


async def _token_add(backend: Backend, request: Request, token: TokenRecord) -> Response:
    record = wire.TokenAddRequest.from_wire(await _message(request)).token
    # The edge checked its client's rights; this node checks the edge's own, so a token made
    # through an edge is within both.
    authorize_creation(token, record)
    await backend.add_token(record)
    return _json({})


async def _token_list(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.TokenListRequest.from_wire(await _message(request))
    records = await backend.list_tokens(authorize_internal(token, message.account_id))
    return _json(wire.TokenListResponse(tuple(records)).to_wire())


async def _token_revoke(backend: Backend, request: Request, token: TokenRecord) -> Response:
    message = wire.TokenRevokeRequest.from_wire(await _message(request))
    account_id = authorize_internal(token, message.account_id)
    target = await backend.get_token(message.token_id)
    if target is None or target.account_id != account_id:
        return _json(wire.RevokeResponse(False).to_wire())
    authorize_creation(token, target)
    revoked = await backend.revoke_token(account_id, message.token_id)
    return _json(wire.RevokeResponse(revoked).to_wire())


async def _changes(backend: Backend, request: Request, token: TokenRecord) -> Response:
    """The change feed of the token's account, as a stream of JSON lines
    (``pullkv.feed.stream``)."""
    source = backend.feed
    if source is None:
        raise errors.feed_unavailable()
    since = validate_feed_position(request.query("since"))
    stream = feed_stream(source, token.account_id, since, request.query("feed"), source.policy)
    return StreamingResponse(stream, request.receive, FEED_TYPE)


async def _keyring(backend: Backend, request: Request, token: TokenRecord) -> Response:
    keys = await backend.data_keys()
    return _json(wire.KeyringResponse(tuple(keys)).to_wire())


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
    "namespaces/stats": _namespaces_stats,
    "tokens/get": _token_get,
    "tokens/add": _token_add,
    "tokens/list": _token_list,
    "tokens/revoke": _token_revoke,
    "keyring": _keyring,
    "changes": _changes,
}


# Each internal route (pullkv.http.routes.INTERNAL) runs the operation its handler names.
_HANDLERS = handlers(INTERNAL, OPERATIONS)


def route_name(path: str) -> str:
    """The metrics label of an internal path: its operation, or one name for every unknown
    path (so made-up paths add no series)."""
    return label(INTERNAL_ROUTER, path, INTERNAL_UNKNOWN)


async def dispatch(backend: Backend, request: Request, token: TokenRecord) -> Response:
    """Run one internal operation for an edge token."""
    if not token.edge:
        raise errors.permission_denied("the internal API needs an edge token")
    operation = _HANDLERS[INTERNAL_ROUTER.resolve(request.method, request.raw_path).route.handler]
    try:
        return await operation(backend, request, token)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, errors.KVError):
            raise
        raise errors.bad_request(f"malformed internal request: {exc}") from None
