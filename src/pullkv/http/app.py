"""The ASGI application of an origin: authentication, routing, errors and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pullkv import errors
from pullkv.auth import Authenticator
from pullkv.backend import Backend
from pullkv.feed.log import FeedSource
from pullkv.feed.stream import while_allowed
from pullkv.http import internal, openapi
from pullkv.http.accesslog import TOKEN_ID_KEY
from pullkv.http.asgi import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    StreamingResponse,
    envelope,
    error_response,
)
from pullkv.http.binding import BindingAPI, binding_error
from pullkv.http.hot import HotReads
from pullkv.http.rest import RestAPI
from pullkv.http.routes import (
    ACCOUNTS_PREFIX,
    INTERNAL_PREFIX,
    LABELS,
    NAMESPACE_HEADER,
    NODE,
    NODE_ROUTER,
    UNKNOWN,
    handlers,
    label,
)
from pullkv.limits import STREAM_TOKEN_RECHECK
from pullkv.metrics import Metrics, merge, samples
from pullkv.nodeinfo import NodeFacts, describe
from pullkv.service import KVService
from pullkv.siblings import Siblings
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
        feed: FeedSource | None = None,
    ) -> None:
        self.service = service
        self.authenticator = authenticator
        self.metrics = metrics
        self.internal = internal
        self._ready = ready
        self.rest = RestAPI(service, authenticator, cache_name)
        self.rest.feed = feed
        self.feed = feed
        self.binding = BindingAPI(service)
        self.hot = hot
        self._background = background or []
        self._on_shutdown = on_shutdown
        self._tasks: list[asyncio.Task[None]] = []
        # Set by pullkv.node once the node knows its role; read by GET /client/v4/pullkv/info.
        self.facts = NodeFacts("serve", time.time())
        self.clock: Callable[[], float] = time.time
        # Set by pullkv.node on a worker of several (--workers N).
        self.siblings: Siblings | None = None

    def add_background(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``job`` from lifespan startup until shutdown, with the others."""
        self._background.append(job)

    def begin_shutdown(self) -> None:
        """pullkv's HTTP server calls this as it starts draining: feed streams end now."""
        if self.feed is not None:
            self.feed.stop_streams()

    def fast_response(
        self, method: bytes, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        """pullkv's HTTP server asks this first: a hot cached read, answered with no I/O."""
        if self.hot is None:
            return None
        return self.hot.respond(method, raw_path, query, headers)

    def fast_token_id(self) -> str | None:
        """The id of the token behind the last answer of ``fast_response`` (access log)."""
        return None if self.hot is None else self.hot.token_id

    def count_error(self, status: int, code: int) -> None:
        """Count an error the HTTP server answered itself (a malformed request, say)."""
        self.metrics.errors.labels(str(status), str(code)).inc()

    async def authenticate(self, request: Request) -> TokenRecord:
        """The request's token, its id noted in the scope for the access log."""
        token = await self.authenticator.authenticate(request.header("authorization"))
        request.scope[TOKEN_ID_KEY] = token.id
        return token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            response = await self.handle(request)
            if isinstance(response, StreamingResponse):
                # A change feed lasts: its token is checked again as it goes.
                response.chunks = while_allowed(
                    response.chunks,
                    lambda: self.authenticator.authenticate(request.header("authorization")),
                    STREAM_TOKEN_RECHECK,
                )
            await response.send(send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def handle(self, request: Request) -> Response:
        """Answer one request; every failure becomes a Cloudflare error envelope."""
        started = time.perf_counter()
        response = await self._answer(request)
        # Labels come from the route table, never from the request, so no path (made up,
        # unauthenticated) adds a series.
        route = request.route if request.route in LABELS else UNKNOWN
        self.metrics.requests.labels(route).observe(time.perf_counter() - started)
        return response

    async def _answer(self, request: Request) -> Response:
        binding = request.header(NAMESPACE_HEADER) is not None
        try:
            if binding:
                request.route = "binding"
                token = await self.authenticate(request)
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
            token = await self.authenticate(request)
            return await self.rest.dispatch(request, token)
        if path.startswith(INTERNAL_PREFIX) and self.internal is not None:
            request.route = internal.route_name(path)
            token = await self.authenticate(request)
            return await internal.dispatch(self.internal, request, token)
        # The node's own endpoints are labelled before their method is checked.
        request.route = label(NODE_ROUTER, path, request.route)
        route = NODE_ROUTER.resolve(request.method, path).route
        request.route = route.name
        return await _NODE_HANDLERS[route.handler](self, request)

    async def openapi(self, request: Request) -> Response:
        """The API's description: it holds no data, so it needs no token (tools fetch it
        first)."""
        return Response(200, openapi.document())

    async def healthz(self, request: Request) -> Response:
        """The process answers."""
        return Response(200, b"ok\n", b"text/plain")

    async def readyz(self, request: Request) -> Response:
        """The node can serve: its upstream answers."""
        if self._ready is None or await self._ready():
            return Response(200, b"ready\n", b"text/plain")
        raise errors.upstream_unavailable("not ready: the upstream does not answer")

    async def info(self, request: Request) -> Response:
        """What this node is, for any valid token (``pullkv info``)."""
        token = await self.authenticator.authenticate(request.header("authorization"))
        node = samples(await self.node_metrics())
        worker = (0, 1) if self.siblings is None else (self.siblings.index, self.siblings.count)
        return envelope(describe(self.facts, node, token, self.clock, worker))

    async def node_metrics(self) -> bytes:
        """The node's exposition: this process's, merged with its sibling workers'."""
        own = self.metrics.render()
        if self.siblings is None:
            return own
        return merge([own, *await self.siblings.sibling_expositions()])

    async def metrics_text(self, request: Request) -> Response:
        """The Prometheus metrics of the whole node."""
        token = await self.authenticate(request)
        # Metrics describe every account's traffic, so not a token limited to some namespaces.
        if not (token.edge or (token.admin and token.namespaces is None)):
            raise errors.permission_denied(
                "metrics need an edge token or an admin token not limited to namespaces"
            )
        return Response(200, await self.node_metrics(), PROMETHEUS_TYPE)

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


NodeHandler = Callable[[App, Request], Awaitable[Response]]


def _identity(answer: Callable[[TokenRecord], Response]) -> NodeHandler:
    async def handler(app: App, request: Request) -> Response:
        return answer(await app.authenticate(request))

    return handler


# Each node route (pullkv.http.routes.NODE) runs the handler its table entry names.
_NODE_HANDLERS: dict[str, NodeHandler] = handlers(
    NODE,
    {
        "openapi": App.openapi,
        "healthz": App.healthz,
        "readyz": App.readyz,
        "metrics": App.metrics_text,
        "accounts": _identity(_accounts),
        "memberships": _identity(_memberships),
        "verify": _identity(_verify),
        "user": _identity(_user),
        "info": App.info,
    },
)
