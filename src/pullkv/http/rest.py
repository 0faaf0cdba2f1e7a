"""The Cloudflare v4 REST API for KV, under ``/client/v4/accounts/{account_id}``.

Its routes are rows of :data:`pullkv.http.routes.REST`, each naming the RestAPI method it
runs; the router works on the raw path, so a key's ``%2F`` stays part of the key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pullkv import errors
from pullkv.auth import (
    Authenticator,
    authorize,
    authorize_creation,
    generate_token,
    make_record,
    may_create,
)
from pullkv.backend import CacheInfo
from pullkv.feed.log import FeedSource
from pullkv.feed.stream import FEED_TYPE, feed_stream
from pullkv.http.asgi import (
    OCTET_TYPE,
    Request,
    Response,
    StreamingResponse,
    envelope,
    error_response,
)
from pullkv.http.multipart import parse_form
from pullkv.http.routes import REST, REST_ROUTER, handlers
from pullkv.service import BulkType, KVService, render_bulk_get
from pullkv.types import TokenRecord, ValueWrite, WriteCondition, format_etag, parse_etag
from pullkv.validate import (
    metadata_from_object,
    parse_cache_ttl,
    parse_int,
    parse_list_limit,
    resolve_expiration,
    validate_feed_position,
    validate_id,
    validate_key,
    validate_metadata_text,
    validate_prefix,
    validate_value_size,
)


@dataclass(slots=True)
class Call:
    """A routed request: who asks, for which account, namespace and key."""

    request: Request
    token: TokenRecord
    account_id: str
    namespace_id: str = ""
    key: str = ""
    token_id: str = ""


Handler = Callable[["RestAPI", Call], Awaitable[Response]]


def header_json(metadata_json: str) -> bytes:
    """Metadata re-serialised as ASCII-only JSON, safe in an HTTP header.

    DEL, the one ASCII control character JSON leaves unescaped, is escaped too: it is not
    allowed in a header value (RFC 9110 field-vchar) and strict clients refuse it.
    """
    text = json.dumps(json.loads(metadata_json), separators=(",", ":"))
    return text.replace("\x7f", "\\u007f").encode("ascii")


def etag_header(version: int) -> tuple[bytes, bytes]:
    """``ETag: "<version>"``: the entry's version, a strong validator."""
    return (b"etag", b'"%d"' % version)


def value_headers(
    expiration: int | None, metadata_json: str | None, expiration_header: bytes, version: int
) -> list[tuple[bytes, bytes]]:
    """A value's ETag, expiry and metadata headers (``expiration`` over REST,
    ``CF-Expiration`` for the binding protocol; ``ETag`` and ``CF-KV-Metadata`` for both)."""
    headers = [etag_header(version)]
    if expiration is not None:
        headers.append((expiration_header, str(expiration).encode()))
    if metadata_json is not None:
        headers.append((b"cf-kv-metadata", header_json(metadata_json)))
    return headers


def wants_strong_read(cache_control: str | None) -> bool:
    """Whether a request's ``Cache-Control`` has ``no-cache``: answer with the origin's
    current version, not a cached one (RFC 9111 section 5.2.1.4)."""
    if cache_control is None:
        return False
    return any(
        part.split("=", 1)[0].strip().lower() == "no-cache" for part in cache_control.split(",")
    )


def write_condition(request: Request) -> WriteCondition | None:
    """A write's ``If-Match: "<version>"`` or ``If-None-Match: *`` (RFC 9110 section 13.1),
    or None; 400 for anything else, since a condition we cannot read must not be ignored."""
    if_match = request.header("if-match")
    if_none_match = request.header("if-none-match")
    if if_match is not None and if_none_match is not None:
        raise errors.bad_request("Give If-Match or If-None-Match, not both")
    if if_match is not None:
        version = parse_etag(if_match)
        if version is None:
            raise errors.bad_request(
                f'Invalid If-Match {if_match!r}: expected one ETag such as "1234"'
            )
        return WriteCondition(version=version)
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise errors.bad_request(
                f"Invalid If-None-Match {if_none_match!r}: only * is supported on writes"
            )
        return WriteCondition(absent=True)
    return None


