"""Stream a response from an async generator (or any async iterable) in a Flask view."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any, TypeVar

from flask import has_request_context, stream_with_context

from ..ground.bridge import await_

T = TypeVar("T")


async def _anext(iterator: AsyncIterator[T]) -> T:
    # A coroutine (not anext's awaitable), so the iterator's steps run in a greenlet.
    return await anext(iterator)


class AsyncIteratorBridge(Iterator[T]):
    """A sync iterator over an async iterable, pulled through ``await_``.

    Werkzeug iterates response bodies synchronously; each ``next()`` here awaits the async
    iterator on the loop. ``close()`` closes an async generator, so its ``finally`` runs
    when the client goes away.
    """

    def __init__(self, iterable: AsyncIterable[T]) -> None:
        self._iterator = aiter(iterable)

    def __next__(self) -> T:
        try:
            return await_(_anext(self._iterator))
        except StopAsyncIteration:
            raise StopIteration from None

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
