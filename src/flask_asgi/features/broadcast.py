"""``asgi.broadcast``: publish/subscribe between connections, across processes with Redis.

::

    await asgi.broadcast.publish("room", "hello")

    async with asgi.broadcast.subscribe("room") as subscription:
        async for message in subscription:
            await websocket.send(message)

Messages are ``str`` or ``bytes``. The backend comes from ``FLASK_ASGI_BROADCAST_URL``:
in-process by default (one process sees its own messages), or Redis pub/sub
(``redis://...``), so that a message published by any process reaches the subscribers of
every process that uses the same Redis.

Delivery is at most once, as Redis pub/sub's: a message reaches the subscriptions that
exist when it is published, and one published while a process's connection to Redis is
down is lost for that process's subscribers, which are told (their iteration raises
``BroadcastGap`` once; see :mod:`.broadcast_redis`). ``publish`` says how many received it.

A backend lives on one event loop: the loop where it is first used (normally the server
loop; it connects at startup when ``asgi.broadcast`` exists by then) until the lifespan
shutdown, which closes it and ends every subscription. Calls from another running loop are
handed to that loop; a backend whose loop has stopped is replaced on the next use.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..ground.bridge import await_
from .broadcast_redis import BroadcastGap, Message, OnGap, OnMessage, RedisBackend

if TYPE_CHECKING:
    from flask import Flask

    from ..ground.app_state import AppState

logger = logging.getLogger("flask_asgi")

T = TypeVar("T")

_END = object()  # a subscription's end marker (unsubscribed, or the backend stopped)


class Backend(Protocol):
    """How messages travel between processes (see :class:`RedisBackend`)."""

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``: return once messages published from now on arrive."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, message: Message) -> int:
        """Send ``message``; return how many receivers got it (0: nobody)."""


class MemoryBackend:
    """In-process: a published message goes straight to this process's subscribers."""

    def __init__(self, on_message: OnMessage) -> None:
        self._on_message = on_message

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channel: str) -> None:
        pass

    async def unsubscribe(self, channel: str) -> None:
        pass

    async def publish(self, channel: str, message: Message) -> int:
        return self._on_message(channel, message)


def make_backend(url: str, on_message: OnMessage, on_gap: OnGap, timeout: float) -> Backend:
    """The backend that ``FLASK_ASGI_BROADCAST_URL`` names."""
    if not url or url.startswith("memory:"):
        return MemoryBackend(on_message)
    if url.startswith(("redis:", "rediss:", "unix:")):
        return RedisBackend(url, on_message, on_gap, timeout)
    raise ValueError(f"FLASK_ASGI_BROADCAST_URL: unsupported backend {url!r}")


