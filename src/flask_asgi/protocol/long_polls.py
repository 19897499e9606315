"""Which HTTP requests wait for events rather than answer: Socket.IO's long-polls.

Flask-SocketIO (``SocketIO(app)``) wraps ``app.wsgi_app`` in python-engineio's WSGI
middleware, which answers every request under its path (``/socket.io/``) itself. In its
threading mode a long-poll ``GET`` blocks its thread until there is something to send, up
to the ping interval (25 s by default). In the worker pool, ``FLASK_ASGI_THREADS`` such
clients would hold every worker, and every sync view would wait behind them (41 waiting
polls made ``GET /`` take 23.2 s with 40 workers). So requests under that path run in threads of
their own, as every request does on Werkzeug's threaded server; ``FLASK_ASGI_MAX_REQUESTS``
still bounds them. The middleware is found by walking ``app.wsgi_app`` through the
attributes middleware keeps its inner app in (``app``, and ``wsgi_app`` for engineio's),
once per ``app.wsgi_app`` object.

When the server starts shutting down, every Engine.IO session is disconnected, as
flask-asgi closes its own WebSockets with ``1001``: a waiting long-poll then answers at once
with Engine.IO's close packet (the client reconnects, to another server if there is one),
instead of holding the shutdown until the graceful timeout cuts it with an error.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from flask import Flask

from ..ground.lifecycle import StopSignal

logger = logging.getLogger("flask_asgi")

_MAX_DEPTH = 32


def walk_middleware(wsgi: Any) -> tuple[tuple[str, ...], list[Any]]:
    """The long-poll path prefixes in the middleware stack ``wsgi``, and their Engine.IO
    servers."""
    found: list[str] = []
    servers: list[Any] = []
    for _ in range(_MAX_DEPTH):
        path = getattr(wsgi, "engineio_path", None)  # python-engineio's WSGIApp (and subclasses)
        if isinstance(path, str) and path.strip("/"):
            found.append("/" + path.strip("/") + "/")
            server = getattr(wsgi, "engineio_app", None)
            server = getattr(server, "eio", server)  # python-socketio's Server wraps it
            if callable(getattr(server, "disconnect", None)) and hasattr(server, "sockets"):
                servers.append(server)
        inner = getattr(wsgi, "wsgi_app", None) if path is not None else None
        inner = inner if inner is not None else getattr(wsgi, "app", None)
        if inner is None or not callable(inner) or getattr(wsgi, "__self__", None) is not None:
            break  # the end of the stack (Flask's own bound wsgi_app), or not walkable
        wsgi = inner
    return tuple(found), servers


#: The Engine.IO servers already warned about: once per server, however many ``ASGI``
#: objects serve its app (one not held by the caller is made again when next needed).
_warned: weakref.WeakSet[Any] = weakref.WeakSet()


def _warn_about_modes(servers: list[Any]) -> None:
    """Say so once if an Engine.IO server runs in a mode whose WebSockets need its own
    server (eventlet's, gevent's socket): their handshakes would only be refused."""
    for server in servers:
        mode = getattr(server, "async_mode", "threading")
        if mode != "threading" and server not in _warned:
            _warned.add(server)
            logger.warning(
                "Socket.IO (python-engineio) runs in its %r mode, whose WebSockets need that"
                " server: flask-asgi serves the 'threading' mode. Pass"
                " SocketIO(app, async_mode='threading') (or uninstall %s); until then"
                " WebSocket handshakes are refused and clients stay on long-polling",
                mode,
                mode.split("_")[0],
            )


def _disconnect(server: Any, sid: str) -> None:
    try:
        server.disconnect(sid)  # blocks until the session's writer took the close packet
    except Exception:
        logger.debug("Engine.IO session %s did not close cleanly at shutdown", sid, exc_info=True)


class LongPollPaths:
    """The path prefixes of the app's long-poll middleware, recomputed when
    ``app.wsgi_app`` is replaced."""

    __slots__ = ("_for", "_prefixes", "_servers", "_watching")

    def __init__(self) -> None:
        self._for: Any = None
        self._prefixes: tuple[str, ...] = ()
        self._servers: list[Any] = []
        self._watching: StopSignal | None = None

    def match(self, app: Flask, path: str) -> bool:
        """Does a request to ``path`` go to long-poll middleware?"""
        wsgi = app.__dict__.get("wsgi_app")
        if wsgi is None:
            return False  # no middleware: the common case costs one dict lookup
        if wsgi is not self._for:
            self._for = wsgi
            self._prefixes, self._servers = walk_middleware(wsgi)
            _warn_about_modes(self._servers)
        return bool(self._prefixes) and path.startswith(self._prefixes)

    def watch(self, stop: StopSignal) -> None:
        """Disconnect the Engine.IO sessions when ``stop`` is set (once per signal)."""
        if self._watching is not stop:
            self._watching = stop
            stop.subscribe(self._disconnect_all)

    def _disconnect_all(self) -> None:
        # One thread per session: a session's close waits for its writer, and one whose
        # client is gone must not hold up the others.
        for server in self._servers:
            for sid in list(server.sockets):
                threading.Thread(
                    target=_disconnect,
                    args=(server, sid),
                    name="flask-asgi-engineio-close",
                    daemon=True,
                ).start()
