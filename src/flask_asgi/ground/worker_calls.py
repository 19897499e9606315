"""``run_in_worker``: a call in a worker thread, awaited on the loop.

A sync endpoint's whole request, a streamed response's pumps, ``run_sync`` calls and sync
WebSocket handlers hop to a thread this way and back. The hop is on every sync request's
path, so it is kept cheap: flask-asgi's pool queues a plain :class:`~.pools.Job` (no
``concurrent.futures.Future``), and the outcomes of jobs that end while the loop is busy
come back together, in one ``call_soon_threadsafe`` (:class:`_Outcomes`).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from .pools import Job, WorkerPool

T = TypeVar("T")

#: The loop a flask-asgi worker thread hands its coroutines to (None outside such threads).
worker_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "flask_asgi_worker_loop", default=None
)


def _call_in_worker(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., T], args: tuple[Any, ...]
) -> T:
    worker_loop.set(loop)
    return fn(*args)


def _resolve(
    future: asyncio.Future[Any], result: Any, error: BaseException | None, pool: WorkerPool | None
) -> None:
    if pool is not None:
        pool.pending -= 1  # the job is over, whether or not its caller still waits
    if future.cancelled():
        return  # the caller was cancelled: the job ran (or was skipped) for nobody
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Outcomes:
    """Worker jobs' outcomes for one loop: a job that ends while the loop has not yet
    taken the previous ones adds its own to them, with no wake-up of its own."""

    __slots__ = ("loop", "done", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.done: deque[tuple[Any, ...]] = deque()
        self.scheduled = False  # a _drain is on its way: no other call_soon_threadsafe

    def put(self, outcome: tuple[Any, ...]) -> None:
        """In a worker thread (appended before ``scheduled`` is read: _drain clears it
        before it takes, so an outcome is always taken by a drain still to run)."""
        self.done.append(outcome)
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass  # the loop is closed: no one is waiting any more

    def _drain(self) -> None:
        self.scheduled = False
        done = self.done
        while done:
            _resolve(*done.popleft())


_outcomes = threading.local()


def _outcomes_of(loop: asyncio.AbstractEventLoop) -> _Outcomes:
    """The running loop's outcomes (one loop runs per thread at a time)."""
    outcomes: _Outcomes | None = getattr(_outcomes, "current", None)
    if outcomes is None or outcomes.loop is not loop:
        outcomes = _outcomes.current = _Outcomes(loop)
    return outcomes


def _job(
    ctx: contextvars.Context,
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    pool: WorkerPool | None,
    outcomes: _Outcomes,
) -> None:
    """Run in the worker thread; hand the outcome to the loop."""
    try:
        result, error = ctx.run(_call_in_worker, loop, fn, args), None
    except BaseException as exc:  # noqa: B036 - re-raised by the awaiting task
        result, error = None, exc
    outcomes.put((future, result, error, pool))


async def run_in_worker(
    executor: Executor | None,
    fn: Callable[..., T],
    *args: Any,
    context: contextvars.Context | None = None,
) -> T:
    """Run ``fn(*args)`` in ``executor`` with a copy of the current contextvars Context
    (or in ``context`` itself: the later jobs of one request, which must see what the
    first one set, such as the pumps of a streamed response).

    The copy carries Flask's contexts into the thread and keeps whatever the thread sets
    (Flask pushes its own contexts there) from leaking into the caller or the next job.
    The outcome comes back to an asyncio future through the loop's :class:`_Outcomes`,
    not through ``loop.run_in_executor``'s ``wrap_future`` chain of callbacks and state
    copies (measured: 18 against 24-30 us per round trip on uvloop), and flask-asgi's
    pool queues a plain ``Job`` (with the outcomes batched: 11.6 against 7.4 us of CPU per
    round trip, 64 in flight, uvloop, one core). A task cancelled before its job starts
    still skips the job, as with ``run_in_executor``; a job that has started runs on and
    is counted in ``WorkerPool.pending`` until it ends.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context() if context is None else context
    if executor is None:  # the loop's default executor, which only run_in_executor knows
        return await loop.run_in_executor(None, ctx.run, _call_in_worker, loop, fn, args)
    pool = executor if type(executor) is WorkerPool else None
    if pool is not None:
        pool.pending += 1  # busy / waiting workers, for asgi.stats()
    future: asyncio.Future[T] = loop.create_future()
    outcomes = _outcomes_of(loop)
    submitted: Future[None] | Job
    if pool is not None:
        submitted = pool.start(_job, (ctx, loop, future, fn, args, pool, outcomes))
    else:
        submitted = executor.submit(_job, ctx, loop, future, fn, args, pool, outcomes)
    try:
        return await future
    except asyncio.CancelledError:
        # A job that has not started is skipped; one that runs holds its thread until it
        # ends, and stays counted until then (_resolve).
        if submitted.cancel() and pool is not None:
            pool.pending -= 1
        raise
