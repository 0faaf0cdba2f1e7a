"""Small helpers shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pullkv.errors import KVError


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
