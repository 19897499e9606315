"""The greenlet bridge: synchronous Flask code awaiting coroutines on the server's loop.

Flask calls every async callable (views, hooks, error handlers...) through
``app.ensure_sync`` -> ``app.async_to_sync``: a *synchronous* call that must return the
coroutine's result. flask-asgi runs Flask's pipeline for an async endpoint in a child
greenlet of the request's asyncio task (the pattern of SQLAlchemy's asyncio layer).
``await_`` steps the coroutine right there in the greenlet; whenever it suspends on a
future, the greenlet switches to the task, which hands the future to the event loop and
switches back with its result. The child shares the task's contextvars Context, so Flask's
contexts pushed in the greenlet are visible to everything it awaits.

Code that is not in such a greenlet awaits differently:

* in a worker thread started by flask-asgi (sync endpoints, ``run_sync``): the coroutine is
  submitted to the server loop with ``run_coroutine_threadsafe`` and the thread waits;
* anywhere else (a WSGI server such as ``flask run`` or gunicorn, a plain test thread):
  the coroutine runs on one shared background loop (:mod:`flask_asgi.background_loop`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, ParamSpec, TypeVar, cast

from greenlet import GreenletExit, getcurrent, greenlet

from .background_loop import background_loop
from .pools import current_executor
from .websocket_needs_asgi import WebSocketNeedsASGI, reached_without_connection
from .worker_calls import run_in_worker, worker_loop

P = ParamSpec("P")
T = TypeVar("T")


class BridgeGreenlet(greenlet):  # type: ignore[misc]
    """A greenlet whose parent is an asyncio task that awaits on its behalf."""


_CoroutineType = types.CoroutineType  # a module global: one lookup fewer in _step


class _Yield:
    """A value a coroutine stepped in a greenlet yields to the event loop (a future)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Failed:
    """A job that raised: its exception, handed to the driver, which raises it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _greenlet_main(fn: Callable[..., Any], args: tuple[Any, ...], driver: greenlet) -> None:
    """The body of a pooled greenlet: run one job per switch, forever.

    It switches back to the driver, its parent, which comes with each job (cheaper than
    ``getcurrent().parent``), with the job's result or a ``_Failed`` (a ``_Yield`` while
    the job waits, from ``_step``). The job is called with a fixed number of arguments where it
    can: on CPython 3.11 (measured) ``fn(*args)`` re-enters the interpreter from C, one
    more C frame on the greenlet's stack, of which a waiting greenlet keeps a copy for the
    whole wait (368 of its 2,488 bytes).
    """
    done: Any
    while True:
        try:
            n = len(args)
            if n == 4:  # the request path: respond(wsgi_app, environ, exchange, buffer_limit)
                done = fn(args[0], args[1], args[2], args[3])
            elif n == 1:
                done = fn(args[0])
            elif n == 2:
                done = fn(args[0], args[1])
            elif n == 0:
                done = fn()
            else:
                done = fn(*args)
        except GreenletExit:
            raise  # the greenlet is being collected (its task is gone): let it die
        except BaseException as exc:  # noqa: B036 - handed to the driver, which raises it
            done = _Failed(exc)
        fn = args = None  # type: ignore[assignment]  # drop references while idle
        fn, args, driver = driver.switch(done)
        done = None


# Starting a new greenlet costs about ten times a switch into a live one (measured: ~9 us
# against ~0.9 us for a switch pair), so finished greenlets wait here for the next job.
# Greenlets cannot change threads: one pool per thread. The pool only ever holds greenlets
# that were running at once, so it keeps a burst's high-water mark: a burst of 1,000
# waiting requests that came back would otherwise create hundreds of greenlets again
# (with a cap of 256: 154-498 per 1,000 requests). Bounded: an idle one holds ~2 KiB.
_idle = threading.local()
_MAX_IDLE = 1024


class Suspended:
    """A job that is waiting in its greenlet: ``await`` it for the job's result.

    What :func:`enter_greenlet` returns when the job first really waits. Awaiting it hands
    each future the job waits on to the event loop and passes what the loop sends back
    (or throws, ``CancelledError`` included) into the greenlet.
    """

    __slots__ = ("child", "pool", "first")

    def __init__(self, child: BridgeGreenlet, pool: list[BridgeGreenlet], first: Any) -> None:
        self.child = child
        self.pool = pool
        self.first = first  # the first future the job waits on

    def __await__(self) -> Generator[Any, Any, Any]:
        child = self.child
        request: Any = self.first
        self.first = None
        while True:
            try:
                value = yield request
            except BaseException as exc:  # noqa: B036 - the child decides what to do with it
                request = child.throw(exc)
            else:
                request = child.switch(value)
            if type(request) is not _Yield:
                break
            request = request.value
        return _finish(child, self.pool, request)


def _finish(child: BridgeGreenlet, pool: list[BridgeGreenlet], done: Any) -> Any:
    """The job is done: the child goes back to the pool (the same thread's: a greenlet
    cannot change threads), and its result or exception comes out here."""
    child.gr_context = None
    if len(pool) < _MAX_IDLE:
        pool.append(child)
    if type(done) is _Failed:
        error = done.error
        done = None  # no cycle through this frame's traceback
        raise error
    return done


def enter_greenlet(fn: Callable[..., T], args: tuple[Any, ...]) -> T | Suspended:
    """Run the synchronous ``fn(*args)`` in a pooled child greenlet of the current one,
    until it is done (its result, or its exception raised here) or first really waits
    (a :class:`Suspended` to await).

    The request path calls this directly: a request whose endpoint answers without
    waiting (most) makes no coroutine or generator for the bridge, only the two switches.
    """
    driver = getcurrent()
    try:
        pool: list[BridgeGreenlet] = _idle.pool
    except AttributeError:
        pool = _idle.pool = []
    child = pool.pop() if pool else BridgeGreenlet(_greenlet_main)
    if child.parent is not driver:  # setting it walks the chain: only when it differs
        child.parent = driver
    # Share the driver's Context: Flask's contexts pushed in the child are seen by the task.
    child.gr_context = driver.gr_context
    request = child.switch(fn, args, driver)
    if type(request) is _Yield:
        return Suspended(child, pool, request.value)
    return _finish(child, pool, request)  # type: ignore[no-any-return]


@types.coroutine
def in_greenlet(
    fn: Callable[..., T],
    args: tuple[Any, ...],
    on_suspend: Callable[[Any], None] | None = None,
    subject: Any = None,
) -> Generator[Any, Any, T]:
    """``await in_greenlet(fn, args)``: run the synchronous ``fn(*args)`` in a pooled child
    greenlet, awaiting what it hands to ``await_``; return its result.

    ``on_suspend(subject)`` is called when ``fn`` first really waits.
    """
    outcome = enter_greenlet(fn, args)
    if type(outcome) is Suspended:
        if on_suspend is not None:
            on_suspend(subject)
            on_suspend = subject = None
        outcome = yield from outcome.__await__()
    return outcome  # type: ignore[return-value]


def _step(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` from synchronous code running in a ``BridgeGreenlet``.

    The awaitable is stepped right here, in the greenlet, so sync code that it calls in
    turn can use ``await_`` as well; only when it suspends on a future does control switch
    to the request task, which hands the future to the event loop. A coroutine that
    finishes without suspending costs no switch at all.
    """
    # A coroutine is driven through its own methods, not bound ones kept for the wait
    # (two objects fewer per waiting request, and none to make when it does not wait).
    target: Any = awaitable
    if type(awaitable) is not _CoroutineType and not inspect.iscoroutine(awaitable):
        iterator: Any = awaitable.__await__()
        if hasattr(iterator, "send") and hasattr(iterator, "throw"):
            target = iterator
        else:
            # The data model only promises an iterator (granian's awaitables are plain
            # ones): drive it as ``await`` would, with __next__, and raise what has to be
            # thrown into it at the await point when it has no throw().
            target = _PlainIterator(iterator)
    try:
        yielded = target.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    return _suspend(target, yielded)  # type: ignore[no-any-return]


