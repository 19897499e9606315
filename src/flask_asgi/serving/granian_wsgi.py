"""``flask serve --server granian --interface wsgi``: an all-sync app on granian's WSGI
interface (``FLASK_ASGI_INTERFACE=wsgi``).

granian's own blocking threads call the app (``protocol/wsgi_entry.WsgiEntry``): no event
loop and no thread hop per request. What flask-asgi keeps and what it gives up this way is
in docs/deployment.md; which apps qualify (no async view, no WebSocket route, no mounts, no
Socket.IO) is checked in ``flask serve``'s process and again in each worker, at startup.

granian's WSGI interface has no lifespan: each worker runs the app's lifespan itself, on
flask-asgi's background loop (where ``await_`` from a WSGI thread runs): the startup hooks
before the worker takes a request, the shutdown hooks when the worker process ends, after
granian's graceful stop has let the requests in flight finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing.util
import os
from typing import Any

from flask import Flask

from ..ground.background_loop import background_loop
from ..protocol.wsgi_entry import WsgiEntry, wsgi_blockers
from .granian_server import granian_server
from .options import ROOT_PATH_ENV, ServeOptions, UnderRootPath

logger = logging.getLogger("flask_asgi")

#: ``granian.Granian``'s target in each worker (it calls this factory there).
WSGI_FACTORY = f"{__name__}:worker_app"
#: How the ASGI factory (``cli.app_factory``) reaches :func:`worker_app`.
TARGET_ENV = "FLASK_ASGI_CLI_WSGI_TARGET"


class NotWsgiServable(RuntimeError):
    """``FLASK_ASGI_INTERFACE=wsgi`` for an app that needs the ASGI path."""


def check_servable(app: Flask) -> None:
    """Raise :class:`NotWsgiServable`, naming what needs ASGI, unless ``app`` is all sync."""
    blockers = wsgi_blockers(app)
    if blockers:
        raise NotWsgiServable(
            "FLASK_ASGI_INTERFACE=wsgi (--interface wsgi) serves only apps whose views are"
            " all sync; this app has " + "; ".join(blockers) + ". Serve it through ASGI"
            " (the default)."
        )


def worker_app() -> WsgiEntry:
    """In a granian worker: load the app, run its startup, return the WSGI callable."""
    module, _, name = os.environ[TARGET_ENV].partition(":")
    factory = getattr(__import__(module, fromlist=[name]), name)
    loaded = factory()
    root_path = ""
    if isinstance(loaded, UnderRootPath):  # the prefix as SCRIPT_NAME, as uvicorn applies it
        loaded, root_path = loaded.app, loaded.root_path
    app: Flask = loaded.app
    check_servable(app)
    lifespan = _Lifespan(loaded)
    lifespan.start()
    # The worker process ends (multiprocessing runs its finalizers) once granian has
    # stopped serving: the shutdown hooks run then.
    multiprocessing.util.Finalize(None, lifespan.stop, exitpriority=100)
    return WsgiEntry(app, root_path)


class _Lifespan:
    """The ASGI lifespan of ``asgi``, driven on the background loop from this thread."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi
        self.loop = background_loop()
        self.started: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self.done: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self.stopping: asyncio.Event | None = None
        self.task: concurrent.futures.Future[None] | None = None

    def start(self) -> None:
        self.task = asyncio.run_coroutine_threadsafe(self._run(), self.loop)
        message = self.started.result()
        if message["type"] != "lifespan.startup.complete":
            # Logged with its traceback by the lifespan: the worker exits, as under ASGI
            # (granian then stops, status 1).
            raise SystemExit(1)

    def stop(self) -> None:
        stopping = self.stopping
        if stopping is None or self.done.done():
            return
        self.loop.call_soon_threadsafe(stopping.set)
        message = self.done.result()
        if message["type"] != "lifespan.shutdown.complete":
            logger.error("flask-asgi shutdown failed: %s", message.get("message", ""))

    async def _run(self) -> None:
        self.stopping = asyncio.Event()
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "lifespan.startup"}
            assert self.stopping is not None
            await self.stopping.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: dict[str, Any]) -> None:
            target = self.started if "startup" in message["type"] else self.done
            if not target.done():
                target.set_result(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        try:
            await self.asgi(scope, receive, send)
        finally:
            for future in (self.started, self.done):
                if not future.done():
                    future.set_result({"type": "lifespan.failed", "message": "lifespan ended"})


def run(target_factory: str, options: ServeOptions) -> int:
    """Serve through granian's WSGI interface until granian is stopped; the exit status."""
    if options.drain_delay > 0:
        logger.warning("FLASK_ASGI_DRAIN_DELAY is not applied under granian (uvicorn only)")
    os.environ[ROOT_PATH_ENV] = options.root_path  # for cli.app_factory in each worker
    os.environ[TARGET_ENV] = target_factory
    granian_server(WSGI_FACTORY, options, wsgi=True).serve()
    return 0
