"""Where an app's serving is in its life, and the signal that tells long-lived work to end.

Each served app has one :class:`Lifecycle` (in its ``ServingHooks``). The server moves it
along: ``starting`` -> ``serving`` -> ``draining`` (shutdown asked for; with
``FLASK_ASGI_DRAIN_DELAY`` it still serves normally, but a readiness check should fail) ->
``stopping`` (the stop signal is set: streams, SSE and WebSockets end, responses carry
``Connection: close``) -> ``stopped``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Literal

Phase = Literal["starting", "serving", "draining", "stopping", "stopped"]


class StopSignal:
    """Set when the server starts shutting down: long-lived work should finish.

    ``is_set()`` from anywhere. ``wait(timeout=None)`` returns True once it is set (False
    after ``timeout`` seconds): ``await`` it on an event loop's thread, elsewhere it
    blocks. ``flask_asgi.stopping`` is the current app's signal; ``asgi.stopping`` an
    ``ASGI`` object's.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._subscribers: dict[int, tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = {}
        self._next_token = 0

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> Any:
        """True once set, False after ``timeout``: a coroutine on a loop's thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._event.wait(timeout)
        return self._wait_async(timeout)

    async def _wait_async(self, timeout: float | None) -> bool:
        if self.is_set():
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        token = self.subscribe(wake)
        try:
            async with asyncio.timeout(timeout):
                await future
            return True
        except TimeoutError:
            return False
        finally:
            self.unsubscribe(token)

    def subscribe(self, callback: Callable[[], None]) -> int:
        """Call ``callback`` on this thread's running loop when the signal is set (soon,
        if it is set already). Returns a token for :meth:`unsubscribe`."""
        loop = asyncio.get_running_loop()
        with self._lock:
            token = self._next_token = self._next_token + 1
            if not self._event.is_set():
                self._subscribers[token] = (loop, callback)
                return token
        loop.call_soon(callback)
        return token

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subscribers.pop(token, None)

    def set(self) -> None:
        with self._lock:
            self._event.set()
            subscribers, self._subscribers = self._subscribers, {}
        for loop, callback in subscribers.values():
            try:
                loop.call_soon_threadsafe(callback)
            except RuntimeError:
                pass  # that loop is closed: nothing waits there any more

    def clear(self) -> None:
        self._event.clear()

    def __repr__(self) -> str:
        return f"<StopSignal {'set' if self.is_set() else 'not set'}>"


class Lifecycle:
    """One app's serving state, read by health checks (``phase``) and by the request path
    (``close_connections``)."""

    def __init__(self) -> None:
        self.phase: Phase = "stopped"
        self.stopping = StopSignal()
        #: Responses carry ``Connection: close``: keep-alive connections end after them.
        self.close_connections = False

    @property
    def ready(self) -> bool:
        """Should a load balancer send new requests here? (Readiness.)"""
        return self.phase == "serving"

    def started(self) -> None:
        self.stopping.clear()
        self.close_connections = False
        self.phase = "serving"

    def draining(self) -> None:
        if self.phase in ("starting", "serving"):
            self.phase = "draining"

    def stop(self) -> None:
        """Shutdown proper: set the stop signal, close connections after their response."""
        if self.phase != "stopped":
            self.phase = "stopping"
        self.close_connections = True
        self.stopping.set()

    def stopped(self) -> None:
        self.phase = "stopped"
