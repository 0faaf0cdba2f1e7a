"""Strong reads' small parts: the ``Cache-Control`` test, the ETag and the fetch flag."""

from __future__ import annotations

import pytest

from pullkv import errors, wire
from pullkv.http.rest import etag_header, value_headers, wants_strong_read


@pytest.mark.parametrize(
    ("value", "strong"),
    [
        (None, False),
        ("", False),
        ("max-age=0", False),
        ("no-store", False),
        ("no-cache", True),
        ("No-Cache", True),
        ("max-age=0, no-cache", True),
        ('no-cache="set-cookie"', True),
        ("no-cachex", False),
    ],
)
def test_wants_strong_read(value: str | None, strong: bool) -> None:
    assert wants_strong_read(value) is strong


def test_value_headers_carry_the_version_as_etag() -> None:
    assert etag_header(42) == (b"etag", b'"42"')
    assert value_headers(None, None, b"expiration", 7) == [(b"etag", b'"7"')]


def test_fetch_request_revalidate_flag_round_trips() -> None:
    plain = wire.FetchRequest("a", "n", (("k", 3),), None)
    assert "revalidate" not in plain.to_wire()  # unchanged for plain fetches
    assert wire.FetchRequest.from_wire(plain.to_wire()) == plain
    strong = wire.FetchRequest("a", "n", (("k", None),), 60, revalidate=True)
    assert wire.FetchRequest.from_wire(strong.to_wire()) == strong
    with pytest.raises(errors.KVError):
        wire.FetchRequest.from_wire({**strong.to_wire(), "revalidate": "yes"})
