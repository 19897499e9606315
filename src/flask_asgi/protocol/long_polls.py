"""Which HTTP requests wait for events rather than answer: Socket.IO's long-polls.

Flask-SocketIO (``SocketIO(app)``) wraps ``app.wsgi_app`` in python-engineio's WSGI
middleware, which answers every request under its path (``/socket.io/``) itself. In its
threading mode a long-poll ``GET`` blocks its thread until there is something to send, up
to the ping interval (25 s by default). In the worker pool, ``FLASK_ASGI_THREADS`` such
clients would hold every worker, and every sync view would wait behind them (measured: 41
polling clients made ``GET /`` take 21.9 s). So requests under that path run in threads of
their own, as every request does on Werkzeug's threaded server; ``FLASK_ASGI_MAX_REQUESTS``
still bounds them. The middleware is found by walking ``app.wsgi_app`` through the
attributes middleware keeps its inner app in (``app``, and ``wsgi_app`` for engineio's),
once per ``app.wsgi_app`` object.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

_MAX_DEPTH = 32


def _prefixes(wsgi: Any) -> tuple[str, ...]:
    found: list[str] = []
    for _ in range(_MAX_DEPTH):
        path = getattr(wsgi, "engineio_path", None)  # python-engineio's WSGIApp (and subclasses)
        if isinstance(path, str) and path.strip("/"):
            found.append("/" + path.strip("/") + "/")
        inner = getattr(wsgi, "wsgi_app", None) if path is not None else None
        inner = inner if inner is not None else getattr(wsgi, "app", None)
        if inner is None or not callable(inner) or getattr(wsgi, "__self__", None) is not None:
            break  # the end of the stack (Flask's own bound wsgi_app), or not walkable
        wsgi = inner
    return tuple(found)


class LongPollPaths:
    """The path prefixes of the app's long-poll middleware, recomputed when
    ``app.wsgi_app`` is replaced."""

    __slots__ = ("_for", "_prefixes")

    def __init__(self) -> None:
        self._for: Any = None
        self._prefixes: tuple[str, ...] = ()

    def match(self, app: Flask, path: str) -> bool:
        """Does a request to ``path`` go to long-poll middleware?"""
        wsgi = app.__dict__.get("wsgi_app")
        if wsgi is None:
            return False  # no middleware: the common case costs one dict lookup
        if wsgi is not self._for:
            self._for, self._prefixes = wsgi, _prefixes(wsgi)
        return bool(self._prefixes) and path.startswith(self._prefixes)
