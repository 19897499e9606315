"""The handshake as Flask sees it: a WSGI environ for a ``GET`` with ``Upgrade: websocket``,
and refusing it with an HTTP response (or a close, which the server answers with 403)."""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from flask import Response

from ...ground.bridge import await_
from ..environ import build_environ
from .connection import WebSocket

#: Set in the ASGI task of a connection refused with ``websocket.http.response``.
_refused_with_response: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flask_asgi_refused_with_response", default=False
)
#: What uvicorn's websockets-sansio implementation logs for a refusal besides its access line.
_UVICORN_NOISE = frozenset(
    {
        "ASGI callable returned without completing handshake.",  # false: see below
        "connection rejected (%d %s)",  # the websockets library's repeat of the access line
    }
)


class _DenialLogFilter(logging.Filter):
    """Drop uvicorn's false ``ASGI callable returned without completing handshake.`` (and
    the websockets library's ``connection rejected`` repeat of the access line) for a
    handshake refused with an HTTP response.

    uvicorn's default WebSocket implementation (``websockets-sansio``, chosen by
    ``ws="auto"`` when ``websockets`` is installed) sends the denial response but never
    marks the handshake complete, so when the app returns it logs that error (and sends
    nothing more: the response is out). Its ``wsproto`` implementation does mark it, and the
    ASGI spec says the response ends the handshake. Upstream fix: Kludex/uvicorn#3138. The
    record is emitted in the connection's own task right after the app returns, so a
    context variable set by that task tells exactly which records are ours; any other
    record, and this one for any other app, passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_refused_with_response.get() and record.msg in _UVICORN_NOISE)


_denial_filter = _DenialLogFilter()


def refused_with_response() -> None:
    """Mark the current ASGI task's connection as refused with an HTTP response."""
    _refused_with_response.set(True)
    # The filter goes on uvicorn's logger only when uvicorn is what serves (whichever way it
    # was started), before the record it drops: uvicorn logs it once the app has returned.
    if "uvicorn" in sys.modules:
        logging.getLogger("uvicorn.error").addFilter(_denial_filter)  # once: it checks


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
    # The server negotiated the extensions (compression) with the client and applies them;
    # WSGI WebSocket code (wsgi_socket.py) must not negotiate its own. What it needs to
    # complete its handshake is there even if the server left it out of the scope.
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    environ.setdefault("HTTP_SEC_WEBSOCKET_KEY", "Zmxhc2stYXNnaSBrZXkgIQ==")
    environ.setdefault("HTTP_SEC_WEBSOCKET_VERSION", "13")
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
    refused_with_response()  # the server logs while sending: see _DenialLogFilter
    start = {
        "type": "websocket.http.response.start",
        "status": ws.rejected_status,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }
    await ws._send(start)
    await ws._send({"type": "websocket.http.response.body", "body": body})


#: The answer to a cross-origin handshake (origin.py).
UNTRUSTED_HOST = (
    "400 BAD REQUEST",
    [("Content-Type", "text/plain; charset=utf-8")],
    b"Host not trusted (TRUSTED_HOSTS).\n",
)

CROSS_ORIGIN = (
    "403 FORBIDDEN",
    [("Content-Type", "text/plain; charset=utf-8")],
    b"Cross-origin WebSocket connection refused.\n",
)
