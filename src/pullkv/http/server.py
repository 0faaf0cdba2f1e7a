"""pullkv's own HTTP/1.1 server: asyncio protocols on uvloop, parsed by httptools.

It runs any ASGI 3 app (http and lifespan scopes) and adds two things ASGI servers lack:

- a ``reason`` key in ``http.response.start`` sets the status line's reason phrase;
- an app with ``fast_response(method, raw_path, query, headers) -> bytes | None`` answers hot
  GET/HEAD requests synchronously from pre-rendered bytes (see ``build_response``), with no
  task, scope or message dicts; ``None`` sends the request through ASGI as usual.

With ``HttpConfig.access_log`` on, every response gets an access log line (see ``accesslog``);
the app names the token behind a request with ``fast_token_id()`` (after a fast response) and
under the scope key ``TOKEN_ID_KEY`` (an ASGI request). An app with ``begin_shutdown()`` is
told when draining begins, so responses that never end by themselves (a change feed) can.

Keep-alive, pipelining, 100-continue, request/response flow control (a connection whose
client does not read its responses is not answered further, and is dropped after the send
timeout), header limits, idle and header timeouts, a connection limit, TLS and graceful
shutdown are handled here; see ``connection``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl as ssl_module
import time
from collections.abc import Callable

from pullkv.http.accesslog import TOKEN_ID_KEY, AccessLog
from pullkv.http.asgi import ASGIApp
from pullkv.http.connection import HttpConfig, HttpConnection, ServerState
from pullkv.http.framing import build_response, http_date
from pullkv.http.lifespan import Lifespan, LifespanError
from pullkv.limits import TLS_SHUTDOWN_TIMEOUT

__all__ = ["TOKEN_ID_KEY", "HttpConfig", "LifespanError", "Server", "build_response", "serve"]

log = logging.getLogger("pullkv.http.server")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Server:
    """One listening HTTP server for one ASGI app.

    ``start`` runs the lifespan startup and binds; ``shutdown`` stops accepting, lets
    in-flight requests finish (up to ``shutdown_timeout``), then runs lifespan shutdown.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        ssl: ssl_module.SSLContext | None = None,
        config: HttpConfig | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.ssl = ssl
        self.config = config or HttpConfig()
        self.shutdown_timeout = shutdown_timeout
        self._state: ServerState | None = None
        self._listener: asyncio.Server | None = None
        self._lifespan: Lifespan | None = None
        self._stop = asyncio.Event()
        self._force = False
        self._date_timer: asyncio.TimerHandle | None = None
        self._tick_timer: asyncio.TimerHandle | None = None
        self._draining = False
        self._stopped = False
        self._access_log: AccessLog | None = None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) of every bound socket."""
        if self._listener is None:
            return []
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._listener.sockets]

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return self.addresses[0][1]

    async def start(
        self, host: str | None, port: int, *, reuse_port: bool = False, backlog: int = 2048
    ) -> None:
        """Run lifespan startup, then listen on ``host:port`` (IPv4 or IPv6)."""
        loop = asyncio.get_running_loop()
        style = self.config.access_log
        self._access_log = None if style == "off" else AccessLog(style, loop)
        state = ServerState(self.app, self.config, loop.time(), b"", self._access_log)
        self._state = state
        self._refresh_date()
        self._lifespan = Lifespan(self.app, state.lifespan_state)
        await self._lifespan.startup()
        try:
            self._listener = await loop.create_server(
                lambda: HttpConnection(state, loop),
                host=host or None,
                port=port,
                ssl=self.ssl,
                # An idle keep-alive client never answers TLS close_notify; asyncio's default
                # 30 s wait for it would hold every TLS shutdown for the full grace period.
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT if self.ssl is not None else None,
                reuse_port=reuse_port or None,
                backlog=backlog,
            )
        except BaseException:
            self._cancel_timers()
            await self._lifespan.shutdown()
            raise
        self._tick()

    def request_shutdown(self, force: bool = False) -> None:
        """Ask ``run`` to shut down (from the loop's thread); ``force`` skips the grace."""
        self._force = self._force or force
        self._stop.set()

    async def run(
        self,
        host: str | None,
        port: int,
        *,
        ready: Callable[[], None] | None = None,
        install_signal_handlers: bool = True,
        reuse_port: bool = False,
    ) -> None:
        """Start, call ``ready``, serve until SIGTERM/SIGINT (or a request), shut down."""
        await self.start(host, port, reuse_port=reuse_port)
        await self.serve_until_shutdown(
            ready=ready, install_signal_handlers=install_signal_handlers
        )

    async def serve_until_shutdown(
        self, *, ready: Callable[[], None] | None = None, install_signal_handlers: bool = True
    ) -> None:
        """After ``start``: call ``ready``, wait for a shutdown request, shut down."""
        installed: list[signal.Signals] = []
        try:
            if install_signal_handlers:
                installed = self._install_signal_handlers()
            if ready is not None:
                ready()
            await self._stop.wait()
        finally:
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, finish in-flight requests, close idle connections, run lifespan."""
        if self._stopped or self._state is None:
            return
        self._stopped = True
        state = self._state
        if self._listener is not None:
            self._listener.close()
        self._draining = True
        # Long-lived responses (a change feed's stream) end now, so draining does not wait
        # out the timeout for them.
        begin_shutdown = getattr(self.app, "begin_shutdown", None)
        if begin_shutdown is not None:
            begin_shutdown()
        for conn in list(state.connections):
            conn.begin_shutdown()
        timeout = 0.0 if self._force else self.shutdown_timeout
        if state.connections:
            try:
                await asyncio.wait_for(self._wait_drained(), timeout)
            except TimeoutError:
                log.warning(
                    "shutdown: %d connection(s) still busy after %.1f s; dropping them",
                    len(state.connections),
                    timeout,
                )
        tasks = [task for conn in state.connections for task in conn.tasks()]
        for conn in list(state.connections):
            conn.abort()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._listener is not None:
            await self._listener.wait_closed()
        self._cancel_timers()
        if self._access_log is not None:
            self._access_log.flush()
        if self._lifespan is not None:
            await self._lifespan.shutdown()

    async def _wait_drained(self) -> None:
        assert self._state is not None
        while self._state.connections:
            await asyncio.sleep(0.02)

    def _install_signal_handlers(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in _SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                log.debug("cannot install a handler for %s here", sig.name)
            else:
                installed.append(sig)
        return installed

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("%s again: shutting down without waiting", sig.name)
            self.request_shutdown(force=True)
            if self._draining:
                # Already draining: drop the remaining connections now.
                assert self._state is not None
                for conn in list(self._state.connections):
                    conn.abort()
            return
        log.info("%s received: shutting down gracefully", sig.name)
        self.request_shutdown()

    # Timers: a cached date header (refreshed on each second) and a coarse clock that
    # drives idle and header timeouts, so the request path sets no timers of its own.

    def _refresh_date(self) -> None:
        assert self._state is not None
        now = time.time()
        self._state.date_line = b"date: %s\r\n" % http_date(now)
        delay = 1.0 - (now % 1.0) + 0.001
        self._date_timer = asyncio.get_running_loop().call_later(delay, self._refresh_date)

    def _tick(self) -> None:
        assert self._state is not None
        loop = asyncio.get_running_loop()
        state = self._state
        state.now = now = loop.time()
        for conn in list(state.connections):
            conn.check_timeouts(now)
        config = self.config
        interval = min(
            1.0,
            config.keep_alive_timeout / 4,
            config.header_timeout / 4,
            config.send_timeout / 4,
        )
        self._tick_timer = loop.call_later(max(interval, 0.01), self._tick)

    def _cancel_timers(self) -> None:
        for timer in (self._date_timer, self._tick_timer):
            if timer is not None:
                timer.cancel()
        self._date_timer = self._tick_timer = None


async def serve(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    ready: Callable[[], None] | None = None,
    shutdown_timeout: float = 30.0,
    install_signal_handlers: bool = True,
    reuse_port: bool = False,
    config: HttpConfig | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM/SIGINT, then shut down gracefully.

    Lifespan startup runs before the socket is bound and ``ready`` is called once it is;
    lifespan shutdown runs after the last connection closed.
    """
    server = Server(app, ssl=ssl, config=config, shutdown_timeout=shutdown_timeout)
    await server.run(
        host,
        port,
        ready=ready,
        install_signal_handlers=install_signal_handlers,
        reuse_port=reuse_port,
    )