def cache_headers(cache: CacheInfo | None, cache_name: str) -> list[tuple[bytes, bytes]]:
    """``Cache-Status`` and ``Age`` for a read a cache answered."""
    if cache is None:
        return []
    return [
        (b"cache-status", cache.header(cache_name).encode()),
        (b"age", str(max(cache.age, 0)).encode()),
    ]


def _one_of(name: str, raw: str | None, allowed: tuple[str, ...], default: str) -> str:
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise errors.bad_request(f"Invalid {name} {raw!r}: expected one of {', '.join(allowed)}")
    return raw


def _positive(name: str, raw: str | None, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    return parse_int(name, raw, (1, maximum))


def expiration_param(name: str, raw: Any) -> int | None:
    """An expiration field from a query or a JSON body: an integer or a numeric string."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise errors.bad_request(f"Invalid {name} of {raw!r}: expected an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        return parse_int(name, raw)
    raise errors.bad_request(f"Invalid {name} of {raw!r}: expected an integer")


class RestAPI:
    """Route handlers over a KVService."""

    def __init__(
        self, service: KVService, authenticator: Authenticator, cache_name: str = "pullkv"
    ) -> None:
        self.service = service
        self.cache_name = cache_name
        self.authenticator = authenticator
        self.limits = service.limits
        # The node's change feed, watched by applications (set by the app: a store's feed
        # at an origin, the upstream's relayed at an edge; None when it follows none).
        self.feed: FeedSource | None = None

    async def dispatch(self, request: Request, token: TokenRecord) -> Response:
        """Route a request under the accounts prefix and run its handler."""
        match = REST_ROUTER.resolve(request.method, request.raw_path)
        params = match.params
        call = Call(
            request,
            token,
            params["account_id"],
            params.get("namespace_id", ""),
            params.get("key", ""),
            params.get("token_id", ""),
        )
        request.route = match.route.name
        return await _HANDLERS[match.route.handler](self, call)

    # Namespaces.
    async def list_namespaces(self, call: Call) -> Response:
        """GET namespaces: page, per_page (clamped to 1,000), order, direction."""
        request = call.request
        authorize(call.token, call.account_id)
        most = self.limits.max_integer_param
        page = _positive("page", request.query("page"), 1, most)
        per_page = min(
            _positive(
                "per_page", request.query("per_page"), self.limits.namespaces_default_per_page, most
            ),
            self.limits.namespaces_max_per_page,
        )
        order = _one_of("order", request.query("order"), ("id", "title"), "title")
        direction = _one_of("direction", request.query("direction"), ("asc", "desc"), "asc")
        namespaces, total = await self.service.list_namespaces(
            call.account_id,
            page=page,
            per_page=per_page,
            order="id" if order == "id" else "title",
            descending=direction == "desc",
            only=call.token.namespaces,
        )
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(namespaces),
            "total_count": total,
            "total_pages": (total + per_page - 1) // per_page,
        }
        return envelope([n.to_api() for n in namespaces], info)

    async def create_namespace(self, call: Call) -> Response:
        """POST namespaces: {"title", "jurisdiction"?}."""
        authorize(call.token, call.account_id, write=True, account_wide=True)
        body = await call.request.json(self.limits.json_body_max_bytes)
        if not isinstance(body, dict) or "title" not in body:
            raise errors.bad_request('Request body must be a JSON object with a "title"')
        namespace = await self.service.create_namespace(
            call.account_id, body["title"], body.get("jurisdiction")
        )
        return envelope(namespace.to_api())

    async def get_namespace(self, call: Call) -> Response:
        """GET namespaces/{id}."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id)
        namespace = await self.service.namespace(
            call.account_id, call.namespace_id, "get namespace"
        )
        return envelope(namespace.to_api())

    async def namespace_stats(self, call: Call) -> Response:
        """GET namespaces/{id}/pullkv/stats (pullkv's own): live keys, their stored value
        bytes (sealed, so a little more than the plaintext) and how many expire."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id)
        stats = await self.service.namespace_stats(call.account_id, call.namespace_id)
        return envelope(
            {"keys": stats.keys, "value_bytes": stats.value_bytes, "expiring": stats.expiring}
        )

    async def watch_changes(self, call: Call) -> Response:
        """GET namespaces/{id}/changes?since=&feed=&prefix= (pullkv's own): the namespace's
        change feed, for applications that watch keys (docs/api.md)."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id)
        if self.feed is None:
            raise errors.feed_unavailable()
        request = call.request
        since = validate_feed_position(request.query("since"))
        prefix = validate_prefix(request.query("prefix") or "", self.limits)
        await self.service.namespace(call.account_id, call.namespace_id, "changes")
        stream = feed_stream(
            self.feed,
            call.account_id,
            since,
            request.query("feed"),
            self.feed.policy,
            namespace_id=call.namespace_id,
            prefix=prefix,
        )
        return StreamingResponse(stream, request.receive, FEED_TYPE)

    async def rename_namespace(self, call: Call) -> Response:
        """PUT namespaces/{id}: {"title"}."""
        authorize(call.token, call.account_id, write=True, account_wide=True)
        body = await call.request.json(self.limits.json_body_max_bytes)
        if not isinstance(body, dict) or "title" not in body:
            raise errors.bad_request('Request body must be a JSON object with a "title"')
        namespace = await self.service.rename_namespace(
            call.account_id, call.namespace_id, body["title"]
        )
        return envelope(namespace.to_api())

    async def delete_namespace(self, call: Call) -> Response:
        """DELETE namespaces/{id}: the namespace and all its keys."""
        authorize(call.token, call.account_id, write=True, account_wide=True)
        await self.service.delete_namespace(call.account_id, call.namespace_id)
        return envelope(None)

    # Values.
    async def get_value(self, call: Call) -> Response:
        """GET values/{key}: the raw bytes, with ``expiration``, ``Cache-Status`` and ``Age``."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id)
        cache_ttl = parse_cache_ttl(call.request.query("cache_ttl"), self.limits)
        strong = wants_strong_read(call.request.header("cache-control"))
        read = await self.service.read(
            call.account_id, call.namespace_id, call.key, cache_ttl, strong=strong
        )
        headers = cache_headers(read.cache, self.cache_name)
        entry = read.entry
        if entry is None:
            missing = error_response(errors.key_not_found("get"))
            missing.headers += headers
            return missing
        headers += value_headers(
            entry.expiration, entry.metadata_json, b"expiration", entry.version
        )
        return Response(200, entry.value, OCTET_TYPE, headers)

    async def get_metadata(self, call: Call) -> Response:
        """GET metadata/{key}: the key's metadata as JSON (null when it has none)."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id)
        entry = await self.service.get(
            call.account_id, call.namespace_id, call.key, operation="metadata"
        )
        if entry is None:
            raise errors.key_not_found("metadata")
        response = envelope(json.loads(entry.metadata_json) if entry.metadata_json else None)
        response.headers.append(etag_header(entry.version))
        return response

    async def put_value(self, call: Call) -> Response:
        """PUT values/{key}: a raw body, or multipart with ``value`` and ``metadata`` parts."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id, write=True)
        request = call.request
        key = validate_key(call.key, self.limits)
        expiration = resolve_expiration(
            expiration_param("expiration", request.query("expiration")),
            expiration_param("expiration_ttl", request.query("expiration_ttl")),
            self.service.clock(),
            self.limits,
        )
        await self.service.namespace(call.account_id, call.namespace_id, "put")
        max_value = self.limits.max_value_bytes
        content_type = request.header("content-type") or ""
        metadata_json: str | None = None
        if content_type.lower().startswith("multipart/form-data"):
            limit = max_value + self.limits.multipart_overhead_bytes
            body = await request.body(limit, lambda n: errors.value_too_large(n, max_value))
            parts = parse_form(content_type, body)
            if "value" not in parts:
                raise errors.bad_request('multipart/form-data body has no "value" part')
            value = parts["value"].data
            # An empty metadata part means no metadata: the cloudflare SDK sends one for
            # ``metadata=None``.
            if "metadata" in parts and parts["metadata"].data.strip():
                try:
                    text = parts["metadata"].data.decode("utf-8")
                except UnicodeDecodeError:
                    raise errors.invalid_metadata("the metadata part is not UTF-8") from None
                metadata_json = validate_metadata_text(text, self.limits)
        else:
            value = await request.body(max_value, lambda n: errors.value_too_large(n, max_value))
        validate_value_size(len(value), self.limits)
        version = await self.service.put(
            call.account_id,
            call.namespace_id,
            ValueWrite(key, value, metadata_json, expiration),
            write_condition(request),
        )
        response = envelope(None)
        response.headers.append(etag_header(version))
        return response

    async def delete_value(self, call: Call) -> Response:
        """DELETE values/{key}: succeeds whether or not the key exists (unless conditional)."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id, write=True)
        condition = write_condition(call.request)
        version = await self.service.delete(call.account_id, call.namespace_id, call.key, condition)
        response = envelope(None)
        # The delete's version: a client's own cache orders it against the change feed.
        response.headers.append((b"etag", format_etag(version).encode()))
        return response

    # Keys.
    async def list_keys(self, call: Call) -> Response:
        """GET keys: prefix, limit (1..1000), cursor; cursor is "" on the last page."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id)
        request = call.request
        page = await self.service.list_keys(
            call.account_id,
            call.namespace_id,
            prefix=request.query("prefix") or "",
            limit=parse_list_limit(request.query("limit"), self.limits),
            cursor=request.query("cursor") or None,
        )
        result = []
        for info in page.keys:
            item: dict[str, Any] = {"name": info.name}
            if info.expiration is not None:
                item["expiration"] = info.expiration
            if info.metadata_json is not None:
                item["metadata"] = json.loads(info.metadata_json)
            result.append(item)
        return envelope(result, {"count": len(result), "cursor": page.cursor or ""})

    # Bulk.
    async def bulk_put(self, call: Call) -> Response:
        """PUT bulk: an array of {key, value, base64?, expiration?, expiration_ttl?, metadata?}."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id, write=True)
        body = await call.request.json(self.limits.bulk_max_body_bytes)
        if not isinstance(body, list):
            raise errors.bad_request("Request body must be a JSON array of key-value objects")
        if len(body) > self.limits.bulk_write_max_items:
            raise errors.bulk_too_many(len(body), self.limits.bulk_write_max_items)
        now = self.service.clock()
        writes = [self._bulk_item(index, item, now) for index, item in enumerate(body)]
        result = await self.service.bulk_put(call.account_id, call.namespace_id, writes)
        return envelope(result.to_api())

    def _bulk_item(self, index: int, item: Any, now: float) -> ValueWrite:
        try:
            if not isinstance(item, dict):
                raise errors.bad_request("expected an object with key and value")
            key, value = item.get("key"), item.get("value")
            if not isinstance(key, str):
                raise errors.bad_request('"key" must be a string')
            if not isinstance(value, str):
                raise errors.bad_request('"value" must be a string')
            validate_key(key, self.limits)
            use_base64 = item.get("base64", False)
            if not isinstance(use_base64, bool):
                raise errors.bad_request('"base64" must be true or false')
            if use_base64:
                try:
                    raw = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise errors.bad_request('"value" is not valid base64') from None
            else:
                raw = value.encode("utf-8")
            validate_value_size(len(raw), self.limits)
            metadata = None
            if item.get("metadata") is not None:
                metadata = metadata_from_object(item["metadata"], self.limits)
            expiration = resolve_expiration(
                expiration_param("expiration", item.get("expiration")),
                expiration_param("expiration_ttl", item.get("expiration_ttl")),
                now,
                self.limits,
            )
            return ValueWrite(key, raw, metadata, expiration)
        except errors.KVError as exc:
            raise errors.KVError(exc.status, exc.code, f"item {index}: {exc.message}") from None

    async def bulk_delete(self, call: Call) -> Response:
        """POST bulk/delete or DELETE bulk: a JSON array of key names."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id, write=True)
        body = await call.request.json(self.limits.bulk_max_body_bytes)
        if not isinstance(body, list) or not all(isinstance(k, str) for k in body):
            raise errors.bad_request("Request body must be a JSON array of key names (strings)")
        result = await self.service.bulk_delete(call.account_id, call.namespace_id, body)
        return envelope(result.to_api())

    async def bulk_get(self, call: Call) -> Response:
        """POST bulk/get: {"keys": [...], "type": "text"|"json", "withMetadata": bool}."""
        authorize(call.token, call.account_id, namespace_id=call.namespace_id)
        body = await call.request.json(self.limits.json_body_max_bytes)
        keys, kind, with_metadata = parse_bulk_get(body)
        cache_ttl = parse_cache_ttl(call.request.query("cache_ttl"), self.limits)
        entries = await self.service.get_many(call.account_id, call.namespace_id, keys, cache_ttl)
        values = render_bulk_get(entries, kind, with_metadata, self.limits)
        return envelope({"values": values})

    # Tokens (pullkv's own; Cloudflare keeps account tokens under the same path).
    async def list_tokens(self, call: Call) -> Response:
        """GET tokens: the account's tokens, never their secrets.

        A limited admin sees itself and the tokens it could have created (and may revoke).
        """
        authorize(call.token, call.account_id, admin=True)
        tokens = await self.service.backend.list_tokens(call.account_id)
        shown = [t for t in tokens if t.id == call.token.id or may_create(call.token, t)]
        return envelope([t.to_api() for t in shown])

    async def create_token(self, call: Call) -> Response:
        """POST tokens: {name, namespaces?, read_only?, admin?, edge?}; shown once.

        The new token can do no more than the one creating it (``auth.creation_refusal``).
        An edge token lets a pullkv edge use this node's internal API for its account.
        """
        authorize(call.token, call.account_id, admin=True)
        body = await call.request.json(self.limits.json_body_max_bytes)
        if not isinstance(body, dict):
            raise errors.bad_request("Request body must be a JSON object")
        name = body.get("name", "")
        namespaces = body.get("namespaces")
        read_only = body.get("read_only", False)
        admin = body.get("admin", False)
        edge = body.get("edge", False)
        if not isinstance(name, str):
            raise errors.bad_request('"name" must be a string')
        if namespaces is not None:
            if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
                raise errors.bad_request('"namespaces" must be a list of namespace ids')
            for namespace_id in namespaces:
                validate_id("namespace", namespace_id)
        if not all(isinstance(flag, bool) for flag in (read_only, admin, edge)):
            raise errors.bad_request('"read_only", "admin" and "edge" must be true or false')
        token_id, token = generate_token()
        record = make_record(
            token,
            token_id,
            call.account_id,
            name,
            now=int(self.service.clock()),
            namespaces=namespaces,
            read_only=read_only,
            admin=admin,
            edge=edge,
        )
        # Rights first, existence second: a limited admin learns nothing of namespaces
        # outside its own.
        authorize_creation(call.token, record)
        for namespace_id in namespaces or ():
            await self.service.namespace(call.account_id, namespace_id, "create token")
        await self.service.backend.add_token(record)
        return envelope({**record.to_api(), "value": token})

    async def revoke_token(self, call: Call) -> Response:
        """DELETE tokens/{id}: revoke at once; only a token the caller could have created."""
        authorize(call.token, call.account_id, admin=True)
        target = await self.service.backend.get_token(call.token_id)
        if target is None or target.account_id != call.account_id:
            raise errors.token_not_found(call.token_id)
        authorize_creation(call.token, target)
        if not await self.service.backend.revoke_token(call.account_id, call.token_id):
            raise errors.token_not_found(call.token_id)
        self.authenticator.forget(call.token_id)
        return envelope({"id": call.token_id})


# Each REST route runs the RestAPI method of its name.
_HANDLERS: dict[str, Handler] = handlers(REST, vars(RestAPI))


def parse_bulk_get(body: Any) -> tuple[list[str], BulkType, bool]:
    """Validate a bulk get body: keys (strings), type (text|json), withMetadata (bool)."""
    if not isinstance(body, dict):
        raise errors.bad_request('Request body must be a JSON object with "keys"')
    keys = body.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise errors.bad_request('"keys" must be an array of key names (strings)')
    kind = body.get("type", "text")
    if kind is None:
        kind = "text"
    if kind not in ("text", "json"):
        raise errors.bulk_get_bad_type(kind)
    with_metadata = body.get("withMetadata", False)
    if not isinstance(with_metadata, bool):
        raise errors.bad_request('"withMetadata" must be true or false')
    return keys, ("json" if kind == "json" else "text"), with_metadata
