"""Unit tests for pullkv.auth: token format, verification, bearer parsing, permissions."""

from __future__ import annotations

import dataclasses
import hmac
import re
from typing import Any

import pytest

from pullkv import errors
from pullkv.auth import (
    ENV_ADMIN_ID,
    Authenticator,
    authorize,
    authorize_creation,
    authorize_internal,
    bearer_token,
    creation_refusal,
    generate_token,
    hash_token,
    make_record,
    may_create,
    token_id_of,
    unrestricted_admin,
    verify,
)
from pullkv.types import TokenRecord
from tests.unit.helpers import FakeClock, raises_kv

ACCOUNT = "0" * 32
OTHER_ACCOUNT = "1" * 32
NS1 = "a" * 32
NS2 = "b" * 32


def record(**changes: Any) -> tuple[str, TokenRecord]:
    token_id, token = generate_token()
    rec = make_record(token, token_id, ACCOUNT, "test", now=100)
    return token, dataclasses.replace(rec, **changes)


# Format.
def test_generated_token_format() -> None:
    token_id, token = generate_token()
    assert re.fullmatch(r"[0-9a-f]{16}", token_id)
    assert re.fullmatch(r"pkv_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}", token)
    assert token.startswith(f"pkv_{token_id}_")
    assert token_id_of(token) == token_id


def test_generated_tokens_are_unique() -> None:
    tokens = {generate_token()[1] for _ in range(100)}
    assert len(tokens) == 100


@pytest.mark.parametrize(
    "token",
    [
        "my-operator-token",
        "",
        "pkv_0123456789abcdef_short",  # secret too short
        "pkv_0123456789ABCDEF_" + "x" * 30,  # id not lowercase hex
        "pkv_0123456789abcde_" + "x" * 30,  # id too short
        "pkv_0123456789abcdef_" + "x" * 30 + "!",  # character outside the alphabet
        "xpkv_0123456789abcdef_" + "x" * 30,
    ],
)
def test_other_tokens_claim_the_env_admin_id(token: str) -> None:
    assert token_id_of(token) == ENV_ADMIN_ID


def test_make_record() -> None:
    token_id, token = generate_token()
    rec = make_record(
        token, token_id, ACCOUNT, "ci", now=42, namespaces=[NS1], read_only=True, admin=False
    )
    assert rec.id == token_id and rec.account_id == ACCOUNT and rec.name == "ci"
    assert rec.namespaces == (NS1,)
    assert rec.read_only and not rec.admin
    assert rec.created_at == 42 and rec.revoked_at is None
    assert len(rec.salt) == 16
    assert rec.secret_hash == hash_token(rec.salt, token)
    assert token.encode() not in rec.secret_hash
    other = make_record(token, token_id, ACCOUNT, "ci", now=42)
    assert other.salt != rec.salt and other.secret_hash != rec.secret_hash
    assert other.namespaces is None


def test_to_api_hides_the_hash() -> None:
    _, rec = record()
    shown = rec.to_api()
    assert "secret_hash" not in shown and "salt" not in shown
    assert shown["status"] == "active"
    assert dataclasses.replace(rec, revoked_at=5).to_api()["status"] == "revoked"


# Verification.
def test_verify() -> None:
    token, rec = record()
    assert verify(rec, token)
    assert not verify(rec, token + "x")
    assert not verify(rec, token[:-1])
    assert not verify(rec, "")
    other_token, _ = record()
    assert not verify(rec, other_token)


def test_verify_revoked() -> None:
    token, rec = record(revoked_at=200)
    assert not verify(rec, token)


@pytest.mark.parametrize(
    ("presented", "revoked"), [("right", None), ("wrong", None), ("right", 200), ("wrong", 200)]
)
def test_verify_always_takes_the_constant_time_path(
    monkeypatch: pytest.MonkeyPatch, presented: str, revoked: int | None
) -> None:
    token, rec = record(revoked_at=revoked)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module auth uses
    verify(rec, token if presented == "right" else "pkv_0000000000000000_" + "y" * 40)
    assert len(calls) == 1
    assert calls[0][1] == rec.secret_hash


