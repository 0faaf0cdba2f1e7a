"""The route table: every route resolves, wrong paths get today's Cloudflare errors and the
"unknown" label, and the hot path's byte matchers agree with the ordinary routers."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from pullkv import errors
from pullkv.http import routes
from pullkv.http.app import App
from pullkv.http.asgi import Message, Request, Response
from pullkv.limits import DEFAULT_LIMITS, Limits
from pullkv.metrics import Metrics
from pullkv.types import TokenRecord
from pullkv.validate import parse_cache_ttl
from tests.unit.helpers import raises_kv

ACCOUNT = "be4c40000000000000000000000000be"
NAMESPACE = "0123456789abcdef0123456789abcdef"
BASE = f"/client/v4/accounts/{ACCOUNT}"
COLLECTION = f"{BASE}/storage/kv/namespaces"
NS = f"{COLLECTION}/{NAMESPACE}"
ROUTERS = {
    "rest": routes.REST_ROUTER,
    "binding": routes.BINDING_ROUTER,
    "internal": routes.INTERNAL_ROUTER,
    "node": routes.NODE_ROUTER,
}


def request(
    method: str, path: str, query: bytes = b"", headers: dict[str, str] | None = None
) -> Request:
    """An ASGI request as pullkv's server builds it, with an empty body."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope, receive)


def resolve(protocol: str, method: str, path: str, query: bytes = b"") -> routes.Match:
    """Resolve as the protocol's dispatcher does (the query through Request.query)."""
    return ROUTERS[protocol].resolve(method, path, request(method, path, query).query)


def concrete(route: routes.Route) -> str:
    """A path the route's pattern matches."""
    values = {"account_id": ACCOUNT, "namespace_id": NAMESPACE, "token_id": "t1", "key": "a%2Fb"}
    return re.sub(r"\{([a-z_]+)[*+]?\}", lambda m: values[m.group(1)], route.pattern)


@pytest.mark.parametrize("route", routes.TABLE, ids=lambda r: f"{r.protocol}:{r.name}:{r.methods}")
def test_every_route_resolves(route: routes.Route) -> None:
    methods = ["GET", "POST", "PATCH"] if routes.ANY_METHOD in route.methods else route.methods
    for method in methods:
        match = resolve(route.protocol, method, concrete(route), b"urlencoded=true")
        assert match.route == route
        if "{key" in route.pattern:
            assert match.params["key"] == "a/b"
        if "GET" in route.methods:
            assert (
                resolve(route.protocol, "HEAD", concrete(route), b"urlencoded=true").route == route
            )


def test_labels_are_the_route_names() -> None:
    assert {route.name for route in routes.TABLE} <= routes.LABELS
    assert {"unknown", "internal.unknown", "binding"} <= routes.LABELS
    rest_names = {route.name for route in routes.REST}
    assert {"get_value", "put_value", "bulk_get", "create_token", "revoke_token"} <= rest_names
    assert {route.name for route in routes.INTERNAL} == {
        *(f"internal.{op}" for op in routes.INTERNAL_OPERATIONS),
        "internal.changes",  # the feed: a GET, beside the POST operations
    }


@dataclass
class Case:
    """A request and what routing makes of it: a route name and params, or an error."""

    protocol: str
    method: str
    path: str
    query: bytes = b""
    name: str | None = None
    params: dict[str, str] | None = None
    status: int | None = None
    code: int | None = None


