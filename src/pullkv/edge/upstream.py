"""The upstream as a Backend: the internal API of an origin or another edge, over HTTP.

Connection failures and timeouts become ``UpstreamUnreachable`` (a 503 KVError that opens the
edge's circuit breaker); 5xx answers become 503 KVErrors (the edge may then serve stale
entries); refusals (4xx) come back as the same KVError the upstream raised, so a client
of the edge sees exactly what a client of the origin would.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Sequence
from typing import Any

import httpx

from pullkv import errors, wire
from pullkv.backend import Fetched, Lookup, WriteResult
from pullkv.store.base import NamespaceOrder
from pullkv.types import ListedKey, NamespaceRecord, SealedWrite, TokenRecord

UPSTREAM_TOKEN_ENV = "PULLKV_UPSTREAM_TOKEN"


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

    async def _post(
        self, operation: str, *, json: Any = None, content: bytes | None = None
    ) -> httpx.Response:
        if self.latency:
            await asyncio.sleep(self.latency)  # simulated distance (pullkv cluster up)
        headers = {"content-type": wire.CONTENT_TYPE} if content is not None else None
        try:
            response = await self._http.post(
                f"/pullkv/v1/{operation}", json=json, content=content, headers=headers
            )
        except httpx.TimeoutException:
            raise errors.upstream_unreachable(f"{self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise errors.upstream_unreachable(f"{self.url} unreachable ({exc})") from None
        if response.is_success:
            return response
        try:
            first = response.json()["errors"][0]
            error = errors.KVError(response.status_code, int(first["code"]), str(first["message"]))
        except (ValueError, KeyError, IndexError, TypeError):
            error = errors.upstream_unavailable(f"{self.url} answered {response.status_code}")
        if response.status_code >= 500:
            error.retryable = True
        raise error

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
        body = {"a": account_id, "n": namespace_id, "op": operation}
        return wire.namespace_from_wire((await self._post("namespace", json=body)).json())

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
        body = {
            "a": account_id,
            "order": order,
            "desc": descending,
            "offset": offset,
            "limit": limit,
            "only": list(only) if only is not None else None,
        }
        data = (await self._post("namespaces/list", json=body)).json()
        return [wire.namespace_from_wire(n) for n in data["items"]], int(data["total"])

    async def create_namespace(self, namespace: NamespaceRecord) -> NamespaceRecord:
        """Forward a namespace creation."""
        body = {"namespace": wire.namespace_to_wire(namespace)}
        return wire.namespace_from_wire((await self._post("namespaces/create", json=body)).json())

    async def rename_namespace(
        self, account_id: str, namespace_id: str, title: str
    ) -> NamespaceRecord:
        """Forward a rename."""
        body = {"a": account_id, "n": namespace_id, "title": title}
        return wire.namespace_from_wire((await self._post("namespaces/rename", json=body)).json())

    async def delete_namespace(self, account_id: str, namespace_id: str) -> None:
        """Forward a namespace deletion."""
        await self._post("namespaces/delete", json={"a": account_id, "n": namespace_id})

    # Keys.
    async def fetch(
        self,
        account_id: str,
        namespace_id: str,
        keys: Sequence[tuple[str, int | None]],
        cache_ttl: int | None,
    ) -> dict[str, Fetched]:
        """One batched conditional fetch."""
        body = {
            "a": account_id,
            "n": namespace_id,
            "keys": [list(k) for k in keys],
            "ttl": cache_ttl,
        }
        response = await self._post("fetch", json=body)
        try:
            return wire.unpack_fetched(response.content)
        except (wire.WireError, KeyError, IndexError) as exc:
            raise errors.upstream_unavailable(f"malformed fetch answer ({exc})") from None

    async def read(
        self, account_id: str, namespace_id: str, key: str, cache_ttl: int | None
    ) -> Lookup:
        """An unconditional fetch of one key."""
        answers = await self.fetch(account_id, namespace_id, [(key, None)], cache_ttl)
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
        body = {
            "a": account_id,
            "n": namespace_id,
            "prefix": prefix,
            "after": after,
            "limit": limit,
        }
        response = await self._post("list", json=body)
        try:
            return wire.unpack_listed(response.content)
        except (wire.WireError, KeyError, IndexError) as exc:
            raise errors.upstream_unavailable(f"malformed list answer ({exc})") from None

    async def write(
        self, account_id: str, namespace_id: str, writes: Sequence[SealedWrite]
    ) -> WriteResult:
        """Forward sealed writes."""
        content = wire.pack_writes({"a": account_id, "n": namespace_id}, writes)
        data = (await self._post("write", content=content)).json()
        return WriteResult({k: int(v) for k, v in data["versions"].items()}, data["refused"])

    async def delete(self, account_id: str, namespace_id: str, keys: Sequence[str]) -> WriteResult:
        """Forward deletes."""
        body = {"a": account_id, "n": namespace_id, "keys": list(keys)}
        data = (await self._post("delete", json=body)).json()
        return WriteResult({k: int(v) for k, v in data["versions"].items()}, data["refused"])

    # Tokens and keys.
    async def get_token(self, token_id: str) -> TokenRecord | None:
        """A token record from the upstream."""
        data = (await self._post("tokens/get", json={"id": token_id})).json()
        return None if data["token"] is None else wire.token_from_wire(data["token"])

    async def add_token(self, token: TokenRecord) -> None:
        """Forward a new token."""
        await self._post("tokens/add", json={"token": wire.token_to_wire(token)})

    async def list_tokens(self, account_id: str) -> list[TokenRecord]:
        """Forward a token list."""
        data = (await self._post("tokens/list", json={"a": account_id})).json()
        return [wire.token_from_wire(t) for t in data["tokens"]]

    async def revoke_token(self, account_id: str, token_id: str) -> bool:
        """Forward a revocation."""
        data = (await self._post("tokens/revoke", json={"a": account_id, "id": token_id})).json()
        return bool(data["revoked"])

    async def data_keys(self) -> list[tuple[int, bytes]]:
        """The upstream's wrapped data keys."""
        data = (await self._post("keyring", json={})).json()
        return [(int(k), base64.b64decode(w)) for k, w in data["keys"]]
