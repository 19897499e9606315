"""Where an app's serving is in its life, and the signal that tells long-lived work to end.

Each served app has one :class:`Lifecycle` (in its ``AppState``), the one answer to
"is this app ready for traffic?" for the readiness probe, ``asgi.stats()`` and Prometheus.
Its phases, each meaning one thing:

* ``idle``: no lifespan has begun (a server run without one, a test client): requests are
  served, so it is ready;
* ``starting``: the lifespan startup is running; not ready;
* ``serving``: startup completed; ready;
* ``draining``: shutdown was asked for; with ``FLASK_ASGI_DRAIN_DELAY`` requests are still
  served normally, but readiness fails so load balancers move away;
* ``stopping``: the stop signal is set (streams, SSE and WebSockets end, responses carry
  ``Connection: close``); the lifespan shutdown runs;
* ``stopped``: the lifespan shutdown ended; ``failed``: the startup failed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Literal

Phase = Literal["idle", "starting", "serving", "draining", "stopping", "stopped", "failed"]

#: Phases in which a lifespan runs the app: the stop signal will be set at its end.
LIFESPAN_PHASES = frozenset({"starting", "serving", "draining", "stopping"})


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
    """One app's serving phase, read by the probes, stats and metrics (``ready``) and by
    the request path (``close_connections``)."""

    def __init__(self) -> None:
        self.phase: Phase = "idle"
        self.stop_signal = StopSignal()
        #: Responses carry ``Connection: close``: keep-alive connections end after them.
        self.close_connections = False

    @property
    def ready(self) -> bool:
        """Should a load balancer send new requests here? (Readiness.)"""
        return self.phase == "serving" or self.phase == "idle"

    @property
    def in_lifespan(self) -> bool:
        """A lifespan runs the app now: its stop signal will be set when serving ends."""
        return self.phase in LIFESPAN_PHASES

    def starting(self) -> None:
        self.phase = "starting"

    def failed(self) -> None:
        self.phase = "failed"

    def started(self) -> None:
        self.stop_signal.clear()
        self.close_connections = False
        self.phase = "serving"

    def draining(self) -> None:
        if self.phase in ("starting", "serving"):
            self.phase = "draining"

    def stop(self) -> None:
        """Shutdown proper: set the stop signal, close connections after their response."""
        if self.phase not in ("stopped", "failed"):
            self.phase = "stopping"
        self.close_connections = True
        self.stop_signal.set()

    def stopped(self) -> None:
        self.phase = "stopped"
