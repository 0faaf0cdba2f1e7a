"""The hot read path: a cached value answered without a task, a scope or a coroutine.

pullkv's HTTP server offers every GET to ``App.fast_response`` before anything else. This
module answers it when, and only when, the answer needs no I/O: the token is in the
authenticator's cache (``Authenticator.peek``), the edge has the key's entry FRESH
(``EdgeBackend.fresh_entry``), and the keyring holds the data key. The response bytes are
rendered once per entry per second (``Age`` and the TTL in ``Cache-Status`` move each second)
and kept here, in a bounded memo; anything else (a miss, a revalidation, an error) returns
None and takes the ordinary path, which gives the same answer more slowly. A strong read
(``Cache-Control: no-cache``) always takes the ordinary path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pullkv import errors
from pullkv.auth import Authenticator, authorize
from pullkv.backend import CacheInfo
from pullkv.crypto import CryptoError
from pullkv.edge.backend import FreshEntry
from pullkv.http.framing import build_response
from pullkv.http.rest import value_headers
from pullkv.http.routes import hot_binding_read, hot_rest_read
from pullkv.keyring import KeyringHolder
from pullkv.limits import HOT_RENDERED_BYTES, HOT_RENDERED_RESPONSES, HOT_TARGETS, Limits
from pullkv.metrics import Metrics
from pullkv.sealing import open_entry
from pullkv.types import SealedEntry

# (raw path, query, Authorization, X-PullKV-Namespace) -> what it reads.
_RequestKey = tuple[bytes, bytes, bytes, bytes | None]


class HotEdge(Protocol):
    """What the hot path asks of the edge (``EdgeBackend``; a fake in unit tests)."""

    @property
    def metrics(self) -> Metrics:
        """Where hot responses are counted."""
        ...

    def fresh_entry(
        self,
        account_id: str,
        namespace_id: str,
        key: str,
        ttl: int,
        known: SealedEntry | None = None,
    ) -> FreshEntry | None:
        """See ``EdgeBackend.fresh_entry``."""
        ...


# (kind, account, namespace, key) -> the response last rendered for it.
_RenderedKey = tuple[str, str, str, str]
# A resolved request: the token's id, what it reads and the read's cache TTL.
_Target = tuple[str, _RenderedKey, int]


@dataclass(slots=True)
class _Rendered:
    """A response rendered from one entry for one second of its life (its age and freshness
    left, which ``Cache-Status`` and ``Age`` show), and the opened data it came from."""

    entry: SealedEntry
    age: int
    ttl_left: int
    response: bytes
    body: bytes
    static_headers: list[tuple[bytes, bytes]]

    def size(self) -> int:
        """Bytes charged to the memo's bound."""
        return len(self.response) + len(self.body)


