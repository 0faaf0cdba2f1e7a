"""Every route pullkv serves, as data: one table per protocol, and the router that walks it.

A route is a method (or several), a path pattern, a name (the handler's name and the metrics
label, so labels come from this table and never from a request) and the handler it runs. The
REST, binding, internal and node routers resolve through :class:`Router`; the hot read path
matches the same value-read routes with byte patterns compiled from this table
(:func:`hot_rest_read`, :func:`hot_binding_read`).

Patterns work on the raw (still percent-encoded) path, so a key's ``%2F`` stays part of the
key. ``{name}`` is one path segment, ``{name*}`` the rest of the path (possibly empty) and
``{name+}`` the rest (not empty). A parameter is checked and decoded the moment the walk passes
it, before anything further is matched: a bad account id is reported as such even on a path
that leads nowhere, and a key is decoded before the method is considered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from pullkv import errors
from pullkv.limits import Limits
from pullkv.validate import ID_PATTERN, decode_key, parse_cache_ttl, validate_id

Protocol = Literal["rest", "binding", "internal", "node"]
ANY_METHOD = "*"
ACCOUNTS_PREFIX = "/client/v4/accounts/"
INTERNAL_PREFIX = "/pullkv/v1/"
OPENAPI_PATH = "/client/v4/openapi.json"
NAMESPACE_HEADER = "x-pullkv-namespace"
# The label of a request no route claimed (made-up paths add no metrics series).
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Route:
    """One route: which methods at which path run which handler, under which name."""

    protocol: Protocol
    methods: tuple[str, ...]
    pattern: str
    name: str
    # The handler, by name, in the protocol's module (a RestAPI method, an internal operation).
    handler: str = ""
    # The key is named URL-encoded and the request must say so (``?urlencoded=true``, as
    # workerd always does), checked before the key is decoded.
    urlencoded: bool = False
    # "/pattern/" names the same resource (as httpx's base_url joins a collection).
    trailing_slash: bool = False
    # Other methods are told there is no route here (404) rather than 405.
    only_these_methods: bool = False

    def accepts(self, method: str) -> bool:
        """Whether ``method`` runs this route; HEAD is GET without the body."""
        if ANY_METHOD in self.methods:
            return True
        return ("GET" if method == "HEAD" else method) in self.methods


class NoMatch(Exception):
    """A path segment a parameter does not take: the walk finds no route there."""


def _token_id(raw: str) -> str:
    if not raw:
        raise NoMatch
    return raw


# How each parameter is checked and decoded, by name. A parameter whose name is not here is
# a configuration error caught when the table is built.
CONVERTERS: dict[str, Callable[[str], str]] = {
    "account_id": lambda raw: validate_id("account", raw),
    "namespace_id": lambda raw: validate_id("namespace", raw),
    "token_id": _token_id,
    "key": decode_key,
}

_REST = ACCOUNTS_PREFIX + "{account_id}"
_NAMESPACES = _REST + "/storage/kv/namespaces"
_NAMESPACE = _NAMESPACES + "/{namespace_id}"


def _rest(method: str, pattern: str, name: str, trailing_slash: bool = False) -> Route:
    return Route("rest", (method,), pattern, name, name, trailing_slash=trailing_slash)


REST: tuple[Route, ...] = (
    _rest("GET", _REST + "/tokens", "list_tokens"),
    _rest("POST", _REST + "/tokens", "create_token"),
    _rest("DELETE", _REST + "/tokens/{token_id}", "revoke_token"),
    _rest("GET", _NAMESPACES, "list_namespaces", trailing_slash=True),
    _rest("POST", _NAMESPACES, "create_namespace", trailing_slash=True),
    _rest("GET", _NAMESPACE, "get_namespace"),
    # pullkv's own (not a Cloudflare route): counts over the namespace's live keys.
    _rest("GET", _NAMESPACE + "/pullkv/stats", "namespace_stats"),
    # pullkv's own: the namespace's change feed, for applications (pullkv.feed.stream).
    _rest("GET", _NAMESPACE + "/changes", "watch_changes"),
    _rest("PUT", _NAMESPACE, "rename_namespace"),
    _rest("DELETE", _NAMESPACE, "delete_namespace"),
    _rest("GET", _NAMESPACE + "/values/{key*}", "get_value"),
    _rest("PUT", _NAMESPACE + "/values/{key*}", "put_value"),
    _rest("DELETE", _NAMESPACE + "/values/{key*}", "delete_value"),
    _rest("GET", _NAMESPACE + "/metadata/{key*}", "get_metadata"),
    _rest("GET", _NAMESPACE + "/keys", "list_keys"),
    _rest("PUT", _NAMESPACE + "/bulk", "bulk_put"),
    _rest("DELETE", _NAMESPACE + "/bulk", "bulk_delete"),
    _rest("POST", _NAMESPACE + "/bulk/delete", "bulk_delete"),
    _rest("POST", _NAMESPACE + "/bulk/get", "bulk_get"),
)

# What workerd sends for a kvNamespace binding (see pullkv.http.binding). The namespace comes
# in a header, so the paths hold only the key.
BINDING: tuple[Route, ...] = (
    Route("binding", ("POST",), "/bulk/get", "binding.bulk_get", "bulk_get"),
    Route("binding", ("GET",), "/", "binding.list", "list_keys"),
    Route("binding", ("GET",), "/{key+}", "binding.get", "get", urlencoded=True),
    Route("binding", ("PUT",), "/{key+}", "binding.put", "put", urlencoded=True),
    Route("binding", ("DELETE",), "/{key+}", "binding.delete", "delete", urlencoded=True),
)

# The internal API between tiers: every operation is a POST to its own path.
INTERNAL_OPERATIONS = (
    "fetch",
    "list",
    "write",
    "delete",
    "namespace",
    "namespaces/list",
    "namespaces/create",
    "namespaces/rename",
    "namespaces/delete",
    "namespaces/stats",
    "tokens/get",
    "tokens/add",
    "tokens/list",
    "tokens/revoke",
    "keyring",
)
INTERNAL: tuple[Route, ...] = (
    *(
        Route("internal", ("POST",), INTERNAL_PREFIX + op, f"internal.{op}", op)
        for op in INTERNAL_OPERATIONS
    ),
    # The change feed: a long-lived stream, so a GET (pullkv.feed.stream).
    Route("internal", ("GET",), INTERNAL_PREFIX + "changes", "internal.changes", "changes"),
)
INTERNAL_UNKNOWN = "internal.unknown"


def _identity(path: str, handler: str) -> Route:
    return Route("node", ("GET",), path, "identity", handler, only_these_methods=True)


# The node's own endpoints beside the protocols. The identity endpoints are what Cloudflare
# clients call to discover their account (wrangler calls /memberships and /accounts when no
# account id is configured).
NODE: tuple[Route, ...] = (
    Route("node", ("GET",), OPENAPI_PATH, "openapi", "openapi"),
    Route("node", (ANY_METHOD,), "/healthz", "healthz", "healthz"),
    Route("node", (ANY_METHOD,), "/readyz", "readyz", "readyz"),
    Route("node", (ANY_METHOD,), "/metrics", "metrics", "metrics"),
    _identity("/client/v4/accounts", "accounts"),
    _identity("/client/v4/memberships", "memberships"),
    _identity("/client/v4/user/tokens/verify", "verify"),
    _identity("/client/v4/user", "user"),
    # pullkv's own: what this node is (pullkv.nodeinfo); a path Cloudflare does not use.
    Route("node", ("GET",), "/client/v4/pullkv/info", "info", "info", only_these_methods=True),
)

TABLE: tuple[Route, ...] = (*REST, *BINDING, *INTERNAL, *NODE)

# Every metrics label a request may carry: the routes' names, and the labels of requests no
# route claimed ("binding" is a binding request before its route is known).
LABELS = frozenset({*(route.name for route in TABLE), "binding", INTERNAL_UNKNOWN, UNKNOWN})


@dataclass(slots=True)
class Match:
    """A resolved request: its route and its decoded path parameters."""

    route: Route
    params: dict[str, str]


@dataclass(slots=True)
class _Node:
    """A point in the walk: the routes ending here and the ways on."""

    routes: list[Route] = field(default_factory=list)
    literals: dict[str, _Node] = field(default_factory=dict)
    param: tuple[str, _Node] | None = None  # {name}: one segment
    rest: tuple[str, bool, _Node] | None = None  # {name*} / {name+}: name, may be empty, node
    trailing_slash: bool = False


_PARAM = re.compile(r"\{([a-z_]+)([*+]?)\}")


class Router:
    """Resolves a method and a raw path against one protocol's routes."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._root = _Node()
        self._exact: dict[str, list[Route]] = {}
        for route in self.routes:
            self._add(route)

    def _add(self, route: Route) -> None:
        node = self._root
        if "{" not in route.pattern:
            self._exact.setdefault(route.pattern, []).append(route)
        for segment in route.pattern[1:].split("/"):
            param = _PARAM.fullmatch(segment)
            if param is None:
                node = node.literals.setdefault(segment, _Node())
                continue
            name, kind = param.groups()
            if name not in CONVERTERS:
                raise ValueError(f"no converter for the parameter {name!r} of {route.pattern}")
            if kind:
                if node.rest is None:
                    node.rest = (name, kind == "*", _Node())
                node = node.rest[2]
            else:
                if node.param is None:
                    node.param = (name, _Node())
                node = node.param[1]
        node.routes.append(route)
        node.trailing_slash |= route.trailing_slash

    def at(self, path: str) -> list[Route]:
        """The routes at a path without parameters, whatever their methods."""
        return self._exact.get(path, [])

    def resolve(
        self, method: str, path: str, query: Callable[[str], str | None] = lambda _: None
    ) -> Match:
        """The route for ``method`` at ``path``: a KVError if there is none (404 or 405), or
        if a parameter on the way is invalid (``query`` gives the request's parameters)."""
        if path[:1] != "/":
            raise errors.no_route(path)  # "*", or a target the server could not split
        params: dict[str, str] = {}
        try:
            match = self._walk(self._root, path[1:].split("/"), 0, method, query, params)
        except NoMatch:
            raise errors.no_route(path) from None
        if match is None:
            raise errors.no_route(path)
        return match

    def _walk(
        self,
        node: _Node,
        segments: list[str],
        at: int,
        method: str,
        query: Callable[[str], str | None],
        params: dict[str, str],
    ) -> Match | None:
        """The match from ``segments[at:]`` on, None for no route; raises for 405.

        A literal segment is tried before a parameter; when the literal way ends in no
        route or a refused method, a rest parameter beside it gets its chance (the binding
        protocol's ``GET /bulk/get`` reads the key "bulk/get").
        """
        while True:
            last = at == len(segments) - 1
            if at == len(segments) or (last and not segments[at] and node.trailing_slash):
                return self._ending(node, method, params)
            segment = segments[at]
            child = node.literals.get(segment)
            if child is not None:
                if node.rest is None:
                    node, at = child, at + 1
                    continue
                try:
                    found = self._walk(child, segments, at + 1, method, query, dict(params))
                except (errors.KVError, NoMatch) as refused:
                    found = self._rest(node, segments, at, method, query, params)
                    if found is None:
                        raise refused from None
                    return found
                return found or self._rest(node, segments, at, method, query, params)
            if node.param is not None:
                name, child = node.param
                params[name] = CONVERTERS[name](segment)
                node, at = child, at + 1
                continue
            return self._rest(node, segments, at, method, query, params)

    def _rest(
        self,
        node: _Node,
        segments: list[str],
        at: int,
        method: str,
        query: Callable[[str], str | None],
        params: dict[str, str],
    ) -> Match | None:
        if node.rest is None:
            return None
        name, may_be_empty, child = node.rest
        raw = "/".join(segments[at:])
        if not raw and not may_be_empty:
            return None
        if any(route.urlencoded for route in child.routes) and query("urlencoded") != "true":
            raise errors.bad_request("binding requests name the key URL-encoded (?urlencoded=true)")
        params[name] = CONVERTERS[name](raw)
        return self._ending(child, method, params)

    def _ending(self, node: _Node, method: str, params: dict[str, str]) -> Match | None:
        if not node.routes:
            return None
        for route in node.routes:
            if route.accepts(method):
                return Match(route, params)
        if all(route.only_these_methods for route in node.routes):
            return None
        raise errors.method_not_allowed(method)


