"""One HTTP request: scope -> environ -> Flask's ``wsgi_app`` -> ASGI response messages.

``app.wsgi_app`` is called as a WSGI server would call it, so WSGI middleware assigned to
it (ProxyFix...) and Flask's whole pipeline run unchanged. For an async endpoint the call
runs in a request greenlet on the loop; for a sync one, in a worker thread. The same
:func:`respond` runs in both places: it buffers small known-length bodies into one
message and streams the rest through :func:`~flask_asgi.ground.bridge.await_` (a sync
endpoint's is handed to the loop instead: ``response_feed.py``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

from flask import Flask
from werkzeug.exceptions import GatewayTimeout, ServiceUnavailable

from ..ground.app_state import app_state
from ..ground.asgi_types import Receive, Send
from ..ground.bridge import Suspended, await_, enter_greenlet
from ..ground.counters import WaitingTicket, counters
from ..ground.lifecycle import Lifecycle
from ..ground.pools import ConnectionThreads
from ..ground.view_timeout import UNSET
from .body import BodyTimeout, RequestBody
from .body_feed import feed_body
from .environ import MALFORMED, build_environ
from .probes import HEALTH_KEY, METRICS_KEY, READY_KEY, probe_response
from .queue_timeout import RETRY_AFTER, all_busy, within_queue_timeout
from .refusal import refuse, refuse_malformed
from .response_feed import ResponseFeed, hand_over, run_responding
from .routes import RouteIndex
from .timeouts import CONFIG_KEY as REQUEST_TIMEOUT
from .timeouts import RequestTimer, config_seconds

#: Answered when the client gave up on its body, so the connection is not reused.
CLOSE = (b"connection", b"close")
#: An async endpoint's declared body up to this size: its first message is taken on the
#: loop if it has already arrived (RequestBody.prefetch).
_PREFETCH_LIMIT = 64 * 1024


#: An exchange's headers until start_response sets them (a shared value, never appended to).
_NO_HEADERS: list[tuple[bytes, bytes]] = []


class Exchange:
    """State shared by the loop side and the app side of one request."""

    __slots__ = (
        "send",
        "receive",
        "body",
        "task",
        "status",
        "headers",
        "started",
        "finished",
        "disconnected",
        "watcher",
        "watch_pending",
        "lifecycle",
        "timer",
        "cancellable",
        "feed",
    )

    def __init__(
        self,
        send: Send,
        receive: Receive,
        body: RequestBody,
        lifecycle: Lifecycle | None = None,
        cancellable: bool = False,
    ) -> None:
        self.send = send
        self.receive = receive
        self.body = body
        #: An async endpoint: its request task may be cancelled (a sync view cannot be).
        self.cancellable = cancellable
        #: Shutting down: responses carry Connection: close (keep-alive ends after them).
        self.lifecycle = lifecycle
        self.status = 0
        self.started = False  # http.response.start has been sent
        self.finished = False  # the last body message is on its way: disconnect is normal
        self.disconnected = False
        self.headers: list[tuple[bytes, bytes]] = _NO_HEADERS  # start_response sets them
        #: The request task to cancel when the client leaves (async endpoints only), looked
        #: up once the request waits or streams (:meth:`request_task`): most never do.
        self.task: asyncio.Task[Any] | None = None
        #: FLASK_ASGI_REQUEST_TIMEOUT / @flask_asgi.timeout, when the request has one.
        self.timer: RequestTimer | None = None
        self.watcher: asyncio.Task[None] | None = None
        #: The loop's ``_WatchSchedule`` this request waits in for a watcher, if any (kept
        #: here so the end of the request need not look the schedule up again).
        self.watch_pending: _WatchSchedule | None = None
        self.feed: ResponseFeed | None = None  # a sync endpoint's body, for the loop to send

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if self.started:
            if exc_info is not None:
                raise exc_info[1].with_traceback(exc_info[2])
            # WSGI makes this an error; Werkzeug's debugger relies on it to log an exception
            # raised mid-stream instead of appending its HTML page to the stream.
            raise RuntimeError("start_response() called again after the headers were sent")
        self.status = int(status[:3])
        encoded = [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ]
        # A body that timed out may still be arriving; a server shutting down closes
        # keep-alive connections after their current response.
        if self.body.timed_out or (self.lifecycle is not None and self.lifecycle.close_connections):
            encoded.append(CLOSE)
        self.headers = encoded
        return _write

    def request_task(self) -> None:
        """Note the request task, from code running in it (its greenlet, or the task)."""
        if self.cancellable and self.task is None:
            self.task = asyncio.current_task()


def _write(data: bytes) -> None:
    """WSGI's ``write()`` callable (a plain function: no bound method per request)."""
    raise NotImplementedError("flask-asgi does not support WSGI's write() callable")


