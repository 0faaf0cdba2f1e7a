"""The upstream as a Backend: the internal API of an origin or another edge, over HTTP.

Connection failures and timeouts become ``UpstreamUnreachable`` (a 503 KVError that opens the
edge's circuit breaker); 5xx answers become 503 KVErrors (the edge may then serve stale
entries); refusals (4xx) come back as the same KVError the upstream raised, so a client
of the edge sees exactly what a client of the origin would.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import httpx

from pullkv import errors, wire
from pullkv.backend import Fetched, Lookup, WriteResult
from pullkv.store.base import NamespaceOrder, NamespaceStats
from pullkv.types import (
    ListedKey,
    NamespaceRecord,
    SealedWrite,
    TokenRecord,
    WriteCondition,
    parse_etag,
)
from pullkv.validate import parse_json

UPSTREAM_TOKEN_ENV = "PULLKV_UPSTREAM_TOKEN"
T = TypeVar("T")


class UpstreamBackend:
    """A Backend reached over HTTP (see the module docstring)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 5.0,
        latency: float = 0.0,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 64,
    ) -> None:
        self.url = url.rstrip("/")
        self.latency = latency
        self.timeout = timeout
        self.feed = None  # the feed of the node over there is followed, not served, from here
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "pullkv-edge"},
            timeout=timeout,
            verify=verify,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _post(self, operation: str, message: dict[str, Any] | bytes) -> bytes:
        """Send one message of ``pullkv.wire`` (JSON, or framed bytes); the answer's body."""
        if self.latency:
            await asyncio.sleep(self.latency)  # simulated distance (pullkv cluster up)
        path = f"/pullkv/v1/{operation}"
        try:
            if isinstance(message, bytes):
                headers = {"content-type": wire.CONTENT_TYPE}
                response = await self._http.post(path, content=message, headers=headers)
            else:
                response = await self._http.post(path, json=message)
        except httpx.TimeoutException:
            raise errors.upstream_unreachable(f"{self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise errors.upstream_unreachable(f"{self.url} unreachable ({exc})") from None
        if response.is_success:
            return response.content
        raise self._error(response)

    def _error(self, response: httpx.Response) -> errors.KVError:
        """The KVError an unsuccessful answer carries (a 503 if it carries none)."""
        try:
            first = response.json()["errors"][0]
            error = errors.KVError(response.status_code, int(first["code"]), str(first["message"]))
            if response.status_code == 412:
                current = parse_etag(response.headers.get("etag") or "")
                error = errors.PreconditionFailed(error.message, current)
        except (ValueError, KeyError, IndexError, TypeError):
            error = errors.upstream_unavailable(f"{self.url} answered {response.status_code}")
        if response.status_code >= 500:
            error.retryable = True
        return error

    @contextlib.asynccontextmanager
    async def changes(
        self, since: int | None, feed: str | None
    ) -> AsyncIterator[AsyncIterator[str]]:
        """Subscribe to the upstream's change feed from position ``since`` of sequence space
        ``feed`` (none: from now); the stream's text as it arrives, until it ends or the
        caller leaves."""
        if self.latency:
            await asyncio.sleep(self.latency)  # simulated distance (pullkv cluster up)
        params = {"since": str(since), "feed": feed or ""} if since is not None else {}
        # No read timeout: the subscriber watches for silence itself.
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream(
                "GET", "/pullkv/v1/changes", params=params, timeout=timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise self._error(response)
                yield response.aiter_text()
        except httpx.TimeoutException:
            raise errors.upstream_unreachable(f"{self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise errors.upstream_unreachable(f"{self.url} unreachable ({exc})") from None

    def _json_answer(self, operation: str, body: bytes, decode: Callable[[object], T]) -> T:
        """A JSON answer decoded; one that does not parse or check is the upstream's fault."""
        return self._answer(operation, lambda: decode(parse_json(body, f"{operation} answer")))

    def _answer(self, operation: str, decode: Callable[[], T]) -> T:
        try:
            return decode()
        except errors.KVError as exc:
            reason = f"malformed {operation} answer from {self.url} ({exc.message})"
            raise errors.upstream_unavailable(reason) from None

    async def probe(self) -> bool:
        """Whether the upstream answers its health check."""
        try:
            response = await self._http.get("/healthz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # Namespaces.
    async def namespace(
        self, account_id: str, namespace_id: str, operation: str
    ) -> NamespaceRecord:
        """Forward a namespace lookup."""
        message = wire.NamespaceRequest(account_id, namespace_id, operation)
        body = await self._post("namespace", message.to_wire())
        return self._json_answer("namespace", body, wire.NamespaceResponse.from_wire).namespace

    async def list_namespaces(
        self,
        account_id: str,
        order: NamespaceOrder,
        descending: bool,
        offset: int,
        limit: int,
        only: Sequence[str] | None,
    ) -> tuple[list[NamespaceRecord], int]:
        """Forward a namespace list."""
        only = tuple(only) if only is not None else None
        message = wire.NamespaceListRequest(account_id, order, descending, offset, limit, only)
        body = await self._post("namespaces/list", message.to_wire())
        page = self._json_answer("namespaces/list", body, wire.NamespacePage.from_wire)
        return list(page.namespaces), page.total

    async def create_namespace(self, namespace: NamespaceRecord) -> NamespaceRecord:
        """Forward a namespace creation."""
        body = await self._post(
            "namespaces/create", wire.NamespaceCreateRequest(namespace).to_wire()
        )
        return self._json_answer(
            "namespaces/create", body, wire.NamespaceResponse.from_wire
        ).namespace

    async def rename_namespace(
        self, account_id: str, namespace_id: str, title: str
    ) -> NamespaceRecord:
        """Forward a rename."""
        message = wire.NamespaceRenameRequest(account_id, namespace_id, title)
        body = await self._post("namespaces/rename", message.to_wire())
        return self._json_answer(
            "namespaces/rename", body, wire.NamespaceResponse.from_wire
        ).namespace

    async def delete_namespace(self, account_id: str, namespace_id: str) -> None:
        """Forward a namespace deletion."""
        message = wire.NamespaceDeleteRequest(account_id, namespace_id)
        await self._post("namespaces/delete", message.to_wire())

    # Keys.
    async def fetch(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[tuple[str, int | None]],
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> dict[str, Fetched]:
        """One batched conditional fetch."""
        message = wire.FetchRequest(account_id, namespace_id, tuple(keys), cache_ttl, revalidate)
        body = await self._post("fetch", message.to_wire())
        return self._answer("fetch", lambda: wire.FetchResponse.from_wire(body)).answers

    async def read(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        cache_ttl: int | None,
        *,
        revalidate: bool = False,
    ) -> Lookup:
        """An unconditional fetch of one key."""
        answers = await self.fetch(
            account_id, namespace_id, [(key, None)], cache_ttl, revalidate=revalidate
        )
        return Lookup(answers[key].entry)

    async def read_many(
        self, account_id: str, namespace_id: str, keys: Sequence[str], cache_ttl: int | None
    ) -> dict[str, Lookup]:
        """An unconditional fetch of several keys."""
        answers = await self.fetch(account_id, namespace_id, [(k, None) for k in keys], cache_ttl)
        return {key: Lookup(answers[key].entry) for key in keys}

    async def list_keys(
        self, account_id: str, namespace_id: str, prefix: str, after: str | None, limit: int
    ) -> list[ListedKey]:
        """Forward a key list."""
        message = wire.ListRequest(account_id, namespace_id, prefix, after, limit)
        body = await self._post("list", message.to_wire())
        return list(self._answer("list", lambda: wire.ListResponse.from_wire(body)).keys)

    async def namespace_stats(self, account_id: str, namespace_id: str) -> NamespaceStats:
        """Forward a namespace's counts."""
        message = wire.NamespaceStatsRequest(account_id, namespace_id)
        body = await self._post("namespaces/stats", message.to_wire())
        return self._json_answer(
            "namespaces/stats", body, wire.NamespaceStatsResponse.from_wire
        ).stats

    async def write(
        self, account_id: str, namespace_id: str, writes: Sequence[SealedWrite]
    ) -> WriteResult:
        """Forward sealed writes."""
        message = wire.WriteRequest(account_id, namespace_id, tuple(writes))
        body = await self._post("write", message.to_wire())
        return self._json_answer("write", body, wire.WriteResponse.from_wire).result

    async def delete(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[str],
        condition: WriteCondition | None = None,
    ) -> WriteResult:
        """Forward deletes (and their condition)."""
        message = wire.DeleteRequest(account_id, namespace_id, tuple(keys), condition)
        body = await self._post("delete", message.to_wire())
        return self._json_answer("delete", body, wire.WriteResponse.from_wire).result

    # Tokens and keys.
    async def get_token(self, token_id: str) -> TokenRecord | None:
        """A token record from the upstream."""
        body = await self._post("tokens/get", wire.TokenGetRequest(token_id).to_wire())
        return self._json_answer("tokens/get", body, wire.TokenResponse.from_wire).token

    async def add_token(self, token: TokenRecord) -> None:
        """Forward a new token."""
        await self._post("tokens/add", wire.TokenAddRequest(token).to_wire())

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """Forward a token list."""
        body = await self._post("tokens/list", wire.TokenListRequest(account_id).to_wire())
        return list(self._json_answer("tokens/list", body, wire.TokenListResponse.from_wire).tokens)

    async def revoke_token(self, account_id: str, token_id: str) -> bool:
        """Forward a revocation."""
        message = wire.TokenRevokeRequest(account_id, token_id)
        body = await self._post("tokens/revoke", message.to_wire())
        return self._json_answer("tokens/revoke", body, wire.RevokeResponse.from_wire).revoked

    async def data_keys(self) -> list[tuple[int, bytes]]:
        """The upstream's wrapped data keys."""
        body = await self._post("keyring", {})
        return list(self._json_answer("keyring", body, wire.KeyringResponse.from_wire).keys)
