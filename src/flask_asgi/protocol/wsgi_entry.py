"""An all-sync app served through a server's WSGI interface (``FLASK_ASGI_INTERFACE=wsgi``).

granian's WSGI interface calls a WSGI callable from its own blocking threads: no event
loop and no thread hop per request, the fastest way an all-sync Flask app can be served
(docs/performance.md). :class:`WsgiEntry` is that callable. What it keeps of flask-asgi's
request path: the probes (answered before Flask, as on the ASGI path), the root path,
``FLASK_ASGI_MAX_REQUESTS`` (503 past it) and the in-flight counts of ``asgi.stats()``;
a response of known length up to ``FLASK_ASGI_RESPONSE_BUFFER`` is joined here and handed
over whole (the server then sends it without the thread: a slow reader pins no thread
for it). What it cannot keep is in docs/deployment.md: the server's thread reads the body
and sends a larger response itself, so those wait for the client.

:func:`wsgi_blockers` says why an app cannot be served so (an async view, a WebSocket
route, mounts, Socket.IO's middleware): checked once, at startup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, has_request_context, request
from werkzeug.exceptions import RequestEntityTooLarge, ServiceUnavailable

from ..ground.app_state import app_state
from ..ground.counters import counters
from .dispatch import view_is_async
from .long_polls import walk_middleware as walk_long_polls
from .probes import HEALTH_KEY, METRICS_KEY, READY_KEY, probe_response
from .queue_timeout import RETRY_AFTER

StartResponse = Callable[..., Any]


def wsgi_blockers(app: Flask) -> list[str]:
    """What in ``app`` needs the ASGI path (empty: it can be served through WSGI)."""
    found: list[str] = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        if getattr(rule, "websocket", False):
            found.append(f"the WebSocket route {rule.rule!r}")
        elif view is not None and any(view_is_async(view, m) for m in rule.methods or ("GET",)):
            found.append(f"the async view {rule.endpoint!r} ({rule.rule!r})")
    state = app_state(app)
    if state.mounts:
        found.append("mounted ASGI apps (" + ", ".join(p for p, _ in state.mounts) + ")")
    if state.middleware:
        found.append("ASGI middleware (asgi.add_middleware)")
    if walk_long_polls(app.wsgi_app)[0]:
        found.append("Socket.IO's middleware (its WebSockets and long-polls)")
    return found


class WsgiEntry:
    """The WSGI callable a server's WSGI interface calls, for an all-sync ``app``."""

    __slots__ = ("app", "state", "script_name", "_lock")

    def __init__(self, app: Flask, root_path: str = "") -> None:
        self.app = app
        self.state = app_state(app)
        #: ``--root-path``: the prefix a proxy stripped, as uvicorn applies it.
        self.script_name = root_path.rstrip("/")
        self._lock = threading.Lock()  # the in-flight counts, from many threads

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        app = self.app
        config = app.config
        path = environ["PATH_INFO"]
        if path == config[HEALTH_KEY] or path == config[READY_KEY] or path == config[METRICS_KEY]:
            probe = probe_response(app, {"path": path, "method": environ["REQUEST_METHOD"]})
            if probe is not None:
                return _wsgi_messages(probe, start_response)
        if self.script_name:
            environ["SCRIPT_NAME"] = self.script_name + environ.get("SCRIPT_NAME", "")
        if "HTTP_TRANSFER_ENCODING" in environ:  # a chunked body: 413 past the limit
            environ["wsgi.input"] = _CappedInput(environ["wsgi.input"])
        state = self.state
        max_requests: int = config["FLASK_ASGI_MAX_REQUESTS"]
        lock = self._lock
        lock.acquire()
        if max_requests > 0 and counters.in_flight >= max_requests:
            lock.release()
            counters.add("refused_max_requests_total")
            return ServiceUnavailable().get_response(environ)(environ, _with(start_response))
        state.sync_requests += 1
        lock.release()
        ended = False
        length = -1

        def noted(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            """``start_response``, noting the declared length on the way to the server's."""
            nonlocal length
            for name, value in headers:
                if len(name) == 14 and (
                    name == "Content-Length" or name.lower() == "content-length"
                ):
                    length = int(value)
                    break
            return start_response(status, headers, exc_info)

        try:
            app_iter = app.wsgi_app(environ, noted)
            if 0 <= length <= config["FLASK_ASGI_RESPONSE_BUFFER"]:  # known and small: one piece
                try:
                    return [b"".join(app_iter)]
                finally:
                    close = getattr(app_iter, "close", None)
                    if close is not None:
                        close()
            ended = True  # counted until the server has sent it (closed it)
            return _Counted(app_iter, self)
        finally:
            if not ended:
                lock.acquire()
                state.sync_requests -= 1
                lock.release()

    def _end(self) -> None:
        with self._lock:
            self.state.sync_requests -= 1


class _Counted:
    """A streamed response: counted in flight until the server closes it."""

    __slots__ = ("app_iter", "entry", "__next__")

    def __init__(self, app_iter: Iterable[bytes], entry: WsgiEntry) -> None:
        self.app_iter = app_iter
        self.entry = entry
        self.__next__ = iter(app_iter).__next__

    def __iter__(self) -> Iterator[bytes]:
        return self

    def close(self) -> None:
        try:
            close = getattr(self.app_iter, "close", None)
            if close is not None:
                close()
        finally:
            self.entry._end()


class _CappedInput:
    """A chunked body (no Content-Length) refused with 413 once it passes
    ``MAX_CONTENT_LENGTH``, as on the ASGI path (``body.py``): Werkzeug's LimitedStream
    stops quietly at the limit and hands the app a truncated body."""

    __slots__ = ("stream", "received", "limit")

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.received = 0
        self.limit: int | None | bool = False  # looked up at the first read

    def _count(self, data: bytes) -> bytes:
        if self.limit is False:
            self.limit = request.max_content_length if has_request_context() else None
        self.received += len(data)
        limit = self.limit
        if limit is not None and (
            self.received > limit or (self.received == limit and self.stream.read(1))
        ):
            raise RequestEntityTooLarge()
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._count(self.stream.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._count(self.stream.readline(size))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def _with(start_response: StartResponse) -> StartResponse:
    """``start_response`` adding Retry-After (a refusal's)."""
    name, value = (part.decode("latin-1") for part in RETRY_AFTER)

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, (name, value)], exc_info)

    return start


def _wsgi_messages(messages: list[dict[str, Any]], start_response: StartResponse) -> list[bytes]:
    """A probe's two ASGI messages as a WSGI response."""
    start, body = messages
    status = int(start["status"])
    reason = {200: "OK", 503: "SERVICE UNAVAILABLE"}.get(status, "")
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    start_response(f"{status} {reason}".rstrip(), headers)
    return [body.get("body", b"")]
