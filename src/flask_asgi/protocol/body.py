"""The request body: ASGI ``http.request`` messages exposed as WSGI's ``wsgi.input``.

For an async endpoint nothing is received before the app reads; a sync endpoint's body is
received on the loop (:mod:`.body_feed`), at most ``FLASK_ASGI_BODY_PREREAD`` bytes ahead of
the app. Werkzeug enforces ``MAX_CONTENT_LENGTH`` (413) from the Content-Length header, or
while reading a chunked body, so an oversized upload is refused before it is buffered.
Waiting for the client's bytes is limited to ``FLASK_ASGI_BODY_TIMEOUT`` seconds in all
(:class:`BodyTimeout`, a 408).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import types
from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol

from flask import has_request_context, request
from werkzeug.exceptions import (
    BadRequest,
    ClientDisconnected,
    RequestEntityTooLarge,
    RequestTimeout,
)

from ..ground.asgi_types import Receive
from ..ground.bridge import await_
from ..ground.counters import counters

logger = logging.getLogger("flask_asgi")


class BodyTimeout(RequestTimeout):
    """The client did not send its whole body within ``FLASK_ASGI_BODY_TIMEOUT`` (408)."""

    description = "The client did not send the request body in time."


class MessageSource(Protocol):
    """Where body messages come from when not from ``receive`` (a :class:`BodyFeed`)."""

    def next_message(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


@types.coroutine
def _rest_of(coro: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Await the rest of ``coro``, which was stepped once and yielded ``yielded``."""
    while True:
        try:
            value = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: B036 - delivered into the coroutine, as await does
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(value)
            except StopIteration as stop:
                return stop.value