CASES = [
    # REST: ids are checked as the walk passes them, keys decoded before the method is.
    Case("rest", "GET", f"{BASE}/nothing", status=404, code=errors.NO_ROUTE),
    Case("rest", "GET", BASE, status=404, code=errors.NO_ROUTE),
    Case("rest", "GET", "/client/v4/accounts/", status=404, code=errors.INVALID_ID),
    Case("rest", "GET", "/client/v4/accounts/XYZ/anything", status=404, code=errors.INVALID_ID),
    Case("rest", "GET", COLLECTION, name="list_namespaces"),
    Case("rest", "POST", COLLECTION + "/", name="create_namespace"),
    Case("rest", "GET", COLLECTION + "//", status=404, code=errors.INVALID_ID),
    Case("rest", "GET", f"{COLLECTION}/not-an-id/keys", status=404, code=errors.INVALID_ID),
    Case("rest", "GET", NS + "/", status=404, code=errors.NO_ROUTE),
    Case("rest", "PATCH", NS, status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("rest", "PATCH", NS + "/values/k", status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("rest", "POST", NS + "/metadata/k", status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("rest", "GET", NS + "/values", status=404, code=errors.NO_ROUTE),
    Case("rest", "GET", NS + "/values/", name="get_value", params={"key": ""}),
    Case("rest", "GET", NS + "/values/a%2Fb/c", name="get_value", params={"key": "a/b/c"}),
    Case("rest", "HEAD", NS + "/values/%E2%82%AC", name="get_value", params={"key": "€"}),
    Case("rest", "PATCH", NS + "/values/%FF", status=400, code=errors.INVALID_KEY),
    Case("rest", "GET", NS + "/metadata/..", name="get_metadata", params={"key": ".."}),
    Case("rest", "GET", NS + "/keys", name="list_keys"),
    Case("rest", "GET", NS + "/keys/", status=404, code=errors.NO_ROUTE),
    Case("rest", "GET", NS + "/bulk", status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("rest", "PUT", NS + "/bulk/", status=404, code=errors.NO_ROUTE),
    Case("rest", "DELETE", NS + "/bulk", name="bulk_delete"),
    Case("rest", "POST", NS + "/bulk/delete", name="bulk_delete"),
    Case("rest", "GET", f"{BASE}/tokens/", status=404, code=errors.NO_ROUTE),
    Case("rest", "DELETE", f"{BASE}/tokens/x/y", status=404, code=errors.NO_ROUTE),
    Case("rest", "DELETE", f"{BASE}/tokens/x", name="revoke_token", params={"token_id": "x"}),
    Case("rest", "GET", f"{BASE}/tokens/x", status=405, code=errors.METHOD_NOT_ALLOWED),
    # Binding: "/" lists, POST /bulk/get is a bulk read, any other path names a key.
    Case("binding", "POST", "/bulk/get", name="binding.bulk_get"),
    Case("binding", "GET", "/bulk/get", b"urlencoded=true", "binding.get", {"key": "bulk/get"}),
    Case("binding", "GET", "/", name="binding.list"),
    Case("binding", "PUT", "/", b"urlencoded=true", status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("binding", "POST", "/", status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("binding", "GET", "/k", status=400),
    Case("binding", "GET", "/k", b"urlencoded=false", status=400),
    Case("binding", "GET", "/a%2Fb", b"urlencoded=true", "binding.get", {"key": "a/b"}),
    Case("binding", "GET", "//x", b"urlencoded=true", "binding.get", {"key": "/x"}),
    Case("binding", "DELETE", "/k", b"urlencoded=true", "binding.delete", {"key": "k"}),
    Case("binding", "POST", "/k", b"urlencoded=true", status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("binding", "OPTIONS", "/%FF", b"urlencoded=true", status=400, code=errors.INVALID_KEY),
    Case("binding", "GET", "*", b"urlencoded=true", status=404, code=errors.NO_ROUTE),
    # Internal: one POST per operation.
    Case("internal", "POST", "/pullkv/v1/tokens/get", name="internal.tokens/get"),
    Case("internal", "GET", "/pullkv/v1/fetch", status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("internal", "POST", "/pullkv/v1/fetch/more", status=404, code=errors.NO_ROUTE),
    Case("internal", "POST", "/pullkv/v1/", status=404, code=errors.NO_ROUTE),
    # The node's own endpoints: identity answers GET only and is unknown to other methods.
    Case("node", "POST", routes.OPENAPI_PATH, status=405, code=errors.METHOD_NOT_ALLOWED),
    Case("node", "POST", "/client/v4/user", status=404, code=errors.NO_ROUTE),
    Case("node", "HEAD", "/client/v4/user", name="identity"),
    Case("node", "DELETE", "/healthz", name="healthz"),
    Case("node", "GET", "/nothing-here", status=404, code=errors.NO_ROUTE),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.protocol}:{c.method}:{c.path}")
def test_routing(case: Case) -> None:
    if case.status is not None:
        with raises_kv(case.status, case.code):
            resolve(case.protocol, case.method, case.path, case.query)
        return
    match = resolve(case.protocol, case.method, case.path, case.query)
    assert match.route.name == case.name
    for name, value in (case.params or {}).items():
        assert match.params[name] == value


class _Authenticator:
    """Every request is the one edge admin token's."""

    token = TokenRecord("t1", ACCOUNT, "test", b"", b"", admin=True, edge=True)

    async def authenticate(self, authorization: str | None) -> TokenRecord:
        return self.token


class _Service:
    """Only what the routers read; any handler reaching further fails the test."""

    limits = DEFAULT_LIMITS


def _app() -> App:
    return App(_Service(), _Authenticator(), Metrics(), internal=object())  # type: ignore[arg-type]


def _label_count(app: App, label: str) -> float:
    value = app.metrics.registry.get_sample_value(
        "pullkv_request_duration_seconds_count", {"route": label}
    )
    return value or 0.0


LABELLED = [
    # method, path, headers, status, error code (None: not an error envelope), label
    ("GET", "/nothing-here", {}, 404, errors.NO_ROUTE, "unknown"),
    ("GET", f"{BASE}/nothing", {}, 404, errors.NO_ROUTE, "unknown"),
    ("PATCH", NS + "/values/k", {}, 405, errors.METHOD_NOT_ALLOWED, "unknown"),
    ("GET", f"{COLLECTION}/bad/keys", {}, 404, errors.INVALID_ID, "unknown"),
    ("GET", "/pullkv/v1/made-up", {}, 404, errors.NO_ROUTE, "internal.unknown"),
    ("GET", "/pullkv/v1/fetch", {}, 405, errors.METHOD_NOT_ALLOWED, "internal.fetch"),
    ("POST", routes.OPENAPI_PATH, {}, 405, errors.METHOD_NOT_ALLOWED, "openapi"),
    ("POST", "/client/v4/user", {}, 404, errors.NO_ROUTE, "unknown"),
    ("GET", "/client/v4/memberships", {}, 200, None, "identity"),
    ("PUT", "/healthz", {}, 200, None, "healthz"),
    ("PUT", "/", {"x-pullkv-namespace": NAMESPACE}, 405, None, "binding"),
    ("GET", "/k", {"x-pullkv-namespace": NAMESPACE}, 400, None, "binding"),
]


@pytest.mark.parametrize("method, path, headers, status, code, label", LABELLED)
async def test_app_answers_and_labels(
    method: str, path: str, headers: dict[str, str], status: int, code: int | None, label: str
) -> None:
    app = _app()
    response: Response = await app.handle(request(method, path, headers=headers))
    assert response.status == status
    if code is not None:
        assert f'"code":{code}' in response.body.decode().replace(" ", "")
    assert _label_count(app, label) == 1


# The hot path takes a value read only when the ordinary router would read the same key with
# the same cache TTL; anything else it leaves to the ordinary path (None).
KEYS = ["k", "a%2Fb", "%E2%82%AC", "sp%20ace", "%FF", "a/b", "..", "%", "%2", "caf\xe9", "+"]
QUERIES = [
    b"",
    b"cache_ttl=30",
    b"cache_ttl=29",
    b"cache_ttl=0",
    b"cache_ttl=-1",
    b"cache_ttl=abc",
    b"cache_ttl=60.0",
    b"cache_ttl=+60",
    b"cache_ttl=%36%30",
    b"cache_ttl=2147483647",
    b"cache_ttl=2147483648",
    b"cache_ttl=999999999999999999999",
    b"cache_ttl=",
    b"cache_ttl=60&cache_ttl=60",
    b"cache_ttl=60&other=1",
]
BINDING_QUERIES = [
    b"urlencoded=true",
    b"urlencoded=truex",
    b"urlencoded=truecache_ttl=60",
    b"urlencoded=true&",
    b"urlencoded=true&&cache_ttl=60",
    b"urlencoded=false",
    b"urlencoded=true&cache_ttl=60&cache_ttl=90",
    *(b"urlencoded=true&" + query for query in QUERIES if query),
    b"cache_ttl=60&urlencoded=true",
]
REST_PATHS = [
    *(f"{NS}/values/{key}" for key in KEYS),
    f"{NS}/values/",
    f"{NS}/metadata/k",
    f"{COLLECTION}/{NAMESPACE.upper()}/values/k",
    f"/client/v4/accounts/{ACCOUNT[:-1]}/storage/kv/namespaces/{NAMESPACE}x/values/k",
    f"{NS}/keys",
]


def _ordinary(
    protocol: str, path: str, query: bytes, limits: Limits
) -> tuple[dict[str, str], int] | None:
    """What the ordinary path reads for a GET: params and cache TTL, or None if it refuses."""
    get = request("GET", path, query)
    try:
        match = ROUTERS[protocol].resolve("GET", path, get.query)
        if match.route.name not in ("get_value", "binding.get"):
            return None
        return match.params, parse_cache_ttl(get.query("cache_ttl"), limits)
    except errors.KVError:
        return None


@pytest.mark.parametrize("path", REST_PATHS)
def test_hot_rest_reads_agree_with_the_router(path: str) -> None:
    limits = DEFAULT_LIMITS
    raw = path.encode("latin-1")
    for query in QUERIES:
        hot = routes.hot_rest_read(raw, query, limits)
        ordinary = _ordinary("rest", path, query, limits)
        if hot is not None:
            account, namespace, key, ttl = hot
            params = {"account_id": account, "namespace_id": namespace, "key": key}
            assert ordinary == (params, ttl), (path, query)


@pytest.mark.parametrize("key", [*KEYS, "bulk/get", ""])
def test_hot_binding_reads_agree_with_the_router(key: str) -> None:
    limits = DEFAULT_LIMITS
    path = "/" + key
    for query in BINDING_QUERIES:
        hot = routes.hot_binding_read(path.encode("latin-1"), query, limits)
        ordinary = _ordinary("binding", path, query, limits)
        if hot is not None:
            assert ordinary == ({"key": hot[0]}, hot[1]), (path, query)


def test_the_hot_path_takes_the_usual_reads() -> None:
    limits = DEFAULT_LIMITS.with_changes(min_cache_ttl=1)
    read = routes.hot_rest_read(f"{NS}/values/a%2Fb".encode(), b"cache_ttl=5", limits)
    assert read == (ACCOUNT, NAMESPACE, "a/b", 5)
    assert routes.hot_rest_read(f"{NS}/values/k".encode(), b"", limits) == (
        ACCOUNT,
        NAMESPACE,
        "k",
        limits.default_cache_ttl,
    )
    assert routes.hot_binding_read(b"/%E2%82%AC", b"urlencoded=true", limits) == ("€", 60)
    assert routes.hot_binding_read(b"/k", b"urlencoded=true&cache_ttl=90", limits) == ("k", 90)
    # Below the floor, and not the simple form: the ordinary path explains or answers.
    assert routes.hot_rest_read(f"{NS}/values/k".encode(), b"cache_ttl=0", limits) is None
    assert routes.hot_binding_read(b"/k", b"cache_ttl=60&urlencoded=true", limits) is None


async def test_each_identity_route_runs_its_own_handler() -> None:
    app = _app()
    bodies = set()
    for route in routes.NODE:
        if route.name == "identity":
            response = await app.handle(request("GET", route.pattern))
            assert response.status == 200
            bodies.add(response.body)
    assert len(bodies) == 4
