"""The ASGI lifespan protocol: startup before the server listens, shutdown after it stops."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pullkv.http.asgi import ASGIApp, Message

log = logging.getLogger("pullkv.http.server")


class LifespanError(RuntimeError):
    """The app reported (or raised) a failure during startup."""


class Lifespan:
    """Drives one app's lifespan scope from a background task.

    An app that raises before it ever calls ``receive`` is taken not to support lifespan
    (as uvicorn's ``auto`` mode does); one that fails after reading ``lifespan.startup``
    fails the startup.
    """

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self._app = app
        self._state = state
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._received = False
        self._supported = True
        self._error: str | None = None

    async def startup(self) -> None:
        """Run the app's startup; raise LifespanError if it fails."""
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._error is not None:
            raise LifespanError(self._error)

    async def shutdown(self) -> None:
        """Run the app's shutdown (if it supports lifespan); failures are logged."""
        if self._task is None or not self._supported or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._stopped.wait()
        if self._error is not None:
            log.error("application shutdown failed: %s", self._error)

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self._state,
        }
        try:
            await self._app(scope, self._receive, self._send)
        except Exception as exc:
            if not self._received:
                self._supported = False
                log.info("the ASGI app does not support lifespan (%r); going on without it", exc)
            else:
                log.exception("exception in the ASGI lifespan")
                self._error = f"the app raised {exc!r}"
        finally:
            # Whatever happened, nobody may wait forever.
            self._started.set()
            self._stopped.set()

    async def _receive(self) -> Message:
        self._received = True
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._error = str(message.get("message", "")) or "startup failed"
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self._error = str(message.get("message", "")) or "shutdown failed"
            self._stopped.set()
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")
