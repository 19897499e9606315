"""The two sides of one HTTP request: the :class:`Exchange` they share and :func:`respond`.

``respond`` calls ``app.wsgi_app`` as a WSGI server would, so WSGI middleware assigned to
it (ProxyFix...) and Flask's whole pipeline run unchanged. It runs in a request greenlet
on the loop for an async endpoint and in a worker thread for a sync one (``sync_path.py``),
never directly on the loop. It buffers small known-length bodies into one message and
streams the rest through :func:`~flask_asgi.ground.bridge.await_` (a sync endpoint's is
handed to the loop instead: ``response_feed.py``). Once a response streams, a watcher
notices the client leaving (``disconnect_watch.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..ground.asgi_types import Receive, Send
from ..ground.bridge import await_
from ..ground.lifecycle import Lifecycle
from .body import RequestBody
from .disconnect_watch import watch_disconnect
from .response_feed import ResponseFeed, hand_over
from .timeouts import RequestTimer

if TYPE_CHECKING:
    from .disconnect_watch import WatchSchedule

#: Answered when the client gave up on its body, so the connection is not reused.
CLOSE = (b"connection", b"close")

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
        #: The loop's ``WatchSchedule`` this request waits in for a watcher, if any (kept
        #: here so the end of the request need not look the schedule up again).
        self.watch_pending: WatchSchedule | None = None
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
        await_(start_streaming(exchange))
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


async def start_streaming(exchange: Exchange) -> None:
    exchange.request_task()  # an async endpoint's greenlet runs in its request task
    exchange.started = True
    await exchange.send(
        {"type": "http.response.start", "status": exchange.status, "headers": exchange.headers}
    )
    watch_disconnect(exchange)