def respond(
    wsgi_app: Callable[..., Iterable[bytes]],
    environ: dict[str, Any],
    exchange: Exchange,
    buffer_limit: int,
    handover: bool = False,
) -> list[dict[str, Any]] | None:
    """Run the WSGI app; return the response messages, or stream them itself and return None.

    Runs in a request greenlet or a worker thread, never directly on the loop. ``handover``
    (a worker thread): a streamed body is left in ``exchange.feed`` for the loop to send.
    """
    app_iter = wsgi_app(environ, exchange.start_response)
    try:
        iterator = iter(app_iter)
        first: bytes | None = None
        if not exchange.status:  # WSGI allows start_response at the first iteration
            first = next(iterator, b"")
        length = -1
        for name, value in exchange.headers:
            if name == b"content-length":
                length = int(value)
                break
        if 0 <= length <= buffer_limit:
            body = b"".join(iterator) if first is None else first + b"".join(iterator)
            return [
                {
                    "type": "http.response.start",
                    "status": exchange.status,
                    "headers": exchange.headers,
                },
                {"type": "http.response.body", "body": body},
            ]
        if handover:  # the loop sends, and iterates the rest in the pool when there is room
            hand_over(exchange, environ, app_iter, iterator, first, buffer_limit)
            return None
        await_(_start_streaming(exchange))
        if first:
            await_(exchange.send({"type": "http.response.body", "body": first, "more_body": True}))
        for chunk in iterator:
            if exchange.disconnected:
                return None  # closing the iterator below runs the generator's cleanup
            if chunk:
                await_(
                    exchange.send({"type": "http.response.body", "body": chunk, "more_body": True})
                )
        exchange.finished = True
        await_(exchange.send({"type": "http.response.body", "body": b""}))
        return None
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None and exchange.feed is None:  # a feed closes it when it is sent
            close()


async def _start_streaming(exchange: Exchange) -> None:
    exchange.request_task()  # an async endpoint's greenlet runs in its request task
    exchange.started = True
    await exchange.send(
        {"type": "http.response.start", "status": exchange.status, "headers": exchange.headers}
    )
    _watch_disconnect(exchange)


def _watch_disconnect(exchange: Exchange) -> None:
    """Notice the client going away: flag it, and cancel an async endpoint's request task.

    Started only once the request body has been read (the watcher would otherwise take
    body messages from the app) and only when the request waits or streams, so a
    request that answers at once costs no extra task.
    """
    if exchange.watcher is not None or not exchange.body.complete:
        return
    cancel = exchange.task

    async def watch() -> None:
        while True:
            message = await exchange.receive()
            if message["type"] == "http.disconnect":
                break
        if not exchange.finished:
            exchange.disconnected = True
            if cancel is not None:
                cancel.cancel()

    exchange.watcher = asyncio.get_running_loop().create_task(watch())


#: Seconds an async request must have been waiting before a watcher listens for the client
#: going away. A watcher is a task per request plus its cancellation (measured: about 10% of
#: the CPU of a request that waits 50 ms); most requests finish sooner and never pay it.
WATCH_DELAY = 0.25


class _WatchSchedule:
    """One timer per loop for every waiting request, instead of a ``call_later`` each.

    A timer per request (created at its first suspension, cancelled when it ends) was a
    measurable part of the suspension path on uvloop. Here each tick, every WATCH_DELAY
    seconds while requests wait, starts the watchers of the requests that were already
    waiting at the previous tick: a request is watched 0.25 to 0.5 s after it first waits.
    """

    __slots__ = ("loop", "young", "old", "ticking")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.young: set[Exchange] = set()  # began waiting since the last tick
        self.old: set[Exchange] = set()  # were waiting at the last tick: due at the next
        self.ticking = False

    def add(self, exchange: Exchange) -> None:
        exchange.watch_pending = self
        self.young.add(exchange)
        if not self.ticking:
            self.ticking = True
            self.loop.call_later(WATCH_DELAY, self._tick)

    def discard(self, exchange: Exchange) -> None:
        exchange.watch_pending = None
        self.young.discard(exchange)
        self.old.discard(exchange)

    def _tick(self) -> None:
        due, self.old, self.young = self.old, self.young, set()
        for exchange in due:
            exchange.watch_pending = None
            _watch_when_complete(exchange)
        if self.old:
            self.loop.call_later(WATCH_DELAY, self._tick)
        else:
            self.ticking = False


