"""``asgi.stats()`` and, with ``prometheus_client``, a Prometheus endpoint.

Counting costs an integer store on the loop thread (``AppState``, ``WorkerPool.pending``);
everything else is computed when asked. The endpoint (``FLASK_ASGI_METRICS_PATH``) is
answered before the Flask app, like the probes.

* One process: a collector reads :func:`stats` at scrape time (and the default registry is
  served too: the process metrics and the app's own).
* ``--workers N``: a scrape reaches one process, so with ``PROMETHEUS_MULTIPROC_DIR`` set
  (prometheus_client's multiprocess mode) each process copies its counts into real
  prometheus_client metrics once a second, which write to that directory, and the endpoint
  serves ``MultiProcessCollector``'s sum over the processes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any, Final

from flask import Flask

from ..ground.app_state import LAG_BUCKETS, AppState, app_state
from ..ground.counters import counters
from ..ground.pools import WorkerPool, worker_pool

CONFIG_KEY = "FLASK_ASGI_METRICS_PATH"
#: Seconds between two copies of the counts into multiprocess-mode metrics.
SYNC_INTERVAL = 1.0


def stats(app: Flask) -> dict[str, Any]:
    """What the server is doing now, in this process (see docs/observability.md)."""
    state = app_state(app)
    limits = counters.snapshot()
    size = int(app.config["FLASK_ASGI_THREADS"])
    pool = worker_pool(size)
    pending = pool.pending if isinstance(pool, WorkerPool) else 0
    tasks = state.background
    running = sum(not t.done() for t in tasks.tasks()) if tasks is not None else 0
    cumulative, buckets = 0, []
    for bound, count in zip((*LAG_BUCKETS, float("inf")), state.lag_counts, strict=True):
        cumulative += count
        buckets.append((bound, cumulative))
    return {
        "async_requests": state.async_requests,
        "sync_requests": state.sync_requests,
        "workers": size,
        "workers_busy": min(pending, size),
        "workers_waiting": max(pending - size, 0),
        "websockets": state.websockets,
        "sse_streams": state.sse_streams,
        "background_tasks": running,
        "watchdog": bool(state.heartbeat),
        "loop_stalls": state.stalls,
        "loop_lag": {"buckets": buckets, "sum": state.lag_sum, "count": cumulative},
        "ready": state.ready,
        "phase": state.lifecycle.phase,
        # Process-wide, from the limits (ground/counters.py, docs/reliability.md).
        "requests_waiting_for_thread": limits["waiting"],
        "refused": {
            "max_requests": limits["refused_max_requests_total"],
            "max_waiting": limits["refused_max_waiting_total"],
            "queue_timeout": limits["refused_queue_timeout_total"],
            "body_timeout": limits["body_timeouts_total"],
            "header_timeout": limits["header_timeouts_total"],
            "request_timeout": limits["request_timeouts_total"],
        },
    }


_GAUGES = {
    "async_requests": ("flask_asgi_requests_in_flight", "HTTP requests being served", "kind"),
    "workers_busy": ("flask_asgi_workers", "Worker threads", "state"),
    "websockets": ("flask_asgi_websockets_open", "Open WebSocket connections", None),
    "sse_streams": ("flask_asgi_sse_streams_open", "Open server-sent event streams", None),
    "background_tasks": ("flask_asgi_background_tasks", "Background tasks running", None),
}

#: The app's readiness (1: ready), the answer the readiness probe and stats() give.
_READY = ("flask_asgi_ready", "1 when the app is ready for traffic (the readiness probe)")


class _Collector:
    """Reads :func:`stats` at scrape time (one process)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        now = stats(self.app)
        requests = GaugeMetricFamily(
            "flask_asgi_requests_in_flight", "HTTP requests being served", labels=["kind"]
        )
        requests.add_metric(["async"], now["async_requests"])
        requests.add_metric(["sync"], now["sync_requests"])
        yield requests
        workers = GaugeMetricFamily("flask_asgi_workers", "Worker threads", labels=["state"])
        workers.add_metric(["busy"], now["workers_busy"])
        workers.add_metric(["waiting"], now["workers_waiting"])
        yield workers
        yield GaugeMetricFamily("flask_asgi_workers_max", "Worker pool size", now["workers"])
        yield GaugeMetricFamily(_READY[0], _READY[1], int(now["ready"]))
        for key in ("websockets", "sse_streams", "background_tasks"):
            name, doc, _ = _GAUGES[key]
            yield GaugeMetricFamily(name, doc, now[key])
        yield CounterMetricFamily(
            "flask_asgi_loop_stalls", "Event loop stalls over the threshold", now["loop_stalls"]
        )
        refused = CounterMetricFamily(
            "flask_asgi_refused", "Requests refused by a limit", labels=["reason"]
        )
        for reason, count in now["refused"].items():
            refused.add_metric([reason], count)
        yield refused
        lag = now["loop_lag"]
        yield HistogramMetricFamily(
            "flask_asgi_loop_lag_seconds",
            "How late the watchdog's heartbeat ran",
            buckets=[(_le(bound), count) for bound, count in lag["buckets"]],
            sum_value=lag["sum"],
        )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class _ProcessMetrics:
    """Multiprocess mode: this process's counts, copied into prometheus_client metrics
    (which write to ``PROMETHEUS_MULTIPROC_DIR``) every :data:`SYNC_INTERVAL` seconds."""

    def __init__(self, app: Flask, loop: asyncio.AbstractEventLoop) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.app, self.loop = app, loop
        mode: Final = "livesum"  # summed over the processes that are alive
        self.requests = Gauge(
            "flask_asgi_requests_in_flight",
            "HTTP requests being served",
            ["kind"],
            registry=None,
            multiprocess_mode=mode,
        )
        self.workers = Gauge(
            "flask_asgi_workers", "Worker threads", ["state"], registry=None, multiprocess_mode=mode
        )
        self.gauges = {
            key: Gauge(name, doc, registry=None, multiprocess_mode=mode)
            for key, (name, doc, label) in _GAUGES.items()
            if label is None
        }
        # Ready only if every live process is (the readiness probe's answer, per process).
        self.ready = Gauge(*_READY, registry=None, multiprocess_mode="livemin")
        self.stalls = Counter(
            "flask_asgi_loop_stalls", "Event loop stalls over the threshold", registry=None
        )
        self.lag = Histogram(
            "flask_asgi_loop_lag_seconds",
            "How late the watchdog's heartbeat ran",
            buckets=LAG_BUCKETS,
            registry=None,
        )
        self.stalls_copied = 0
        self.state: AppState = app_state(app)
        self.state.lag_log = []
        self.handle: asyncio.TimerHandle | None = None

    def sync(self) -> None:
        now = stats(self.app)
        self.requests.labels("async").set(now["async_requests"])
        self.requests.labels("sync").set(now["sync_requests"])
        self.workers.labels("busy").set(now["workers_busy"])
        self.workers.labels("waiting").set(now["workers_waiting"])
        for key, gauge in self.gauges.items():
            gauge.set(now[key])
        self.ready.set(int(now["ready"]))
        self.stalls.inc(now["loop_stalls"] - self.stalls_copied)
        self.stalls_copied = now["loop_stalls"]
        lags, self.state.lag_log = self.state.lag_log or [], []
        for lag in lags:
            self.lag.observe(lag)
        self.handle = self.loop.call_later(SYNC_INTERVAL, self.sync)

    def stop(self) -> None:
        from prometheus_client import multiprocess

        if self.handle is not None:
            self.handle.cancel()
        self.state.lag_log = None
        # This process's gauges leave the sum (uvicorn's supervisor has no hook for it).
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _multiprocess() -> bool:
    return bool(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    )


