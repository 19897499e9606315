"""What a running server knows about itself: lifespan phase, loop health, counters.

One :class:`ServingState` per app (``app.extensions["flask_asgi.serving"]``). Its
``lifecycle`` is the app's one phase machine (the lifespan handler and the server move it;
readiness, ``asgi.stats()`` and Prometheus all read ``lifecycle.ready``), the loop watchdog
stamps its heartbeat and counts stalls and loop lag, and the request path counts what is
in flight. Every field is a
plain attribute written from one thread (the loop's, or the watchdog's for ``stalls``),
so counting costs an attribute store, no lock.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from .counters import counters
from .lifecycle import Lifecycle
from .state import hooks_of

STATE_KEY = "flask_asgi.serving"

#: Upper bounds (seconds) of the loop-lag histogram's buckets; the last bucket is +inf.
LAG_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingState:
    """Lifespan phase and loop health of the server that serves one app."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        #: The app's phase (the same object as its ``ServingHooks.lifecycle``).
        self.lifecycle = lifecycle
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
        # In flight now (loop thread only): HTTP requests to async / sync endpoints, open
        # WebSocket connections, open server-sent event streams.
        self.async_requests = 0
        self.sync_requests = 0
        self.websockets = 0
        self.sse_streams = 0
        #: ``(app, scope) -> ASGI messages`` for the metrics path (set by features.metrics).
        self.metrics_endpoint: Callable[[Flask, dict[str, Any]], list[dict[str, Any]]] | None
        self.metrics_endpoint = None

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


def serving_state(app: Flask) -> ServingState:
    """The app's :class:`ServingState`, made on first use."""
    state = app.extensions.get(STATE_KEY)
    if not isinstance(state, ServingState):
        hooks = hooks_of(app)
        lifecycle = hooks.lifecycle if hooks is not None else Lifecycle()
        state = app.extensions[STATE_KEY] = ServingState(lifecycle)
        counters.track(state)  # its requests count in the process's in_flight
    return state
