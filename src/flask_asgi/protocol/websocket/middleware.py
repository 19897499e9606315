"""The handshake through the WSGI middleware assigned to ``app.wsgi_app`` (``ProxyFix``...).

An HTTP request reaches Flask through ``app.wsgi_app``, so middleware sees it first and may
rewrite its environ (``ProxyFix``: scheme, host, client address) or answer it (a
``DispatcherMiddleware`` mount, an IP filter). A handshake runs flask-asgi's own pipeline
instead of Flask's ``wsgi_app``, so it is sent down the same middleware stack first, with
Flask's own ``wsgi_app`` at the bottom replaced by a stop: the environ that arrives there
is the one the handshake's request context, the origin check and the handler see. The stop
answers ``101 Switching Protocols`` with no body, which is what the handshake becomes, so
code a middleware runs after its inner app returns (logging, metrics) sees that.

The stack is walked through each layer's ``app`` attribute (Werkzeug's middleware and the
usual hand-written ones keep their inner app there), down to the first layer without one,
which is not run: the layers above it are. Each layer is a shallow copy whose ``app`` is
the next copy, so the app's own middleware objects are never changed. Werkzeug has no way
to run a middleware "up to the app", which is why this is our own code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from flask import Flask

#: What a middleware answered in Flask's place: status line, headers, body.
Answer = tuple[str, list[tuple[str, str]], bytes]

_MAX_DEPTH = 32  # a longer chain is a cycle, or not a middleware stack

#: What the middleware sees come back from Flask's place for a handshake that reached it.
UPGRADE_STATUS = "101 Switching Protocols"


def _is_flask_entry(app: Flask, wsgi: Any) -> bool:
    """Is ``wsgi`` the app's own ``wsgi_app`` (a bound method of the app)?"""
    return getattr(wsgi, "__self__", None) is app and getattr(wsgi, "__name__", "") == "wsgi_app"


def _layers(app: Flask) -> list[Any] | None:
    """The middleware objects from the outside in, down to Flask or to the first layer
    that cannot be walked (one without an ``app`` attribute: a closure, python-engineio's
    middleware under Flask-SocketIO); None for a chain too long to be a stack."""
    layers: list[Any] = []
    wsgi = app.wsgi_app
    while not _is_flask_entry(app, wsgi):
        if len(layers) >= _MAX_DEPTH:
            return None
        inner = getattr(wsgi, "app", None)
        if inner is None or not callable(inner):
            break  # the layers above it still apply (ProxyFix over Flask-SocketIO)
        layers.append(wsgi)
        wsgi = inner
    return layers


def through_middleware(app: Flask, environ: dict[str, Any]) -> tuple[dict[str, Any], Answer | None]:
    """Send the handshake ``environ`` down the app's middleware stack.

    Returns the environ as it reaches Flask (or the first layer that cannot be walked),
    and None; or, when a middleware answered in Flask's place, the environ unchanged and
    that answer (which refuses the handshake). Without middleware, or when not even the
    outermost layer can be walked, ``environ`` is returned as it is. Runs where ``await_``
    works (the middleware may be a whole WSGI app).
    """
    if "wsgi_app" not in app.__dict__:
        return environ, None  # no middleware: the common case costs one dict lookup
    layers = _layers(app)
    if not layers:
        return environ, None
    arrived: list[dict[str, Any]] = []

    def arrive(reached: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # Flask's place: the handshake goes on from here as an upgrade, with no body.
        arrived.append(reached)
        start_response(UPGRADE_STATUS, [])
        return []

    inner: Any = arrive
    try:
        for layer in reversed(layers):
            clone = copy.copy(layer)
            clone.app = inner
            inner = clone
    except (TypeError, AttributeError, copy.Error):
        return environ, None  # a layer that cannot be copied or rebound: as without
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    data = read_whole(inner(dict(environ), start_response))  # start_response may come late
    if arrived:
        return arrived[0], None
    if not started:
        raise RuntimeError(f"WSGI middleware {layers[0]!r} did not call start_response")
    return environ, (str(started[0]), list(started[1]), data)


def read_whole(body: Iterable[bytes]) -> bytes:
    """A WSGI response body joined, and closed as WSGI requires."""
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