def render(app: Flask) -> tuple[bytes, str]:
    """The Prometheus exposition of this process (or, in multiprocess mode, of all)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if _multiprocess():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    ours = CollectorRegistry(auto_describe=False)
    ours.register(_Collector(app))
    return generate_latest(REGISTRY) + generate_latest(ours), CONTENT_TYPE_LATEST


def respond(app: Flask, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """The ASGI messages answering a scrape of ``FLASK_ASGI_METRICS_PATH``."""
    try:
        body, content_type = render(app)
        status = 200
    except ImportError:
        body = (
            b"FLASK_ASGI_METRICS_PATH needs prometheus_client: install flask-asgi's [metrics]"
            b" extra, or pip install prometheus-client\n"
        )
        content_type, status = "text/plain; charset=utf-8", 500
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body},
    ]


# -- lifespan steps (AppState.startup_steps / .shutdown_steps) ------------------------


def startup_step(app: Flask) -> None:
    """Check that the metrics path can be served; in multiprocess mode, start copying."""
    app_state(app).metrics_endpoint = respond
    if not app.config.get(CONFIG_KEY):
        return
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"{CONFIG_KEY} is set but prometheus_client is not installed:"
            " install flask-asgi's [metrics] extra, or pip install prometheus-client"
        ) from exc
    if _multiprocess():
        process = _ProcessMetrics(app, asyncio.get_running_loop())
        app_state(app).metrics_sync = process
        process.sync()


async def shutdown_step(app: Flask) -> None:
    state = app_state(app)
    process, state.metrics_sync = state.metrics_sync, None
    if isinstance(process, _ProcessMetrics):
        process.stop()