class HotReads:
    """Answers fresh cached value reads synchronously (see the module docstring)."""

    def __init__(
        self,
        edge: HotEdge,
        keyring: KeyringHolder,
        authenticator: Authenticator,
        limits: Limits,
        cache_name: str,
    ) -> None:
        self.edge = edge
        self.keyring = keyring
        self.authenticator = authenticator
        self.limits = limits
        self.cache_name = cache_name
        self._targets: dict[_RequestKey, _Target] = {}
        self._metrics = edge.metrics
        self._rendered: dict[_RenderedKey, _Rendered] = {}
        self._rendered_bytes = 0
        # The token behind the last answer, for the access log.
        self.token_id: str | None = None

    def respond(
        self, method: bytes, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        """The complete response for a hot read, or None to take the ordinary path.

        Header names are lowercase, as the HTTP server (and ASGI) gives them."""
        if method != b"GET" and method != b"HEAD":
            return None
        authorization = namespace_header = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
            elif name == b"x-pullkv-namespace":
                namespace_header = value
            elif name == b"cache-control" and b"no-cache" in value.lower():
                return None  # a strong read: the ordinary path asks the origin
        if authorization is None:
            return None
        # A repeated request resolves to the same target: remember it, and skip parsing the
        # path and checking scopes (a token's scopes never change; peek still answers for
        # revocation and expiry).
        request_key = (raw_path, query, authorization, namespace_header)
        target = self._targets.get(request_key)
        if target is not None:
            token_id, rendered_key, ttl = target
            token = self.authenticator.peek(authorization)
            if token is None or token.id != token_id:
                return None
            self.token_id = token_id
            return self._answer(rendered_key, ttl)
        if namespace_header is not None:
            return self._binding(raw_path, query, authorization, namespace_header, request_key)
        read = hot_rest_read(raw_path, query, self.limits)
        if read is None:
            return None
        account_id, namespace_id, key, ttl = read
        token = self.authenticator.peek(authorization)
        if token is None:
            return None
        try:
            authorize(token, account_id, namespace_id=namespace_id)
        except errors.KVError:
            return None
        return self._resolved(request_key, token.id, ("rest", account_id, namespace_id, key), ttl)

    def _resolved(
        self, request_key: _RequestKey, token_id: str, rendered_key: _RenderedKey, ttl: int
    ) -> bytes | None:
        self.token_id = token_id
        response = self._answer(rendered_key, ttl)
        if response is not None:
            if len(self._targets) >= HOT_TARGETS:
                self._targets.clear()
            self._targets[request_key] = (token_id, rendered_key, ttl)
        return response

    def _binding(
        self,
        raw_path: bytes,
        query: bytes,
        authorization: bytes,
        namespace: bytes,
        request_key: _RequestKey,
    ) -> bytes | None:
        """A binding-protocol get: ``GET /<key>?urlencoded=true[&cache_ttl=N]``."""
        read = hot_binding_read(raw_path, query, self.limits)
        if read is None:
            return None
        key, ttl = read
        token = self.authenticator.peek(authorization)
        if token is None:
            return None
        try:
            namespace_id = namespace.decode("ascii")
            authorize(token, token.account_id, namespace_id=namespace_id)
        except (UnicodeDecodeError, errors.KVError):
            return None
        rendered_key = ("binding", token.account_id, namespace_id, key)
        return self._resolved(request_key, token.id, rendered_key, ttl)

    def _answer(self, rendered_key: _RenderedKey, ttl: int) -> bytes | None:
        kind, account_id, namespace_id, key = rendered_key
        memo = self._rendered.get(rendered_key)
        fresh = self.edge.fresh_entry(
            account_id, namespace_id, key, ttl, None if memo is None else memo.entry
        )
        if fresh is None:
            return None
        entry, age, ttl_left = fresh
        rest = kind == "rest"
        if not rest:
            age = ttl_left = 0  # a binding answer says neither: one rendering serves
        if memo is not None and memo.entry is entry:
            if memo.age == age and memo.ttl_left == ttl_left:
                self._metrics.hot_responses += 1
                return memo.response
            body, static = memo.body, memo.static_headers
        else:
            opened = self._open(rest, namespace_id, entry)
            if opened is None:
                return None
            body, static = opened
        if rest:
            info = CacheInfo(hit=True, age=age, ttl=ttl_left)
            varying = [
                (b"cache-status", info.header(self.cache_name).encode()),
                (b"age", str(age).encode()),
            ]
        else:
            varying = [(b"cf-cache-status", b"HIT")]
        response = build_response(
            200, body, [(b"content-type", b"application/octet-stream"), *static, *varying]
        )
        self._remember(rendered_key, _Rendered(entry, age, ttl_left, response, body, static))
        self._metrics.hot_responses += 1
        return response

    def _remember(self, rendered_key: _RenderedKey, rendered: _Rendered) -> None:
        """Keep a rendering, dropping the oldest past the memo's bounds."""
        old = self._rendered.pop(rendered_key, None)
        if old is not None:
            self._rendered_bytes -= old.size()
        size = rendered.size()
        if size > HOT_RENDERED_BYTES:
            return  # rendered again each time: still no I/O, and the memory stays bounded
        self._rendered[rendered_key] = rendered
        self._rendered_bytes += size
        while (
            len(self._rendered) > HOT_RENDERED_RESPONSES
            or self._rendered_bytes > HOT_RENDERED_BYTES
        ):
            oldest = next(iter(self._rendered))
            self._rendered_bytes -= self._rendered.pop(oldest).size()

    def _open(
        self, rest: bool, namespace_id: str, sealed: SealedEntry
    ) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        """The value and its static headers, or None if the keyring cannot open it now."""
        keyring = self.keyring.held
        if keyring is None:
            return None
        try:
            entry = open_entry(keyring, namespace_id, sealed)
            name = b"expiration" if rest else b"cf-expiration"
            static = value_headers(entry.expiration, entry.metadata_json, name, entry.version)
        except (CryptoError, UnicodeDecodeError, ValueError):
            return None  # unknown key id, tampering: the ordinary path explains
        return entry.value, static
