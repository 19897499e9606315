"""The ``ASGI`` extension object: the ASGI callable that serves one Flask app."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import cached_property
from typing import Any, TypeVar

from flask import Flask

from .features import background, metrics, middleware, mounts, watchdog
from .features.broadcast import Broadcast
from .ground.app_state import EXTENSION_KEY, AppState, asgi_of
from .ground.asgi_types import Receive, Send
from .ground.bridge import async_to_sync, cached_ensure_sync
from .ground.gc_tuning import tune_gc
from .ground.lifecycle import Lifecycle, StopSignal
from .ground.pools import connection_threads, worker_pool
from .ground.settings import apply_settings
from .protocol.http import HttpHandler
from .protocol.lifespan import handle_lifespan
from .protocol.long_polls import LongPollPaths
from .protocol.routes import RouteIndex
from .protocol.websocket import handle_websocket, websocket_route
from .serving import DEFAULT as DEFAULT_SERVER
from .testing import AsyncClient, FlaskClient, Lifespan

F = TypeVar("F", bound=Callable[..., Any])


class ASGI:
    """Serve a Flask app on ASGI: ``asgi = ASGI(app)``, then ``uvicorn module:asgi``.

    Also follows Flask's factory convention: ``asgi = ASGI()`` and later
    ``asgi.init_app(app)``. One ``ASGI`` serves one app.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._app: Flask | None = None
        self.state = AppState()
        self._executor: ThreadPoolExecutor | None = None
        #: The app's routes as each request needs them (async or sync, timeout mark).
        self.routes: RouteIndex
        self._stack: Any = None  # mounts and middleware around Flask (_compose)
        # http scopes: an HttpHandler, set by init_app.
        self._http: Callable[[dict[str, Any], Receive, Send], Awaitable[None]] = _no_app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Attach to ``app``: route its async callables through flask-asgi's bridge."""
        if self._app is not None and self._app is not app:
            raise RuntimeError("this ASGI object already serves another app")
        # Every FLASK_ASGI_* value checked now (SettingError names a bad one) and written
        # into app.config parsed; checked again at lifespan startup.
        apply_settings(app)
        self._app = app
        # The one seam: Flask runs every async view, hook and handler through this.
        app.async_to_sync = async_to_sync  # type: ignore[method-assign]
        if type(app).ensure_sync is Flask.ensure_sync and "ensure_sync" not in vars(app):
            app.ensure_sync = cached_ensure_sync(app)  # type: ignore[method-assign,assignment]
        if app.test_client_class is None:
            app.test_client_class = FlaskClient
        existing = app.extensions.get(EXTENSION_KEY)  # an earlier ASGI object's, or a bare one
        if isinstance(existing, AppState) and existing is not self.state:
            existing.adopt(self.state)
            self.state = existing
        app.extensions[EXTENSION_KEY] = self.state
        self.state.asgi = weakref.ref(self)
        self.state.factory = type(self)
        # flask-asgi's own lifespan steps, run before the user's hooks: background tasks (the
        # server loop; drained first at shutdown, they may use what the user's hooks close),
        # GC tuning (FLASK_ASGI_GC, once the app is loaded), the loop watchdog
        # (docs/observability.md), metrics (asgi.stats(), FLASK_ASGI_METRICS_PATH).
        self.state.metrics_endpoint = metrics.respond
        for startup, shutdown in (
            (background.startup_step, background.shutdown_step),
            (tune_gc, None),
            (watchdog.startup_step, watchdog.shutdown_step),
            (metrics.startup_step, metrics.shutdown_step),
        ):
            if startup not in self.state.startup_steps:
                self.state.startup_steps.append(startup)
            if shutdown is not None and shutdown not in self.state.shutdown_steps:
                self.state.shutdown_steps.append(shutdown)
        self.routes = RouteIndex(app)
        this = weakref.ref(self)  # no cycle: an unused ASGI object (and its app) is freed at once

        long_polls = LongPollPaths()

        def executor_of(path: str) -> Executor:
            asgi = this()
            assert asgi is not None  # it is serving this request
            if long_polls.match(app, path):  # Socket.IO long-polls: not in the pool
                lifecycle = asgi.state.lifecycle
                if lifecycle.in_lifespan:
                    long_polls.watch(lifecycle.stop_signal)  # and ended at shutdown
                return connection_threads
            return asgi._get_executor()

        self._http = HttpHandler(app, self.routes, executor_of)
        if self.state.mounts or self.state.middleware:
            self._compose()

    @classmethod
    def of(cls, app: Flask) -> ASGI:
        """The ``ASGI`` object serving ``app``, making one (with the app's hooks) if none
        is alive."""
        state = app.extensions.get(EXTENSION_KEY)
        if isinstance(state, AppState) and state.factory is not None:
            asgi: ASGI = asgi_of(app)
            return asgi
        return cls(app)

    @property
    def app(self) -> Flask:
        if self._app is None:
            raise RuntimeError("ASGI() has no app yet: call init_app(app) first")
        return self._app

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The bounded pool that runs sync endpoints and ``run_sync`` calls."""
        return self._get_executor()

    def _get_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = worker_pool(int(self.app.config["FLASK_ASGI_THREADS"]))
        return self._executor

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # the hot path: the handler answers probes too
            await self._http(scope, receive, send)
            return
        kind = scope["type"]
        if kind == "lifespan":
            await handle_lifespan(self.app, self.state, scope, receive, send)
        elif kind == "websocket":
            await handle_websocket(self.app, self.executor, scope, receive, send)
        else:
            raise ValueError(f"flask-asgi cannot handle ASGI scope type {kind!r}")

    # -- other ASGI apps and ASGI middleware (docs/mounting.md) -----------------------------

    def mount(self, prefix: str, app: Any) -> None:
        """Serve the ASGI ``app`` for ``http``/``websocket`` requests whose path is ``prefix``
        or under it (longest prefix wins); its lifespan runs with the server's."""
        mounts.add_mount(self.state, prefix, app)
        self._compose()

    def add_middleware(self, cls: Any, **options: Any) -> None:
        """Wrap the whole ASGI app in ``cls(app, **options)`` (Starlette's convention); the
        last one added is the outermost."""
        middleware.add_middleware(self.state, cls, options)
        try:
            self._compose()  # builds the stack now: bad options fail here, not at startup
        except BaseException:
            self.state.middleware.pop()
            self._compose()  # the stack as it was
            raise

    def _compose(self) -> None:
        # Python looks __call__ up on the type: switching this object to a subclass whose
        # __call__ runs the stack keeps ASGI.__call__, the hot path, untouched when nothing
        # is mounted (and keeps the methods of a subclass of ASGI).
        if "_plain" not in type(self).__dict__:
            self.__class__ = _composed(type(self))
        plain = type(self).__dict__["_plain"].__call__
        this = weakref.ref(self)  # no cycle: the stack must not keep this object alive

        async def flask(scope: dict[str, Any], receive: Receive, send: Send) -> None:
            asgi = this()
            assert asgi is not None
            await plain(asgi, scope, receive, send)

        self._stack = middleware.build(flask, self.state)

    # -- lifespan hooks -------------------------------------------------------------------

    def before_serving(self, func: F) -> F:
        """Register ``func`` (sync or async) to run once at startup, in an app context."""
        self.state.before_serving.append(func)
        return func

    def after_serving(self, func: F) -> F:
        """Register ``func`` (sync or async) to run once at shutdown, in an app context."""
        self.state.after_serving.append(func)
        return func

    def while_serving(self, func: F) -> F:
        """Register a generator function: code before its ``yield`` runs at startup, after
        it at shutdown (``async def`` generators too)."""
        self.state.while_serving.append(func)
        return func

    @property
    def lifecycle(self) -> Lifecycle:
        """Where serving is: ``phase`` (``"serving"``, ``"draining"``...), ``ready``."""
        return self.state.lifecycle

    @property
    def stopping(self) -> StopSignal:
        """Set when the server starts shutting down (``flask_asgi.stopping``, without
        needing an app context)."""
        return self.state.lifecycle.stop_signal

    # -- running --------------------------------------------------------------------------

    async def serve(self, host: str = "127.0.0.1", port: int = 5000, **options: Any) -> None:
        """Serve on uvicorn from a running event loop (Quart's ``app.run_task()``)."""
        await DEFAULT_SERVER.load_in_process().serve(self, host, port, **options)

    def run(self, host: str = "127.0.0.1", port: int = 5000, **options: Any) -> None:
        """Serve on uvicorn, blocking until the server stops (Flask's ``app.run()``)."""
        DEFAULT_SERVER.load_in_process().run_asgi(self, host, port, **options)

    def stats(self) -> dict[str, Any]:
        """What the server is doing now, in this process: requests in flight (async, sync),
        worker threads busy and waiting, open WebSockets and SSE streams, background tasks,
        loop stalls and the loop-lag histogram (docs/observability.md)."""
        return metrics.stats(self.app)

    # -- WebSockets (docs/websockets.md) ---------------------------------------------------

    def websocket(
        self, rule: str, *, allowed_origins: Iterable[str] | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Register a WebSocket handler: ``@asgi.websocket("/ws/<room>")``. For a blueprint,
        use ``flask_asgi.websocket_route(bp, rule)``. ``allowed_origins`` replaces
        ``FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS`` for this handler."""
        return websocket_route(self.app, rule, allowed_origins=allowed_origins, **options)

    @cached_property
    def broadcast(self) -> Broadcast:
        """Publish/subscribe between connections (in-process, or Redis with
        ``FLASK_ASGI_BROADCAST_URL``)."""
        return Broadcast(self.app, self.state)

    def test_client(self, **kwargs: Any) -> Any:
        """An async test client: ``async with asgi.test_client() as client:``."""
        return AsyncClient(self, **kwargs)

    def serving(self) -> Any:
        """Run the lifespan hooks around a block: ``with`` (on the background loop that the
        sync test client uses) or ``async with`` (on the running loop)."""
        return Lifespan(self)

    # -- background tasks (background.py) -------------------------------------------------

    def add_background_task(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``func(*args, **kwargs)`` in the background, in an app context: on the server
        loop if ``async def``, else in the worker pool. During a request it starts once the
        response has been sent. Shutdown waits ``FLASK_ASGI_SHUTDOWN_TIMEOUT`` for it."""
        background.add(self.app, func, *args, **kwargs)

    def wait_background_tasks(self, timeout: float | None = None) -> Any:
        """Wait for the background tasks (True: none left). ``await`` it on a loop's thread;
        elsewhere it blocks."""
        return background.wait(self.app, timeout)


_COMPOSED: dict[type[ASGI], type[ASGI]] = {}


async def _no_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    raise RuntimeError("ASGI() has no app yet: call init_app(app) first")


def _composed(cls: type[ASGI]) -> type[ASGI]:
    """``cls`` with mounts or middleware: the server's calls go through the stack."""
    if cls not in _COMPOSED:

        async def __call__(self: ASGI, scope: dict[str, Any], receive: Receive, send: Send) -> None:
            await self._stack(scope, receive, send)

        namespace = {"__call__": __call__, "_plain": cls, "__module__": cls.__module__}
        _COMPOSED[cls] = type(cls.__name__, (cls,), namespace)
    return _COMPOSED[cls]
