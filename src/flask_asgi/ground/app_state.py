"""One app's flask-asgi state, in one object: ``app.extensions["flask_asgi"]``.

Everything the floors share about a served app lives here, under one key: the lifespan
hooks and flask-asgi's own lifespan steps, mounts and middleware, the :class:`Lifecycle`
(the one phase machine: readiness, stats and metrics all read ``lifecycle.ready``), loop
health from the watchdog, what is in flight, and the features' per-app objects. Lower
floors reach it through :func:`app_state`, never through the ``ASGI`` façade (which
stands on them). Process-wide counts (limits shared by every app of the process) are
:mod:`.counters`.

It holds no reference to the app and only a weak one to the ``ASGI`` object, so attaching
flask-asgi creates no reference cycle: an app is freed as soon as its last reference
goes, as Flask promises. Hooks live here, not on the ``ASGI`` object, so ``flask serve``
finds them even when the ``ASGI`` object that registered them is gone. Counts are plain
attributes written from one thread (the loop's, or the watchdog's for ``stalls``), so
counting costs an attribute store, no lock.
"""

from __future__ import annotations

import bisect
import time
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from flask import Flask, current_app
from werkzeug.local import LocalProxy

from .counters import counters
from .lifecycle import Lifecycle, StopSignal

EXTENSION_KEY = "flask_asgi"

#: Upper bounds (seconds) of the loop-lag histogram's buckets; the last bucket is +inf.
LAG_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class AppState:
    """One app's hooks, phase, loop health, in-flight counts and features' objects."""

    def __init__(self) -> None:
        # -- registered by the user (asgi.before_serving...) and by flask-asgi ----------
        self.before_serving: list[Callable[[], Any]] = []
        self.after_serving: list[Callable[[], Any]] = []
        self.while_serving: list[Callable[[], Any]] = []
        #: flask-asgi's own steps, run before the user's hooks at startup (``fn(app)``)...
        self.startup_steps: list[Callable[[Flask], None]] = []
        #: ... and before them at shutdown (``await fn(app)``: drains, stop signals).
        self.shutdown_steps: list[Callable[[Flask], Awaitable[None]]] = []
        #: ... and steps entered after every startup hook, exited (last first) after the
        #: ``shutdown_steps`` and before the user's shutdown hooks: the lifespans of mounted
        #: ASGI apps, which may use what those hooks open (``fn(app, lifespan_state)``).
        self.around: list[Callable[[Flask, dict[str, Any]], AbstractAsyncContextManager[Any]]] = []
        #: ASGI apps served beside Flask (``asgi.mount``): ``(prefix, app)`` in mount order.
        self.mounts: list[tuple[str, Any]] = []
        #: ASGI middleware around the whole app (``asgi.add_middleware``): ``(cls, options)``.
        self.middleware: list[tuple[Any, dict[str, Any]]] = []
        self.asgi: weakref.ref[Any] | None = None
        #: The class that makes a new ``ASGI`` object for the app when none is alive.
        self.factory: Callable[[Flask], Any] | None = None
        # -- where serving is -----------------------------------------------------------
        self.lifecycle = Lifecycle()
        # -- loop health (features.watchdog) -----------------------------------------------
        #: ``time.monotonic()`` of the watchdog's last heartbeat on the loop (0: no watchdog).
        self.heartbeat = 0.0
        #: Seconds between heartbeats (0: no watchdog).
        self.heartbeat_interval = 0.0
        #: Loop stalls seen (the loop did not come round for the blocking threshold).
        self.stalls = 0
        #: How late each heartbeat ran, counted per bucket of :data:`LAG_BUCKETS` (+inf last).
        self.lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0
        #: When a list, every lag measured is also appended to it (Prometheus multiprocess
        #: mode drains it into a real histogram).
        self.lag_log: list[float] | None = None
        # -- in flight now (loop thread only) ---------------------------------------------
        # HTTP requests to async / sync endpoints, open WebSockets, open SSE streams.
        self.async_requests = 0
        self.sync_requests = 0
        self.websockets = 0
        self.sse_streams = 0
        # -- the features' per-app objects (typed where they are defined) -------------------
        #: ``(app, scope) -> ASGI messages`` for the metrics path (set by features.metrics).
        self.metrics_endpoint: Callable[[Flask, dict[str, Any]], list[dict[str, Any]]] | None
        self.metrics_endpoint = None
        self.background: Any = None  # features.background.BackgroundTasks
        self.watchdog: Any = None  # features.watchdog.Watchdog, while serving
        self.metrics_sync: Any = None  # features.metrics' multiprocess copier, while serving
        counters.track(self)  # its requests count in the process's in_flight

    @property
    def ready(self) -> bool:
        """Ready for traffic (the lifecycle's answer: serving, or no lifespan at all)."""
        return self.lifecycle.ready

    def loop_silence(self) -> float:
        """Seconds since the loop last ran the heartbeat (0 when there is no watchdog)."""
        return time.monotonic() - self.heartbeat if self.heartbeat else 0.0

    def record_lag(self, lag: float) -> None:
        """Count one heartbeat that ran ``lag`` seconds after it was due (loop thread)."""
        self.lag_counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
        self.lag_sum += lag
        if self.lag_log is not None:
            self.lag_log.append(lag)

    def adopt(self, other: AppState) -> None:
        """Take over what ``other`` (a second ``ASGI`` object's, not yet attached) holds."""
        self.before_serving += other.before_serving
        self.after_serving += other.after_serving
        self.while_serving += other.while_serving
        self.startup_steps += [s for s in other.startup_steps if s not in self.startup_steps]
        self.shutdown_steps += [s for s in other.shutdown_steps if s not in self.shutdown_steps]
        self.around += [s for s in other.around if s not in self.around]
        self.mounts += other.mounts
        self.middleware += other.middleware


def state_of(app: Flask) -> AppState | None:
    """The app's state, or None if flask-asgi was never attached to it."""
    state = app.extensions.get(EXTENSION_KEY)
    return state if isinstance(state, AppState) else None


def app_state(app: Flask) -> AppState:
    """The app's state, attached now if the app has none (an app seen before ``ASGI(app)``,
    as by ``asgi.stats()`` on a bare app)."""
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, AppState):
        state = app.extensions[EXTENSION_KEY] = AppState()
    return state


def asgi_of(app: Flask) -> Any:
    """The ``ASGI`` object serving ``app``, making one (with the app's state) if none is
    alive. Raises ``RuntimeError`` if flask-asgi was never attached to ``app``."""
    state = state_of(app)
    if state is None or state.factory is None:
        raise RuntimeError(f"flask-asgi is not attached to {app!r}: call ASGI(app) first")
    asgi = state.asgi() if state.asgi is not None else None
    return asgi if asgi is not None else state.factory(app)


def lifecycle_of(app: Flask) -> Lifecycle | None:
    state = state_of(app)
    return state.lifecycle if state is not None else None


def _current_stop_signal() -> StopSignal:
    lifecycle = lifecycle_of(current_app._get_current_object())  # type: ignore[attr-defined]
    if lifecycle is None:
        raise RuntimeError("flask_asgi.stopping: flask-asgi is not attached to the current app")
    return lifecycle.stop_signal


#: The current app's stop signal (``flask_asgi.stopping``): needs an app context.
stopping: StopSignal = LocalProxy(_current_stop_signal)  # type: ignore[assignment]
