"""Serving one ``websocket`` scope: Flask's request pipeline, for a WebSocket.

The handshake becomes a pushed Flask request context, so ``request`` (the handshake),
``session``, ``g``, ``current_app``, ``url_for``, ``before_request`` hooks and URL value
preprocessors work as in a view. The handler runs where an HTTP view of its kind runs: an
``async def`` handler in a request greenlet on the server loop, a plain ``def`` handler in
a worker thread. Flask's dispatch methods are called through :mod:`flask_compat`, the one
place that knows their Flask 3.1 and 3.2 signatures.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from flask import Flask
from flask.signals import got_request_exception, request_started
from werkzeug.exceptions import HTTPException

from ...ground import flask_compat
from ...ground.app_state import app_state
from ...ground.asgi_types import Receive, Send
from ...ground.bridge import await_, run_in_greenlet
from ...ground.pools import WorkerPool
from ...ground.worker_calls import run_in_worker
from .connection import WebSocket, WebSocketDisconnect, _current
from .handshake import (
    CROSS_ORIGIN,
    UNTRUSTED_HOST,
    handshake_environ,
    refuse,
    refused_with_response,
    reject,
)
from .middleware import through_middleware
from .origin import host_untrusted, origin_refused
from .routing import handler_is_async, matched_view
from .wsgi_socket import UpgradeSocket
from .wsgi_upgrade import UNSERVED, explain_unserved, upgrade_through_wsgi


async def handle_websocket(
    app: Flask, executor: Executor, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    """The ASGI entry point for ``websocket`` scopes."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left before the handshake reached us
    environ = raw_environ = handshake_environ(scope)
    answer = None
    if "wsgi_app" in app.__dict__:  # WSGI middleware on app.wsgi_app sees the handshake first
        try:
            environ, answer = await run_in_greenlet(through_middleware, app, environ)
        except KeyError as error:  # middleware written for another server's WebSockets
            if not explain_unserved(error, environ.get("PATH_INFO") or "/"):
                raise
            answer = UNSERVED
    config = app.config
    ws = WebSocket(
        app,
        scope,
        environ,
        receive,
        send,
        max_message=int(config.get("FLASK_ASGI_WEBSOCKET_MAX_MESSAGE") or 0),
        idle_timeout=float(config.get("FLASK_ASGI_WEBSOCKET_IDLE_TIMEOUT") or 0),
    )
    # simple-websocket (Flask-Sock) takes the connection from here, as under Werkzeug.
    sock = environ["werkzeug.socket"] = UpgradeSocket(ws, asyncio.get_running_loop())
    state = app_state(app)
    state.websockets += 1  # open connections, for asgi.stats() (loop thread)
    try:
        if answer is not None:  # a middleware answered in Flask's place
            await refuse(ws, *answer)
            return
        if host_untrusted(app, environ):  # DNS rebinding: before the origin, any hook
            await refuse(ws, *UNTRUSTED_HOST)
            return
        view = matched_view(app, environ)
        if origin_refused(app, environ, view):  # before any hook or handler
            await refuse(ws, *CROSS_ORIGIN)
            return
        if view is None:  # no WebSocket route: the WSGI app's (Flask-SocketIO's middleware)
            await upgrade_through_wsgi(app, raw_environ, ws, sock)
        elif handler_is_async(view):
            task = ws._handler_task = asyncio.current_task()
            assert task is not None
            try:
                await run_in_greenlet(run_connection, app, environ, ws)
            except asyncio.CancelledError:
                if not ws._interrupted:
                    raise
                ws._interrupted = False
                if task.uncancel() > 0:
                    raise  # also cancelled by someone else (server shutdown)
            else:
                if ws._interrupted:  # the handler swallowed the cancellation
                    task.uncancel()
        else:
            # A sync handler holds a worker thread for the whole connection; one that
            # takes werkzeug.socket (Flask-Sock) has it lent, so the pool starts another.
            if type(executor) is WorkerPool:
                sock.pool = executor
            await run_in_worker(executor, run_connection, app, environ, ws)
    finally:
        state.websockets -= 1
        await sock.finish()
        await ws._finish()
        if ws.rejected_status is not None and ws.http_response_supported:
            refused_with_response()  # in this task's Context: see handshake._DenialLogFilter


def run_connection(app: Flask, environ: dict[str, Any], ws: WebSocket) -> None:
    """Flask's ``wsgi_app`` for a WebSocket: push the handshake's request context, run
    the hooks and the handler, pop the context (teardown) with the error, if any.

    Runs in a request greenlet (async handler) or a worker thread (sync handler).
    """
    ctx = app.request_context(environ)
    token = _current.set(ws)
    error: BaseException | None = None
    try:
        try:
            ctx.push()
            _dispatch(app, ctx, ws)
        except Exception as e:
            error = e
            if _handle_exception(app, ctx, ws, e):
                raise
        except BaseException as e:  # CancelledError (the connection closed), interrupts
            # Teardown sees why the connection ended, as it would after a receive().
            error = ws._disconnect() if ws._interrupted else e
            raise
    finally:
        if error is not None and flask_compat.should_ignore_error(app, error):
            error = None
        ctx.pop(error)
        _current.reset(token)


def _dispatch(app: Flask, ctx: Any, ws: WebSocket) -> None:
    """``full_dispatch_request`` for a WebSocket: before the handshake is accepted, a
    response (returned by a ``before_request`` hook or the handler, or made from an
    ``abort()`` by the error handlers) refuses it."""
    app._got_first_request = True
    try:
        request_started.send(app, _async_wrapper=app.ensure_sync)
        rv = flask_compat.preprocess_request(app, ctx)
        if rv is None:
            ws._handler_running = True
            try:
                # Routing errors are raised here, as in Flask.
                rv = flask_compat.dispatch_request(app, ctx)
            finally:
                ws._handler_running = False
    except Exception as e:
        if ws.state != "connecting":
            raise
        rv = flask_compat.handle_user_exception(app, ctx, e)
    if ws.state == "connecting":
        if rv is None:
            await_(ws.close_async(1008))  # the handler neither accepted nor refused: 403
        else:
            reject(ws, flask_compat.finalize_request(app, ctx, rv))
    elif ws.state == "open":
        await_(ws.close_async(1000))


def _handle_exception(app: Flask, ctx: Any, ws: WebSocket, e: Exception) -> bool:
    """An exception escaped the hooks or the handler: return True to propagate it."""
    if ws.state == "connecting":
        # A route written for gevent-websocket or eventlet: say what to do, besides the 500.
        explain_unserved(e, ctx.request.path)
        # Flask's handle_exception: logs and makes the 500 response, or re-raises when
        # PROPAGATE_EXCEPTIONS (testing, debug), as it would for an HTTP request.
        reject(ws, flask_compat.handle_exception(app, ctx, e))
        return False
    if isinstance(e, WebSocketDisconnect):
        return False  # the connection ended: nothing to report
    if isinstance(e, HTTPException):
        await_(ws.close_async(1008, e.name))  # abort() after accept: policy violation
        return False
    got_request_exception.send(app, _async_wrapper=app.ensure_sync, exception=e)
    await_(ws.close_async(1011))
    propagate = app.config["PROPAGATE_EXCEPTIONS"]
    if propagate is None:
        propagate = app.testing or app.debug
    if propagate:
        return True
    flask_compat.log_exception(app, ctx)
    return False