REST_ROUTER = Router(REST)
BINDING_ROUTER = Router(BINDING)
INTERNAL_ROUTER = Router(INTERNAL)
NODE_ROUTER = Router(NODE)


def label(router: Router, path: str, default: str) -> str:
    """The metrics label of a parameterless path whatever the method (the internal API and
    the OpenAPI document are labelled before their method is checked)."""
    found = {route.name for route in router.at(path) if not route.only_these_methods}
    return found.pop() if len(found) == 1 else default


H = TypeVar("H")


def handlers(routes: Iterable[Route], table: Mapping[str, H]) -> dict[str, H]:
    """The routes' handlers by handler name, taken from a module's ``table``: a route whose
    handler is missing fails at import, not at its first request."""
    return {route.handler: table[route.handler] for route in routes}


# The hot path (pullkv.http.hot) matches value reads with byte patterns compiled from the
# same routes: a request they do not take goes the ordinary way and gets the same answer.
def _bytes_pattern(route: Route) -> re.Pattern[bytes]:
    parts = []
    for segment in route.pattern.split("/"):
        param = _PARAM.fullmatch(segment)
        if param is None:
            parts.append(re.escape(segment))
        elif param.group(1) in ("account_id", "namespace_id"):
            parts.append(f"({ID_PATTERN})")
        else:
            parts.append("(.*)" if param.group(2) == "*" else "(.+)")
    return re.compile("/".join(parts).encode(), re.DOTALL)


