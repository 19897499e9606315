"""WebSocket routes on Flask's own ``url_map``, and which path a handshake takes.

A WebSocket route is an ordinary Werkzeug ``Rule`` with ``websocket=True``, so converters,
blueprints and ``url_for`` (``ws://`` URLs) work as for HTTP routes, and an HTTP request to
it gets Werkzeug's ``400`` (``WebsocketMismatch``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Flask
from flask.sansio.scaffold import Scaffold

from ...ground.origin_patterns import compile_patterns
from ..dispatch import view_is_async
from .origin import ROUTE_ATTRIBUTE

F = TypeVar("F", bound=Callable[..., Any])


def websocket_route(
    scaffold: Scaffold, rule: str, *, allowed_origins: Iterable[str] | None = None, **options: Any
) -> Callable[[F], F]:
    """Register a WebSocket handler on an app or a blueprint::

        bp = Blueprint("chat", __name__, url_prefix="/chat")

        @flask_asgi.websocket_route(bp, "/ws/<room>")
        async def socket(room):
            ...

    It is ``scaffold.route(rule, websocket=True, **options)``: the rule goes into Flask's
    ``url_map`` (for a blueprint, when it is registered), with the same ``endpoint``,
    ``defaults``, ``subdomain``... options as ``route``.

    ``allowed_origins`` (a list, as ``FLASK_ASGI_WEBSOCKET_ALLOWED_ORIGINS``) replaces that
    setting for this handler: the origins, besides the app's own, whose pages may connect.
    It is kept on the handler function, so it follows it into a blueprint's app.
    """
    options.pop("websocket", None)
    patterns = None
    if allowed_origins is not None:
        patterns = compile_patterns(allowed_origins, f"allowed_origins of {rule!r}")
    register = scaffold.route(rule, websocket=True, **options)

    def decorator(func: F) -> F:
        if patterns is not None:
            setattr(func, ROUTE_ATTRIBUTE, patterns)
        return register(func)

    return decorator


def matched_view(app: Flask, environ: dict[str, Any]) -> Any:
    """The view function the handshake matches, or None (404, 405, a redirect...)."""
    try:
        adapter = app.create_url_adapter(app.request_class(environ))
        assert adapter is not None
        endpoint, _ = adapter.match()
    except Exception:
        return None
    return app.view_functions.get(endpoint)


def handler_is_async(view: Any) -> bool:
    """Is the matched ``view`` an ``async def`` handler? (No match: the worker path.)"""
    return view is not None and view_is_async(view, "GET")