def _suspend(target: Any, yielded: Any) -> Any:
    """``target`` yielded a future: hand it to the request task, which awaits it on the
    loop, and pass what comes back into ``target`` until it returns."""
    task = getcurrent().parent
    while True:
        try:
            value = task.switch(_Yield(yielded))
        except BaseException as exc:  # noqa: B036 - delivered into the awaitable
            try:
                yielded = target.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = target.send(value)
            except StopIteration as stop:
                return stop.value


class _PlainIterator:
    """``send``/``throw`` for an iterator that lacks them (the loop only ever sends None);
    as with ``await``, a thrown error surfaces at the await point (after ``close()``, if
    it has one, for ``GeneratorExit``)."""

    __slots__ = ("iterator",)

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator

    def send(self, value: Any) -> Any:
        send = getattr(self.iterator, "send", None)
        return next(self.iterator) if send is None else send(value)

    def throw(self, error: BaseException) -> Any:
        throw = getattr(self.iterator, "throw", None)
        if throw is not None:
            return throw(error)
        if isinstance(error, GeneratorExit):
            close = getattr(self.iterator, "close", None)
            if close is not None:
                close()
        raise error


async def run_in_greenlet(
    fn: Callable[..., T],
    *args: Any,
    on_first_await: Callable[[], None] | None = None,
) -> T:
    """Run the synchronous ``fn`` in a child greenlet, awaiting what it hands to ``await_``.

    Must be called from a coroutine running in an asyncio task. Exceptions raised while
    awaiting (``CancelledError`` included) are thrown into the greenlet, so Flask's own
    error handling and teardown see them exactly as they would see a sync exception.
    ``on_first_await`` is called when ``fn`` first really waits (suspends on the loop).
    """
    if on_first_await is None:
        return await in_greenlet(fn, args)
    return await in_greenlet(fn, args, _call, on_first_await)


