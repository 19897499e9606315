"""A WebSocket route reached without a WebSocket connection: a clear ``426``, not a crash.

Under a WSGI server (``flask run``, gunicorn, Werkzeug's test client on ``app.wsgi_app``)
a handshake is a plain HTTP request: Werkzeug matches it to the ``websocket=True`` rule and
Flask calls the handler, but no connection is bound to the ``websocket`` proxy. The
handler would fail on its first use of it (``async for message in websocket``: an
``AttributeError`` that Python words itself, a 500). flask-asgi answers ``426 Upgrade
Required`` instead, saying why, from the two places such a handler reaches first: the
bridge's WSGI path (an async handler, before it starts) and the proxy (a sync one).
"""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from werkzeug.exceptions import HTTPException


class WebSocketNeedsASGI(HTTPException):
    """``426``: this server cannot upgrade to WebSocket (it is not an ASGI server)."""

    code = 426
    description = (
        "This is a WebSocket route, and WebSockets need an ASGI server: serve the app with"
        " 'flask serve' or 'uvicorn module:asgi' (flask-asgi), not with 'flask run' or a"
        " WSGI server such as gunicorn's sync workers."
    )

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [*super().get_headers(*args, **kwargs), ("Upgrade", "websocket")]


def reached_without_connection() -> bool:
    """Is this a request to a WebSocket route that no ASGI WebSocket connection carries?"""
    if not has_request_context():
        return False
    rule = request.url_rule
    if rule is None or not rule.websocket:
        return False
    scope = request.environ.get("asgi.scope")
    return not (isinstance(scope, dict) and scope.get("type") == "websocket")
