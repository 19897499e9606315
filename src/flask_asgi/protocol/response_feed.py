"""A sync endpoint's streamed response, sent by the loop (the mirror of ``body_feed.py``).

A worker thread must never wait for the network. A thread that sends a large response
itself waits, at each chunk, until the server takes it, so clients that request a big
file and do not read would hold every thread for as long as they like (40 of them stop
every sync view). So the thread only produces: a *pump* job iterates the response into a
bounded buffer and returns as soon as the buffer is full, and the loop sends from it.
When the client has read enough, the loop submits the next pump job to the pool. The
buffer holds at most about ``FLASK_ASGI_RESPONSE_BUFFER`` bytes per response. A whole
file (``send_file``, ``/static``) goes out by its path where the server offers the
``http.response.pathsend`` extension (granian): the server reads it, not a thread.

WSGI semantics are kept: every pump runs in the request's own ``contextvars.Context``
object (a ``stream_with_context`` generator keeps Flask's contexts pushed across yields
in it, and a Context cannot be entered twice at once, so pumps never overlap), iteration
stops before the next chunk once the client has left, and ``close()`` is called exactly
once, in a worker thread and that same Context, after the last pump has returned:
at the end, on error, on disconnect, and when the request task is cancelled.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

from werkzeug.wsgi import FileWrapper

from ..ground.worker_calls import run_in_worker

#: A file (``send_file``, ``/static``) is read in blocks of this size, not Werkzeug's 8 KiB:
#: eight times fewer messages for the loop to send.
FILE_BLOCK = 64 * 1024

T = TypeVar("T")

_END: Any = object()

#: Closings still running after their request task was cancelled (kept from the collector).
_closing: set[asyncio.Task[None]] = set()


class ResponseFeed:
    """The bounded buffer between a worker thread (which iterates) and the loop (which sends).

    Made by ``respond`` in the worker thread once the headers are known; ``run_responding``
    sets ``context`` (the Context the thread ran in) and ``sync_path.py`` awaits
    :meth:`stream` on the loop.
    """

    def __init__(
        self,
        app_iter: Iterable[bytes],
        iterator: Iterator[bytes],
        first: bytes | None,
        capacity: int,
    ) -> None:
        if isinstance(app_iter, FileWrapper) and app_iter.buffer_size < FILE_BLOCK:
            app_iter.buffer_size = FILE_BLOCK
        self.app_iter = app_iter
        self.iterator = iterator
        self.context: contextvars.Context | None = None
        self._capacity = max(capacity, 1)
        self._lock = threading.Lock()
        self._chunks: deque[bytes] = deque([first] if first else ())
        self._buffered = len(first) if first else 0
        self._waiting = False  # the loop waits for a chunk: the pump wakes it
        self._stopped = False  # the loop stopped sending: no more iteration
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self._pump: asyncio.Task[bool] | None = None
        self._exhausted = False
        self._claimed = False  # someone (the loop, or the thread) is to close it
        #: A whole file the server sends itself (``http.response.pathsend``), if it may.
        self.path: str | None = None

    def claim(self) -> bool:
        """True once only: the caller sends, or closes, the response."""
        with self._lock:
            claimed, self._claimed = self._claimed, True
        return not claimed

    def pump(self, exchange: Any) -> bool:
        """In a worker thread: iterate into the buffer until it is full (False) or the
        iterator ends (True). Never waits for the network; the loop wakes up per chunk only
        when it is waiting for one."""
        iterator = self.iterator
        while not (exchange.disconnected or self._stopped):
            with self._lock:
                if self._buffered >= self._capacity:
                    return False
            chunk = next(iterator, _END)
            if chunk is _END:
                return True
            if chunk:
                with self._lock:
                    self._chunks.append(chunk)
                    self._buffered += len(chunk)
                    wake, self._waiting = self._waiting, False
                if wake:
                    assert self._loop is not None
                    self._loop.call_soon_threadsafe(self._arrived.set)
        return False

    def _start_pump(self, exchange: Any, executor: Executor) -> None:
        pump = asyncio.get_running_loop().create_task(
            run_in_worker(executor, self.pump, exchange, context=self.context)
        )
        pump.add_done_callback(lambda _: self._arrived.set())
        self._pump = pump

    async def stream(self, exchange: Any, executor: Executor) -> None:
        """On the loop, after ``http.response.start``: send the body as the pumps produce it,
        asking for more whenever the buffer is down to half; then ``close()``."""
        self._loop = asyncio.get_running_loop()
        if not self.claim():
            return
        low = self._capacity // 2
        send = exchange.send
        try:
            if self.path is not None:
                exchange.finished = True
                await send({"type": "http.response.pathsend", "path": self.path})
                return
            while not exchange.disconnected:
                pump = self._pump
                if pump is not None and pump.done():  # before taking: its chunks are in
                    self._pump = None
                    self._exhausted = pump.result()  # the iterator's error is raised here
                with self._lock:
                    chunk = self._chunks.popleft() if self._chunks else None
                    if chunk is None:
                        self._waiting = True
                        self._arrived.clear()
                    else:
                        self._buffered -= len(chunk)
                    room = self._buffered <= low
                if chunk is None:
                    if self._exhausted:
                        exchange.finished = True
                        await send({"type": "http.response.body", "body": b""})
                        return
                    if self._pump is None:
                        self._start_pump(exchange, executor)
                    await self._arrived.wait()
                    continue
                if room and self._pump is None and not self._exhausted:
                    self._start_pump(exchange, executor)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            self._stopped = True
            await asyncio.shield(self._closing(executor))  # cancelled: it still runs

    def _closing(self, executor: Executor) -> asyncio.Task[None]:
        closing = asyncio.get_running_loop().create_task(self._close(executor))
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)
        return closing

    async def _close(self, executor: Executor) -> None:
        """``close()`` once the last pump has returned, in a worker thread and the request's
        Context (a generator's cleanup pops the Flask contexts it pushed there)."""
        pump = self._pump
        if pump is not None:
            await asyncio.wait([pump])
            if not pump.cancelled():
                pump.exception()  # the client has gone or the stream failed: not raised twice
        close = getattr(self.app_iter, "close", None)
        if close is not None and self.context is not None:
            await run_in_worker(executor, _run_entered, self.context, close)


def _run_entered(context: contextvars.Context, fn: Callable[[], object]) -> None:
    """``context.run(fn)`` once no thread is in ``context`` any more: a request task
    cancelled while its thread was handing the body over closes it from another thread,
    maybe before the first has left the Context (which cannot be entered twice at once)."""
    entered = False

    def call() -> None:
        nonlocal entered
        entered = True
        fn()

    while True:
        try:
            context.run(call)
            return
        except RuntimeError:
            if entered:
                raise
            time.sleep(0.001)  # the handing thread is returning: a moment at most


def hand_over(
    exchange: Any,
    environ: dict[str, Any],
    app_iter: Iterable[bytes],
    iterator: Iterator[bytes],
    first: bytes | None,
    capacity: int,
) -> None:
    """In the worker thread, the headers known: leave the body in ``exchange.feed`` for the
    loop. If the request task was cancelled meanwhile, nobody will send it: the caller
    closes it (``exchange.feed`` is None again)."""
    feed = ResponseFeed(app_iter, iterator, first, capacity)
    if first is None and type(app_iter) is FileWrapper:
        extensions = environ["asgi.scope"].get("extensions") or {}
        if "http.response.pathsend" in extensions:  # granian: it reads the file itself
            feed.path = _whole_file(app_iter.file, exchange.headers)
    exchange.feed = feed
    if exchange.disconnected and feed.claim():
        exchange.feed = None


async def run_responding(executor: Executor, exchange: Any, fn: Callable[..., T], *args: Any) -> T:
    """``run_in_worker(executor, fn, *args)`` for a sync request: in a Context kept for the
    feed's later pumps. Cancelled while the thread runs: a body it hands over is closed,
    not sent (``close()`` still runs once, in that Context)."""
    context = contextvars.copy_context()
    try:
        outcome = await run_in_worker(executor, fn, *args, context=context)
    except asyncio.CancelledError:
        exchange.disconnected = True
        feed = exchange.feed
        if feed is not None and feed.claim():
            feed.context = context
            feed._closing(executor)
        raise
    if exchange.feed is not None:
        exchange.feed.context = context
    return outcome


def _whole_file(file: Any, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The absolute path of ``file`` if the response is all of it from its start and that
    path still names the file that was opened (else the server could send another one)."""
    name = getattr(file, "name", None)
    if not isinstance(name, str) or not os.path.isabs(name):
        return None
    try:
        opened, named = os.fstat(file.fileno()), os.stat(name)
        if file.tell() != 0:
            return None
    except (OSError, ValueError, AttributeError):  # not a real file (BytesIO), gone
        return None
    if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
        return None
    length = next((value for key, value in headers if key == b"content-length"), None)
    return name if length is not None and int(length) == opened.st_size else None
