"""The hot read path: a cached value answered without a task, a scope or a coroutine.

pullkv's HTTP server offers every GET to ``App.fast_response`` before anything else. This
module answers it when, and only when, the answer needs no I/O: the token is in the
authenticator's cache, the key's entry is FRESH in the edge cache, and the keyring holds the
data key. The response bytes are rendered once per entry per second (``Age`` and the TTL in
``Cache-Status`` move each second) and reused; anything else (a miss, a revalidation, an
error) returns None and takes the ordinary path, which gives the same answer more slowly.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from pullkv import errors
from pullkv.auth import Authenticator, authorize
from pullkv.backend import CacheInfo
from pullkv.crypto import CryptoError, part_aad
from pullkv.edge.backend import EdgeBackend
from pullkv.edge.cache import (
    ENTRY_EXPIRATION,
    FROZEN_ENTRY,
    FROZEN_MEMO,
    FROZEN_VALIDATED_AT,
    Freshness,
    ValueSlot,
    freshness,
    remaining,
    thaw_slot,
)
from pullkv.http.framing import build_response
from pullkv.http.rest import value_headers
from pullkv.keyring import KeyringHolder
from pullkv.limits import Limits

_PREFIX = b"/client/v4/accounts/"
_NAMESPACES = b"/storage/kv/namespaces/"
_VALUES = b"/values/"
_ACCOUNT_END = len(_PREFIX) + 32
_NS_START = _ACCOUNT_END + len(_NAMESPACES)
_NS_END = _NS_START + 32
_KEY_START = _NS_END + len(_VALUES)
_CACHE_TTL = b"cache_ttl="
_MAX_TARGETS = 10_000
# (raw path, query, Authorization, X-PullKV-Namespace) -> what it reads.
_RequestKey = tuple[bytes, bytes, bytes, bytes | None]
_Target = tuple[str, str, str, str, int]  # kind, account, namespace, key, cache TTL
_URLENCODED = b"urlencoded=true"


@dataclass(slots=True)
class _Rendered:
    """A response rendered for one second of an entry's life, and the data it came from."""

    second: int
    ttl: int
    response: bytes
    body: bytes
    static_headers: list[tuple[bytes, bytes]]