# Bearer header.
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer   abc  ", "abc"),
        ("Bearer pkv_0123456789abcdef_xyz", "pkv_0123456789abcdef_xyz"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("Basic abc", None),
        ("Token abc", None),
        ("abc", None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


# Permissions.
def test_authorize_full_token() -> None:
    _, rec = record()
    authorize(rec, ACCOUNT)
    authorize(rec, ACCOUNT, namespace_id=NS1, write=True)
    authorize(rec, ACCOUNT, account_wide=True, write=True)


def test_authorize_other_account() -> None:
    _, rec = record(admin=True)
    with raises_kv(403, errors.AUTHENTICATION, "not valid for this account"):
        authorize(rec, OTHER_ACCOUNT)
    with raises_kv(403, errors.AUTHENTICATION, "not valid for this account"):
        authorize(rec, OTHER_ACCOUNT, namespace_id=NS1)


def test_authorize_read_only() -> None:
    _, rec = record(read_only=True)
    authorize(rec, ACCOUNT, namespace_id=NS1)
    authorize(rec, ACCOUNT, account_wide=True)  # listing namespaces is a read
    with raises_kv(403, errors.AUTHENTICATION, "read-only"):
        authorize(rec, ACCOUNT, namespace_id=NS1, write=True)
    with raises_kv(403, errors.AUTHENTICATION, "read-only"):
        authorize(rec, ACCOUNT, account_wide=True, write=True)


def test_authorize_namespace_limited() -> None:
    _, rec = record(namespaces=(NS1,))
    authorize(rec, ACCOUNT, namespace_id=NS1)
    authorize(rec, ACCOUNT, namespace_id=NS1, write=True)
    with raises_kv(403, errors.AUTHENTICATION, "not valid for this namespace"):
        authorize(rec, ACCOUNT, namespace_id=NS2)
    with raises_kv(403, errors.AUTHENTICATION, "limited to some namespaces"):
        authorize(rec, ACCOUNT, account_wide=True)
    with raises_kv(403, errors.AUTHENTICATION, "limited to some namespaces"):
        authorize(rec, ACCOUNT, namespace_id=NS1, account_wide=True)


def test_authorize_no_namespaces_at_all() -> None:
    _, rec = record(namespaces=())
    with raises_kv(403, errors.AUTHENTICATION, "not valid for this namespace"):
        authorize(rec, ACCOUNT, namespace_id=NS1)


def test_authorize_admin_only() -> None:
    _, plain = record()
    _, admin = record(admin=True)
    with raises_kv(403, errors.AUTHENTICATION, "admin token"):
        authorize(plain, ACCOUNT, admin=True)
    authorize(admin, ACCOUNT, admin=True)
    authorize(admin, ACCOUNT, admin=True, write=True)
    _, ro_admin = record(admin=True, read_only=True)
    authorize(ro_admin, ACCOUNT, admin=True)
    with raises_kv(403, errors.AUTHENTICATION, "read-only"):
        authorize(ro_admin, ACCOUNT, admin=True, write=True)


def test_authorize_account_is_checked_first() -> None:
    _, rec = record(read_only=True, namespaces=(NS1,))
    with raises_kv(403, match="not valid for this account"):
        authorize(rec, OTHER_ACCOUNT, namespace_id=NS2, write=True, admin=True)


# Creating and revoking tokens: a new token's rights are a subset of its creator's.
def test_unrestricted_admin() -> None:
    assert unrestricted_admin(record(admin=True)[1])
    assert unrestricted_admin(record(admin=True, edge=True)[1])
    assert not unrestricted_admin(record()[1])
    assert not unrestricted_admin(record(admin=True, read_only=True)[1])
    assert not unrestricted_admin(record(admin=True, namespaces=(NS1,))[1])
    assert not unrestricted_admin(record(admin=True, namespaces=())[1])


def test_unrestricted_admin_creates_anything_in_its_account() -> None:
    _, creator = record(admin=True)
    for changes in (
        {},
        {"admin": True},
        {"edge": True},
        {"admin": True, "edge": True},
        {"read_only": True, "namespaces": (NS1,)},
    ):
        assert creation_refusal(creator, record(**changes)[1]) is None, changes
    with raises_kv(403, errors.AUTHENTICATION, "own account"):
        authorize_creation(creator, record(account_id=OTHER_ACCOUNT)[1])


@pytest.mark.parametrize(
    ("creator", "new", "reason"),
    [
        ({}, {}, "needs an admin token"),
        ({"edge": True}, {"read_only": True}, "needs an admin token"),
        ({"admin": True, "namespaces": (NS1,)}, {"namespaces": (NS1,), "admin": True}, "admin"),
        ({"admin": True, "namespaces": (NS1,)}, {"namespaces": (NS1,), "edge": True}, "edge"),
        ({"admin": True, "namespaces": (NS1,)}, {}, "limited to some"),
        ({"admin": True, "namespaces": (NS1,)}, {"namespaces": (NS1, NS2)}, NS2),
        ({"admin": True, "namespaces": (NS1,)}, {"namespaces": (NS2,)}, NS2),
        ({"admin": True, "read_only": True}, {}, "read-only"),
        ({"admin": True, "read_only": True}, {"namespaces": (NS1,)}, "read-only"),
        ({"admin": True, "read_only": True}, {"read_only": True, "admin": True}, "admin"),
        ({"admin": True, "read_only": True}, {"read_only": True, "edge": True}, "edge"),
    ],
)
def test_creation_refused(creator: dict[str, Any], new: dict[str, Any], reason: str) -> None:
    with raises_kv(403, errors.AUTHENTICATION, reason):
        authorize_creation(record(**creator)[1], record(**new)[1])


@pytest.mark.parametrize(
    ("creator", "new"),
    [
        ({"admin": True, "namespaces": (NS1, NS2)}, {"namespaces": (NS1,)}),
        ({"admin": True, "namespaces": (NS1, NS2)}, {"namespaces": (NS2, NS1)}),
        ({"admin": True, "namespaces": (NS1,)}, {"namespaces": (NS1,), "read_only": True}),
        ({"admin": True, "namespaces": (NS1,)}, {"namespaces": ()}),
        ({"admin": True, "read_only": True}, {"read_only": True}),
        ({"admin": True, "read_only": True}, {"read_only": True, "namespaces": (NS2,)}),
        (
            {"admin": True, "read_only": True, "namespaces": (NS1,)},
            {"read_only": True, "namespaces": (NS1,)},
        ),
    ],
)
def test_creation_allowed(creator: dict[str, Any], new: dict[str, Any]) -> None:
    authorize_creation(record(**creator)[1], record(**new)[1])


_FLAGS = [
    {"admin": admin, "edge": edge, "read_only": read_only, "namespaces": namespaces}
    for admin in (False, True)
    for edge in (False, True)
    for read_only in (False, True)
    for namespaces in (None, (), (NS1,), (NS1, NS2), (NS2,))
]
# Every check ``authorize`` and the internal API make, as keyword arguments.
_OPERATIONS: list[dict[str, Any]] = [
    {"namespace_id": namespace_id, "write": write, "account_wide": wide, "admin": admin}
    for namespace_id in (None, NS1, NS2)
    for write in (False, True)
    for wide in (False, True)
    for admin in (False, True)
]


def _allowed(token: TokenRecord, **operation: Any) -> bool:
    try:
        authorize(token, ACCOUNT, **operation)
    except errors.KVError:
        return False
    return True


def test_no_token_creates_one_that_can_do_more_than_itself() -> None:
    tokens = [record(**flags)[1] for flags in _FLAGS]
    checked = 0
    for creator in tokens:
        for new in tokens:
            if not may_create(creator, new):
                continue
            checked += 1
            for operation in _OPERATIONS:
                if _allowed(new, **operation):
                    assert _allowed(creator, **operation), (creator, new, operation)
            if new.edge:
                assert creator.edge or unrestricted_admin(creator)
            # What the new token may create, its creator may too (no escalation in steps).
            for grandchild in tokens:
                if may_create(new, grandchild):
                    assert may_create(creator, grandchild), (creator, new, grandchild)
    assert checked > 100  # the loop did compare real pairs


def test_internal_api_needs_an_edge_token_of_the_account() -> None:
    _, edge = record(edge=True)
    assert authorize_internal(edge, ACCOUNT) == ACCOUNT
    with raises_kv(403, errors.AUTHENTICATION, "needs an edge token"):
        authorize_internal(record(admin=True)[1], ACCOUNT)
    with raises_kv(403, errors.AUTHENTICATION, "not valid for this account"):
        authorize_internal(edge, OTHER_ACCOUNT)
    with raises_kv(403, errors.AUTHENTICATION, "not valid for this account"):
        authorize_internal(edge, None)
    with raises_kv(403, errors.AUTHENTICATION, "not valid for this account"):
        authorize_internal(edge, [ACCOUNT])


# Authenticator, over a store that only holds tokens.
class TokenStore:
    def __init__(self) -> None:
        self.tokens: dict[str, TokenRecord] = {}
        self.lookups = 0

    async def get_token(self, token_id: str) -> TokenRecord | None:
        self.lookups += 1
        return self.tokens.get(token_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> TokenStore:
    return TokenStore()


@pytest.fixture
def authenticator(store: TokenStore, clock: FakeClock) -> Authenticator:
    return Authenticator(store, clock, cache_seconds=10.0)


async def test_authenticate(store: TokenStore, authenticator: Authenticator) -> None:
    token, rec = record()
    store.tokens[rec.id] = rec
    assert await authenticator.authenticate(f"Bearer {token}") == rec


@pytest.mark.parametrize("header", [None, "", "Basic x", "Bearer nope", "Bearer pkv_x"])
async def test_authenticate_rejects(
    store: TokenStore, authenticator: Authenticator, header: str | None
) -> None:
    _, rec = record()
    store.tokens[rec.id] = rec
    with raises_kv(401, errors.AUTHENTICATION, "^Authentication error$"):
        await authenticator.authenticate(header)


async def test_authenticate_wrong_secret(store: TokenStore, authenticator: Authenticator) -> None:
    token, rec = record()
    store.tokens[rec.id] = rec
    with raises_kv(401):
        await authenticator.authenticate(f"Bearer {token[:-1]}X")


async def test_authenticate_env_admin(store: TokenStore, authenticator: Authenticator) -> None:
    rec = make_record("operator secret", ENV_ADMIN_ID, ACCOUNT, "admin", now=0, admin=True)
    store.tokens[ENV_ADMIN_ID] = rec
    assert await authenticator.authenticate("Bearer operator secret") == rec
    with raises_kv(401):
        await authenticator.authenticate("Bearer operator-secret")


async def test_authenticate_caches_then_expires(
    store: TokenStore, authenticator: Authenticator, clock: FakeClock
) -> None:
    token, rec = record()
    store.tokens[rec.id] = rec
    header = f"Bearer {token}"
    await authenticator.authenticate(header)
    await authenticator.authenticate(header)
    assert store.lookups == 1
    # Revoked by another process: still accepted until the cache entry lapses.
    store.tokens[rec.id] = dataclasses.replace(rec, revoked_at=1)
    clock.advance(9.9)
    await authenticator.authenticate(header)
    clock.advance(0.1)
    with raises_kv(401):
        await authenticator.authenticate(header)


async def test_authenticate_forget(store: TokenStore, authenticator: Authenticator) -> None:
    token, rec = record()
    store.tokens[rec.id] = rec
    header = f"Bearer {token}"
    await authenticator.authenticate(header)
    store.tokens[rec.id] = dataclasses.replace(rec, revoked_at=1)
    authenticator.forget(rec.id)
    with raises_kv(401):
        await authenticator.authenticate(header)


async def test_failed_lookup_is_not_cached(store: TokenStore, authenticator: Authenticator) -> None:
    token, rec = record()
    with raises_kv(401):
        await authenticator.authenticate(f"Bearer {token}")
    store.tokens[rec.id] = rec
    assert await authenticator.authenticate(f"Bearer {token}") == rec


async def test_peek_needs_a_prior_verification_and_expires_with_it(
    store: TokenStore, authenticator: Authenticator, clock: FakeClock
) -> None:
    token, rec = record()
    store.tokens[rec.id] = rec
    header = f"Bearer {token}".encode()
    assert authenticator.peek(header) is None  # never verified: no I/O on the hot path
    await authenticator.authenticate(header.decode())
    assert authenticator.peek(header) == rec
    assert authenticator.peek(header) == rec  # the second look is by the raw header
    assert authenticator.peek(header[:-1]) is None
    clock.advance(10.0)
    assert authenticator.peek(header) is None


async def test_peek_forgets_revoked_tokens(store: TokenStore, authenticator: Authenticator) -> None:
    token, rec = record()
    store.tokens[rec.id] = rec
    header = f"Bearer {token}"
    await authenticator.authenticate(header)
    assert authenticator.peek(header.encode()) == rec
    authenticator.forget(rec.id)
    assert authenticator.peek(header.encode()) is None


async def test_only_the_canonical_header_is_cached(
    store: TokenStore, authenticator: Authenticator
) -> None:
    token, rec = record()
    store.tokens[rec.id] = rec
    for padding in range(1, 50):  # variants verify, but do not fill the cache
        assert await authenticator.authenticate(f"bearer{' ' * padding}{token}") == rec
    assert store.lookups == 49
    assert authenticator.peek(f"bearer {token}".encode()) is None
    await authenticator.authenticate(f"Bearer {token}")
    assert authenticator.peek(f"Bearer {token}".encode()) == rec
