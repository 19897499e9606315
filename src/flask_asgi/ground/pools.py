"""The worker-thread pools that run sync endpoints, sync handlers and ``run_sync`` calls."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import thread as _thread
from queue import Empty, SimpleQueue
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
        closes): the pool starts one more, so that open connections do not count against
        ``FLASK_ASGI_THREADS`` and sync views keep their workers.

        Called in the lent worker itself, not on the loop: ThreadPoolExecutor starts a
        thread in ``submit``, and ``Thread.start()`` waits for the new thread to run."""
        with self._lent_lock:
            self._max_workers += 1  # read by ThreadPoolExecutor at each submit
        # Jobs queued meanwhile (a burst of handshakes) need that thread now, not at the next
        # submit. ThreadPoolExecutor starts one only when its idle count is zero, and that
        # count keeps threads that have since taken a job (such as this one): forget it, so
        # that the thread starts; an idle thread counts itself again after its next job.
        # Not under the executor's lock, which the loop's submit takes: the start waits for
        # the new thread (racing a submit, the pool may start one thread more than needed).
        if self._shutdown:
            return
        while self._idle_semaphore.acquire(timeout=0):
            pass
        self._adjust_thread_count()

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


#: A job of :class:`ConnectionThreads`: its future, the function and its arguments.
_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ConnectionThreads(Executor):
    """A thread per job, as Werkzeug's threaded server has per connection.

    For WSGI code that keeps a WebSocket for its whole life in the thread that took it
    (``environ["werkzeug.socket"]``: Flask-SocketIO's threading mode, simple-websocket):
    in the bounded worker pool, ``FLASK_ASGI_THREADS`` such connections would hold every
    worker and stop the sync views. ``running`` counts the jobs running.

    The caller (the event loop) never starts a thread: ``Thread.start()`` waits until the
    new thread runs, and with a thousand connections' threads wanting the GIL one start
    held the loop, and every connection's I/O, for 0.5 s (measured, 1,000 Socket.IO
    clients). A starter thread starts them instead, and a thread whose job has ended waits
    ``IDLE_SECONDS`` for another (a burst of long-polls reuses threads) before it ends.
    """

    IDLE_SECONDS = 10.0
    running = 0
    _count_lock = threading.Lock()

    def __init__(self) -> None:
        self._fresh()
        # In a forked process (a server's worker) the parent's threads are not there.
        os.register_at_fork(after_in_child=self._fresh)

    def _fresh(self) -> None:
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._idle = threading.Semaphore(0)  # threads waiting for a job, not yet claimed
        self._to_start: SimpleQueue[None] = SimpleQueue()
        self._starter: threading.Thread | None = None
        self._starter_lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._jobs.put((future, fn, args, kwargs))
        if not self._idle.acquire(blocking=False):  # no idle thread claimed: one more
            self._to_start.put(None)
            if self._starter is None:
                self._start_starter()
        return future

    def _start_starter(self) -> None:
        with self._starter_lock:  # once per process
            if self._starter is None:
                self._starter = threading.Thread(
                    target=self._start_threads, name="flask-asgi-connection-starter", daemon=True
                )
                self._starter.start()

    def _start_threads(self) -> None:
        while True:
            self._to_start.get()
            threading.Thread(target=self._serve, name="flask-asgi-connection", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                future, fn, args, kwargs = self._jobs.get(timeout=self.IDLE_SECONDS)
            except Empty:
                if self._idle.acquire(blocking=False):
                    return  # idle, and no submit has claimed this thread
                continue  # a submit claimed it: its job is on the way
            if future.set_running_or_notify_cancel():
                with self._count_lock:
                    ConnectionThreads.running += 1
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: B036 - handed to the waiter
                    future.set_exception(exc)
                finally:
                    with self._count_lock:
                        ConnectionThreads.running -= 1
            del future, fn, args, kwargs  # an idle thread holds nothing of the last job
            self._idle.release()


connection_threads = ConnectionThreads()
