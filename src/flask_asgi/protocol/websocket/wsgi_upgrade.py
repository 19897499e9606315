"""A handshake that no ``@asgi.websocket`` route takes goes to the WSGI app, as Werkzeug's
server would hand it: ``app.wsgi_app(environ, start_response)`` with the connection in
``environ["werkzeug.socket"]`` (:mod:`.wsgi_socket`).

This is how WSGI middleware that upgrades by itself is served unchanged: Flask-SocketIO's
``SocketIO(app)`` wraps ``app.wsgi_app`` in python-engineio's middleware, which answers
``/socket.io/`` before Flask routes anything and, in its threading mode, takes the socket
through simple-websocket. Anything else reaches Flask, whose own pipeline answers: ``404``
for an unknown path, Werkzeug's ``400`` for an HTTP route, with ``after_request`` and
error handlers as for any request. That answer refuses the handshake, and is logged with
what flask-asgi can and cannot upgrade, so an app built for another server's WebSocket API
(gevent-websocket's ``environ["wsgi.websocket"]``, eventlet) learns why, instead of a
silent 404 or a bare error.

The app runs in a thread of its own (:class:`~...ground.pools.ConnectionThreads`), not in
the worker pool: an upgraded connection keeps its thread until it closes.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from ...ground.pools import connection_threads
from ...ground.worker_calls import run_in_worker
from .connection import WebSocket
from .handshake import refuse
from .middleware import read_whole
from .wsgi_socket import UpgradeSocket

logger = logging.getLogger("flask_asgi")

#: An answer: status line, headers, body.
Answer = tuple[str, list[tuple[str, str]], bytes]

#: The answer to a handshake that code written for another server failed on.
UNSERVED: Answer = (
    "500 INTERNAL SERVER ERROR",
    [("Content-Type", "text/plain; charset=utf-8")],
    b"This WebSocket needs another server's WebSocket support (see the server log).\n",
)

SUPPORTED = (
    "flask-asgi upgrades @asgi.websocket routes and WSGI code that takes the connection"
    " from environ['werkzeug.socket'] (simple-websocket: Flask-Sock, Flask-SocketIO and"
    " python-engineio in their threading mode); environ['wsgi.websocket']"
    " (gevent-websocket) and the eventlet and gevent async modes are not served:"
    " use @asgi.websocket, or async_mode='threading'"
)


#: Where other servers put their connection: code that reads them cannot run here.
UNSERVED_KEYS = frozenset({"wsgi.websocket", "eventlet.input"})


def explain_unserved(error: BaseException, path: str) -> bool:
    """If ``error`` is code looking for another server's connection (a ``KeyError`` for
    ``wsgi.websocket`` or ``eventlet.input``), log what to do and return True."""
    if not (isinstance(error, KeyError) and error.args and error.args[0] in UNSERVED_KEYS):
        return False
    logger.error(
        "The WebSocket handshake to %s failed: the app looked for environ[%r], which only"
        " that library's own server provides. %s.",
        path,
        error.args[0],
        SUPPORTED,
    )
    return True


def _call_app(wsgi_app: Any, environ: dict[str, Any], sock: UpgradeSocket) -> Answer | None:
    """Call the WSGI app for the handshake (in a connection thread). None: the app took the
    connection and has finished with it."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    try:
        body = read_whole(wsgi_app(environ, start_response))
    except (ConnectionError, StopIteration):
        # How simple-websocket's users tell Werkzeug (ConnectionError) or gunicorn
        # (StopIteration) that the connection was theirs and is over.
        if sock.upgraded:
            return None
        raise
    except KeyError as error:  # WSGI middleware outside Flask (Flask answers 500 itself)
        if sock.upgraded or not explain_unserved(error, environ.get("PATH_INFO") or "/"):
            raise
        return UNSERVED
    if sock.upgraded:
        return None  # Flask-Sock returns an empty response after the connection
    if not started:
        raise RuntimeError(f"the WSGI app {wsgi_app!r} did not call start_response")
    return str(started[0]), list(started[1]), body


async def upgrade_through_wsgi(
    app: Flask, environ: dict[str, Any], ws: WebSocket, sock: UpgradeSocket
) -> None:
    """Serve the handshake ``environ`` (before the WSGI middleware: the app's own
    ``wsgi_app`` applies it) through the WSGI app, with ``sock`` as its
    ``werkzeug.socket``. The caller finishes ``sock``."""
    environ = dict(environ)
    environ["werkzeug.socket"] = sock
    try:
        answer = await run_in_worker(connection_threads, _call_app, app.wsgi_app, environ, sock)
    finally:
        if ws.state == "open":
            await ws.close_async(1000)  # the app returned: its connection is over
    if answer is None or ws.state != "connecting":
        return
    status, headers, body = answer
    if answer is not UNSERVED:
        logger.warning(
            "The WebSocket handshake to %s was answered %r without an upgrade: no"
            " @asgi.websocket route matches it, and the WSGI app did not take the"
            " connection. %s.",
            environ.get("PATH_INFO") or "/",
            status,
            SUPPORTED,
        )
    await refuse(ws, status, headers, body)
