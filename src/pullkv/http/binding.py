"""The Workers KV binding protocol: what workerd (and so Miniflare and ``wrangler dev``) sends
for each ``env.KV.*`` call of a ``kvNamespace`` binding whose service is a pullkv node.

workerd turns each call into an HTTP request to the binding's service, with the key
percent-encoded in the path and ``?urlencoded=true``. Its external-server settings add
request headers to every request, which is how pullkv learns the namespace and the caller:

- ``X-PullKV-Namespace: <namespace id>`` (its presence marks a binding request), and
- ``Authorization: Bearer <token>`` (the token's account owns the namespace).

Errors carry the human message in the HTTP reason phrase, because that is the text Worker
code sees (``KV PUT failed: 413 Value length of … exceeds limit of 26214400.``).

- get / getWithMetadata: ``GET /<key>?urlencoded=true[&cache_ttl=N]``: 200 with the raw
  value, ``CF-KV-Metadata``, ``CF-Expiration`` and ``CF-Cache-Status``; 404 if missing.
- bulk get: ``POST /bulk/get`` with ``{keys, type?, withMetadata?, cacheTtl?}``: a JSON object
  of ``key: value | {value, metadata} | null``.
- put: ``PUT /<key>?urlencoded=true[&expiration=N][&expiration_ttl=N]``, the value as the
  body, metadata JSON in ``CF-KV-Metadata``.
- delete: ``DELETE /<key>?urlencoded=true``.
- list: ``GET /?key_count_limit=N&prefix=P&cursor=C``: ``{keys: [{name, expiration?,
  metadata?}], list_complete, cursor?}`` with each metadata as JSON text (workerd parses it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pullkv import errors
from pullkv.auth import authorize
from pullkv.backend import CacheInfo
from pullkv.http.asgi import OCTET_TYPE, Request, Response, dump_json
from pullkv.http.rest import (
    etag_header,
    expiration_param,
    parse_bulk_get,
    value_headers,
    wants_strong_read,
    write_condition,
)
from pullkv.http.routes import BINDING, BINDING_ROUTER, NAMESPACE_HEADER, Match, handlers
from pullkv.service import KVService, render_bulk_get
from pullkv.types import TokenRecord, ValueWrite
from pullkv.validate import (
    parse_cache_ttl,
    parse_list_limit,
    resolve_expiration,
    validate_id,
    validate_key,
    validate_metadata_text,
    validate_value_size,
)

TEXT_TYPE = b"text/plain; charset=utf-8"


def cf_cache_status(cache: CacheInfo | None) -> list[tuple[bytes, bytes]]:
    """``CF-Cache-Status`` (what workerd passes on as ``cacheStatus``) for a cached read."""
    if cache is None:
        return []
    if cache.stale:
        status = b"STALE"
    elif cache.hit:
        status = b"UPDATING" if cache.revalidating else b"HIT"
    else:
        status = b"EXPIRED" if cache.forward == "stale" else b"MISS"
    return [(b"cf-cache-status", status)]


def binding_error(error: errors.KVError) -> Response:
    """An error as workerd reads it: the status, and the message as the reason phrase (and
    a refused condition's current ``ETag``)."""
    headers = []
    if isinstance(error, errors.PreconditionFailed) and error.current_version is not None:
        headers.append(etag_header(error.current_version))
    return Response(error.status, error.message.encode(), TEXT_TYPE, headers, reason=error.message)


class BindingAPI:
    """Answers binding-protocol requests over a KV service."""

    def __init__(self, service: KVService) -> None:
        self.service = service
        self.limits = service.limits

    async def dispatch(self, request: Request, token: TokenRecord) -> Response:
        """Route one binding request (the namespace header is already known to be there)."""
        namespace_id = validate_id("namespace", request.header(NAMESPACE_HEADER) or "")
        match = BINDING_ROUTER.resolve(request.method, request.raw_path, request.query)
        route = match.route
        request.route = route.name
        authorize(token, token.account_id, namespace_id=namespace_id, write=route.name in _WRITES)
        return await _HANDLERS[route.handler](self, request, token.account_id, namespace_id, match)

    async def delete(
        self, request: Request, account_id: str, namespace_id: str, match: Match
    ) -> Response:
        """DELETE /<key>: succeeds whether or not the key exists."""
        condition = write_condition(request)
        await self.service.delete(account_id, namespace_id, match.params["key"], condition)
        return Response(200, b"", TEXT_TYPE)

    async def get(
        self, request: Request, account_id: str, namespace_id: str, match: Match
    ) -> Response:
        """GET /<key>: the raw value, its metadata, expiry and cache status."""
        key = match.params["key"]
        cache_ttl = parse_cache_ttl(request.query("cache_ttl"), self.limits)
        # workerd's binding sends no Cache-Control; a client that does gets a strong read.
        strong = wants_strong_read(request.header("cache-control"))
        read = await self.service.read(account_id, namespace_id, key, cache_ttl, strong=strong)
        headers = cf_cache_status(read.cache)
        entry = read.entry
        if entry is None:
            return Response(404, b"", TEXT_TYPE, headers, reason="Not Found")
        headers += value_headers(
            entry.expiration, entry.metadata_json, b"cf-expiration", entry.version
        )
        return Response(200, entry.value, OCTET_TYPE, headers)

    async def put(
        self, request: Request, account_id: str, namespace_id: str, match: Match
    ) -> Response:
        """PUT /<key>: the body is the value, metadata in ``CF-KV-Metadata``."""
        key = validate_key(match.params["key"], self.limits)
        expiration = resolve_expiration(
            expiration_param("expiration", request.query("expiration")),
            expiration_param("expiration_ttl", request.query("expiration_ttl")),
            self.service.clock(),
            self.limits,
        )
        metadata = request.header("cf-kv-metadata")
        metadata_json = None
        if metadata is not None:
            # Header values arrive as latin-1 text; JSON from workerd is UTF-8 bytes.
            metadata_json = validate_metadata_text(
                metadata.encode("latin-1").decode("utf-8", errors="strict"), self.limits
            )
        max_value = self.limits.max_value_bytes
        value = await request.body(max_value, lambda n: errors.value_too_large(n, max_value))
        validate_value_size(len(value), self.limits)
        version = await self.service.put(
            account_id,
            namespace_id,
            ValueWrite(key, value, metadata_json, expiration),
            write_condition(request),
        )
        return Response(200, b"", TEXT_TYPE, [etag_header(version)])

    async def list_keys(
        self, request: Request, account_id: str, namespace_id: str, match: Match
    ) -> Response:
        """GET /: one page of key names, metadata as JSON text."""
        page = await self.service.list_keys(
            account_id,
            namespace_id,
            prefix=request.query("prefix") or "",
            limit=parse_list_limit(request.query("key_count_limit"), self.limits),
            cursor=request.query("cursor") or None,
        )
        keys: list[dict[str, Any]] = []
        for info in page.keys:
            item: dict[str, Any] = {"name": info.name}
            if info.expiration is not None:
                item["expiration"] = info.expiration
            if info.metadata_json is not None:
                item["metadata"] = info.metadata_json  # workerd parses the JSON text
            keys.append(item)
        body: dict[str, Any] = {"keys": keys, "list_complete": page.cursor is None}
        if page.cursor is not None:
            body["cursor"] = page.cursor
        return Response(200, dump_json(body))

    async def bulk_get(
        self, request: Request, account_id: str, namespace_id: str, match: Match
    ) -> Response:
        """POST /bulk/get: several keys' values (and metadata) as JSON."""
        body = await request.json(self.limits.json_body_max_bytes)
        keys, kind, with_metadata = parse_bulk_get(body)
        cache_ttl = parse_cache_ttl(_text(body.get("cacheTtl")), self.limits)
        entries = await self.service.get_many(account_id, namespace_id, keys, cache_ttl)
        values = render_bulk_get(entries, kind, with_metadata, self.limits)
        if with_metadata:
            # The binding's result objects are {value, metadata}; the REST API also says
            # when the key expires.
            for item in values.values():
                if isinstance(item, dict):
                    item.pop("expiration", None)
        return Response(200, json.dumps(values, separators=(",", ":")).encode())


Handler = Callable[[BindingAPI, Request, str, str, Match], Awaitable[Response]]
# Each binding route runs the BindingAPI method its handler names.
_HANDLERS: dict[str, Handler] = handlers(BINDING, vars(BindingAPI))
_WRITES = frozenset({"binding.put", "binding.delete"})


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw if isinstance(raw, str) else str(raw)