class RequestBody:
    """A read-only, file-like view of the request body (``wsgi.input``)."""

    __slots__ = (
        "_receive",
        "_remaining",
        "_received",
        "_limit",
        "_buffer",
        "complete",
        "disconnected",
        "on_complete",
        "time_left",
        "timed_out",
        "feed",
        "scope",
        "content_length",
        "_pending",
    )

    def __init__(self, receive: Receive, content_length: int | None, complete: bool) -> None:
        self._receive = receive
        #: Bytes still allowed by Content-Length (None when the body is chunked).
        self._remaining = content_length
        self.content_length = content_length
        self._received = 0
        self._limit: int | None | bool = False  # False: not looked up yet
        self._buffer = b""
        #: Called (on the thread that read it) when the last body message has arrived.
        self.on_complete: Callable[[], None] | None = None
        #: True once the last body message has been received (or there is no body).
        self.complete = complete
        self.disconnected = False
        #: Seconds the client may still keep us waiting for body bytes (None: no limit).
        self.time_left: float | None = None
        self.timed_out = False
        #: Set for a sync endpoint: the messages come from the loop through it.
        self.feed: MessageSource | None = None
        #: The request's scope, named in the timeout's log line (formatted only then).
        self.scope: dict[str, Any] | None = None
        #: What :meth:`prefetch` took: a body message (a dict), or the receive it started
        #: and the future it waits on (a tuple), resumed by the first read.
        self._pending: Any = None

    def prefetch(self) -> None:
        """On the loop, before an async endpoint runs: take a body message that has
        already arrived (a small body, on most servers) without waiting for one.

        The app then reads it from here, with no trip through ``await_``. A receive that
        has to wait is kept as it is and resumed by the app's first read, so nothing is
        received early: the client's pace, the body timeout and ``MAX_CONTENT_LENGTH``
        apply as before.
        """
        # Only a receive that is an ``async def`` (uvicorn's, hypercorn's, a middleware's):
        # a coroutine can be stepped once and closed unread. Another kind of awaitable
        # (granian's) may start receiving when it is made, so it is left to the app's read.
        receive = self._receive
        code = getattr(getattr(receive, "__func__", receive), "__code__", None)
        if code is None or not code.co_flags & inspect.CO_COROUTINE:
            return
        pending: Any = receive()  # an async def's: a coroutine
        try:
            yielded = pending.send(None)
        except StopIteration as stop:
            self._pending = stop.value  # a message: a dict
            return
        self._pending = (pending, yielded)

    def drop_pending(self) -> None:
        """The request is over: close a receive that was started and never awaited.

        A message already taken stays: it is the client's body, which a context the test
        client preserved (``with client:``) can still read after the response."""
        pending = self._pending
        if type(pending) is tuple:
            self._pending = None
            pending[0].close()

    async def receive_in_time(self) -> dict[str, Any]:
        """``receive()``, on the loop, within what is left of the body timeout.

        Only the time spent waiting for the client counts, not the app's own pace, so a
        view that reads late is not punished for it.
        """
        budget = self.time_left
        pending: Any = self._pending  # a message was taken by _pull: None or a started receive
        if pending is not None:
            self._pending = None
            pending = _rest_of(*pending)  # resume the receive prefetch() started
        elif budget is None:
            return await self._receive()
        else:
            pending = self._receive()
        if budget is None:
            return await pending  # type: ignore[no-any-return]
        if self.timed_out:
            if hasattr(pending, "close"):
                pending.close()
            raise BodyTimeout()
        if type(pending) is types.CoroutineType:
            # A message that has already arrived (a small body, on most servers) comes back
            # at the first step: it needs no timer, which costs more than the receive.
            try:
                yielded = pending.send(None)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            pending = _rest_of(pending, yielded)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            async with asyncio.timeout(budget):
                return await pending  # type: ignore[no-any-return]
        except TimeoutError:
            self._timed_out()
            raise BodyTimeout() from None
        finally:
            self.time_left = max(budget - (loop.time() - start), 0.0)

    async def receive_up_to(self, limit: int) -> list[dict[str, Any]]:
        """On the loop: the body's messages up to ``limit`` bytes (all of it if it ends
        sooner; the last one is the end of the body unless more is to come).

        Messages that have already arrived (an ``async def`` receive's, stepped once) need
        no timer; the first that has to wait starts one for all the rest, bounded by what
        is left of the body timeout (granian's receive always waits: one timer per body,
        not one per message). Raises :class:`BodyTimeout`. For a sync endpoint, whose
        body nothing has prefetched.
        """
        messages: list[dict[str, Any]] = []
        received = 0
        while received < limit:
            pending: Any = self._receive()
            if type(pending) is types.CoroutineType:
                try:
                    yielded = pending.send(None)
                except StopIteration as stop:
                    message = stop.value
                    messages.append(message)
                    received += len(message.get("body", b""))
                    if message["type"] != "http.request" or not message.get("more_body"):
                        return messages
                    continue
                pending = _rest_of(pending, yielded)
            await self._receive_waiting(pending, limit - received, messages)
            break
        return messages

    async def _receive_waiting(self, pending: Any, limit: int, messages: list[Any]) -> None:
        """``receive_up_to``'s messages from the first that has to wait on, under one timer."""
        budget = self.time_left
        loop = asyncio.get_running_loop()
        start = loop.time()
        received = 0
        try:
            async with asyncio.timeout(budget):
                while True:
                    message = await pending
                    messages.append(message)
                    received += len(message.get("body", b""))
                    if message["type"] != "http.request" or not message.get("more_body"):
                        return
                    if received >= limit:
                        return
                    pending = self._receive()
        except TimeoutError:
            self._timed_out()
            raise BodyTimeout() from None
        finally:
            if budget is not None:
                self.time_left = max(budget - (loop.time() - start), 0.0)

    def _timed_out(self) -> None:
        self.timed_out = True
        counters.add("body_timeouts_total")
        logger.warning(
            "request body not received within FLASK_ASGI_BODY_TIMEOUT, giving up on it"
            " (408, connection closed): %s",
            f"{self.scope['method']} {self.scope['path']}" if self.scope else "?",
        )

    def _pull(self) -> None:
        """Receive one more message into the buffer."""
        if self.feed is not None:
            message = self.feed.next_message()
        elif type(self._pending) is dict:
            message, self._pending = self._pending, None  # prefetch() took it
        else:
            message = await_(self.receive_in_time())
        kind = message["type"]
        if kind == "http.disconnect":
            self.complete = True
            self.disconnected = True
            raise ClientDisconnected("The client went away before sending the whole body.")
        chunk: bytes = message.get("body", b"")
        if self._remaining is not None:
            self._remaining -= len(chunk)
            if self._remaining < 0:
                self._finish()
                raise BadRequest("The request body is longer than its Content-Length.")
        else:
            self._check_limit(len(chunk))
        if not message.get("more_body", False):
            self._finish()
            if self._remaining:
                raise ClientDisconnected("The request body is shorter than its Content-Length.")
        self._buffer += chunk
        if self._remaining is None and not self.complete and self._received == self._limit:
            # Exactly at the limit: Werkzeug would stop reading here, so only the next
            # message can tell whether the body goes past it.
            self._pull()

    def _finish(self) -> None:
        self.complete = True
        if self.on_complete is not None:
            self.on_complete()

    def _check_limit(self, size: int) -> None:
        """Refuse a chunked body (no Content-Length) once it passes MAX_CONTENT_LENGTH.

        Werkzeug checks Content-Length up front, but for a chunked body its LimitedStream
        stops quietly at the limit, handing the app a truncated body: answer 413 instead.
        """
        if self._limit is False:
            self._limit = request.max_content_length if has_request_context() else None
        self._received += size
        if self._limit is not None and self._received > self._limit:
            self._finish()
            raise RequestEntityTooLarge()

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while not self.complete:
                self._pull()
            data, self._buffer = self._buffer, b""
            return data
        while len(self._buffer) < size and not self.complete:
            self._pull()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read1(self, size: int = -1) -> bytes:
        if not self._buffer and not self.complete:
            self._pull()
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        while b"\n" not in self._buffer and not self.complete:
            if size is not None and 0 <= size <= len(self._buffer):
                break
            self._pull()
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._buffer = b""
