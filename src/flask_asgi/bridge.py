"""The greenlet bridge: synchronous Flask code awaiting coroutines on the server's loop.

Flask calls every async callable (views, hooks, error handlers...) through
``app.ensure_sync`` -> ``app.async_to_sync``: a *synchronous* call that must return the
coroutine's result. flask-asgi runs Flask's pipeline for an async endpoint in a child
greenlet of the request's asyncio task. ``await_`` switches from that greenlet back to the
task, which awaits the coroutine natively on the loop and switches back with its result
(the pattern of SQLAlchemy's asyncio layer). The child shares the task's contextvars
Context, so Flask's contexts pushed in the greenlet are visible to the awaited coroutines.

Code that is not in such a greenlet awaits differently:

* in a worker thread started by flask-asgi (sync endpoints, ``run_sync``): the coroutine is
  submitted to the server loop with ``run_coroutine_threadsafe`` and the thread waits;
* anywhere else (a WSGI server such as ``flask run`` or gunicorn, a plain test thread):
  the coroutine runs on one shared background loop (:mod:`flask_asgi.background_loop`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, ParamSpec, TypeVar

from greenlet import getcurrent, greenlet

from .background_loop import background_loop

P = ParamSpec("P")
T = TypeVar("T")

#: The loop a flask-asgi worker thread hands its coroutines to (None outside such threads).
_worker_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "flask_asgi_worker_loop", default=None
)


class BridgeGreenlet(greenlet):  # type: ignore[misc]
    """A greenlet whose parent is an asyncio task that awaits on its behalf."""


async def run_in_greenlet(
    fn: Callable[..., T],
    *args: Any,
    on_first_await: Callable[[], None] | None = None,
) -> T:
    """Run the synchronous ``fn`` in a child greenlet, awaiting what it hands to ``await_``.

    Must be called from a coroutine running in an asyncio task. Exceptions raised while
    awaiting (``CancelledError`` included) are thrown into the greenlet, so Flask's own
    error handling and teardown see them exactly as they would see a sync exception.
    """
    driver = getcurrent()
    child = BridgeGreenlet(fn, driver)
    child.gr_context = driver.gr_context
    request = child.switch(*args)
    if child.dead:
        return request  # type: ignore[no-any-return]
    if on_first_await is not None:
        on_first_await()
    while True:
        try:
            value = await request
        except BaseException as exc:  # noqa: B036 - the greenlet decides what to do with it
            request = child.throw(exc)
        else:
            request = child.switch(value)
        if child.dead:
            return request  # type: ignore[no-any-return]


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code and return its result.

    Works in an async endpoint's request greenlet (switches to the request task), in a
    flask-asgi worker thread (runs on the server loop) and under a WSGI server (runs on
    the shared background loop). It refuses to block the event loop's own thread.
    """
    current = getcurrent()
    if type(current) is BridgeGreenlet:
        return current.parent.switch(awaitable)  # type: ignore[no-any-return]
    loop = _worker_loop.get()
    if loop is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loop = background_loop()
        else:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise RuntimeError(
                "flask_asgi.await_() was called on the event loop's thread outside a request"
                " greenlet; use 'await' in async code, or flask_asgi.run_sync() for blocking code"
            )
    coro = awaitable if inspect.iscoroutine(awaitable) else _await(awaitable)
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def async_to_sync(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Flask's ``app.async_to_sync`` replacement: call the coroutine function via ``await_``."""

    @functools.wraps(func)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await_(func(*args, **kwargs))

    return run


def _call_in_worker(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., T], args: tuple[Any, ...]
) -> T:
    _worker_loop.set(loop)
    return fn(*args)


async def run_in_worker(executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in ``executor`` with a copy of the current contextvars Context.

    The copy carries Flask's contexts into the thread and keeps whatever the thread sets
    (Flask pushes its own contexts there) from leaking into the caller or the next job.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(executor, ctx.run, _call_in_worker, loop, fn, args)


async def run_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await a blocking call from async code: it runs in flask-asgi's worker-thread pool.

    Flask's contexts (``current_app``, ``request``, ``g``, ``session``) are available in
    the call, and the call may itself use ``await_``.
    """
    from .extension import current_executor

    if kwargs:
        fn = functools.partial(fn, **kwargs)
    return await run_in_worker(current_executor(), fn, *args)
