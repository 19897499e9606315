"""The worker-thread pools that run sync endpoints, sync handlers and ``run_sync`` calls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from flask import current_app, has_app_context

from .app_state import EXTENSION_KEY

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


class WorkerPool(ThreadPoolExecutor):
    """flask-asgi's worker pool; ``pending`` counts the jobs submitted and not yet done
    (running or waiting for a thread), kept by ``run_in_worker`` on the loop thread."""

    pending = 0


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