def _call(fn: Callable[[], None]) -> None:
    fn()


def greenlet_await(awaitable: Awaitable[T]) -> Awaitable[T]:
    """``await greenlet_await(coro)``: like ``await coro``, but sync code that ``coro``
    calls may use ``await_`` (the coroutine is stepped in a child greenlet)."""
    return in_greenlet(_step, (awaitable,))


async def _on_loop(awaitable: Awaitable[T]) -> T:
    """Await, on the loop, what a thread handed over (this task has its own Context copy)."""
    worker_loop.set(None)  # nested await_ calls happen on the loop now, not in the thread
    return await greenlet_await(awaitable)


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code and return its result.

    Works in an async endpoint's request greenlet (switches to the request task), in a
    flask-asgi worker thread (runs on the server loop) and under a WSGI server (runs on
    the shared background loop). It refuses to block the event loop's own thread.
    """
    if type(getcurrent()) is BridgeGreenlet:
        return _step(awaitable)
    loop = worker_loop.get()
    if loop is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if reached_without_connection():  # a WebSocket handler under a WSGI server
                if inspect.iscoroutine(awaitable):
                    awaitable.close()
                raise WebSocketNeedsASGI() from None
            loop = background_loop()
        else:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise RuntimeError(
                "flask_asgi.await_() was called on the event loop's thread outside a request"
                " greenlet; use 'await' in async code, or flask_asgi.run_sync() for blocking code"
            )
    result: T = asyncio.run_coroutine_threadsafe(_on_loop(awaitable), loop).result()
    return result


def async_to_sync(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Flask's ``app.async_to_sync`` replacement: call the coroutine function via ``await_``.

    Flask asks for this wrapper on every call of an async view or hook, so it is a bare
    closure: ``functools.wraps`` would cost more than the rest of the call's bridging.
    """

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        if type(getcurrent()) is BridgeGreenlet:  # await_'s first case, without its call
            return _step(func(*args, **kwargs))
        return await_(func(*args, **kwargs))

    return run


def cached_ensure_sync(app: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.ensure_sync`` that remembers its answer per plain function.

    Flask calls ``ensure_sync`` on every call of every view, hook and handler, and each
    time ``inspect.iscoroutinefunction`` unwraps and inspects the function again (five
    Python calls), then builds a new wrapper for an async one. A function cannot change
    kind, so the answer is kept, for functions only (a bound method is a new object
    every time), and dropped if the app's ``async_to_sync`` is replaced.
    """
    flask_ensure_sync = type(app).ensure_sync
    # A weak reference: the app keeps this function, which must not keep the app (Flask
    # frees an app at zero references, without waiting for the cycle collector).
    this = weakref.ref(app)
    cache: dict[Any, Callable[..., Any]] = {}
    cached_for: Any = None  # the app's async_to_sync when the cache was filled

    def ensure_sync(func: Callable[..., Any]) -> Callable[..., Any]:
        nonlocal cached_for
        app: Any = this()
        # Only plain functions are kept (a bound method is a new object every time, and
        # a callable object may be unhashable).
        wrapped = cache.get(func) if type(func) is types.FunctionType else None
        if wrapped is not None and cached_for is app.async_to_sync:
            return wrapped
        wrapped = cast("Callable[..., Any]", flask_ensure_sync(app, func))
        if type(func) is types.FunctionType:
            if cached_for is not app.async_to_sync or len(cache) >= 4096:
                cache.clear()
                cached_for = app.async_to_sync
            cache[func] = wrapped
        return wrapped

    return ensure_sync


async def run_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await a blocking call from async code: it runs in flask-asgi's worker-thread pool.

    Flask's contexts (``current_app``, ``request``, ``g``, ``session``) are available in
    the call, and the call may itself use ``await_``.
    """
    if kwargs:
        fn = functools.partial(fn, **kwargs)
    return await run_in_worker(current_executor(), fn, *args)
