"""Request-body messages received on the loop for a worker thread (sync endpoints).

A worker thread must never wait for the network: a client that sends its body slowly
would hold the thread for as long as it likes, and a few such clients take every sync
endpoint down. So the loop receives the body. :func:`preread` collects up to a bound
(``FLASK_ASGI_BODY_PREREAD``) before the request takes a thread; the rest, if any, is
received by a :class:`BodyFeed` task into a read-ahead buffer of the same bound, which the
thread reads without a loop round trip per message. The thread waits only on that buffer
(its bytes are on their way), and the body timeout ends the wait.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections import deque
from typing import Any

from ..ground.bridge import await_
from .body import BodyTimeout, RequestBody

Message = dict[str, Any]

#: The read-ahead buffer holds at least this much.
_MIN_READ_AHEAD = 64 * 1024


def _size(message: Message) -> int:
    return len(message.get("body", b""))


def _last(message: Message) -> bool:
    return message["type"] != "http.request" or not message.get("more_body", False)


async def preread(body: RequestBody, limit: int) -> list[Message] | None:
    """Receive up to ``limit`` body bytes on the loop (all of it if it ends sooner).

    Returns the messages; the last one is the end of the body unless more is to come.
    Returns None (nothing left to answer) if the body timed out, with ``body.timed_out``.
    """
    try:
        return await body.receive_up_to(limit)
    except BodyTimeout:
        return None


def whole_body(messages: list[Message], content_length: int | None) -> bytes | None:
    """The body's bytes if ``messages`` are all of it, as its Content-Length declared
    (nothing for the app's reads to refuse), else None."""
    if not messages or content_length is None:
        return None
    last = messages[-1]
    if last["type"] != "http.request" or last.get("more_body", False):
        return None
    data = (
        last.get("body", b"")
        if len(messages) == 1
        else b"".join(message.get("body", b"") for message in messages)
    )
    return data if len(data) == content_length else None


class Received:
    """The body's messages, all received before the app runs: read with no lock or loop."""

    __slots__ = ("_messages",)

    def __init__(self, messages: list[Message]) -> None:
        self._messages = deque(messages)

    def next_message(self) -> Message:
        if self._messages:
            return self._messages.popleft()
        return {"type": "http.disconnect"}  # never asked for: the last one ends the body

    def close(self) -> None:
        pass


class BodyFeed:
    """The read-ahead buffer between the loop (which receives) and a worker thread.

    At most ``capacity`` bytes wait in it: the loop stops receiving until the thread has
    read some, so a fast client is held back (by the server's flow control) as before.
    """

    def __init__(
        self, body: RequestBody, messages: list[Message], capacity: int, eager: bool = True
    ) -> None:
        self._body = body
        self._capacity = max(capacity, 1)
        self._lock = threading.Condition()
        self._messages: deque[Message] = deque(messages)
        self._buffered = sum(_size(message) for message in messages)
        self._failure: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._space = asyncio.Event()  # the thread has read: the loop may receive again
        self._arrived = asyncio.Event()  # for a reader on the loop's own thread
        self.task: asyncio.Task[None] | None = None
        self._started = bool(messages and _last(messages[-1]))  # True: nothing to receive
        if eager:
            self._start()

    def _start(self) -> None:
        # On the loop. Not eager: the app may never read (a 413 from the header alone).
        if not self._started:
            self._started = True
            self.task = self._loop.create_task(self._fill())

    async def _fill(self) -> None:
        try:
            while True:
                await self._wait_for_space()
                message = await self._body.receive_in_time()
                self._put(message)
                if _last(message):
                    return
        except BodyTimeout as error:
            self._fail(error)
        except BaseException as error:  # noqa: B036 - cancelled: the request is over
            self._fail(error)
            raise

    async def _wait_for_space(self) -> None:
        while True:
            self._space.clear()
            with self._lock:
                if self._buffered < self._capacity:
                    return
            await self._space.wait()  # the app's pace, not the client's: not timed

    def _put(self, message: Message) -> None:
        with self._lock:
            self._messages.append(message)
            self._buffered += _size(message)
            self._lock.notify()
        self._arrived.set()

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._failure = error
            self._lock.notify()
        self._arrived.set()

    def next_message(self) -> Message:
        """The next body message: waits (in a worker thread) until the loop has it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self._start()
            return await_(self._next_on_loop())  # a sync view's body read by loop code
        if not self._started:
            self._loop.call_soon_threadsafe(self._start)
        with self._lock:
            while not self._messages and self._failure is None:
                self._lock.wait()
            return self._take()

    async def _next_on_loop(self) -> Message:
        while True:
            self._arrived.clear()
            with self._lock:
                if self._messages or self._failure is not None:
                    return self._take()
            await self._arrived.wait()

    def _take(self) -> Message:
        # Called with the lock held.
        if not self._messages:
            assert self._failure is not None
            if isinstance(self._failure, BodyTimeout):
                raise self._failure
            return {"type": "http.disconnect"}  # cancelled: as if the client had gone
        message = self._messages.popleft()
        was_full = self._buffered >= self._capacity
        self._buffered -= _size(message)
        if was_full and self._buffered < self._capacity:
            self._loop.call_soon_threadsafe(self._space.set)
        return message

    def close(self) -> None:
        """The request is over: stop receiving for it."""
        if self.task is not None and not self.task.done():
            self.task.cancel()


async def feed_body(config: Any, body: RequestBody, environ: dict[str, Any]) -> bool:
    """Receive a sync endpoint's body on the loop before it takes a worker thread: up to
    ``FLASK_ASGI_BODY_PREREAD`` bytes (never past ``MAX_CONTENT_LENGTH``), the rest through a
    read-ahead buffer. False: the body timed out before the app could run (408).

    A body received whole, as long as its Content-Length says, becomes ``wsgi.input``
    itself, a ``BytesIO``: the thread reads it as it would under a WSGI server. Other whole
    bodies (chunked, cut short) are read through the ``RequestBody``'s checks (413 past
    ``MAX_CONTENT_LENGTH``, 400 for a short one), from a :class:`Received`."""
    limit = int(config["FLASK_ASGI_BODY_PREREAD"])
    max_length = config.get("MAX_CONTENT_LENGTH")
    if max_length is not None:
        limit = min(limit, int(max_length))
        declared = body.content_length
        if declared is not None and declared > max_length:
            limit = 0  # Werkzeug answers 413 from the header alone: receive nothing first
    messages = await preread(body, limit)
    if messages is None:
        return False
    if messages and _last(messages[-1]):
        data = whole_body(messages, body.content_length)
        if data is not None:
            environ["wsgi.input"] = io.BytesIO(data)
            body.complete = True
        else:
            body.feed = Received(messages)
        return True
    body.feed = BodyFeed(body, messages, max(limit, _MIN_READ_AHEAD), eager=limit > 0)
    return True
