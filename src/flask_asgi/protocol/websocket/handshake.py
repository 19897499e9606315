"""The handshake as Flask sees it: a WSGI environ for a ``GET`` with ``Upgrade: websocket``,
and refusing it with an HTTP response (or a close, which the server answers with 403)."""

from __future__ import annotations

from typing import Any

from flask import Response

from ...ground.bridge import await_
from ..environ import build_environ
from .connection import WebSocket


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def handshake_environ(scope: dict[str, Any]) -> dict[str, Any]:
    """The WSGI environ of a WebSocket handshake: a ``GET`` with ``Upgrade: websocket``,
    which Werkzeug's router matches against ``websocket=True`` rules."""
    http_scope = dict(scope)
    http_scope["method"] = "GET"
    http_scope["scheme"] = "https" if scope.get("scheme") in ("wss", "https") else "http"
    http_scope.setdefault("query_string", b"")
    environ = build_environ(http_scope, _no_body)
    environ["asgi.scope"] = scope
    environ["HTTP_UPGRADE"] = "websocket"
    connection = environ.get("HTTP_CONNECTION", "")
    if "upgrade" not in (token.strip().lower() for token in connection.split(",")):
        environ["HTTP_CONNECTION"] = f"{connection}, Upgrade" if connection else "Upgrade"
    return environ


def reject(ws: WebSocket, response: Response) -> None:
    """Refuse the handshake with ``response`` (HTTP 403 without the server extension)."""
    if not ws.http_response_supported:
        await_(ws.close_async(1008))
        return
    app_iter, status, headers = response.get_wsgi_response(ws.environ)
    try:
        body = b"".join(app_iter)
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()
    await_(refuse(ws, status, list(headers), body))


async def refuse(ws: WebSocket, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
    """Refuse the handshake with this HTTP answer (403 without the server extension)."""
    if not ws.http_response_supported:
        await ws.close_async(1008)
        return
    ws.state = "closed"
    ws.rejected_status = int(status[:3])
    start = {
        "type": "websocket.http.response.start",
        "status": ws.rejected_status,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }
    await ws._send(start)
    await ws._send({"type": "websocket.http.response.body", "body": body})


#: The answer to a cross-origin handshake (origin.py).
CROSS_ORIGIN = (
    "403 FORBIDDEN",
    [("Content-Type", "text/plain; charset=utf-8")],
    b"Cross-origin WebSocket connection refused.\n",
)