_schedules = threading.local()


def _schedule() -> _WatchSchedule:
    """The running loop's schedule (one loop runs per thread at a time)."""
    loop = asyncio.get_running_loop()
    schedule: _WatchSchedule | None = getattr(_schedules, "current", None)
    if schedule is None or schedule.loop is not loop:
        schedule = _schedules.current = _WatchSchedule(loop)
    return schedule


def _watch_when_complete(exchange: Exchange) -> None:
    # One whose body is still arriving gets its watcher when the body is complete.
    if exchange.body.complete:
        _watch_disconnect(exchange)
    else:
        exchange.body.on_complete = lambda: _watch_disconnect(exchange)


def _first_await(exchange: Exchange) -> None:
    exchange.request_task()
    _schedule().add(exchange)


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
                if seconds is not None:
                    exchange.timer = self._timer(seconds, environ, exchange)
                await self._serve_sync(environ, exchange, limit)
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
                    _first_await(exchange)
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

    async def _serve_sync(self, environ: dict[str, Any], exchange: Exchange, limit: int) -> None:
        executor = self.executor_of(environ["PATH_INFO"])
        if type(executor) is ConnectionThreads:  # a long-poll: it waits by design, untimed
            exchange.timer = None  # made, never started
        messages = await _run_sync(self.app, executor, environ, exchange, limit)
        if exchange.feed is not None:
            await _start_streaming(exchange)
            await exchange.feed.stream(exchange, executor)
        elif messages is not None:
            exchange.finished = True
            await exchange.send(messages[0])
            await exchange.send(messages[1])


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


async def _run_sync(
    app: Flask,
    executor: Executor,
    environ: dict[str, Any],
    exchange: Exchange,
    buffer_limit: int,
) -> list[dict[str, Any]] | None:
    """A sync endpoint: its body received on the loop, then the whole request in a worker
    thread, unless too many wait for one already (503). None: answered or streamed."""
    max_waiting: int = app.config["FLASK_ASGI_MAX_WAITING"]
    body, send = exchange.body, exchange.send
    if 0 < max_waiting <= counters.waiting:  # refuse before receiving the body, too
        await _refuse_waiting(send)
        return None
    if not body.complete and not await feed_body(app.config, body):
        await refuse(send, BodyTimeout(), [CLOSE])
        return None
    ticket = WaitingTicket(counters)
    try:
        if 0 < max_waiting < counters.waiting:
            ticket.end()
            await _refuse_waiting(send)
            return None
        # A sync view cannot be cancelled; a disconnect only stops its streaming.
        job = run_responding(
            executor, exchange, _respond_counted, ticket, app.wsgi_app, environ, exchange,
            buffer_limit,
        )
        queue_timeout: float = app.config["FLASK_ASGI_QUEUE_TIMEOUT"]
        if not queue_timeout or not all_busy(executor):
            return await job  # a thread is free: no timer to pay for
        return await within_queue_timeout(job, ticket, queue_timeout, send)
    finally:
        ticket.end()  # never taken by a thread (cancelled): no longer waiting either


def _respond_counted(
    ticket: WaitingTicket, wsgi_app: Any, environ: dict[str, Any], exchange: Exchange, limit: int
) -> list[dict[str, Any]] | None:
    if not ticket.end():  # the loop answered 503 while it waited (queue timeout)
        return None
    if exchange.timer is not None:
        exchange.timer.start_threadsafe()  # its request timeout counts from now
    return respond(wsgi_app, environ, exchange, limit, True)


async def _refuse_timed_out(exchange: Exchange) -> None:
    lifecycle = exchange.lifecycle
    close = not exchange.body.complete or (lifecycle is not None and lifecycle.close_connections)
    await refuse(exchange.send, GatewayTimeout(), [CLOSE] if close else [])


async def _refuse_waiting(send: Send) -> None:
    counters.add("refused_max_waiting_total")
    await refuse(send, ServiceUnavailable(), [RETRY_AFTER])
