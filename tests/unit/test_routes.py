"""Metric labels come from a fixed set of route names, never from the request."""

from __future__ import annotations

import re
from pathlib import Path

from pullkv.http import app, internal, routes

HTTP_SOURCES = Path(app.__file__).parent


def test_every_route_name_a_router_sets_is_known() -> None:
    named = set()
    for source in HTTP_SOURCES.glob("*.py"):
        named |= set(re.findall(r"request\.route = \"([^\"]+)\"", source.read_text()))
    assert named, "the routers name their routes"
    assert named <= routes.LABELS, named - routes.LABELS


def test_rest_handlers_are_known_routes() -> None:
    for name in ("get_value", "put_value", "bulk_get", "create_token", "revoke_token"):
        assert name in routes.LABELS
    assert "dispatch" not in routes.LABELS


def test_internal_route_names_are_fixed() -> None:
    assert internal.route_name("/pullkv/v1/fetch") == "internal.fetch"
    assert internal.route_name("/pullkv/v1/tokens/get") == "internal.tokens/get"
    for made_up in ("/pullkv/v1/", "/pullkv/v1/x" * 20, "/pullkv/v1/fetch/more"):
        assert internal.route_name(made_up) == "internal.unknown"
    assert {route.name for route in routes.INTERNAL} <= routes.LABELS
    assert "internal.unknown" in routes.LABELS
