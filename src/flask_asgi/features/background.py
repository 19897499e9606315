"""In-process background tasks: ``asgi.add_background_task(fn, *args, **kwargs)``.

* An ``async def`` function runs as an asyncio task on the server loop; a plain function
  runs in flask-asgi's worker pool (``run_in_worker``), and may use ``await_``.
* Each task runs in its own app context: a new ``app.app_context()`` whose ``g`` is a
  shallow copy of the caller's ``g`` when the caller is in an app context of the same app.
  The request context is not carried over (the request is over): pass what the task needs
  as arguments.
* Added during a request, a task starts once the response has been sent (when Flask
  closes the response, after its last byte for a streamed one). If the request ends
  without a response (the client left and the view was cancelled, or an exception
  propagated out of Flask), it starts when the request context is torn down. Added outside
  a request (``before_serving``, a CLI command, a thread), it starts at once.
* The tasks are kept (strong references) until they finish. An exception is logged once on
  the ``flask_asgi`` logger and sent to the :data:`background_task_failed` signal.
* ``wait_background_tasks()`` waits for them (tests); on lifespan shutdown, ``drain()`` waits
  up to ``FLASK_ASGI_SHUTDOWN_TIMEOUT`` seconds, then cancels what is left and logs it.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import logging
import reprlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from blinker import Namespace
from flask import (
    Flask,
    current_app,
    g,
    has_app_context,
    has_request_context,
    request,
    request_finished,
    request_tearing_down,
)
from flask.ctx import AppContext

from ..ground.app_state import app_state
from ..ground.background_loop import background_loop
from ..ground.bridge import await_, greenlet_await, run_in_greenlet
from ..ground.pools import worker_pool
from ..ground.settings import DEFAULTS
from ..ground.worker_calls import run_in_worker, worker_loop

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

logger = logging.getLogger("flask_asgi")

_signals = Namespace()

#: Sent when a background task raises: ``sender`` is the app, with ``exception`` and
#: ``task`` (the ``asyncio.Task``) as keyword arguments. Receivers run on the server loop,
#: in the task's app context; sync receivers may use ``await_``.
background_task_failed = _signals.signal("flask-asgi.background-task-failed")

_ENVIRON_KEY = "flask_asgi.background"

#: After shutdown cancels the tasks still running, how long it lets them run their cleanup.
CANCEL_GRACE = 1.0


@dataclass
class Job:
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    app_context: AppContext
    name: str


def _describe(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    name = getattr(func, "__qualname__", None) or repr(func)
    module = getattr(func, "__module__", None)
    if module:
        name = f"{module}.{name}"
    short = reprlib.Repr()
    short.maxstring = short.maxother = 40
    parts = [short.repr(arg) for arg in args]
    parts += [f"{key}={short.repr(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _is_async(func: Callable[..., Any]) -> bool:
    # Also an object whose __call__ is ``async def``.
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - not a callable() test
    )


def _can_progress(task: asyncio.Task[None], loop: asyncio.AbstractEventLoop) -> bool:
    task_loop = task.get_loop()
    return task_loop is loop or task_loop.is_running()


class BackgroundTasks:
    """The background tasks of one app (``AppState.background``).

    Holds no reference to the app. Tasks may live on several loops (the server loop, the
    background loop the sync test client uses, a test's loop), so the set is locked.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs: dict[asyncio.Task[None], Job] = {}
        self._lock = threading.Lock()
        #: The server loop between lifespan startup and shutdown: where tasks added from
        #: threads that have no loop of their own go.
        self.loop: asyncio.AbstractEventLoop | None = None

    def tasks(self) -> list[asyncio.Task[None]]:
        with self._lock:
            return list(self._tasks)

    def _job(self, task: asyncio.Task[None]) -> Job | None:
        with self._lock:
            return self._jobs.get(task)

    # -- starting ---------------------------------------------------------------------------

    def start(self, app: Flask, job: Job) -> None:
        """Start ``job`` on the loop that serves the caller (see the module docstring)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:  # on a loop's thread: an async view, a request greenlet, a lifespan hook
            self._create(app, job, loop)
            return
        loop_or_none = worker_loop.get()  # a flask-asgi worker thread
        if loop_or_none is None and self.loop is not None and self.loop.is_running():
            loop_or_none = self.loop  # a thread of the app's own, while serving
        if loop_or_none is None:
            loop_or_none = background_loop()  # WSGI server, plain thread, no server
        target = loop_or_none
        if not target.is_running():
            raise RuntimeError(
                f"cannot start background task {job.name}: its event loop is not running"
            )

        async def create() -> None:
            self._create(app, job, target)

        asyncio.run_coroutine_threadsafe(create(), target).result(timeout=30)

    def _create(self, app: Flask, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        # A fresh contextvars Context: the request's Flask contexts must not leak in.
        task = loop.create_task(
            self._run(app, job),
            name=f"flask-asgi background {job.name}",
            context=contextvars.Context(),
        )
        with self._lock:
            self._tasks.add(task)
            self._jobs[task] = job
        task.add_done_callback(self._discard)

    def _discard(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.discard(task)
            self._jobs.pop(task, None)

    async def _run(self, app: Flask, job: Job) -> None:
        ctx = job.app_context
        ctx.push()
        try:
            if _is_async(job.func):
                await greenlet_await(job.func(*job.args, **job.kwargs))
            else:
                pool = worker_pool(int(app.config["FLASK_ASGI_THREADS"]))
                await run_in_worker(pool, _call_sync, job)
        except Exception as exc:
            logger.error("flask-asgi background task %s failed", job.name, exc_info=exc)
            await run_in_greenlet(_send_failed, app, exc)
            ctx.pop(exc)
        except BaseException as exc:  # CancelledError (shutdown), KeyboardInterrupt...
            ctx.pop(exc)
            raise
        else:
            ctx.pop(None)

    # -- waiting ----------------------------------------------------------------------------

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until no task is left (tasks started meanwhile included), at most
        ``timeout`` seconds; True if none is left. Tasks on a loop that no longer runs (a
        finished test's loop) cannot finish and are not waited for."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            tasks = [t for t in self.tasks() if not t.done() and _can_progress(t, loop)]
            if not tasks:
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            await _wait_any_loop(tasks, remaining)

    async def drain(self, timeout: float) -> None:
        """Shutdown: wait up to ``timeout`` seconds, then cancel what is left and log it."""
        if not await self.wait(timeout):
            loop = asyncio.get_running_loop()
            left = {
                task: self._job(task)
                for task in self.tasks()
                if not task.done() and _can_progress(task, loop)
            }
            names = {task: job.name if job else task.get_name() for task, job in left.items()}
            logger.warning(
                "flask-asgi shutdown: cancelling %d background task(s) still running after"
                " %s s (FLASK_ASGI_SHUTDOWN_TIMEOUT): %s",
                len(left),
                timeout,
                ", ".join(names.values()),
            )
            for task in left:
                _cancel(task)
            await _wait_any_loop(list(left), CANCEL_GRACE)
            stuck = [names[task] for task in left if not task.done()]
            if stuck:
                logger.warning(
                    "flask-asgi shutdown: background task(s) still running after cancellation: %s",
                    ", ".join(stuck),
                )
            threads = [names[t] for t, job in left.items() if job and not _is_async(job.func)]
            if threads:
                logger.warning(
                    "flask-asgi shutdown: sync background function(s) cannot be interrupted and"
                    " keep their worker thread until they return: %s",
                    ", ".join(threads),
                )
        self.loop = None


def _call_sync(job: Job) -> None:
    result = job.func(*job.args, **job.kwargs)
    if inspect.isawaitable(result):  # a plain function that returned a coroutine
        await_(result)


def _send_failed(app: Flask, exc: BaseException) -> None:
    task = asyncio.current_task()
    try:
        background_task_failed.send(app, exception=exc, task=task)
    except Exception as error:
        logger.error("flask-asgi background_task_failed receiver failed", exc_info=error)


def _cancel(task: asyncio.Task[None]) -> None:
    loop = task.get_loop()
    if loop is asyncio.get_running_loop():
        task.cancel()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(task.cancel)


async def _settle(task: asyncio.Task[None]) -> None:
    await asyncio.wait({task})


async def _wait_any_loop(tasks: list[asyncio.Task[None]], timeout: float | None) -> None:
    """``asyncio.wait`` for tasks that may belong to other loops (never cancels them)."""
    loop = asyncio.get_running_loop()
    waiters: list[asyncio.Future[Any]] = []
    for task in tasks:
        task_loop = task.get_loop()
        if task_loop is loop:
            waiters.append(task)
        elif task_loop.is_running():
            future = asyncio.run_coroutine_threadsafe(_settle(task), task_loop)
            waiters.append(asyncio.wrap_future(future))
    if not waiters:
        return
    await asyncio.wait(waiters, timeout=timeout)
    for waiter in waiters:
        if waiter not in tasks and not waiter.done():
            waiter.cancel()  # stops only the cross-loop waiter


# -- the public functions ----------------------------------------------------------------


def tasks_of(app: Flask) -> BackgroundTasks:
    state = app_state(app)
    if state.background is None:
        state.background = BackgroundTasks()
    tasks: BackgroundTasks = state.background
    return tasks


def _app_context_for(app: Flask) -> AppContext:
    ctx = app.app_context()
    if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        ctx.g = copy.copy(g._get_current_object())
    return ctx


def add_background_task(func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``asgi.add_background_task`` for the current app (in a view, a hook, a CLI command):
    run ``func(*args, **kwargs)`` in the background."""
    add(current_app._get_current_object(), func, *args, **kwargs)  # type: ignore[attr-defined]


def add(app: Flask, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run ``func(*args, **kwargs)`` in the background for ``app`` (module docstring)."""
    if inspect.iscoroutine(func):
        func.close()
        raise TypeError(
            "add_background_task() takes a function and its arguments, not a coroutine:"
            " add_background_task(send_mail, to) rather than add_background_task(send_mail(to))"
        )
    if not callable(func):
        raise TypeError(f"add_background_task() needs a callable, not {func!r}")
    job = Job(func, args, kwargs, _app_context_for(app), _describe(func, args, kwargs))
    tasks = tasks_of(app)
    if has_request_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        deferred = request.environ.get(_ENVIRON_KEY)
        if deferred is None:
            _connect_signals()
            deferred = request.environ[_ENVIRON_KEY] = _Deferred(app)
        if not deferred.started:
            deferred.jobs.append((tasks, job))
            return
    tasks.start(app, job)


def wait(app: Flask, timeout: float | None = None) -> Any:
    """Wait for ``app``'s background tasks (True: all done; False: ``timeout`` expired).

    On a thread with a running event loop this returns a coroutine to ``await``; elsewhere
    (a sync test, a worker thread) it blocks until done.
    """
    tasks = tasks_of(app)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return await_(tasks.wait(timeout))
    return tasks.wait(timeout)


# -- deferring to the end of the request -------------------------------------------------


@dataclass
class _Deferred:
    """The jobs added during one request, started when its response has been sent."""

    app: Flask
    jobs: list[tuple[BackgroundTasks, Job]] = field(default_factory=list)
    on_response: bool = False  # hooked to the response's close()
    started: bool = False

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        jobs, self.jobs = self.jobs, []
        for tasks, job in jobs:
            tasks.start(self.app, job)


_connected = False
_connect_lock = threading.Lock()


def _connect_signals() -> None:
    global _connected
    with _connect_lock:
        if not _connected:
            request_finished.connect(_on_request_finished, weak=False)
            request_tearing_down.connect(_on_request_tearing_down, weak=False)
            _connected = True


def _on_request_finished(sender: Flask, response: Response, **extra: Any) -> None:
    # The final response (after every after_request function): start when it is closed,
    # which the server does after sending its last byte.
    deferred = request.environ.get(_ENVIRON_KEY)
    if isinstance(deferred, _Deferred) and not deferred.on_response and not deferred.started:
        deferred.on_response = True
        response.call_on_close(deferred.start)


def _on_request_tearing_down(sender: Flask, **extra: Any) -> None:
    # No response reached request_finished (cancelled view, propagated exception), or the
    # task was added while the response streamed: start now.
    deferred = request.environ.get(_ENVIRON_KEY)
    if isinstance(deferred, _Deferred) and not deferred.on_response:
        deferred.start()


# -- lifespan ----------------------------------------------------------------------------


def startup_step(app: Flask) -> None:
    """Lifespan startup: tasks added from the app's own threads go to the server loop."""
    tasks_of(app).loop = asyncio.get_running_loop()


async def shutdown_step(app: Flask) -> None:
    """Lifespan shutdown, before the ``after_serving`` hooks: drain the background tasks."""
    timeout = app.config.get("FLASK_ASGI_SHUTDOWN_TIMEOUT", DEFAULTS["FLASK_ASGI_SHUTDOWN_TIMEOUT"])
    try:
        await tasks_of(app).drain(float(timeout))
    except Exception as exc:  # never let this stop the shutdown hooks
        logger.error("flask-asgi: draining background tasks failed", exc_info=exc)
