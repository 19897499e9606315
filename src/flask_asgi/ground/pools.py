"""The worker-thread pools that run sync endpoints, sync handlers and ``run_sync`` calls."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import thread as _thread
from typing import Any, TypeVar

from flask import current_app, has_app_context

from .app_state import EXTENSION_KEY

T = TypeVar("T")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _executor_shutdown() -> bool:
    """The interpreter is shutting down: ThreadPoolExecutor's workers take no new job."""
    return bool(_thread._shutdown)


class Job:
    """A call queued by :meth:`WorkerPool.start`: no ``concurrent.futures.Future``, whose
    locks and conditions were a measurable part of a sync request's thread hop. Its
    callable hands the outcome back itself; :meth:`cancel` skips it if it has not begun."""

    __slots__ = ("_claim", "fn", "args")

    def __init__(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        self._claim = [True]  # popped once: by the thread that runs it, or by cancel()
        self.fn = fn
        self.args = args

    def run(self, ctx: object = None) -> None:
        """In a worker thread. ThreadPoolExecutor's worker calls ``run()`` up to Python
        3.13 and ``run(ctx)`` from 3.14 (its WorkerContext, which only matters with an
        initializer: the pool has none)."""
        try:
            self._claim.pop()  # atomic: the job or its cancellation, never both
        except IndexError:
            return
        self.fn(*self.args)  # never raises: run_in_worker's job catches everything

    def cancel(self) -> bool:
        """True if the job will not run (it had not begun)."""
        try:
            self._claim.pop()
        except IndexError:
            return False
        return True


class _IdleCount:
    """ThreadPoolExecutor's count of idle threads without ``threading.Semaphore``'s
    Condition (pure Python, taken twice per job): it is only ever released, and acquired
    without waiting (``acquire(timeout=0)``), and a deque's append and pop are atomic."""

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        self._tokens: deque[None] = deque()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        try:
            self._tokens.pop()
        except IndexError:
            return False
        return True

    def release(self, n: int = 1) -> None:
        self._tokens.extend([None] * n)


class WorkerPool(ThreadPoolExecutor):
    """flask-asgi's worker pool; ``pending`` counts the jobs submitted and not yet done
    (running or waiting for a thread), kept by ``run_in_worker`` on the loop thread."""

    pending = 0
    _lent_lock = threading.Lock()

    def __init__(self, max_workers: int, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._idle_semaphore = _IdleCount()  # type: ignore[assignment]

    def start(self, fn: Callable[..., object], args: tuple[Any, ...]) -> Job:
        """Queue ``fn(*args)`` as :meth:`submit` does, without a Future (``fn`` must not
        raise). The pool's threads, their bound and their start-up are ThreadPoolExecutor's."""
        if self._shutdown or _executor_shutdown():
            raise RuntimeError("cannot schedule new jobs after shutdown")
        job = Job(fn, args)
        self._work_queue.put(job)  # type: ignore[arg-type]
        self._adjust_thread_count()
        return job

    def lend(self) -> None:
        """One of the workers has become a connection's thread (a sync WebSocket handler
        that took ``werkzeug.socket``, as Flask-Sock's do, keeps it until the connection
        closes): the pool may start one more, so that open connections do not count
        against ``FLASK_ASGI_THREADS`` and sync views keep their workers."""
        with self._lent_lock:
            self._max_workers += 1  # read by ThreadPoolExecutor at each submit

    def give_back(self) -> None:
        """The connection has closed: the bound is the configured one again (a thread
        started meanwhile stays, idle, and serves later jobs)."""
        with self._lent_lock:
            self._max_workers -= 1


def worker_pool(size: int) -> ThreadPoolExecutor:
    """The process-wide worker pool of ``size`` threads (apps of one size share it, so the
    bound holds per process however many apps are created, as in a test suite)."""
    with _pools_lock:
        pool = _pools.get(size)
        if pool is None:
            pool = _pools[size] = WorkerPool(
                max_workers=size, thread_name_prefix="flask-asgi-worker"
            )
        return pool


def current_executor() -> ThreadPoolExecutor | None:
    """The worker pool of the current app, if flask-asgi serves it (None: the loop's
    default pool)."""
    if has_app_context() and EXTENSION_KEY in current_app.extensions:
        return worker_pool(int(current_app.config["FLASK_ASGI_THREADS"]))
    return None


class ConnectionThreads(Executor):
    """One new thread per job, as Werkzeug's threaded server has per connection.

    For WSGI code that keeps a WebSocket for its whole life in the thread that took it
    (``environ["werkzeug.socket"]``: Flask-SocketIO's threading mode, simple-websocket):
    in the bounded worker pool, ``FLASK_ASGI_THREADS`` such connections would hold every
    worker and stop the sync views. ``running`` counts the threads alive.
    """

    running = 0
    _count_lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            with self._count_lock:
                ConnectionThreads.running += 1
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: B036 - handed to the waiter
                future.set_exception(exc)
            finally:
                with self._count_lock:
                    ConnectionThreads.running -= 1

        threading.Thread(target=run, name="flask-asgi-connection", daemon=True).start()
        return future


connection_threads = ConnectionThreads()