class Subscription:
    """Messages published to ``channel`` from the moment ``async with`` (or ``with`` in
    sync code) is entered until it is left (or :meth:`aclose` is called).

    ``async for message in subscription`` (``for`` in sync code, through ``await_``)
    yields them in order, and ends when the subscription is closed or the broadcast
    stops (server shutdown). A subscriber that falls ``max_queue`` messages behind loses
    its oldest ones (logged).
    """

    def __init__(self, broadcast: Broadcast, channel: str, max_queue: int = 1024) -> None:
        self.broadcast = broadcast
        self.channel = channel
        self.max_queue = max_queue
        self._queue: asyncio.Queue[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bound: _Bound | None = None
        self._dropped = 0

    async def __aenter__(self) -> Subscription:
        if self._queue is not None:
            raise RuntimeError("a Subscription can be entered once")
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        await self.broadcast._subscribe(self)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Unsubscribe (iteration then ends)."""
        bound, self._bound = self._bound, None
        if bound is not None:
            await self.broadcast._unsubscribe(bound, self)
            self._end()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._queue is None:
            raise RuntimeError("use 'async with broadcast.subscribe(channel)' first")
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        if isinstance(item, BroadcastGap):
            raise item
        message: Message = item
        return message

    # Sync code (a sync WebSocket handler) uses the same object through await_.

    def __enter__(self) -> Subscription:
        return await_(self.__aenter__())

    def __exit__(self, *exc_info: Any) -> None:
        await_(self.aclose())

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        try:
            return await_(self.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    # Delivery, from the backend's loop.

    def _put(self, item: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        if loop is asyncio._get_running_loop():
            self._deliver(item)
        else:
            try:
                loop.call_soon_threadsafe(self._deliver, item)
            except RuntimeError:
                pass  # the subscriber's loop is closed

    def _deliver(self, item: Any) -> None:
        queue = self._queue
        assert queue is not None
        if isinstance(item, BroadcastGap):  # one signal per subscription is enough
            if any(isinstance(queued, BroadcastGap) for queued in queue._queue):  # type: ignore[attr-defined]
                return
        elif item is not _END and self.max_queue and queue.qsize() >= self.max_queue:
            queue.get_nowait()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                logger.warning(
                    "flask-asgi broadcast: a subscriber of %r is too slow; %d message(s) dropped",
                    self.channel,
                    self._dropped,
                )
        queue.put_nowait(item)

    def _end(self) -> None:
        self._put(_END)


class _Bound:
    """A broadcast's backend on one loop, with the subscriptions it serves."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, timeout: float) -> None:
        self.loop = loop
        self.backend = make_backend(url, self.dispatch, self.gap, timeout)
        self.channels: dict[str, set[Subscription]] = {}
        self.lock = asyncio.Lock()
        self.started: asyncio.Task[None] = loop.create_task(
            self.backend.connect(), name="flask-asgi-broadcast-connect"
        )

    def usable_from(self, loop: asyncio.AbstractEventLoop) -> bool:
        if self.loop.is_closed() or (self.loop is not loop and not self.loop.is_running()):
            return False
        started = self.started
        return not started.done() or (not started.cancelled() and started.exception() is None)

    def dispatch(self, channel: str, message: Message) -> int:
        subscriptions = tuple(self.channels.get(channel, ()))
        for subscription in subscriptions:
            subscription._put(message)
        return len(subscriptions)

    def gap(self, reason: str) -> None:
        """The backend lost its connection: every subscription gets one gap signal."""
        for subscriptions in self.channels.values():
            for subscription in subscriptions:
                subscription._put(
                    BroadcastGap(f"broadcast connection lost ({reason}): messages may be missing")
                )


class Broadcast:
    """``asgi.broadcast``: see the module docstring and docs/websockets.md."""

    def __init__(self, app: Flask, hooks: AppState) -> None:
        self._app = weakref.ref(app)  # no cycle: the app's extensions hold the hooks
        self._lock = threading.Lock()
        self._bound: _Bound | None = None
        # Connect at startup (a wrong URL then stops the server), close at shutdown.
        hooks.before_serving.append(self.start)
        hooks.after_serving.append(self.stop)

    @property
    def url(self) -> str:
        """``FLASK_ASGI_BROADCAST_URL`` of the app (``""``: in-process)."""
        app = self._app()
        return str(app.config.get("FLASK_ASGI_BROADCAST_URL") or "") if app is not None else ""

    @property
    def timeout(self) -> float:
        """``FLASK_ASGI_BROADCAST_TIMEOUT``: how long a publish or subscribe may wait."""
        app = self._app()
        return float(app.config.get("FLASK_ASGI_BROADCAST_TIMEOUT") or 5.0) if app else 5.0

    def subscribe(self, channel: str, max_queue: int = 1024) -> Subscription:
        """A :class:`Subscription` to ``channel``: ``async with broadcast.subscribe(c) as s``."""
        return Subscription(self, channel, max_queue)

    async def publish(self, channel: str, message: Message) -> int:
        """Send ``message`` (``str`` or ``bytes``) to every subscriber of ``channel``; return
        how many received it: subscriptions in process, connections (processes) with Redis.
        0 means nobody got it (pub/sub keeps nothing). Raises :class:`BroadcastError` if
        Redis does not answer within ``FLASK_ASGI_BROADCAST_TIMEOUT``."""
        if not isinstance(message, str | bytes):
            raise TypeError(f"broadcast messages are str or bytes, not {type(message).__name__}")

        async def publish(bound: _Bound) -> int:
            return await bound.backend.publish(channel, message)

        return await self._call(publish)

    async def start(self) -> None:
        """Connect the backend now (otherwise it connects on first use)."""

        async def nothing(bound: _Bound) -> None:
            pass

        await self._call(nothing)

    async def stop(self) -> None:
        """Close the backend and end every subscription (lifespan shutdown runs this)."""
        with self._lock:
            bound, self._bound = self._bound, None
        if bound is None:
            return
        if bound.loop is asyncio.get_running_loop():
            await self._stop(bound)
        elif bound.loop.is_running():
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._stop(bound), bound.loop)
            )

    @staticmethod
    async def _stop(bound: _Bound) -> None:
        try:
            await asyncio.shield(bound.started)
        except Exception:
            return  # it never connected
        for subscriptions in bound.channels.values():
            for subscription in subscriptions:
                subscription._bound = None
                subscription._end()
        bound.channels.clear()
        await bound.backend.disconnect()

    # -- running on the backend's loop ----------------------------------------------------

    def _current(self) -> _Bound:
        loop = asyncio.get_running_loop()
        with self._lock:
            bound = self._bound
            if bound is None or not bound.usable_from(loop):
                bound = self._bound = _Bound(loop, self.url, self.timeout)
            return bound

    async def _call(self, fn: Callable[[_Bound], Coroutine[Any, Any, T]]) -> T:
        bound = self._current()

        async def run() -> T:
            await asyncio.shield(bound.started)
            return await fn(bound)

        if bound.loop is asyncio.get_running_loop():
            return await run()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), bound.loop))

    async def _subscribe(self, subscription: Subscription) -> None:
        channel = subscription.channel

        async def subscribe(bound: _Bound) -> None:
            async with bound.lock:
                if channel not in bound.channels:
                    await bound.backend.subscribe(channel)
                    bound.channels[channel] = set()
                bound.channels[channel].add(subscription)
            subscription._bound = bound

        await self._call(subscribe)

    async def _unsubscribe(self, bound: _Bound, subscription: Subscription) -> None:
        channel = subscription.channel

        async def unsubscribe() -> None:
            subscriptions = bound.channels.get(channel)
            if subscriptions is None:
                return
            subscriptions.discard(subscription)  # at once: no more messages for it
            if subscriptions:
                return
            del bound.channels[channel]
            async with bound.lock:
                if channel not in bound.channels and bound is self._bound:
                    await bound.backend.unsubscribe(channel)

        if bound.loop is asyncio.get_running_loop():
            await unsubscribe()
        elif bound.loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(unsubscribe(), bound.loop))
