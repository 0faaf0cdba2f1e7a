"""The Python client: ``Client`` (sync) and ``AsyncClient``, over the REST API.

``client.namespace(id_or_title)`` returns an object shaped like a Workers KV binding:
``get``, ``get_with_metadata``, ``put``, ``delete``, ``list``, plus the REST bulk calls.
Each operation is first described as a ``_Call`` (method, path, body, how to read the reply),
so the sync and async clients share every rule and differ only in how they send.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, overload
from urllib.parse import quote

import httpx

from pullkv.errors import APIError, PreconditionFailedError, api_error, error_from_response
from pullkv.localcache import (
    AsyncCachedReads,
    Cached,
    CachedReads,
    LocalCache,
    to_cached,
    value_of,
)
from pullkv.types import parse_etag
from pullkv.watch import AsyncWatch, Watch

T = TypeVar("T")
ValueType = Literal["text", "json", "bytes", "stream"]
_HEX32 = re.compile(r"[0-9a-f]{32}")
_ACCOUNT_ID_HEADER = "x-pullkv-account-id"


@dataclass(frozen=True, slots=True)
class ValueWithMetadata:
    """A value with its metadata (None when it has none) and absolute expiration."""

    value: Any
    metadata: Any
    expiration: int | None = None
    etag: str | None = None  # the entry's version, for put/delete(if_match=...)
    # With a LocalCache: how this read was answered, as a Cache-Status header says it.
    cache_status: str | None = None


@dataclass(frozen=True, slots=True)
class ListResult:
    """One page of a key list, shaped like the Workers binding's result."""

    keys: list[dict[str, Any]]
    list_complete: bool
    cursor: str | None