def _route(routes: Iterable[Route], name: str) -> Route:
    return next(route for route in routes if route.name == name)


def _key_prefix(route: Route) -> bytes:
    """The literal start of a pattern that is only that and a non-empty key (a prefix test
    is cheaper than a regex there)."""
    prefix, key = route.pattern.split("{", 1)
    if key != "key+}":
        raise ValueError(f"{route.pattern} is not a literal prefix and a key")
    return prefix.encode()


_HOT_REST = _bytes_pattern(_route(REST, "get_value")).fullmatch
_HOT_BINDING = _key_prefix(_route(BINDING, "binding.get"))
_HOT_URLENCODED = b"urlencoded=true"
_TTL_PARAM = b"cache_ttl="


def hot_cache_ttl(query: bytes, limits: Limits) -> int | None:
    """The cache TTL of a value read whose query is empty or only ``cache_ttl=N``, by the one
    cache_ttl parser; None for anything else (the ordinary path answers it)."""
    if not query:
        return parse_cache_ttl(None, limits)
    digits = query[len(_TTL_PARAM) :]
    # Fifteen digits at most keeps int() cheap; parse_cache_ttl refuses what is that long.
    if not query.startswith(_TTL_PARAM) or not digits.isdigit() or len(digits) > 15:
        return None
    try:
        return parse_cache_ttl(int(digits), limits)
    except errors.KVError:
        return None


