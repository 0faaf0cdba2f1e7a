"""Small helpers shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pullkv.errors import KVError
from pullkv.types import TokenRecord


@contextmanager
def raises_kv(
    status: int, code: int | None = None, match: str | None = None
) -> Iterator[pytest.ExceptionInfo[KVError]]:
    """Like pytest.raises(KVError), also checking the HTTP status and the error code."""
    with pytest.raises(KVError, match=match) as info:
        yield info
    assert info.value.status == status, repr(info.value)
    if code is not None:
        assert info.value.code == code, repr(info.value)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def token(
    token_id: str,
    account: str = "0" * 32,
    *,
    name: str | None = None,
    namespaces: tuple[str, ...] | None = None,
    read_only: bool = False,
    admin: bool = False,
    edge: bool = False,
    created_at: int = 100,
    revoked_at: int | None = None,
) -> TokenRecord:
    """A stored token record with made-up salt and hash, for store tests."""
    return TokenRecord(
        id=token_id,
        account_id=account,
        name=f"name-{token_id}" if name is None else name,
        salt=b"\x00salt" + token_id.encode(),
        secret_hash=b"\xffhash" + token_id.encode(),
        namespaces=namespaces,
        read_only=read_only,
        admin=admin,
        edge=edge,
        created_at=created_at,
        revoked_at=revoked_at,
    )
