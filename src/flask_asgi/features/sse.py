"""Server-sent events: ``return flask_asgi.event_stream(events())`` from a Flask view.

The view returns a ``text/event-stream`` response whose body is an async generator (or any
async iterable). Each item it yields becomes one event: a :class:`ServerSentEvent`, a
``str`` (the event's data) or anything else (sent as JSON with the app's JSON provider).
While the generator is idle for ``keepalive`` seconds, a comment line keeps proxies and
load balancers from timing the connection out.

The generator runs on the server loop with the request context available (like
:func:`flask_asgi.stream`). When the client goes away, an async view's request task is
cancelled: the generator sees ``CancelledError`` at its current ``await`` and its
``finally`` runs. Make SSE views ``async def``: a sync view's response is sent from a worker
thread, which the stream then holds for as long as it lasts.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app, has_app_context, request

from ..ground.app_state import app_state
from ..ground.bridge import greenlet_await
from .streaming import stream

#: The comment sent while the generator is idle (lines starting with ":" are ignored).
KEEPALIVE = b": keep-alive\n\n"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

#: Response headers for an event stream: no caching, no buffering in nginx-style proxies.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class ServerSentEvent:
    """One event. Only ``data`` is needed; ``None`` fields are left out.

    ``data`` that is not a ``str`` is sent as JSON. Text with line breaks becomes several
    ``data:`` lines, which the browser joins back with ``\\n``. ``id`` sets the browser's
    last event ID (sent back as ``Last-Event-ID`` when it reconnects); ``retry`` is the
    reconnection delay in milliseconds; ``comment`` is a comment line the browser ignores.
    """

    data: Any = None
    event: str | None = None
    id: str | int | None = None
    retry: int | None = None
    comment: str | None = None

    def encode(self) -> bytes:
        """The event in the ``text/event-stream`` wire format, ending with a blank line."""
        lines: list[str] = []
        if self.comment is not None:
            lines += [f": {line}" if line else ":" for line in _LINE_BREAK.split(self.comment)]
        if self.event is not None:
            _check_single_line("event", self.event)
            lines.append(f"event: {self.event}")
        if self.id is not None:
            event_id = str(self.id)
            _check_single_line("id", event_id)
            if "\0" in event_id:
                raise ValueError("a server-sent event id cannot contain NUL")
            lines.append(f"id: {event_id}")
        if self.retry is not None:
            if isinstance(self.retry, bool) or not isinstance(self.retry, int) or self.retry < 0:
                raise ValueError(f"retry must be a non-negative int (ms), not {self.retry!r}")
            lines.append(f"retry: {self.retry}")
        if self.data is not None:
            text = self.data if isinstance(self.data, str) else _dumps(self.data)
            lines += [f"data: {line}" if line else "data:" for line in _LINE_BREAK.split(text)]
        if not lines:
            lines.append(":")  # an empty event: a bare comment, so the output is still valid
        return ("\n".join(lines) + "\n\n").encode("utf-8")


def _check_single_line(field: str, value: str) -> None:
    if _LINE_BREAK.search(value):
        raise ValueError(f"a server-sent event {field} cannot contain a line break: {value!r}")


def _dumps(data: Any) -> str:
    if isinstance(data, bytes | bytearray):
        return bytes(data).decode("utf-8")
    if has_app_context():
        return current_app.json.dumps(data)  # the app's provider: dates, dataclasses...
    return json.dumps(data)


def encode_event(item: Any) -> bytes:
    """Encode what an event generator yielded: a ``ServerSentEvent``, a ``str`` (data) or
    any other value (JSON data)."""
    if isinstance(item, ServerSentEvent):
        return item.encode()
    return ServerSentEvent(data=item).encode()


async def _step(iterator: AsyncIterator[Any]) -> Any:
    # greenlet_await: sync code the generator calls may use flask_asgi.await_.
    return await greenlet_await(anext(iterator))


class EventStream(AsyncIterable[bytes]):
    """The encoded body of an event stream: an async iterable of ``bytes``.

    ``event_stream()`` wraps this in a response; use it directly to build your own
    (``Response(flask_asgi.stream(EventStream(events())), mimetype="text/event-stream")``).

    While waiting for the source's next item, a :data:`KEEPALIVE` comment is produced every
    ``keepalive`` seconds (``None`` or ``0``: never). The wait does not cancel the pending
    item: ``asyncio.wait`` on a task that runs the source's next step. All of the source's
    steps run in one ``contextvars.Context`` (a copy of the request's), so a generator may
    keep a context manager (``with app.app_context():``...) open across its ``yield``\\ s,
    whether the view is async or sync.
    """

    def __init__(self, source: AsyncIterable[Any], keepalive: float | None = 15.0) -> None:
        if not hasattr(source, "__aiter__"):
            raise TypeError(
                f"an event stream needs an async iterable (an async generator), not {source!r}"
            )
        if keepalive is not None and keepalive < 0:
            raise ValueError("keepalive must be a positive number of seconds, 0 or None")
        self.source = source
        self.keepalive = keepalive or None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        keepalive = self.keepalive
        iterator = aiter(self.source)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the request context is in it
        pending: asyncio.Task[Any] | None = None
        # Open streams, for asgi.stats(): this generator runs on the loop thread.
        app = current_app._get_current_object() if has_app_context() else None  # type: ignore
        state = app_state(app) if app is not None else None
        if state is not None:
            state.sse_streams += 1
        try:
            while True:
                if pending is None:
                    pending = loop.create_task(_step(iterator), context=context)
                done, _ = await asyncio.wait({pending}, timeout=keepalive)
                if not done:
                    yield KEEPALIVE  # the pending step keeps running meanwhile
                    continue
                step, pending = pending, None
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                yield encode_event(item)
        finally:
            if state is not None:
                state.sse_streams -= 1
            # Client gone (this generator was cancelled or closed) or the source ended.
            if pending is not None:
                pending.cancel()  # the source sees CancelledError at its await
                await asyncio.wait({pending})
                if not pending.cancelled():
                    pending.exception()  # retrieved: a late error is not worth a warning
            await loop.create_task(_aclose(iterator), context=context)


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await greenlet_await(aclose())


def event_stream(
    source: AsyncIterable[Any],
    *,
    keepalive: float | None = 15.0,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A ``text/event-stream`` response sending each item ``source`` yields as an event.

    ``source`` is an async generator (or any async iterable) of :class:`ServerSentEvent`,
    ``str`` (data) or JSON-serializable values. The request context stays available in it.
    A ``: keep-alive`` comment is sent whenever it is idle for ``keepalive`` seconds.
    """
    response_class: type[Response] = current_app.response_class if has_app_context() else Response
    response = response_class(
        stream(EventStream(source, keepalive)), status=status, mimetype="text/event-stream"
    )
    response.headers.update(STREAM_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def last_event_id() -> str | None:
    """The ``Last-Event-ID`` header a reconnecting ``EventSource`` sends (None if absent):
    the ``id`` of the last event the browser received, to resume from."""
    return request.headers.get("Last-Event-ID")
