"""Stream a response from an async generator (or any async iterable) in a Flask view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any, TypeVar

from flask import current_app, has_app_context, has_request_context, stream_with_context

from ..ground.app_state import lifecycle_of
from ..ground.bridge import await_
from ..ground.lifecycle import StopSignal

T = TypeVar("T")


async def _anext(iterator: AsyncIterator[T]) -> T:
    # A coroutine (not anext's awaitable), so the iterator's steps run in a greenlet.
    return await anext(iterator)


async def _anext_until_stopped(iterator: AsyncIterator[T], stop: StopSignal) -> T:
    """``anext(iterator)``, ended by the stop signal as by a timeout (``TimeoutError``):
    the iterator sees ``CancelledError`` at its ``await``."""
    waiting = True

    def expire() -> None:
        if waiting:
            scope.reschedule(asyncio.get_running_loop().time())

    async with asyncio.timeout(None) as scope:
        token = stop.subscribe(expire)
        try:
            return await anext(iterator)
        finally:
            waiting = False
            stop.unsubscribe(token)


class AsyncIteratorBridge(Iterator[T]):
    """A sync iterator over an async iterable, pulled through ``await_``.

    Werkzeug iterates response bodies synchronously; each ``next()`` here awaits the async
    iterator on the loop. ``close()`` closes an async generator, so its ``finally`` runs
    when the client goes away, or when the server shuts down (the app's stop signal ends
    the stream: the generator sees ``CancelledError`` at its current ``await``).
    """

    def __init__(self, iterable: AsyncIterable[T]) -> None:
        self._iterator = aiter(iterable)
        self._lifecycle = lifecycle_of(current_app) if has_app_context() else None

    def __next__(self) -> T:
        lifecycle = self._lifecycle
        # Not being served (a test client, before or after serving): no stop to watch.
        stop = lifecycle.stop_signal if lifecycle is not None and lifecycle.in_lifespan else None
        try:
            if stop is None:
                return await_(_anext(self._iterator))
            if stop.is_set():
                raise StopIteration
            return await_(_anext_until_stopped(self._iterator, stop))
        except StopAsyncIteration:
            raise StopIteration from None
        except TimeoutError:
            if stop is not None and stop.is_set():
                raise StopIteration from None
            raise

    def close(self) -> None:
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await_(aclose())


def stream(iterable: AsyncIterable[T]) -> Iterator[T]:
    """Return a body Flask can send from an async iterable: ``return stream(events())``.

    Like ``flask.stream_with_context``, the request context stays available while the
    iterable runs.
    """
    bridge: Iterator[Any] = AsyncIteratorBridge(iterable)
    if has_request_context():
        bridge = stream_with_context(bridge)
    return bridge