def hot_rest_read(
    raw_path: bytes, query: bytes, limits: Limits
) -> tuple[str, str, str, int] | None:
    """A REST ``get_value`` the hot path may answer: account, namespace, key and cache TTL."""
    match = _HOT_REST(raw_path)
    if match is None:
        return None
    ttl = hot_cache_ttl(query, limits)
    account, namespace, raw_key = match.groups()
    key = raw_key.decode("latin-1") if b"%" not in raw_key else _hot_key(raw_key)
    if ttl is None or key is None:
        return None
    return account.decode("ascii"), namespace.decode("ascii"), key, ttl


def hot_binding_read(raw_path: bytes, query: bytes, limits: Limits) -> tuple[str, int] | None:
    """A binding ``get`` the hot path may answer: the key and cache TTL."""
    start = len(_HOT_BINDING)
    if (
        len(raw_path) <= start
        or not raw_path.startswith(_HOT_BINDING)
        or not query.startswith(_HOT_URLENCODED)
    ):
        return None
    rest = query[len(_HOT_URLENCODED) :]
    if rest[:1] == b"&":
        rest = rest[1:]
    elif rest:
        return None  # "urlencoded=truex": not what the ordinary path reads as true
    ttl = hot_cache_ttl(rest, limits)
    raw_key = raw_path[start:]
    key = raw_key.decode("latin-1") if b"%" not in raw_key else _hot_key(raw_key)
    if ttl is None or key is None:
        return None
    return key, ttl


def _hot_key(raw: bytes) -> str | None:
    """The key as the ordinary path decodes it (from the Latin-1 text of the raw path). The
    callers skip this for a key with no "%": decode_key gives its Latin-1 text unchanged."""
    try:
        return decode_key(raw.decode("latin-1"))
    except errors.KVError:
        return None
