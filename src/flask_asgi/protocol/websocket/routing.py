"""WebSocket routes on Flask's own ``url_map``, and which path a handshake takes.

A WebSocket route is an ordinary Werkzeug ``Rule`` with ``websocket=True``, so converters,
blueprints and ``url_for`` (``ws://`` URLs) work as for HTTP routes, and an HTTP request to
it gets Werkzeug's ``400`` (``WebsocketMismatch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask
from flask.sansio.scaffold import Scaffold

from ..dispatch import view_is_async

F = TypeVar("F", bound=Callable[..., Any])


def websocket_route(scaffold: Scaffold, rule: str, **options: Any) -> Callable[[F], F]:
    """Register a WebSocket handler on an app or a blueprint::

        bp = Blueprint("chat", __name__, url_prefix="/chat")

        @flask_asgi.websocket_route(bp, "/ws/<room>")
        async def socket(room):
            ...

    It is ``scaffold.route(rule, websocket=True, **options)``: the rule goes into Flask's
    ``url_map`` (for a blueprint, when it is registered), with the same ``endpoint``,
    ``defaults``, ``subdomain``... options as ``route``.
    """
    options.pop("websocket", None)
    return scaffold.route(rule, websocket=True, **options)


def handler_is_async(app: Flask, environ: dict[str, Any]) -> bool:
    """Does the handshake match an ``async def`` handler? (No match: the worker path.)"""
    try:
        adapter = app.create_url_adapter(app.request_class(environ))
        assert adapter is not None
        endpoint, _ = adapter.match()
    except Exception:
        return False
    view = app.view_functions.get(endpoint)
    return view is not None and view_is_async(view, "GET")
