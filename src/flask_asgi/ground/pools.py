"""The worker-thread pools that run sync endpoints, sync handlers and ``run_sync`` calls."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from flask import current_app, has_app_context

from .app_state import EXTENSION_KEY

T = TypeVar("T")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


class WorkerPool(ThreadPoolExecutor):
    """flask-asgi's worker pool; ``pending`` counts the jobs submitted and not yet done
    (running or waiting for a thread), kept by ``run_in_worker`` on the loop thread."""

    pending = 0
    _lent_lock = threading.Lock()

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
