"""The ASGI application of an origin: authentication, routing, errors and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pullkv import errors
from pullkv.auth import Authenticator
from pullkv.backend import Backend
from pullkv.http import internal, openapi
from pullkv.http.asgi import Receive, Request, Response, Scope, Send, envelope, error_response
from pullkv.http.binding import NAMESPACE_HEADER, BindingAPI, binding_error
from pullkv.http.hot import HotReads
from pullkv.http.internal import PREFIX as INTERNAL_PREFIX
from pullkv.http.rest import ACCOUNTS_PREFIX, RestAPI
from pullkv.metrics import Metrics
from pullkv.service import KVService
from pullkv.types import TokenRecord

log = logging.getLogger("pullkv.http")
PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _accounts(token: TokenRecord) -> Response:
    accounts = [{"id": token.account_id, "name": f"pullkv account {token.account_id}"}]
    return envelope(accounts, {"page": 1, "per_page": 20, "count": 1, "total_count": 1})


def _memberships(token: TokenRecord) -> Response:
    account = {"id": token.account_id, "name": f"pullkv account {token.account_id}"}
    info = {"page": 1, "per_page": 20, "count": 1, "total_count": 1}
    return envelope([{"id": token.id, "account": account, "status": "accepted"}], info)


def _verify(token: TokenRecord) -> Response:
    return envelope({"id": token.id, "status": "active"})


def _user(token: TokenRecord) -> Response:
    # There are no users in pullkv, only tokens; this is what `wrangler whoami` shows.
    return envelope({"id": token.id, "email": f"token-{token.id}@pullkv.invalid"})


# Identity endpoints that Cloudflare clients call to discover their account (wrangler calls
# /memberships and /accounts when no account id is configured).
_IDENTITY_ROUTES: dict[str, Callable[[TokenRecord], Response]] = {
    "/client/v4/accounts": _accounts,
    "/client/v4/memberships": _memberships,
    "/client/v4/user/tokens/verify": _verify,
    "/client/v4/user": _user,
}

# Every metrics label a request may carry. Labels come only from this fixed set, never from
# the request, so no path (made up, unauthenticated) adds a series: anything else is
# "unknown". A router that names a new route adds it here (tests/unit/test_routes.py checks).
ROUTES = frozenset(
    {
        # The REST handlers: RestAPI._run labels a request with its handler's name.
        *(
            name
            for name, member in vars(RestAPI).items()
            if not name.startswith("_")
            and name != "dispatch"
            and inspect.iscoroutinefunction(member)
        ),
        "binding",
        "binding.bulk_get",
        "binding.list",
        "binding.get",
        "binding.put",
        "binding.delete",
        *internal.ROUTES,
        "identity",
        "healthz",
        "readyz",
        "openapi",
        "metrics",
        "unknown",
    }
)


class App:
    """An ASGI app serving the REST API over one KV service."""

    def __init__(
        self,
        service: KVService,
        authenticator: Authenticator,
        metrics: Metrics,
        *,
        internal: Backend | None = None,
        ready: Callable[[], Awaitable[bool]] | None = None,
        cache_name: str = "pullkv",
        hot: HotReads | None = None,
        background: list[Callable[[], Coroutine[Any, Any, None]]] | None = None,
        on_shutdown: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.service = service
        self.authenticator = authenticator
        self.metrics = metrics
        self.internal = internal
        self._ready = ready
        self.rest = RestAPI(service, authenticator, cache_name)
        self.binding = BindingAPI(service)
        self.hot = hot
        self._background = background or []
        self._on_shutdown = on_shutdown
        self._tasks: list[asyncio.Task[None]] = []

    def fast_response(
        self, method: bytes, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        """pullkv's HTTP server asks this first: a hot cached read, answered with no I/O."""
        if self.hot is None:
            return None
        return self.hot.respond(method, raw_path, query, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            response = await self.handle(request)
            await response.send(send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def handle(self, request: Request) -> Response:
        """Answer one request; every failure becomes a Cloudflare error envelope."""
        started = time.perf_counter()
        response = await self._answer(request)
        route = request.route if request.route in ROUTES else "unknown"
        self.metrics.requests.labels(route).observe(time.perf_counter() - started)
        return response

    async def _answer(self, request: Request) -> Response:
        binding = request.header(NAMESPACE_HEADER) is not None
        try:
            if binding:
                request.route = "binding"
                token = await self.authenticator.authenticate(request.header("authorization"))
                return await self.binding.dispatch(request, token)
            return await self._route(request)
        except errors.KVError as exc:
            self.metrics.errors.labels(str(exc.status), str(exc.code)).inc()
            if exc.status >= 500:
                log.error(
                    "request failed status=%d code=%d method=%s message=%r",
                    exc.status,
                    exc.code,
                    request.method,
                    exc.message,
                )
            return binding_error(exc) if binding else error_response(exc)
        except Exception:
            log.exception("unhandled error method=%s", request.method)
            failure = errors.internal_error()
            return binding_error(failure) if binding else error_response(failure)

    async def _route(self, request: Request) -> Response:
        path = request.raw_path
        if path.startswith(ACCOUNTS_PREFIX):
            token = await self.authenticator.authenticate(request.header("authorization"))
            return await self.rest.dispatch(request, token)
        if path.startswith(INTERNAL_PREFIX) and self.internal is not None:
            request.route = internal.route_name(path)
            token = await self.authenticator.authenticate(request.header("authorization"))
            return await internal.dispatch(self.internal, request, token)
        if path == openapi.PATH:
            # The API's description holds no data, so it needs no token (tools fetch it first).
            request.route = "openapi"
            if request.method not in ("GET", "HEAD"):
                raise errors.method_not_allowed(request.method)
            return Response(200, openapi.document())
        if path == "/healthz":
            request.route = "healthz"
            return Response(200, b"ok\n", b"text/plain")
        if path == "/readyz":
            request.route = "readyz"
            if self._ready is None or await self._ready():
                return Response(200, b"ready\n", b"text/plain")
            raise errors.upstream_unavailable("not ready: the upstream does not answer")
        if path == "/metrics":
            request.route = "metrics"
            token = await self.authenticator.authenticate(request.header("authorization"))
            # Metrics describe the whole node (every account's traffic), so not a token
            # limited to some namespaces.
            if not (token.edge or (token.admin and token.namespaces is None)):
                raise errors.permission_denied(
                    "metrics need an edge token or an admin token not limited to namespaces"
                )
            return Response(200, self.metrics.render(), PROMETHEUS_TYPE)
        if request.method in ("GET", "HEAD") and path in _IDENTITY_ROUTES:
            request.route = "identity"
            token = await self.authenticator.authenticate(request.header("authorization"))
            return _IDENTITY_ROUTES[path](token)
        raise errors.no_route(path)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._tasks = [asyncio.create_task(job()) for job in self._background]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self._tasks:
                    task.cancel()
                for task in self._tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if self._on_shutdown is not None:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
