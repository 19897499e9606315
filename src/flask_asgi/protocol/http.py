"""One HTTP request on the loop: scope -> environ -> where the app runs -> ASGI messages.

:class:`HttpHandler` answers probes, applies ``FLASK_ASGI_MAX_REQUESTS``, builds the
environ and asks the route index whether the endpoint is async. An async endpoint's whole
request runs here, in a request greenlet of the request's task (``exchange.respond``); a
sync one's goes to ``sync_path.py`` (a worker thread). Both end in :func:`_end`, which
undoes what the request left behind (its timer, body feed and disconnect watch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from flask import Flask
from werkzeug.exceptions import GatewayTimeout, ServiceUnavailable

from ..ground.app_state import app_state
from ..ground.asgi_types import Receive, Send
from ..ground.bridge import Suspended, enter_greenlet
from ..ground.counters import counters
from ..ground.pools import ConnectionThreads
from ..ground.view_timeout import UNSET
from .body import RequestBody
from .disconnect_watch import first_await
from .environ import MALFORMED, build_environ
from .exchange import CLOSE, Exchange, respond
from .probes import HEALTH_KEY, METRICS_KEY, READY_KEY, probe_response
from .queue_timeout import RETRY_AFTER
from .refusal import refuse, refuse_malformed
from .routes import RouteIndex
from .sync_path import serve_sync
from .timeouts import CONFIG_KEY as REQUEST_TIMEOUT
from .timeouts import RequestTimer, config_seconds

#: An async endpoint's declared body up to this size: its first message is taken on the
#: loop if it has already arrived (RequestBody.prefetch).
_PREFETCH_LIMIT = 64 * 1024


class HttpHandler:
    """The ASGI entry point for one app's ``http`` scopes.

    What every request needs (the app, its route index and its ``AppState``)
    is looked up once, here, and the request runs in this one coroutine: each level of
    coroutine, each call and each argument passed down was a measurable part of a request
    that answers at once (``bench/adapter_cost.py`` counts them). ``executor_of(path)``
    gives the worker pool, or threads of their own for long-polls (``long_polls.py``).
    """

    __slots__ = ("app", "routes", "executor_of", "state")

    def __init__(
        self, app: Flask, routes: RouteIndex, executor_of: Callable[[str], Executor]
    ) -> None:
        self.app = app
        self.routes = routes
        self.executor_of = executor_of
        # Hooks, lifecycle and in-flight counts (plain ints: the loop thread), one object.
        self.state = app_state(app)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        app = self.app
        # Read per request, as Flask reads its own settings (MAX_CONTENT_LENGTH...).
        config = app.config
        path = scope["path"]  # never "", the value of a probe that is off
        if path == config[HEALTH_KEY] or path == config[READY_KEY] or path == config[METRICS_KEY]:
            probe = probe_response(app, scope)  # health/readiness: no environ, no Flask
            if probe is not None:
                await send(probe[0])
                await send(probe[1])
                return
        max_requests: int = config["FLASK_ASGI_MAX_REQUESTS"]
        if max_requests > 0 and counters.in_flight >= max_requests:
            counters.add("refused_max_requests_total")
            await refuse(send, ServiceUnavailable(), [RETRY_AFTER])
            return
        environ = build_environ(scope, receive)
        if MALFORMED in environ:  # two framings or two hosts: 400 and close, no app
            return await refuse_malformed(send, environ)
        body: RequestBody = environ["wsgi.input"]
        is_async, mark = self.routes.lookup(environ)  # one URL match per new path, if any
        if not body.complete:
            timeout = float(config["FLASK_ASGI_BODY_TIMEOUT"])
            body.time_left = timeout if timeout > 0 else None
            body.scope = scope
            if is_async and _small(body.content_length, config.get("MAX_CONTENT_LENGTH")):
                body.prefetch()
        state = self.state
        exchange = Exchange(send, receive, body, state.lifecycle, is_async)
        limit: int = config["FLASK_ASGI_RESPONSE_BUFFER"]
        if mark is UNSET:  # the view has no mark: the config's, read per request
            configured = config[REQUEST_TIMEOUT]
            seconds = config_seconds(configured) if configured else None  # 0: no call
        else:
            seconds = mark  # type: ignore[assignment]
        if not is_async:
            state.sync_requests += 1
            try:
                executor = self.executor_of(environ["PATH_INFO"])
                # A long-poll waits by design: untimed.
                if seconds is not None and type(executor) is not ConnectionThreads:
                    exchange.timer = self._timer(seconds, environ, exchange)
                await serve_sync(app, executor, environ, exchange, limit)
            finally:
                state.sync_requests -= 1
                _end(exchange)
            return
        # An async endpoint: the whole request in a greenlet of this task (inline here: one
        # coroutine fewer per request).
        state.async_requests += 1
        timer = None
        try:
            if seconds is not None:
                timer = exchange.timer = self._timer(seconds, environ, exchange)
                timer.start()
            try:
                messages = enter_greenlet(respond, (app.wsgi_app, environ, exchange, limit))
                if isinstance(messages, Suspended):
                    # Only requests that really wait need someone listening for a disconnect.
                    first_await(exchange)
                    messages = await messages
            except asyncio.CancelledError:
                timed_out = timer is not None and timer.expired
                task = asyncio.current_task()
                if (exchange.disconnected or timed_out) and task and task.uncancel() == 0:
                    # The view saw CancelledError and teardown ran. A client that left gets
                    # nothing; one whose response has started gets it unfinished (the
                    # server closes the connection), else 504.
                    if not exchange.disconnected and not exchange.started:
                        await _refuse_timed_out(exchange)
                    return
                raise
            if timer is not None and timer.expired and timer.task is not None:
                timer.task.uncancel()  # the view caught the cancellation and answered anyway
            if messages is not None:
                exchange.finished = True
                await send(messages[0])
                await send(messages[1])
        finally:
            state.async_requests -= 1
            # Most requests have nothing for _end to undo: no call for them.
            if (
                exchange.timer is not None
                or exchange.watch_pending is not None
                or exchange.watcher is not None
                or not body.complete
            ):
                _end(exchange)

    def _timer(self, seconds: float, environ: dict[str, Any], exchange: Exchange) -> RequestTimer:
        task = asyncio.current_task() if exchange.cancellable else None
        exchange.task = task
        return RequestTimer(seconds, self.app, environ, lambda: exchange.finished, task)


def _small(length: int | None, max_length: int | None) -> bool:
    """A declared body small enough to take off the server's queue before the app runs:
    never one Werkzeug refuses from its Content-Length (413 before anything is received)."""
    return (
        length is not None
        and length <= _PREFETCH_LIMIT
        and (max_length is None or length <= max_length)
    )


def _end(exchange: Exchange) -> None:
    """What a finished request leaves behind: its timer, body feed and disconnect watch."""
    if exchange.timer is not None:
        exchange.timer.cancel()
    body = exchange.body
    if body.feed is not None:
        body.feed.close()
    if not body.complete:  # a prefetched message or receive may be left
        body.drop_pending()
    if exchange.watch_pending is not None:
        exchange.watch_pending.discard(exchange)
    if exchange.watcher is not None:
        exchange.watcher.cancel()


async def _refuse_timed_out(exchange: Exchange) -> None:
    lifecycle = exchange.lifecycle
    close = not exchange.body.complete or (lifecycle is not None and lifecycle.close_connections)
    await refuse(exchange.send, GatewayTimeout(), [CLOSE] if close else [])