@dataclass(slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    content: bytes | None = None
    files: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    not_found: Any = ...  # returned instead of raising on 404 when set


def _raise_for(response: httpx.Response) -> None:
    if not response.is_success:
        raise error_from_response(response)


def _etag(response: httpx.Response) -> str | None:
    etag: str | None = response.headers.get("etag")
    return etag


def _condition_headers(if_match: str | None, if_absent: bool) -> dict[str, str]:
    if if_match is not None and if_absent:
        raise ValueError("give if_match or if_absent, not both")
    if if_match is not None:
        return {"if-match": if_match}
    return {"if-none-match": "*"} if if_absent else {}


def _encode_update(value: Any, kind: ValueType) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    if kind == "json":
        return json.dumps(value)
    raise TypeError(f"update's function must return str or bytes, not {type(value).__name__}")


def _result(response: httpx.Response) -> Any:
    return response.json()["result"]


def _decode(data: bytes, kind: ValueType) -> Any:
    if kind == "bytes":
        return data
    text = data.decode("utf-8", errors="replace")
    return json.loads(text) if kind == "json" else text


def _cache_write(
    cache: LocalCache | None,
    namespace_id: str,
    key: str,
    value: str | bytes | None,
    metadata: Any,
    expiration: int | None,
    expiration_ttl: int | None,
    etag: str | None,
) -> None:
    """An acknowledged write, into the local cache (None ``value``: a delete), so the
    writer's next read sees it; without a version to order it by, the key is dropped."""
    if cache is None:
        return
    version = parse_etag(etag or "")
    if not version:
        cache.forget(namespace_id, key)
        return
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if expiration is None and expiration_ttl is not None:
        expiration = int(cache.epoch()) + expiration_ttl
    metadata_json = None if metadata is None else json.dumps(metadata, separators=(",", ":"))
    cache.written(namespace_id, key, raw, metadata_json, expiration, version)


def _refused(cache: LocalCache | None, namespace_id: str, key: str) -> None:
    """A refused condition means the key moved on: the cached version is not the latest."""
    if cache is not None:
        cache.forget(namespace_id, key)


def _with_metadata(cached: Cached, kind: ValueType, status: str) -> ValueWithMetadata:
    """A cached entry as ``get_with_metadata`` returns it."""
    if cached.raw is None:
        return ValueWithMetadata(None, None, cache_status=status)
    etag = f'"{cached.version}"' if cached.version else None
    return ValueWithMetadata(
        value_of(cached, kind), cached.metadata(), cached.expiration, etag, status
    )


def _key_path(key: str) -> str:
    if key in ("", ".", ".."):
        raise ValueError(f"{key!r} cannot be used as a key name in a URL")
    return quote(key, safe="")


def _list_result(response: httpx.Response) -> ListResult:
    body = response.json()
    cursor = (body.get("result_info") or {}).get("cursor") or None
    return ListResult(body["result"], cursor is None, cursor)


class _NamespaceCalls:
    """Descriptions of every namespace operation (shared by the sync and async objects)."""

    def __init__(self, base: str) -> None:
        self._base = base

    @property
    def changes_path(self) -> str:
        """Where the namespace's changes are watched (a pullkv extension)."""
        return f"{self._base}/changes"

    def get_call(self, key: str, kind: ValueType, cache_ttl: int | None) -> _Call[Any]:
        params = {"cache_ttl": str(cache_ttl)} if cache_ttl is not None else {}
        return _Call(
            "GET",
            f"{self._base}/values/{_key_path(key)}",
            lambda r: _decode(r.content, kind),
            params=params,
            not_found=None,
        )

    def get_with_metadata_call(
        self, key: str, kind: ValueType, cache_ttl: int | None
    ) -> _Call[Any]:
        def read(response: httpx.Response) -> ValueWithMetadata:
            raw_meta = response.headers.get("cf-kv-metadata")
            expiration = response.headers.get("expiration")
            return ValueWithMetadata(
                _decode(response.content, kind),
                json.loads(raw_meta) if raw_meta else None,
                int(expiration) if expiration else None,
                _etag(response),
            )

        call = self.get_call(key, kind, cache_ttl)
        call.read = read
        call.not_found = ValueWithMetadata(None, None)
        return call

    def bulk_get_call(
        self, keys: Sequence[str], kind: ValueType, with_metadata: bool, cache_ttl: int | None
    ) -> _Call[dict[str, Any]]:
        if kind not in ("text", "json"):
            raise ValueError('bulk get supports only type "text" or "json"')
        body: dict[str, Any] = {"keys": list(keys), "type": kind}
        if with_metadata:
            body["withMetadata"] = True
        params = {"cache_ttl": str(cache_ttl)} if cache_ttl is not None else {}

        def read(response: httpx.Response) -> dict[str, Any]:
            values: dict[str, Any] = _result(response)["values"]
            if not with_metadata:
                return values
            return {
                k: None
                if v is None
                else ValueWithMetadata(v["value"], v["metadata"], v.get("expiration"))
                for k, v in values.items()
            }

        return _Call("POST", f"{self._base}/bulk/get", read, params=params, json_body=body)

    def put_call(
        self,
        key: str,
        value: str | bytes,
        expiration: int | None,
        expiration_ttl: int | None,
        metadata: Any,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> _Call[str | None]:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        params = {}
        if expiration is not None:
            params["expiration"] = str(expiration)
        if expiration_ttl is not None:
            params["expiration_ttl"] = str(expiration_ttl)
        path = f"{self._base}/values/{_key_path(key)}"
        headers = _condition_headers(if_match, if_absent)
        if metadata is None:
            return _Call("PUT", path, _etag, params=params, content=data, headers=headers)
        files = {
            "value": ("value", data, "application/octet-stream"),
            "metadata": (None, json.dumps(metadata), "application/json"),
        }
        return _Call("PUT", path, _etag, params=params, files=files, headers=headers)

    def delete_call(self, key: str, if_match: str | None = None) -> _Call[str | None]:
        headers = _condition_headers(if_match, False)
        path = f"{self._base}/values/{_key_path(key)}"
        return _Call("DELETE", path, _etag, headers=headers)

    def fresh_read_call(self, key: str, kind: ValueType) -> _Call[Any]:
        """A read for a read-modify-write: asks every cache on the way to revalidate."""
        call = self.get_with_metadata_call(key, kind, None)
        call.headers = {"cache-control": "no-cache"}
        return call

    def list_call(
        self, prefix: str | None, limit: int | None, cursor: str | None
    ) -> _Call[ListResult]:
        params = {}
        if prefix:
            params["prefix"] = prefix
        if limit is not None:
            params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        return _Call("GET", f"{self._base}/keys", _list_result, params=params)

    def metadata_call(self, key: str) -> _Call[Any]:
        return _Call("GET", f"{self._base}/metadata/{_key_path(key)}", _result)

    def bulk_put_call(self, items: Sequence[Mapping[str, Any]]) -> _Call[dict[str, Any]]:
        return _Call("PUT", f"{self._base}/bulk", _result, json_body=list(items))

    def bulk_delete_call(self, keys: Sequence[str]) -> _Call[dict[str, Any]]:
        return _Call("POST", f"{self._base}/bulk/delete", _result, json_body=list(keys))

    def stats_call(self) -> _Call[dict[str, Any]]:
        return _Call("GET", f"{self._base}/pullkv/stats", _result)


class _ClientCalls:
    """Descriptions of account-level operations."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.base = f"/client/v4/accounts/{account_id}"
        self.namespaces = f"{self.base}/storage/kv/namespaces"

    def list_namespaces_call(self, page: int, per_page: int) -> _Call[list[dict[str, Any]]]:
        params = {"page": str(page), "per_page": str(per_page), "order": "title"}
        return _Call("GET", self.namespaces, _result, params=params)

    def create_namespace_call(self, title: str) -> _Call[dict[str, Any]]:
        return _Call("POST", self.namespaces, _result, json_body={"title": title})

    def rename_namespace_call(self, namespace_id: str, title: str) -> _Call[dict[str, Any]]:
        return _Call(
            "PUT", f"{self.namespaces}/{namespace_id}", _result, json_body={"title": title}
        )

    def delete_namespace_call(self, namespace_id: str) -> _Call[None]:
        return _Call("DELETE", f"{self.namespaces}/{namespace_id}", lambda r: None)

    def get_namespace_call(self, namespace_id: str) -> _Call[dict[str, Any] | None]:
        return _Call("GET", f"{self.namespaces}/{namespace_id}", _result, not_found=None)

    def create_token_call(
        self,
        name: str,
        namespaces: Sequence[str] | None,
        read_only: bool,
        admin: bool,
        edge: bool = False,
    ) -> _Call[dict[str, Any]]:
        body = {
            "name": name,
            "namespaces": namespaces,
            "read_only": read_only,
            "admin": admin,
            "edge": edge,
        }
        return _Call("POST", f"{self.base}/tokens", _result, json_body=body)

    def list_tokens_call(self) -> _Call[list[dict[str, Any]]]:
        return _Call("GET", f"{self.base}/tokens", _result)

    def revoke_token_call(self, token_id: str) -> _Call[Any]:
        return _Call("DELETE", f"{self.base}/tokens/{quote(token_id, safe='')}", _result)


def _accounts_call() -> _Call[list[dict[str, Any]]]:
    return _Call("GET", "/client/v4/accounts", _result)


def _info_call() -> _Call[dict[str, Any]]:
    return _Call("GET", "/client/v4/pullkv/info", _result)


def _pick_account(accounts: list[dict[str, Any]]) -> str:
    if len(accounts) != 1:
        raise APIError(400, 0, "the token sees several accounts: pass account_id")
    return str(accounts[0]["id"])


def _find_namespace(pages: Iterable[list[dict[str, Any]]], id_or_title: str) -> str | None:
    for page in pages:
        for item in page:
            if item["title"] == id_or_title:
                return str(item["id"])
    return None


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "User-Agent": "pullkv-python"}


class Client:
    """A synchronous client for one pullkv server and account."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        account_id: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        cache: LocalCache | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=_headers(token), timeout=timeout, transport=transport
        )
        self._calls: _ClientCalls | None = _ClientCalls(account_id) if account_id else None
        self.cache = cache  # an in-process edge for reads (pullkv.localcache)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (and stop the cache's watches)."""
        if self.cache is not None:
            self.cache.close()
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        response = self._http.request(
            call.method,
            call.path,
            params=call.params or None,
            json=call.json_body,
            content=call.content,
            files=call.files,
            headers=call.headers or None,
        )
        if response.status_code == 404 and call.not_found is not ...:
            return call.not_found  # type: ignore[no-any-return]
        _raise_for(response)
        return call.read(response)

    def _stream(self, call: _Call[Any]) -> Iterator[bytes] | None:
        request = self._http.build_request(call.method, call.path, params=call.params or None)
        response = self._http.send(request, stream=True)
        if response.status_code == 404:
            response.close()
            return None
        if not response.is_success:
            response.read()
            response.close()
            _raise_for(response)

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_bytes()
            finally:
                response.close()

        return chunks()

    @property
    def account(self) -> _ClientCalls:
        """The account's call descriptions (the account id is found on first use)."""
        if self._calls is None:
            self._calls = _ClientCalls(_pick_account(self._run(_accounts_call())))
        return self._calls

    @property
    def account_id(self) -> str:
        """The account this client acts in."""
        return self.account.account_id

    def info(self) -> dict[str, Any]:
        """What the server is: version, role, this token's account id, location, upstream,
        uptime and cache figures (pullkv's own ``GET /client/v4/pullkv/info``)."""
        return self._run(_info_call())

    def list_namespaces(self) -> list[dict[str, Any]]:
        """Every namespace the token can see, following pages to the end."""
        out: list[dict[str, Any]] = []
        page = 1
        while batch := self._run(self.account.list_namespaces_call(page, 1000)):
            out += batch
            page += 1
        return out

    def create_namespace(self, title: str) -> dict[str, Any]:
        """Create a namespace; returns {id, title, ...}."""
        return self._run(self.account.create_namespace_call(title))

    def rename_namespace(self, id_or_title: str, title: str) -> dict[str, Any]:
        """Rename a namespace."""
        return self._run(self.account.rename_namespace_call(self.resolve(id_or_title), title))

    def delete_namespace(self, id_or_title: str) -> None:
        """Delete a namespace and all its keys."""
        self._run(self.account.delete_namespace_call(self.resolve(id_or_title)))

    def resolve(self, id_or_title: str) -> str:
        """A namespace id from an id or a title."""
        if _HEX32.fullmatch(id_or_title) and self._run(
            self.account.get_namespace_call(id_or_title)
        ):
            return id_or_title
        found = _find_namespace([self.list_namespaces()], id_or_title)
        if found is None:
            raise api_error(404, 10013, f"no namespace with id or title {id_or_title!r}")
        return found

    def namespace(self, id_or_title: str) -> Namespace:
        """A binding-shaped handle on one namespace."""
        return Namespace(self, self.resolve(id_or_title))

    def create_token(
        self,
        name: str = "",
        *,
        namespaces: Sequence[str] | None = None,
        read_only: bool = False,
        admin: bool = False,
        edge: bool = False,
    ) -> dict[str, Any]:
        """Create a token (needs an admin token); the secret is in ``value``, shown once."""
        return self._run(self.account.create_token_call(name, namespaces, read_only, admin, edge))

    def list_tokens(self) -> list[dict[str, Any]]:
        """The account's tokens (never their secrets)."""
        return self._run(self.account.list_tokens_call())

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token at once."""
        self._run(self.account.revoke_token_call(token_id))


class Namespace:
    """One namespace through a sync client, shaped like a Workers KV binding."""

    def __init__(self, client: Client, namespace_id: str) -> None:
        self.id = namespace_id
        self._client = client
        self._calls = _NamespaceCalls(f"{client.account.namespaces}/{namespace_id}")
        self._cache = client.cache
        self._reads: CachedReads | None = None
        if client.cache is not None:
            self._reads = CachedReads(client.cache, namespace_id, self._fetch, self._watch_all)

    def _fetch(self, key: str, cache_ttl: int | None) -> Cached:
        """A read for the local cache: the raw value with its metadata and version."""
        assert self._cache is not None
        started = self._cache.clock()  # vouched for from when it was asked, not answered
        call = self._calls.get_with_metadata_call(key, "bytes", cache_ttl)
        got = self._client._run(call)
        return to_cached(got.value, got.metadata, got.expiration, got.etag, started)

    def _watch_all(self, on_reset: Callable[[], None]) -> Watch:
        return Watch(self._client._http, self._calls.changes_path, on_reset=on_reset)

    @overload
    def get(self, key: str, type: ValueType = "text", cache_ttl: int | None = None) -> Any: ...
    @overload
    def get(
        self, key: Sequence[str], type: ValueType = "text", cache_ttl: int | None = None
    ) -> dict[str, Any]: ...
    def get(
        self, key: str | Sequence[str], type: ValueType = "text", cache_ttl: int | None = None
    ) -> Any:
        """A value (None if missing); with a list of keys, a dict of values (bulk get)."""
        cache = self._cache
        if cache is not None and type != "stream" and key.__class__ is str:
            # The local cache's hot path: a dictionary lookup and a freshness check.
            cached = cache.fresh(self.id, key, cache_ttl)
            if cached is not None and type == "text":
                return cached.text
            if cached is None:
                assert self._reads is not None
                cached = self._reads.read(key, cache_ttl)[0]
            return value_of(cached, type)
        if not isinstance(key, str):
            return self._client._run(self._calls.bulk_get_call(key, type, False, cache_ttl))
        call = self._calls.get_call(key, type, cache_ttl)
        if type == "stream":
            return self._client._stream(call)
        return self._client._run(call)

    def get_with_metadata(
        self, key: str | Sequence[str], type: ValueType = "text", cache_ttl: int | None = None
    ) -> Any:
        """A ValueWithMetadata; with a list of keys, a dict of them (None for missing keys).
        With a local cache, ``cache_status`` says how a single key's read was answered."""
        if not isinstance(key, str):
            return self._client._run(self._calls.bulk_get_call(key, type, True, cache_ttl))
        if self._reads is not None and type != "stream":
            cached, status = self._reads.read(key, cache_ttl)
            return _with_metadata(cached, type, status)
        return self._client._run(self._calls.get_with_metadata_call(key, type, cache_ttl))

    def put(
        self,
        key: str,
        value: str | bytes,
        *,
        expiration: int | None = None,
        expiration_ttl: int | None = None,
        metadata: Any = None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str | None:
        """Write a key (value, expiry and metadata are all replaced); return its new ETag.

        ``if_match`` writes only if the key is still at that ETag, ``if_absent`` only if it
        does not exist; otherwise ``PreconditionFailedError`` (its ``etag`` is the current
        one) and nothing is written.
        """
        call = self._calls.put_call(
            key, value, expiration, expiration_ttl, metadata, if_match, if_absent
        )
        try:
            etag = self._client._run(call)
        except PreconditionFailedError:
            _refused(self._cache, self.id, key)
            raise
        _cache_write(self._cache, self.id, key, value, metadata, expiration, expiration_ttl, etag)
        return etag

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete a key; deleting a missing key succeeds. With ``if_match``, only if the key
        is still at that ETag (``PreconditionFailedError`` otherwise)."""
        try:
            etag = self._client._run(self._calls.delete_call(key, if_match))
        except PreconditionFailedError:
            _refused(self._cache, self.id, key)
            raise
        _cache_write(self._cache, self.id, key, None, None, None, None, etag)

    def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        type: ValueType = "text",
        max_attempts: int = 10,
    ) -> Any:
        """Compare-and-swap: write ``fn(current value)`` (None if missing) only if the key did
        not change meanwhile, retrying on conflict; return the value written.

        Raises ``PreconditionFailedError`` after ``max_attempts`` conflicts. Expiry and
        metadata are not carried over.
        """
        for attempt in range(max_attempts):
            old = self._client._run(self._calls.fresh_read_call(key, type))
            new = fn(old.value)
            call = self._calls.put_call(
                key, _encode_update(new, type), None, None, None, old.etag, old.etag is None
            )
            try:
                etag = self._client._run(call)
            except PreconditionFailedError:
                _refused(self._cache, self.id, key)
                if attempt + 1 == max_attempts:
                    raise
                continue
            encoded = _encode_update(new, type)
            _cache_write(self._cache, self.id, key, encoded, None, None, None, etag)
            return new
        raise ValueError("max_attempts must be at least 1")

    def list(
        self, *, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> ListResult:
        """One page of keys in UTF-8 byte order."""
        return self._client._run(self._calls.list_call(prefix, limit, cursor))

    def metadata(self, key: str) -> Any:
        """A key's metadata (REST ``metadata/{key}``)."""
        return self._client._run(self._calls.metadata_call(key))

    def bulk_put(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Write up to 10,000 items in the REST bulk format."""
        return self._client._run(self._calls.bulk_put_call(items))

    def bulk_delete(self, keys: Sequence[str]) -> dict[str, Any]:
        """Delete up to 10,000 keys."""
        return self._client._run(self._calls.bulk_delete_call(keys))

    def stats(self) -> dict[str, Any]:
        """Live keys, their stored (sealed) value bytes and how many expire (pullkv's own)."""
        return self._client._run(self._calls.stats_call())

    def watch(
        self, prefix: str = "", *, since: int | None = None, feed: str | None = None
    ) -> Watch:
        """The namespace's changes from now (or from position ``since`` of ``feed``), as an
        iterator of ``WatchEvent(key, version, deleted)`` for keys starting with ``prefix``
        (see ``pullkv.watch``)."""
        return Watch(self._client._http, self._calls.changes_path, prefix, since, feed)


class AsyncClient:
    """An asyncio client for one pullkv server and account."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        account_id: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        cache: LocalCache | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=_headers(token), timeout=timeout, transport=transport
        )
        self._calls: _ClientCalls | None = _ClientCalls(account_id) if account_id else None
        self.cache = cache  # an in-process edge for reads (pullkv.localcache)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (and stop the cache's watches)."""
        if self.cache is not None:
            self.cache.close()
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        response = await self._http.request(
            call.method,
            call.path,
            params=call.params or None,
            json=call.json_body,
            content=call.content,
            files=call.files,
            headers=call.headers or None,
        )
        if response.status_code == 404 and call.not_found is not ...:
            return call.not_found  # type: ignore[no-any-return]
        _raise_for(response)
        return call.read(response)

    async def _stream(self, call: _Call[Any]) -> AsyncIterator[bytes] | None:
        request = self._http.build_request(call.method, call.path, params=call.params or None)
        response = await self._http.send(request, stream=True)
        if response.status_code == 404:
            await response.aclose()
            return None
        if not response.is_success:
            await response.aread()
            await response.aclose()
            _raise_for(response)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            finally:
                await response.aclose()

        return chunks()

    async def account(self) -> _ClientCalls:
        """The account's call descriptions (the account id is found on first use)."""
        if self._calls is None:
            self._calls = _ClientCalls(_pick_account(await self._run(_accounts_call())))
        return self._calls

    async def info(self) -> dict[str, Any]:
        """What the server is (see ``Client.info``)."""
        return await self._run(_info_call())

    async def list_namespaces(self) -> list[dict[str, Any]]:
        """Every namespace the token can see, following pages to the end."""
        account = await self.account()
        out: list[dict[str, Any]] = []
        page = 1
        while batch := await self._run(account.list_namespaces_call(page, 1000)):
            out += batch
            page += 1
        return out

    async def create_namespace(self, title: str) -> dict[str, Any]:
        """Create a namespace; returns {id, title, ...}."""
        return await self._run((await self.account()).create_namespace_call(title))

    async def rename_namespace(self, id_or_title: str, title: str) -> dict[str, Any]:
        """Rename a namespace."""
        namespace_id = await self.resolve(id_or_title)
        return await self._run((await self.account()).rename_namespace_call(namespace_id, title))

    async def delete_namespace(self, id_or_title: str) -> None:
        """Delete a namespace and all its keys."""
        namespace_id = await self.resolve(id_or_title)
        await self._run((await self.account()).delete_namespace_call(namespace_id))

    async def resolve(self, id_or_title: str) -> str:
        """A namespace id from an id or a title."""
        account = await self.account()
        if _HEX32.fullmatch(id_or_title):
            found_by_id = await self._run(account.get_namespace_call(id_or_title))
            if found_by_id is not None:
                return id_or_title
        found = _find_namespace([await self.list_namespaces()], id_or_title)
        if found is None:
            raise api_error(404, 10013, f"no namespace with id or title {id_or_title!r}")
        return found

    async def namespace(self, id_or_title: str) -> AsyncNamespace:
        """A binding-shaped handle on one namespace."""
        account = await self.account()
        return AsyncNamespace(self, account, await self.resolve(id_or_title))


class AsyncNamespace:
    """One namespace through an async client, shaped like a Workers KV binding."""

    def __init__(self, client: AsyncClient, account: _ClientCalls, namespace_id: str) -> None:
        self.id = namespace_id
        self._client = client
        self._calls = _NamespaceCalls(f"{account.namespaces}/{namespace_id}")
        self._cache = client.cache
        self._reads: AsyncCachedReads | None = None
        if client.cache is not None:
            self._reads = AsyncCachedReads(client.cache, namespace_id, self._fetch, self._watch_all)

    async def _fetch(self, key: str, cache_ttl: int | None) -> Cached:
        """A read for the local cache: the raw value with its metadata and version."""
        assert self._cache is not None
        started = self._cache.clock()
        call = self._calls.get_with_metadata_call(key, "bytes", cache_ttl)
        got = await self._client._run(call)
        return to_cached(got.value, got.metadata, got.expiration, got.etag, started)

    def _watch_all(self, on_reset: Callable[[], None]) -> AsyncWatch:
        return AsyncWatch(self._client._http, self._calls.changes_path, on_reset=on_reset)

    async def get(
        self, key: str | Sequence[str], type: ValueType = "text", cache_ttl: int | None = None
    ) -> Any:
        """A value (None if missing); with a list of keys, a dict of values (bulk get)."""
        cache = self._cache
        if cache is not None and type != "stream" and isinstance(key, str):
            cached = cache.fresh(self.id, key, cache_ttl)
            if cached is None:
                assert self._reads is not None
                cached = (await self._reads.read(key, cache_ttl))[0]
            return value_of(cached, type)
        if not isinstance(key, str):
            return await self._client._run(self._calls.bulk_get_call(key, type, False, cache_ttl))
        call = self._calls.get_call(key, type, cache_ttl)
        if type == "stream":
            return await self._client._stream(call)
        return await self._client._run(call)

    async def get_with_metadata(
        self, key: str | Sequence[str], type: ValueType = "text", cache_ttl: int | None = None
    ) -> Any:
        """A ValueWithMetadata; with a list of keys, a dict of them (None for missing keys)."""
        if not isinstance(key, str):
            return await self._client._run(self._calls.bulk_get_call(key, type, True, cache_ttl))
        if self._reads is not None and type != "stream":
            cached, status = await self._reads.read(key, cache_ttl)
            return _with_metadata(cached, type, status)
        return await self._client._run(self._calls.get_with_metadata_call(key, type, cache_ttl))

    async def put(
        self,
        key: str,
        value: str | bytes,
        *,
        expiration: int | None = None,
        expiration_ttl: int | None = None,
        metadata: Any = None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str | None:
        """Write a key (value, expiry and metadata are all replaced); return its new ETag.
        ``if_match`` and ``if_absent`` as in ``Namespace.put``."""
        call = self._calls.put_call(
            key, value, expiration, expiration_ttl, metadata, if_match, if_absent
        )
        try:
            etag = await self._client._run(call)
        except PreconditionFailedError:
            _refused(self._cache, self.id, key)
            raise
        _cache_write(self._cache, self.id, key, value, metadata, expiration, expiration_ttl, etag)
        return etag

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete a key; deleting a missing key succeeds. ``if_match`` as in
        ``Namespace.delete``."""
        try:
            etag = await self._client._run(self._calls.delete_call(key, if_match))
        except PreconditionFailedError:
            _refused(self._cache, self.id, key)
            raise
        _cache_write(self._cache, self.id, key, None, None, None, None, etag)

    async def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        type: ValueType = "text",
        max_attempts: int = 10,
    ) -> Any:
        """Compare-and-swap with bounded retries, as ``Namespace.update``."""
        for attempt in range(max_attempts):
            old = await self._client._run(self._calls.fresh_read_call(key, type))
            new = fn(old.value)
            call = self._calls.put_call(
                key, _encode_update(new, type), None, None, None, old.etag, old.etag is None
            )
            try:
                etag = await self._client._run(call)
            except PreconditionFailedError:
                _refused(self._cache, self.id, key)
                if attempt + 1 == max_attempts:
                    raise
                continue
            encoded = _encode_update(new, type)
            _cache_write(self._cache, self.id, key, encoded, None, None, None, etag)
            return new
        raise ValueError("max_attempts must be at least 1")

    async def list(
        self, *, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> ListResult:
        """One page of keys in UTF-8 byte order."""
        return await self._client._run(self._calls.list_call(prefix, limit, cursor))

    async def metadata(self, key: str) -> Any:
        """A key's metadata (REST ``metadata/{key}``)."""
        return await self._client._run(self._calls.metadata_call(key))

    async def bulk_put(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Write up to 10,000 items in the REST bulk format."""
        return await self._client._run(self._calls.bulk_put_call(items))

    async def bulk_delete(self, keys: Sequence[str]) -> dict[str, Any]:
        """Delete up to 10,000 keys."""
        return await self._client._run(self._calls.bulk_delete_call(keys))

    async def stats(self) -> dict[str, Any]:
        """Live keys, their stored (sealed) value bytes and how many expire (pullkv's own)."""
        return await self._client._run(self._calls.stats_call())

    def watch(
        self, prefix: str = "", *, since: int | None = None, feed: str | None = None
    ) -> AsyncWatch:
        """The namespace's changes, as an async iterator (as ``Namespace.watch``)."""
        return AsyncWatch(self._client._http, self._calls.changes_path, prefix, since, feed)
