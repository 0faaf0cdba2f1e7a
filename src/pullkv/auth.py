"""API tokens: generation, salted hashing, constant-time verification and permissions.

A token reads ``pkv_<id>_<secret>``. The id finds the record; the whole token is then checked
against a salted SHA-256 with ``hmac.compare_digest``. A token set by the operator through
``PULLKV_ADMIN_TOKEN`` has any form and is kept under the fixed id ``env-admin``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Sequence

from pullkv import errors
from pullkv.backend import TokenSource
from pullkv.limits import VERIFIED_TOKENS
from pullkv.types import TokenRecord

ADMIN_TOKEN_ENV = "PULLKV_ADMIN_TOKEN"
ENV_ADMIN_ID = "env-admin"
_TOKEN = re.compile(r"pkv_([0-9a-f]{16})_[A-Za-z0-9_-]{20,}")


def hash_token(salt: bytes, token: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(salt + token.encode("utf-8")).digest()


def make_record(
    token: str,
    token_id: str,
    account_id: str,
    name: str,
    *,
    now: int,
    namespaces: Sequence[str] | None = None,
    read_only: bool = False,
    admin: bool = False,
    edge: bool = False,
) -> TokenRecord:
    """A record for ``token`` with a fresh salt."""
    salt = os.urandom(16)
    return TokenRecord(
        id=token_id,
        account_id=account_id,
        name=name,
        salt=salt,
        secret_hash=hash_token(salt, token),
        namespaces=tuple(namespaces) if namespaces is not None else None,
        read_only=read_only,
        admin=admin,
        edge=edge,
        created_at=now,
    )


def generate_token() -> tuple[str, str]:
    """A new (token id, token)."""
    token_id = secrets.token_hex(8)
    return token_id, f"pkv_{token_id}_{secrets.token_urlsafe(32)}"


def token_id_of(token: str) -> str:
    """The record id a presented token claims."""
    match = _TOKEN.fullmatch(token)
    return match.group(1) if match else ENV_ADMIN_ID


def verify(record: TokenRecord, token: str) -> bool:
    """Whether ``token`` is the active token of ``record``, compared in constant time."""
    matches = hmac.compare_digest(hash_token(record.salt, token), record.secret_hash)
    return matches and record.revoked_at is None


def bearer_token(header: str | None) -> str | None:
    """The token from an ``Authorization: Bearer`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authorize(
    token: TokenRecord,
    account_id: str,
    *,
    namespace_id: str | None = None,
    write: bool = False,
    account_wide: bool = False,
    admin: bool = False,
) -> None:
    """Raise 403 unless ``token`` may act on this account (and namespace) in this way.

    ``account_wide`` marks operations on the account's set of namespaces (create, rename,
    delete), which a token limited to some namespaces may not do.
    """
    if token.account_id != account_id:
        raise errors.permission_denied("the token is not valid for this account")
    if admin and not token.admin:
        raise errors.permission_denied("managing tokens needs an admin token")
    if write and token.read_only:
        raise errors.permission_denied("the token is read-only")
    if token.namespaces is not None:
        if account_wide:
            raise errors.permission_denied("the token is limited to some namespaces")
        if namespace_id is not None and namespace_id not in token.namespaces:
            raise errors.permission_denied("the token is not valid for this namespace")


def unrestricted_admin(token: TokenRecord) -> bool:
    """Whether ``token`` is an admin limited neither to some namespaces nor to reading."""
    return token.admin and token.namespaces is None and not token.read_only


def creation_refusal(creator: TokenRecord, new: TokenRecord) -> str | None:
    """Why ``creator`` may not create a token with the rights of ``new``, or None if it may.

    A token never makes one that can do more than itself: same account, a subset of its
    namespaces, read-only if it is, and admin or edge rights only from an unrestricted admin
    (so a limited admin cannot mint a token that escapes its limits, and only the account's
    full admins reach the internal API). The same rule says which tokens it may revoke.
    """
    if creator.account_id != new.account_id:
        return "a token manages only tokens of its own account"
    if not creator.admin:
        return "managing tokens needs an admin token"
    if (new.admin or new.edge) and not unrestricted_admin(creator):
        return (
            "only an admin token limited to no namespaces and not read-only may create or "
            "revoke admin and edge tokens"
        )
    if creator.read_only and not new.read_only:
        return "a read-only admin token creates and revokes only read-only tokens"
    if creator.namespaces is not None:
        if new.namespaces is None:
            return (
                "a token limited to some namespaces creates and revokes only tokens limited to "
                "some of the same namespaces"
            )
        outside = sorted(set(new.namespaces) - set(creator.namespaces))
        if outside:
            return f"the token is not valid for namespace {outside[0]}"
    return None


def may_create(creator: TokenRecord, new: TokenRecord) -> bool:
    """Whether ``creator`` may create (and so revoke, and see) a token like ``new``."""
    return creation_refusal(creator, new) is None


def authorize_creation(creator: TokenRecord, new: TokenRecord) -> None:
    """Raise 403 unless ``creator`` may create or revoke a token like ``new``."""
    reason = creation_refusal(creator, new)
    if reason is not None:
        raise errors.permission_denied(reason)


def authorize_internal(token: TokenRecord, account_id: object) -> str:
    """Raise 403 unless ``token`` is an edge token of ``account_id``; the account id.

    The internal API serves sealed data and raw writes with no further scoping, so an edge
    token reaches its own account only, whatever account a message names.
    """
    if not token.edge:
        raise errors.permission_denied("the internal API needs an edge token")
    if not isinstance(account_id, str) or account_id != token.account_id:
        raise errors.permission_denied("the edge token is not valid for this account")
    return account_id


class Authenticator:
    """Turns a presented token into its record, caching verified tokens briefly.

    This is pullkv's one cache of verified tokens, at origins and edges alike; the hot read
    path reads it too (``peek``). The cache keeps hot requests off the token source and off
    the hashing; its lifetime bounds how long a token revoked by another process keeps
    working here. (An edge's token source caches the upstream's records by id, which is
    another thing: ``edge.tokens``.)
    """

    def __init__(
        self, source: TokenSource, clock: Callable[[], float], *, cache_seconds: float = 10.0
    ) -> None:
        self._source = source
        self._clock = clock
        self._cache_seconds = cache_seconds
        # Keyed by the raw Authorization header, so the hot path finds a verified token with
        # one dict lookup on the bytes it already has.
        self._cache: dict[bytes, tuple[TokenRecord, float]] = {}

    async def authenticate(self, authorization: str | None) -> TokenRecord:
        """The record of a valid token; 401 for a missing or wrong one."""
        token = bearer_token(authorization)
        if token is None or authorization is None:
            raise errors.authentication_error()
        cache_key = authorization.encode("latin-1")
        now = self._clock()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        record = await self._source.get_token(token_id_of(token))
        if record is None or not verify(record, token):
            self._cache.pop(cache_key, None)
            raise errors.authentication_error()
        # Only the canonical spelling is remembered: the header's case and spacing vary
        # freely, and variants of one token must not be able to crowd others out.
        if authorization != f"Bearer {token}":
            return record
        if len(self._cache) > VERIFIED_TOKENS:
            self._cache.clear()
        self._cache[cache_key] = (record, now + self._cache_seconds)
        return record

    def peek(self, authorization: bytes) -> TokenRecord | None:
        """A verified token from the cache only (no I/O): the hot path's authentication."""
        cached = self._cache.get(authorization)
        if cached is None or cached[1] <= self._clock():
            return None
        return cached[0]

    def forget(self, token_id: str) -> None:
        """Drop cached verifications of a token (after revoking it here)."""
        self._cache = {k: v for k, v in self._cache.items() if v[0].id != token_id}
