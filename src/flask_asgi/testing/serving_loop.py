"""The one loop the test clients serve the app on, as a server would.

A server runs every request, WebSocket and the lifespan of an app on one event loop for
its whole life, so a client the app opens once (an ``httpx.AsyncClient`` made at import,
a database engine opened in ``before_serving``) serves every request. The test clients do
the same: ``app.test_client()``, ``asgi.test_client()``, ``client.websocket()`` and
``asgi.serving()`` all run the app on the shared background loop (the loop Flask code
outside a server already uses), for the whole test session, whatever loop each test runs
on (pytest-asyncio makes a new one per test). An async test hands each call to that loop
and awaits the answer without blocking its own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from greenlet import getcurrent

from ..ground.background_loop import background_loop
from ..ground.bridge import BridgeGreenlet, await_, greenlet_await

T = TypeVar("T")


class _Interrupted(Exception):
    """Carries KeyboardInterrupt/SystemExit out of a loop task, which they would stop."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def serving_loop() -> asyncio.AbstractEventLoop:
    """The loop the test clients run the app on (started on first use)."""
    return background_loop()


async def _guarded(awaitable: Awaitable[T]) -> T:
    try:
        return await greenlet_await(awaitable)  # sync code under it may use await_
    except (KeyboardInterrupt, SystemExit) as exc:  # would stop the serving loop
        raise _Interrupted(exc) from None


async def on_serving_loop(awaitable: Coroutine[Any, Any, T]) -> T:
    """``await`` a coroutine on the serving loop, from any loop; inline when this is it."""
    loop = serving_loop()
    if asyncio.get_running_loop() is loop:
        return await awaitable
    future = asyncio.run_coroutine_threadsafe(_guarded(awaitable), loop)
    try:
        return await asyncio.wrap_future(future)
    except _Interrupted as interrupted:
        raise interrupted.error from None


def call_on_serving_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the serving loop from synchronous code and return its result.

    From a plain thread (a sync test) or a request greenlet this is ``await_``. From a
    thread whose own loop is running (a sync client used in an async test) the call
    blocks that loop until the answer comes, as any synchronous call would; the app
    itself runs on the serving loop, so it is not held up.
    """
    try:
        if type(getcurrent()) is not BridgeGreenlet:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            loop = serving_loop()
            if running is not None and running is not loop:
                return asyncio.run_coroutine_threadsafe(_guarded(coro), loop).result()
        return await_(coro)
    except _Interrupted as interrupted:
        raise interrupted.error from None