class HotReads:
    """Answers fresh cached value reads synchronously (see the module docstring)."""

    def __init__(
        self,
        edge: EdgeBackend,
        keys: KeyringHolder,
        authenticator: Authenticator,
        limits: Limits,
        cache_name: str,
    ) -> None:
        self.edge = edge
        self.keys = keys
        self.authenticator = authenticator
        self.limits = limits
        self.cache_name = cache_name
        self._targets: dict[_RequestKey, tuple[str, str, str, str, str, int]] = {}

    def respond(
        self, method: bytes, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        """The complete response for a hot read, or None to take the ordinary path."""
        if method not in (b"GET", b"HEAD"):
            return None
        authorization = namespace_header = None
        for name, value in headers:
            lower = name.lower()
            if lower == b"authorization":
                authorization = value
            elif lower == b"x-pullkv-namespace":
                namespace_header = value
        if authorization is None:
            return None
        # A repeated request resolves to the same target: remember it, and skip parsing the
        # path and checking scopes (a token's scopes never change; peek still answers for
        # revocation and expiry).
        request_key = (raw_path, query, authorization, namespace_header)
        target = self._targets.get(request_key)
        if target is not None:
            token = self.authenticator.peek(authorization)
            if token is None or token.id != target[0]:
                return None
            return self._answer(*target[1:])
        if namespace_header is not None:
            return self._binding(raw_path, query, authorization, namespace_header, request_key)
        if (
            not raw_path.startswith(_PREFIX)
            or raw_path[_ACCOUNT_END:_NS_START] != _NAMESPACES
            or raw_path[_NS_END:_KEY_START] != _VALUES
            or len(raw_path) <= _KEY_START
        ):
            return None
        ttl = self._cache_ttl(query)
        if ttl is None:
            return None
        token = self.authenticator.peek(authorization)
        if token is None:
            return None
        try:
            account_id = raw_path[len(_PREFIX) : _ACCOUNT_END].decode("ascii")
            namespace_id = raw_path[_NS_START:_NS_END].decode("ascii")
            key = unquote_to_bytes(raw_path[_KEY_START:]).decode("utf-8")
            authorize(token, account_id, namespace_id=namespace_id)
        except (UnicodeDecodeError, errors.KVError):
            return None
        return self._resolved(request_key, token.id, ("rest", account_id, namespace_id, key, ttl))

    def _resolved(self, request_key: _RequestKey, token_id: str, target: _Target) -> bytes | None:
        response = self._answer(*target)
        if response is not None:
            if len(self._targets) >= _MAX_TARGETS:
                self._targets.clear()
            self._targets[request_key] = (token_id, *target)
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
        if not query.startswith(_URLENCODED) or len(raw_path) < 2 or raw_path == b"/bulk/get":
            return None
        ttl = self._cache_ttl(query[len(_URLENCODED) :].lstrip(b"&"))
        if ttl is None:
            return None
        token = self.authenticator.peek(authorization)
        if token is None:
            return None
        try:
            namespace_id = namespace.decode("ascii")
            key = unquote_to_bytes(raw_path[1:]).decode("utf-8")
            authorize(token, token.account_id, namespace_id=namespace_id)
        except (UnicodeDecodeError, errors.KVError):
            return None
        target = ("binding", token.account_id, namespace_id, key, ttl)
        return self._resolved(request_key, token.id, target)

    def _answer(
        self, kind: str, account_id: str, namespace_id: str, key: str, ttl: int
    ) -> bytes | None:
        cache_key = ("v", account_id, namespace_id, key)
        # The frozen slot is read in place: thawing it costs as much as the rest of a hit.
        stored = self.edge.cache.get_stored(cache_key)
        if type(stored) is not tuple or stored[FROZEN_ENTRY] is None:
            return None
        validated_at = stored[FROZEN_VALIDATED_AT]
        now = self.edge.clock()
        if freshness(validated_at, now, ttl, self.edge.policy) is not Freshness.FRESH:
            return None
        expiration = stored[FROZEN_ENTRY][ENTRY_EXPIRATION]
        if expiration is not None and expiration <= self.edge.epoch():
            return None
        second = int(now - validated_at)
        memos = stored[FROZEN_MEMO]
        memo = memos.get(kind) if isinstance(memos, dict) else None
        if memo is not None and memo.second == second and memo.ttl == ttl:
            self.edge.metrics.hot_responses += 1
            response: bytes = memo.response
            return response
        slot = thaw_slot(stored)
        if not isinstance(slot, ValueSlot):
            return None
        if memo is not None:
            body, static = memo.body, memo.static_headers
        else:
            opened = self._open(kind, namespace_id, key, slot)
            if opened is None:
                return None
            body, static = opened
        if kind == "rest":
            info = CacheInfo(hit=True, age=second, ttl=remaining(validated_at, now, ttl))
            varying = [
                (b"cache-status", info.header(self.cache_name).encode()),
                (b"age", str(second).encode()),
            ]
        else:
            varying = [(b"cf-cache-status", b"HIT")]
        response = build_response(
            200, body, [(b"content-type", b"application/octet-stream"), *static, *varying]
        )
        rendered: dict[str, _Rendered] = dict(memos) if isinstance(memos, dict) else {}
        rendered[kind] = _Rendered(second, ttl, response, body, static)
        self.edge.cache.update(cache_key, slot._replace(memo=rendered))
        self.edge.metrics.hot_responses += 1
        return response

    def _cache_ttl(self, query: bytes) -> int | None:
        if not query:
            return self.limits.default_cache_ttl
        if not query.startswith(_CACHE_TTL) or b"&" in query:
            return None
        digits = query[len(_CACHE_TTL) :]
        if not digits.isdigit() or len(digits) > 15:
            return None
        ttl = int(digits)
        return ttl if ttl >= self.limits.min_cache_ttl else None

    def _open(
        self, kind: str, namespace_id: str, key: str, slot: ValueSlot
    ) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        entry = slot.entry
        keyring = self.keys.keyring
        if entry is None or keyring is None:
            return None
        try:
            body = keyring.open(entry.value, part_aad(namespace_id, key, "value"))
            metadata_json = None
            if entry.metadata is not None:
                raw = keyring.open(entry.metadata, part_aad(namespace_id, key, "metadata"))
                metadata_json = raw.decode("utf-8")
            name = b"expiration" if kind == "rest" else b"cf-expiration"
            static = value_headers(entry.expiration, metadata_json, name)
        except (CryptoError, UnicodeDecodeError, ValueError):
            return None  # unknown key id, tampering: the ordinary path explains
        return body, static
